//! The fake GitHub of the tests as a standalone server, for benchmarks that run other
//! programs against it (`scripts/bench-github.sh`). Prints one JSON line with its URL and
//! token, then serves until killed.
//!
//! Usage: `fake-github [ISSUES] [REPOS]` (defaults 20000 and 2).

use sluice_tests::fakes::github::{FakeGithub, GithubConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let issues: usize = args.next().as_deref().unwrap_or("20000").parse()?;
    let repos: usize = args.next().as_deref().unwrap_or("2").parse()?;
    let gh = FakeGithub::start(GithubConfig {
        repos,
        issues,
        // Only issues: the benchmark compares the issues stream.
        pr_every: 0,
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
