//! Test support: where the built plugins and binary are, local fake upstreams, and a
//! handle on a running `sluice serve`.

pub mod fakes;
pub mod mirror;
pub mod postgres;
pub mod s3;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory `scripts/build-plugins.sh` wrote the components to.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_PLUGIN_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sluice/plugins"));
    assert!(
        dir.join("probe.wasm").is_file(),
        "no built plugins in {}: run scripts/build-plugins.sh (scripts/dev.sh test does)",
        dir.display()
    );
    dir
}

/// A built plugin by file stem, e.g. `probe`.
pub fn plugin(name: &str) -> PathBuf {
    plugin_dir().join(format!("{name}.wasm"))
}

/// The `sluice` binary cargo built next to this test.
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("sluice");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p sluice` (scripts/dev.sh test does)",
        bin.display()
    );
    bin
}

/// Serves `router` on an ephemeral loopback port until the test ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    addr
}

/// The `run_id` of a `POST /runs` answer.
pub async fn run_id_of(r: reqwest::Response) -> String {
    r.json::<serde_json::Value>().await.expect("json")["run_id"]
        .as_str()
        .expect("run_id")
        .to_string()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `sluice serve`, killed when dropped.
pub struct Service {
    pub child: Child,
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub log: PathBuf,
}

impl Service {
    /// Starts the binary with `env` on a free port and waits for `/ready`.
    pub async fn start(data_dir: &Path, plugins_dir: &Path, env: &[(&str, &str)]) -> Self {
        let svc = Self::spawn(data_dir, plugins_dir, env);
        svc.wait_ready().await;
        svc
    }

    /// Starts the binary with `env` on a free port, without waiting for anything.
    pub fn spawn(data_dir: &Path, plugins_dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let token = "test-token-0123456789abcdef".to_string();
        let log = data_dir.join(format!("service-{port}.log"));
        std::fs::create_dir_all(data_dir).expect("data dir");
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "LD_LIBRARY_PATH",
                std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default(),
            )
            .env("PORT", port.to_string())
            .env("CONNECT_SERVICE_TOKEN", &token)
            .env("SLUICE_DATA_DIR", data_dir)
            .env("PLUGINS_DIR", plugins_dir)
            .env("SLUICE_ALLOW_PRIVATE_ADDRESSES", "loopback")
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn sluice");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            token,
            data_dir: data_dir.into(),
            plugins_dir: plugins_dir.into(),
            log,
        }
    }

    /// Waits until `/ready` (the first plugin scan done: every file compiled, one compile at a
    /// time in the whole service). Generous, not a speed check: a fresh data directory compiles
    /// every plugin, and seven of them with the interpreter components took over 60 s under a
    /// cold CI's load (3 services of one test binary compiling at once on 2 cores).
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(r) = client.get(format!("{}/ready", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "service not ready; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An authenticated request builder.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("x-connect-service-token", &self.token)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .header("x-connect-service-token", &self.token)
    }

    /// `GET path` with the service token, its body as JSON (panics on a transport error or a
    /// body that is not JSON: a test failure).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// The value of an unlabelled sample of `GET /metrics` (`name value`), `None` when the
    /// service has no such sample.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .get("/metrics")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// A run's status record (`GET /runs/{id}`).
    pub async fn run_status(&self, run_id: &str) -> serde_json::Value {
        self.get_json(&format!("/internal/mirror-connections/runs/{run_id}"))
            .await
    }

    /// Submits a run (`POST /internal/mirror-connections/runs` with `body`), asserts it was
    /// accepted (202), and waits for its end ([`Service::wait_run`]): the run's final record.
    pub async fn run_to_end(&self, body: &serde_json::Value) -> serde_json::Value {
        let r = self
            .post("/internal/mirror-connections/runs")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
        self.wait_run(&run_id_of(r).await).await
    }

    /// Polls a run until it is no longer queued or running. The limit is generous: the big
    /// syncs of the tests may share two cores with another test.
    pub async fn wait_run(&self, run_id: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let r = self.run_status(run_id).await;
            let status = r["status"].as_str().unwrap_or("");
            if status != "queued" && status != "running" {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} did not finish: {r}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal (`STOP`, `CONT`, …) without waiting for anything.
    pub fn send_signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.child.id());
    }

    /// Sends a signal and waits for the process to exit.
    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback upstream speaking raw HTTP/1.1: each request's head is read, `answer(path)` is
/// written back as is (status line, headers and body: what no HTTP library would send) and the
/// connection closed. Returns its base URL.
pub async fn raw_upstream(answer: fn(&str) -> Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = sock.write_all(&answer(&path)).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}
