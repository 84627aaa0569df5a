//! The fake HubSpot of the tests as a standalone server, for benchmarks that run other
//! programs against it (`scripts/bench-hubspot.sh`). Prints one JSON line with its URL and
//! token, then serves until killed (and prints its request counts on Ctrl-C).
//!
//! Usage: `fake-hubspot [CONTACTS] [SEARCH_PER_SECOND] [--contracts DIR]` (defaults 50000 and
//! 5; `--help` says more). No record is archived (every peer then reads the same records);
//! search answers 429 `SECONDLY` past `SEARCH_PER_SECOND` requests in any second, as HubSpot
//! does past ~5 (0: no limit, which HubSpot never is). Every request is checked against
//! HubSpot's OpenAPI descriptions, read at start from `--contracts` (or
//! `FAKE_HUBSPOT_CONTRACTS`), by default `tests/contract/hubspot` of the source tree the binary
//! was built from: a binary copied to another machine is told where its copy is.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sluice_tests::fakes::hubspot::{
    FakeHubspot, HUBSPOT_CONTRACT_DIR, HubspotConfig, hubspot_contract_in,
};

#[derive(Parser)]
#[command(about = "The tests' fake HubSpot CRM v3 API, standalone")]
struct Args {
    /// Contacts to serve (companies, deals, tickets and owners keep the fake's defaults).
    #[arg(default_value_t = 50_000)]
    contacts: usize,
    /// Search requests allowed in any second before 429 SECONDLY (0: no limit).
    #[arg(default_value_t = 5)]
    search_per_second: usize,
    /// The directory of HubSpot's OpenAPI descriptions (`*.json`) every request is checked
    /// against: `tests/contract/hubspot` of a Sluice checkout.
    #[arg(long, env = "FAKE_HUBSPOT_CONTRACTS", value_name = "DIR", default_value = HUBSPOT_CONTRACT_DIR)]
    contracts: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let contract = hubspot_contract_in(&args.contracts)
        .map_err(anyhow::Error::msg)
        .context(
            "reading HubSpot's OpenAPI descriptions: pass --contracts DIR (or set FAKE_HUBSPOT_CONTRACTS) to tests/contract/hubspot of a Sluice checkout",
        )?;
    let contacts = args.contacts;
    let hs = FakeHubspot::start_with_contract(
        HubspotConfig {
            contacts,
            archived_every: 0,
            search_per_second: args.search_per_second,
            ..Default::default()
        },
        contract,
    )
    .await;
    let hello = serde_json::json!({"url": hs.url, "token": hs.token(), "contacts": contacts});
    println!("{hello}");
    tokio::signal::ctrl_c().await?;
    let violations = hs.violations();
    println!(
        "{}",
        serde_json::json!({"requests": hs.counters.by_route(), "secondly_429s": hs.secondly_429s(), "violations": violations})
    );
    Ok(())
}
