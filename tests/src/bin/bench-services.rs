//! Load generator of `scripts/bench-services.sh`: connect/disconnect round trips against a
//! running `sluice serve` (whose registry points at the reference service). Prints one JSON line:
//! round trips per second and p50/p99 of connect, disconnect and the round trip, in ms.
//!
//! Usage: `bench-services URL TOKEN SERVICE ROUNDS CONCURRENCY`

use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(mut v: Vec<Duration>) -> Value {
    v.sort();
    json!({"p50_ms": percentile(&v, 0.50), "p99_ms": percentile(&v, 0.99), "max_ms": percentile(&v, 1.0)})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, service, rounds, concurrency] = args.as_slice() else {
        anyhow::bail!("usage: bench-services URL TOKEN SERVICE ROUNDS CONCURRENCY");
    };
    let rounds: usize = rounds.parse()?;
    let concurrency: usize = concurrency.parse::<usize>()?.max(1);
    let client = reqwest::Client::new();
    let connect_url = format!("{url}/internal/services/{service}/connect");
    let disconnect_url = format!("{url}/internal/services/{service}/disconnect");
    // Warm-up: connections, the first exchange.
    for i in 0..20 {
        one(&client, token, &connect_url, &disconnect_url, i).await?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, token, c, d) = (
            client.clone(),
            token.clone(),
            connect_url.clone(),
            disconnect_url.clone(),
        );
        let n = rounds / concurrency + usize::from(w < rounds % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(one(&client, &token, &c, &d, w * 1_000_000 + i).await?);
            }
            anyhow::Ok(out)
        }));
    }
    let (mut connects, mut disconnects, mut trips) = (vec![], vec![], vec![]);
    for t in tasks {
        for (c, d) in t.await?? {
            connects.push(c);
            disconnects.push(d);
            trips.push(c + d);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "rounds": trips.len(),
            "concurrency": concurrency,
            "round_trips_per_s": trips.len() as f64 / elapsed,
            "connect": summary(connects),
            "disconnect": summary(disconnects),
            "round_trip": summary(trips),
        })
    );
    Ok(())
}

/// One connect and its disconnect; their latencies.
async fn one(
    client: &reqwest::Client,
    token: &str,
    connect_url: &str,
    disconnect_url: &str,
    i: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let t = Instant::now();
    let r = client
        .post(connect_url)
        .header("x-connect-service-token", token)
        .json(&json!({"user_email": format!("bench-{i}@corp.example"), "ttl_days": 1}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "connect answered {}", r.status());
    let body: Value = r.json().await?;
    let connect = t.elapsed();
    let token_id = body["token_id"].as_str().unwrap_or_default().to_string();
    let t = Instant::now();
    let r = client
        .post(disconnect_url)
        .header("x-connect-service-token", token)
        .json(&json!({"token_id": token_id}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "disconnect answered {}", r.status());
    Ok((connect, t.elapsed()))
}
