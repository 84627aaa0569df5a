//! The fake Slack of the tests as a standalone server, for benchmarks that run other programs
//! against it (`scripts/bench-slack.sh`). Prints one JSON line with its Web API root (`url`,
//! ending in `/api`), the bare origin (`origin`, for a proxy in front of it) and a token granted
//! every scope, then serves until killed (SIGINT prints the requests served per method).
//!
//! Usage: `fake-slack [CHANNELS] [MESSAGES_PER_CHANNEL] [RATE_LIMIT_EVERY]` (defaults 200, 500
//! and 0). The token's user is a member of every channel (none answers `not_in_channel`), every
//! third channel is private, the last is archived; messages are top-level only (no threads), in
//! the 30 days before start. Pages hold at most 1000 items, and every other history page is one
//! short of the limit while more remains, as Slack's may be. `RATE_LIMIT_EVERY` N > 0 answers
//! every Nth request 429 `ratelimited` with `Retry-After: 1`; 0 (the default) never does.

use clap::Parser;
use sluice_tests::fakes::slack::{FakeSlack, SlackConfig};

#[derive(Parser)]
#[command(about = "The tests' fake Slack Web API, standalone")]
struct Args {
    /// Channels (every third private, the last archived).
    #[arg(default_value_t = 200)]
    channels: usize,
    /// Top-level messages in each channel.
    #[arg(default_value_t = 500)]
    messages_per_channel: usize,
    /// Answer every Nth request 429 `ratelimited` with `Retry-After: 1` (0: never).
    #[arg(default_value_t = 0)]
    rate_limit_every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        channels,
        messages_per_channel: per_channel,
        rate_limit_every,
    } = Args::parse();
    let fake = FakeSlack::start(SlackConfig {
        channels,
        messages: channels * per_channel,
        not_member_every: 0,
        thread_every: 0,
        max_limit: 1000,
        ..Default::default()
    })
    .await;
    fake.knobs.set_rate_limit_every(rate_limit_every);
    let origin = fake.url.trim_end_matches("/api").to_string();
    let hello = serde_json::json!({"url": fake.url, "origin": origin, "token": fake.token(),
        "channels": channels, "messages": channels * per_channel, "rate_limit_every": rate_limit_every});
    println!("{hello}");
    tokio::signal::ctrl_c().await?;
    println!(
        "{}",
        serde_json::json!({"requests": fake.counters.by_route(), "rate_limited": fake.counters.rate_limited.load(std::sync::atomic::Ordering::SeqCst)})
    );
    Ok(())
}
