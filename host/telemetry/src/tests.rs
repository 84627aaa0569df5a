use std::time::Duration;

use super::*;

fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let want = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.parse().ok())
}

#[test]
fn families_are_encoded_in_the_prometheus_text_format() {
    let m = Metrics::new();
    m.run_ended("github", "succeeded", Duration::from_secs(3));
    m.committed("github", "issues", 20_000, 1 << 20, 2);
    m.committed("github", "issues", 5, 10, 1);
    m.plugin_call("github", "sync", Duration::from_millis(40));
    m.outbound_request("github", "api.github.com", "200");
    m.retry("github", Duration::from_millis(500));
    m.rate_limit_wait("github", Duration::from_secs(2));
    m.plugin_load_failed();
    m.connection_closed_for_room();
    m.connection_closed_for_room();
    let text = m
        .encode(Snapshot {
            queued_runs: 3,
            running_runs: 2,
            staging_bytes: 4096,
            call_slots_in_use: 24,
            call_slots_waiting: 7,
            memory_pages_in_use: 418,
            memory_pages_waiting: 1,
        })
        .unwrap();
    let c = r#"connector="github",stream="issues""#;
    assert_eq!(
        sample(
            &text,
            "sluice_runs_total",
            r#"connector="github",outcome="succeeded""#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "sluice_committed_records_total", c),
        Some(20_005.0)
    );
    assert_eq!(
        sample(&text, "sluice_committed_bytes_total", c),
        Some(1048586.0)
    );
    assert_eq!(sample(&text, "sluice_committed_files_total", c), Some(3.0));
    assert_eq!(
        sample(
            &text,
            "sluice_run_duration_seconds_count",
            r#"connector="github""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_plugin_call_duration_seconds_bucket",
            r#"plugin="github",export="sync",le="0.08""#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "sluice_outbound_requests_total",
            r#"plugin="github",host="api.github.com",status="200""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_outbound_retry_wait_seconds_total",
            r#"plugin="github""#
        ),
        Some(0.5)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_outbound_rate_limit_wait_seconds_total",
            r#"plugin="github""#
        ),
        Some(2.0)
    );
    for (line, value) in [
        ("sluice_plugin_load_failures_total ", "1"),
        ("sluice_queued_runs ", "3"),
        ("sluice_running_runs ", "2"),
        ("sluice_staging_bytes ", "4096"),
        ("sluice_plugin_call_slots_in_use ", "24"),
        ("sluice_plugin_call_slots_waiting ", "7"),
        ("sluice_plugin_memory_pages_in_use ", "418"),
        ("sluice_plugin_memory_pages_waiting ", "1"),
        ("sluice_http_connections_closed_for_room_total ", "2"),
    ] {
        assert!(
            text.contains(&format!("\n{line}{value}\n")),
            "{line}: {text}"
        );
    }
    assert!(text.contains("# TYPE sluice_run_duration_seconds histogram"));
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(rss > 1_000_000.0, "{rss}");
}

#[test]
fn plugin_named_labels_are_sanitized_and_capped() {
    assert_eq!(sanitize("a\"b\nc{}"), "a_b_c__");
    assert_eq!(sanitize(""), "_");
    assert_eq!(sanitize(&"x".repeat(500)).len(), MAX_LABEL_CHARS);
    let cap = LabelCap::new(2);
    assert_eq!(cap.admit("one"), "one");
    assert_eq!(cap.admit("two"), "two");
    assert_eq!(cap.admit("three"), OTHER);
    assert_eq!(cap.admit("one"), "one", "admitted values stay");

    let m = Metrics::new();
    for i in 0..(MAX_STREAMS + 50) {
        m.committed("c", &format!("stream-{i}"), 1, 1, 1);
    }
    let text = m.encode(Snapshot::default()).unwrap();
    let series = text
        .lines()
        .filter(|l| l.starts_with("sluice_committed_records_total{"))
        .count();
    assert_eq!(series, MAX_STREAMS + 1, "capped, plus the _other series");
    assert_eq!(
        sample(
            &text,
            "sluice_committed_records_total",
            r#"connector="c",stream="_other""#
        ),
        Some(50.0)
    );
}

#[test]
fn dir_bytes_sums_files_below() {
    let d = std::env::temp_dir().join(format!("sluice-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(d.join("run/items")).unwrap();
    std::fs::write(d.join("a"), [0u8; 10]).unwrap();
    std::fs::write(d.join("run/items/p.parquet"), [0u8; 1000]).unwrap();
    assert_eq!(dir_bytes(&d), 1010);
    std::fs::remove_dir_all(&d).unwrap();
    assert_eq!(dir_bytes(&d), 0);
}
