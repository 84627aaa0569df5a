//! The pools every plugin call takes from: the plugin memory budget
//! (`SLUICE_PLUGIN_MEMORY_BUDGET_MIB`), of which a call holds what its memories and tables grow
//! to, not its limit, and the call slots (`SLUICE_MAX_CONCURRENT_CALLS`), both shared fairly
//! between plugins. Containment findings of outside attacks on the 512 MiB / 500m pod: three
//! `validate` calls against an upstream that never answered reserved 3 × 64 MiB, the whole
//! budget, for their deadline (F5); 32 such calls of one connector held every call slot; in both
//! every other call waited for their deadline.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_runtime::policy::{AddressGrant, OperatorPolicy};
use sluice_runtime::{CallError, CallOptions, Runtime, RuntimeConfig};
use sluice_tests::{Service, plugin, run_id_of};

const MIB: u64 = 1 << 20;

/// A loopback upstream that accepts connections, keeps them open and never answers; the
/// count of connections it accepted.
async fn silent_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    (format!("http://{addr}/never"), accepted)
}

async fn until_accepted(accepted: &AtomicUsize, n: usize) {
    let t = Instant::now();
    while accepted.load(Ordering::SeqCst) < n {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the upstream saw {} of {n} requests",
            accepted.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn plugins_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin("probe"), dir.join("probe.wasm")).unwrap();
    dir
}

/// `POST validate` of `probe` with `config`; the answer and how long it took.
async fn validate(base: &str, token: &str, config: Value) -> (Value, Duration) {
    validate_of(base, token, "probe", config).await
}

/// `POST validate` of `connector` with `config`; the answer and how long it took.
async fn validate_of(base: &str, token: &str, connector: &str, config: Value) -> (Value, Duration) {
    let t = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{base}/internal/mirror-connections/validate"))
        .header("x-connect-service-token", token)
        .json(&json!({"connector": connector, "config": config, "credentials": {"token": "t0ken-value"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "validate answered {}", r.status());
    (r.json().await.unwrap(), t.elapsed())
}

/// Waits until the upstream has accepted at least `n` connections and then none for a second
/// (the calls that got a slot all wait on it); their number.
async fn until_settled(accepted: &AtomicUsize, n: usize) -> usize {
    until_accepted(accepted, n).await;
    let mut last = accepted.load(Ordering::SeqCst);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = accepted.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Polls `GET /metrics` until `name` is `want`; panics after `within`.
async fn until_metric(svc: &Service, name: &str, want: f64, within: Duration) {
    let t = Instant::now();
    loop {
        let got = svc.metric(name).await;
        if got == Some(want) {
            return;
        }
        assert!(
            t.elapsed() < within,
            "{name} is {got:?}, not {want}, after {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The attack on the call slots, through the built binary with the default 32 slots: more
/// `validate` calls of `probe` than there are slots hang on an upstream that never answers.
/// Before, they took all 32 slots and a `validate` of any other plugin waited for their
/// deadline. Now `probe` alone gets three quarters of the slots (24: a busy plugin still gets
/// most of the pool) and the rest of its calls wait; a `validate` of another plugin answers at
/// once beside them (`probe-v01`: the frozen WIT 0.1.0 component, which every host since serves). `/metrics` shows the slots in use and waited for, and the memory held; when the
/// hung calls' clients go away, their slots come back long before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plugins_hung_calls_leave_call_slots_to_the_other_plugins() {
    const HUNG: usize = 40;
    const DEADLINE: Duration = Duration::from_secs(90);
    let (url, accepted) = silent_upstream().await;
    let root = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(root.path());
    std::fs::copy(plugin("probe-v01"), plugins.join("probe-v01.wasm")).unwrap();
    let svc = Service::start(
        &root.path().join("data"),
        &plugins,
        &[
            ("SLUICE_CALL_TIMEOUT_SECS", &DEADLINE.as_secs().to_string()),
            ("SLUICE_HTTP_TIMEOUT_SECS", "300"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let hung: Vec<_> = (0..HUNG)
        .map(|_| {
            let (base, token, url) = (svc.base.clone(), svc.token.clone(), url.clone());
            tokio::spawn(async move {
                validate(&base, &token, json!({"action": "fetch", "url": url})).await
            })
        })
        .collect();
    let holding = until_settled(&accepted, 24).await;

    let (v, took) = validate_of(&svc.base, &svc.token, "probe-v01", json!({"action": "ok"})).await;
    assert_eq!(v["valid"], true, "{v}");
    println!(
        "a validate of another plugin beside {holding} hung calls of probe answered in {took:?}"
    );
    // Generous (a loaded machine): before, it waited for the hung calls' deadline.
    assert!(
        took < DEADLINE / 4,
        "the validate of another plugin waited {took:?} (the hung calls' deadline is {DEADLINE:?})"
    );
    assert_eq!(holding, 24, "probe's calls got {holding} of the 32 slots");
    let wait = Duration::from_secs(30);
    until_metric(&svc, "sluice_plugin_call_slots_in_use", 24.0, wait).await;
    until_metric(
        &svc,
        "sluice_plugin_call_slots_waiting",
        (HUNG - 24) as f64,
        wait,
    )
    .await;
    let pages = svc
        .metric("sluice_plugin_memory_pages_in_use")
        .await
        .unwrap_or(0.0);
    // Each probe instance starts with a little over 1 MiB (16 pages); three quarters of the
    // 192 MiB budget is the most one plugin may hold.
    assert!(
        (24.0 * 16.0..=0.75 * 192.0 * 16.0).contains(&pages),
        "{pages} pages in use"
    );

    // The hung calls' clients go away: their calls stop, waiting or not.
    let gone = Instant::now();
    for h in &hung {
        h.abort();
    }
    until_metric(&svc, "sluice_plugin_call_slots_waiting", 0.0, DEADLINE / 3).await;
    until_metric(&svc, "sluice_plugin_call_slots_in_use", 0.0, DEADLINE / 3).await;
    until_metric(&svc, "sluice_plugin_memory_pages_in_use", 0.0, wait).await;
    println!(
        "every slot was free {:?} after the clients went away",
        gone.elapsed()
    );
    let (v, _) = validate(&svc.base, &svc.token, json!({"action": "ok"})).await;
    assert_eq!(v["valid"], true, "{v}");
}

/// The attack's input, through the built binary with the pod's memory settings (a 192 MiB
/// budget, 64 MiB for a plugin that declares none): three `validate` calls hang on an upstream
/// that never answers until their deadline. Another `validate` answers at once, and a run
/// starts and commits, while the three still hang (before, both waited for the first of the
/// three to give its 64 MiB back at its deadline: 28 s and 27.9 s in the attack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_hanging_on_a_silent_upstream_hold_up_no_other_call() {
    let (url, accepted) = silent_upstream().await;
    let root = tempfile::tempdir().unwrap();
    let svc = Service::start(
        &root.path().join("data"),
        &plugins_dir(root.path()),
        &[
            ("SLUICE_PLUGIN_MEMORY_BUDGET_MIB", "192"),
            ("SLUICE_PLUGIN_MEMORY_MIB", "128"),
            ("SLUICE_CALL_TIMEOUT_SECS", "12"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let hanging: Vec<_> = (0..3)
        .map(|_| {
            let (base, token, url) = (svc.base.clone(), svc.token.clone(), url.clone());
            tokio::spawn(async move {
                validate(&base, &token, json!({"action": "fetch", "url": url})).await
            })
        })
        .collect();
    until_accepted(&accepted, 3).await;
    let hung_at = Instant::now();

    let (v, took) = validate(&svc.base, &svc.token, json!({"action": "ok"})).await;
    assert_eq!(v["valid"], true, "{v}");
    println!("an unrelated validate beside three hanging ones answered in {took:?}");
    assert!(took < Duration::from_secs(4), "it waited {took:?}");

    let r = svc
        .post("/internal/mirror-connections/runs")
        .json(&json!({
            "connection_id": "beside-the-hanging", "connector": "probe",
            "config": {"count": 100}, "credentials": {"token": "t0ken-value"},
            "storage": {"bucket": "local", "prefix": "budget"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let run = run_id_of(r).await;
    let done = svc.wait_run(&run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["streams"]["items"]["committed_rows"], 100, "{done}");
    println!("a run beside them committed after {:?}", hung_at.elapsed());
    assert!(
        hanging.iter().all(|h| !h.is_finished()),
        "the run ended only after the hanging calls ({:?})",
        hung_at.elapsed()
    );

    // The three end at their deadline, as before.
    for h in hanging {
        let (v, _) = h.await.unwrap();
        assert_eq!(v["valid"], false, "{v}");
        assert_eq!(v["error"]["code"], "unreachable", "{v}");
    }
}

fn runtime(cache: &Path, budget_mib: u32, limit_mib: u32) -> Runtime {
    let mut cfg = RuntimeConfig::new(cache);
    cfg.memory_budget_mib = budget_mib;
    cfg.max_memory_mib = limit_mib;
    cfg.default_memory_mib = limit_mib;
    cfg.memory_growth_wait = Duration::from_millis(500);
    cfg.policy = OperatorPolicy {
        addresses: AddressGrant {
            loopback: true,
            private: false,
        },
        ..Default::default()
    };
    Runtime::new(cfg).unwrap()
}

fn opts(ms: u64) -> CallOptions {
    CallOptions {
        deadline: Duration::from_millis(ms),
        ..Default::default()
    }
}

/// A call that really grows past what the budget has left waits a bounded time, then gets an
/// error that names the setting, while the call holding the memory keeps it and a small call
/// still runs beside it; when the calls end the whole budget is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_grows_past_the_remaining_budget_is_refused_naming_the_setting() {
    let (url, accepted) = silent_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 48, 40);
    let p = rt.load_file(&plugin("probe")).await.unwrap();
    assert_eq!(rt.plugin_memory_in_use_bytes(), 0, "after the load's call");

    // 30 MiB held while it waits on the upstream.
    let holder = tokio::spawn({
        let p = p.clone();
        let url = url.clone();
        async move {
            p.validate(
                &json!({"action": "grow", "mib": 30, "url": url}),
                opts(8000),
            )
            .await
        }
    });
    until_accepted(&accepted, 1).await;
    let held = rt.plugin_memory_in_use_bytes();
    assert!((30 * MIB..40 * MIB).contains(&held), "held {held}");

    // 30 MiB more do not fit the 48: refused after the growth wait, with the setting named.
    let t = Instant::now();
    let e = p
        .validate(&json!({"action": "grow", "mib": 30}), opts(20_000))
        .await
        .unwrap_err();
    let waited = t.elapsed();
    assert_eq!(e.code(), "memory_budget", "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("SLUICE_PLUGIN_MEMORY_BUDGET_MIB (48 MiB"),
        "{msg}"
    );
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // What the refused call held went back with it; the holder keeps its own.
    assert_eq!(rt.plugin_memory_in_use_bytes(), held);
    // A call that fits runs beside the holder: its plugin may hold three quarters of the
    // budget (36 MiB), and this one needs about 3 MiB.
    let v = p
        .validate(&json!({"action": "grow", "mib": 2}), opts(10_000))
        .await
        .unwrap();
    assert_eq!(v["version"], "1.0.0", "{v}");

    let e = holder.await.unwrap().unwrap_err();
    assert!(matches!(e, CallError::Deadline(_)), "{e:?}");
    assert_eq!(rt.plugin_memory_in_use_bytes(), 0, "after every call ended");
    // The whole budget is back: one call may now take nearly all that one plugin may hold
    // (three quarters of the budget).
    p.validate(&json!({"action": "grow", "mib": 33}), opts(10_000))
        .await
        .unwrap();
    assert_eq!(rt.plugin_memory_in_use_bytes(), 0);
}

/// The pages a component starts with are taken from the budget before it instantiates: a call
/// whose initial pages the budget cannot hold waits for them within its deadline (holding
/// nothing), and runs once an earlier call gives them back. A 2 MiB budget holds one probe
/// instance (its initial memory is a little over 1 MiB), not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_its_initial_pages_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), 2, 2);
    let p = rt.load_file(&plugin("probe")).await.unwrap();
    let spinning = tokio::spawn({
        let p = p.clone();
        async move { p.validate(&json!({"action": "loop"}), opts(1500)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let initial = rt.plugin_memory_in_use_bytes();
    assert!(
        (MIB + 1..=2 * MIB).contains(&initial),
        "the premise: one probe instance starts with 1-2 MiB, not {initial}"
    );
    // Too short a deadline to outwait the spinner: refused at its own deadline.
    let t = Instant::now();
    let e = p
        .validate(&json!({"action": "ok"}), opts(300))
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::Deadline(_)), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Long enough: it runs once the spinner's pages are back.
    let t = Instant::now();
    p.validate(&json!({"action": "ok"}), opts(5000))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "did not wait: {:?}",
        t.elapsed()
    );
    assert!(spinning.await.unwrap().is_err());
    assert_eq!(rt.plugin_memory_in_use_bytes(), 0);
}
