//! The reference internal service (`sluice_tests::fakes::internal_service`) as a standalone
//! server: for `sluice service check` by hand, and for `scripts/bench-services.sh`. Prints one
//! JSON line with its URL, then serves until killed.

use clap::Parser;
use sluice_tests::fakes::internal_service::{Faults, ReferenceService};

/// A reference implementation of Sluice's internal-service protocol
/// (`docs/internal-service-protocol.yaml`) on 127.0.0.1, with a purchase-order data API:
/// `GET /api/me` and `GET /api/purchase-orders` (`{data, next}`, 50 a page), both with
/// `Authorization: Bearer <issued key>`. Prints `{"url": …}` once listening.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The environment variable holding the shared secret the service accepts.
    #[arg(long)]
    secret_env: String,
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Purchase orders the data API serves.
    #[arg(long, default_value_t = 500)]
    orders: usize,
    /// A way to misbehave, repeatable: wrong-secret-status=CODE, ignore-ttl,
    /// revoke-not-idempotent, revoked-key-works, slow-health=MS, slow-exchange=MS,
    /// malformed-exchange, exchange-status=CODE, refuse-user=EMAIL, no-auth-accepted,
    /// token-id-is-key, refusal-echoes-secret, redirect-to=URL, health-not-json,
    /// revoke-answers=KIND, exchange-answers=KIND, health-answers=KIND (a 200 that is not the
    /// protocol's answer; KIND: html, status-error, no-status, empty, text).
    #[arg(long = "fault", value_name = "NAME[=VALUE]")]
    faults: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut faults = Faults::default();
    for f in &args.faults {
        faults.apply(f).map_err(anyhow::Error::msg)?;
    }
    let var = &args.secret_env;
    let secret = std::env::var(var).map_err(|_| anyhow::anyhow!("{var} is not set"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let svc = ReferenceService::serve(listener, &secret, args.orders, faults);
    println!("{}", serde_json::json!({"url": svc.url}));
    tokio::signal::ctrl_c().await?;
    Ok(())
}
