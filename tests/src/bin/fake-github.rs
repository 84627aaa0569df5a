//! The fake GitHub of the tests as a standalone server, for benchmarks that run other
//! programs against it (`scripts/bench-github.sh`, `scripts/bench-replicas.sh`). Prints one
//! JSON line with its URL and token, then serves until killed.
//!
//! Usage: `fake-github [ISSUES] [REPOS] [--page-delay-ms N]` (defaults 20000, 2 and 0: each
//! page of a listing answered after N ms, as a remote API's latency).

use std::time::Duration;

use clap::Parser;
use sluice_tests::fakes::github::{FakeGithub, GithubConfig};

#[derive(Parser)]
#[command(about = "The tests' fake GitHub REST API, standalone")]
struct Args {
    /// Issues across the repositories.
    #[arg(default_value_t = 20_000)]
    issues: usize,
    /// Repositories acme/repo-0 … acme/repo-{N-1}.
    #[arg(default_value_t = 2)]
    repos: usize,
    /// Milliseconds before each page of a listing is answered.
    #[arg(long, default_value_t = 0)]
    page_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let gh = FakeGithub::start(GithubConfig {
        repos: args.repos,
        issues: args.issues,
        // Only issues: the benchmark compares the issues stream.
        pr_every: 0,
        page_delay: Duration::from_millis(args.page_delay_ms),
        ..Default::default()
    })
    .await;
    let hello = serde_json::json!({"url": gh.url, "token": gh.token(), "owner": "acme", "repositories": gh.repositories()});
    println!("{hello}");
    tokio::signal::ctrl_c().await?;
    println!(
        "{}",
        serde_json::json!({"requests": gh.counters.by_route()})
    );
    Ok(())
}
