//! The fake HubSpot of the tests as a standalone server, for benchmarks that run other
//! programs against it (`scripts/bench-hubspot.sh`). Prints one JSON line with its URL and
//! token, then serves until killed (and prints its request counts on Ctrl-C).
//!
//! Usage: `fake-hubspot [CONTACTS] [SEARCH_PER_SECOND]` (defaults 50000 and 5).
//! No record is archived (every peer then reads the same records); search answers 429
//! `SECONDLY` past `SEARCH_PER_SECOND` requests in any second, as HubSpot does past ~5 (0:
//! no limit, which HubSpot never is).

use sluice_tests::fakes::hubspot::{FakeHubspot, HubspotConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let contacts: usize = args.next().as_deref().unwrap_or("50000").parse()?;
    let search_per_second: usize = args.next().as_deref().unwrap_or("5").parse()?;
    let hs = FakeHubspot::start(HubspotConfig {
        contacts,
        archived_every: 0,
        search_per_second,
        ..Default::default()
    })
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
