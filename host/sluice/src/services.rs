//! The internal services at the edges: building them for `serve`, and `sluice service check`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sluice_runtime::outbound::{Outbound, OutboundConfig};
use sluice_runtime::policy::{AddressGrant, OperatorPolicy};
use sluice_services::check::{CheckTarget, Outcome};
use sluice_services::{ClientConfig, ServiceClient, ServiceRegistry, Services, SharedSecret};

/// The most bytes a service's answer may have (a token answer is a few hundred).
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// The outbound settings of service calls: the operator's policy like plugin traffic, its own
/// timeout, no rate-limit waits (a connect is interactive: a 429 goes back at once), few and
/// short retries (only `token-revoke` is sent as idempotent).
fn outbound_config(timeout: Duration) -> OutboundConfig {
    OutboundConfig {
        connect_timeout: timeout.min(Duration::from_secs(5)),
        request_timeout: timeout,
        max_response_bytes: MAX_ANSWER_BYTES,
        max_attempts: 3,
        max_redirects: 0,
        max_rate_limit_waits: 0,
        backoff_base: Duration::from_millis(100),
        hubspot_search_interval: Duration::ZERO,
        ..OutboundConfig::default()
    }
}

/// The registry of `file`, watched, and the client that speaks to its services.
pub fn start(
    file: Option<PathBuf>,
    policy: OperatorPolicy,
    timeout: Duration,
) -> anyhow::Result<Arc<Services>> {
    let outbound = Outbound::new(policy, outbound_config(timeout))
        .context("building the outbound client of internal services")?;
    let registry = ServiceRegistry::open(file);
    match registry.watch() {
        Ok(Some(_)) => {}
        Ok(None) => tracing::info!("SERVICES_FILE is not set: no internal services"),
        Err(e) => tracing::error!("cannot watch SERVICES_FILE; hot reload is off: {e}"),
    }
    Ok(Services::new(
        registry,
        ServiceClient::new(Arc::new(outbound), ClientConfig { timeout }),
    ))
}

/// `sluice service check`: the protocol conformance of an internal service.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The service's base URL (the protocol is under `{base_url}/api/internal/`).
    pub base_url: String,
    /// The environment variable holding the shared secret (never given on the command line).
    #[arg(long)]
    pub secret_env: String,
    /// A path of the service's data API, relative to the base URL, that must accept an issued
    /// key as `Authorization: Bearer …` (and refuse it once revoked).
    #[arg(long, default_value = "api/me")]
    pub probe_path: String,
    /// The user the test keys are issued for (they are revoked before the check ends).
    #[arg(long, default_value = "sluice-conformance@example.com")]
    pub user_email: String,
    /// Seconds one call may take.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Print the report as JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks; exits 1 when one fails.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let secret = SharedSecret::from_env(&args.secret_env)
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("{} is not set", args.secret_env))?;
    let base_url = sluice_services::model::check_base_url(&args.base_url)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.base_url))?;
    // The checker runs where its user is: any destination, loopback and private addresses
    // included (link-local stays refused).
    let policy = OperatorPolicy {
        addresses: AddressGrant::parse("loopback,private").map_err(anyhow::Error::msg)?,
        ..OperatorPolicy::default()
    };
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let outbound = Outbound::new(policy, outbound_config(timeout))?;
    let client = ServiceClient::new(Arc::new(outbound), ClientConfig { timeout });
    let target = CheckTarget {
        base_url,
        secret,
        probe_path: args.probe_path,
        user_email: args.user_email,
    };
    let report = sluice_services::check::run(&client, &target).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in &report.checks {
            let word = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            println!("{word} {:<22} {:>5} ms  {}", c.name, c.ms, c.detail);
        }
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.outcome != Outcome::Pass)
        .map(|c| c.name)
        .collect();
    if failed.is_empty() {
        println!("conformance: all {} checks passed", report.checks.len());
        Ok(())
    } else {
        eprintln!("conformance: FAILED: {}", failed.join(", "));
        std::process::exit(1);
    }
}
