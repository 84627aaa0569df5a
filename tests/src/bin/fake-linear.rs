//! The fake Linear of the tests as a standalone server, for benchmarks that run other programs
//! against it (`scripts/bench-linear.sh`). Prints one JSON line with its URL (the GraphQL
//! endpoint is `{url}/graphql`) and API key, then serves until killed.
//!
//! Usage: `fake-linear [ISSUES] [TEAMS]` (defaults 20000 and 3). No issue is archived, so a
//! client that leaves archived issues out (Linear's default) and one that asks for them
//! (`includeArchived: true`) read the same ISSUES issues.

use clap::Parser;
use sluice_tests::fakes::linear::{FakeLinear, LinearConfig};

#[derive(Parser)]
#[command(about = "The tests' fake Linear GraphQL API, standalone (Linear's schema is built in)")]
struct Args {
    /// Issues across the teams.
    #[arg(default_value_t = 20_000)]
    issues: usize,
    /// Teams.
    #[arg(default_value_t = 3)]
    teams: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { issues, teams } = Args::parse();
    let fake = FakeLinear::start(LinearConfig {
        issues,
        teams,
        users: 50,
        projects: 20,
        // The benchmark compares the issues stream.
        comments: 0,
        archived_every: 0,
        ..Default::default()
    })
    .await;
    let hello =
        serde_json::json!({"url": fake.url, "token": fake.config().api_key, "issues": issues});
    println!("{hello}");
    tokio::signal::ctrl_c().await?;
    println!(
        "{}",
        serde_json::json!({"requests": fake.counters.by_route(), "invalid_documents": fake.invalid_documents(), "too_complex": fake.too_complex()})
    );
    Ok(())
}
