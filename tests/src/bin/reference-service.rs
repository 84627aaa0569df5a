//! The reference internal service (`sluice_tests::fakes::internal_service`) as a standalone
//! server: for `sluice service check` by hand, and for `scripts/bench-services.sh`. Prints one
//! JSON line with its URL, then serves until killed.
//!
//! Usage: `reference-service --secret-env VAR [--port N] [--orders N] [--fault NAME[=V]]...`
//! (faults: see `Faults::apply`).

use sluice_tests::fakes::internal_service::{Faults, ReferenceService};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut port = 0u16;
    let mut orders = 500usize;
    let mut secret_env = None;
    let mut faults = Faults::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--port" => port = value()?.parse()?,
            "--orders" => orders = value()?.parse()?,
            "--secret-env" => secret_env = Some(value()?),
            "--fault" => faults.apply(&value()?).map_err(anyhow::Error::msg)?,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let var = secret_env.ok_or_else(|| anyhow::anyhow!("--secret-env VAR is required"))?;
    let secret = std::env::var(&var).map_err(|_| anyhow::anyhow!("{var} is not set"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let svc = ReferenceService::serve(listener, &secret, orders, faults);
    println!("{}", serde_json::json!({"url": svc.url}));
    tokio::signal::ctrl_c().await?;
    Ok(())
}
