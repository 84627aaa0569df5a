#!/usr/bin/env python3
"""Overhead of OpenTelemetry export (issue 12): two release `sluice serve`s side by side, one with
OTEL_EXPORTER_OTLP_ENDPOINT set (traces, and metrics every second, to a loopback OTLP/HTTP sink that
discards), one without (the Prometheus metrics are on in both), alternating rounds of the 20k-issue GitHub sync (tests/src/bin/fake-github.rs) into
Parquet on a running Garage (SLUICE_BENCH_S3_PORT, default 3910; this script starts none).
Prints records/s per round and the median ratio on/off (target >= 0.97).
Needs: cargo build --release --bin sluice --bin fake-github; scripts/build-plugins.sh.
Usage: . scripts/env.sh; python3 scripts/otel-overhead.py [rounds]"""
import http.server, json, os, socket, subprocess, sys, tempfile, threading, time, urllib.request

T = os.environ["CARGO_TARGET_DIR"] + "/release"
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
work = tempfile.mkdtemp(prefix="sluice-otel-overhead-")
received = {"posts": 0, "bytes": 0}

class OTLP(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); self.rfile.read(n)
        received["posts"] += 1; received["bytes"] += n
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
otlp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OTLP)
threading.Thread(target=otlp.serve_forever, daemon=True).start()

fake = subprocess.Popen([T + "/fake-github", "20000", "2"], stdout=subprocess.PIPE, text=True)
hello = json.loads(fake.stdout.readline())
os.makedirs(work + "/plugins")
subprocess.run(["cp", os.environ["SLUICE_PLUGIN_OUT"] + "/github.wasm", work + "/plugins/"], check=True)

def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(otel):
    p = port()
    env = {"PATH": os.environ["PATH"], "CONNECT_SERVICE_TOKEN": "bench-token-0123456789", "PORT": str(p),
           "SLUICE_DATA_DIR": f"{work}/data-{otel}", "PLUGINS_DIR": work + "/plugins",
           "SLUICE_ALLOW_PRIVATE_ADDRESSES": "loopback", "S3_ENDPOINT": "http://127.0.0.1:" + os.environ.get("SLUICE_BENCH_S3_PORT", "3910"), "RUST_LOG": "warn"}
    if otel:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp.server_address[1]}"
        # Metrics every second (default 60 s), so their export falls inside the rounds too.
        env["OTEL_METRIC_EXPORT_INTERVAL"] = "1000"
    proc = subprocess.Popen([T + "/sluice", "serve"], env=env, stderr=open(f"{work}/svc-{otel}.log", "w"))
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{p}/ready").status == 200: break
        except Exception: time.sleep(0.1)
    return proc, p

def call(p, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{p}{path}", method=method,
        data=json.dumps(body).encode() if body else None,
        headers={"x-connect-service-token": "bench-token-0123456789", "content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def round_(p, pid):
    # A connection per round: a run's record reads `succeeded` a moment before its connection
    # is released, so reusing one right away can meet a 409.
    body = {"connection_id": f"gh-{time.time_ns()}", "connector": "github", "streams": ["issues"],
            "config": {"api_url": hello["url"], "repositories": hello["repositories"]},
            "credentials": {"token": hello["token"]},
            "storage": {"bucket": "sluice-test", "prefix": f"bench-otel-ab/{time.time_ns()}",
                        "access_key_id": "GK5106e0a2b1c8d0e7a3f4b5c6",
                        "secret_access_key": "5c1ce0a7e5c2e4b1d8f9a6b3c0d7e4f1a8b5c2d9e6f3a0b7c4d1e8f5a2b9c6d3"}}
    c0, t0 = cpu(pid), time.time()
    run = call(p, "POST", "/internal/mirror-connections/runs", body)["run_id"]
    while True:
        r = call(p, "GET", f"/internal/mirror-connections/runs/{run}")
        if r["status"] not in ("queued", "running"): break
        time.sleep(0.05)
    t1, c1 = time.time(), cpu(pid)
    assert r["status"] == "succeeded", r
    n = r["streams"]["issues"]["committed_rows"]
    return n / (t1 - t0), c1 - c0

svcs = {False: start(False), True: start(True)}
res = {False: [], True: []}
try:
    for i in range(ROUNDS):
        for otel in ((False, True) if i % 2 == 0 else (True, False)):
            proc, p = svcs[otel]
            rps, cpus = round_(p, proc.pid)
            res[otel].append((rps, cpus))
            print(f"round {i} otel={'on ' if otel else 'off'} {rps:8.0f} records/s  cpu {cpus:.2f} s", flush=True)
    time.sleep(1)
finally:
    for proc, _ in svcs.values(): proc.terminate(); proc.wait()
    fake.terminate(); fake.wait()
    subprocess.run(["rm", "-rf", work])
med = lambda xs: sorted(xs)[len(xs) // 2]
off, on = med([r for r, _ in res[False]]), med([r for r, _ in res[True]])
coff, con = med([c for _, c in res[False]]), med([c for _, c in res[True]])
print(f"median records/s off {off:.0f} on {on:.0f} ratio on/off {on/off:.3f}; CPU s off {coff:.2f} on {con:.2f}; "
      f"OTLP posts {received['posts']} bytes {received['bytes']}; load {os.getloadavg()[0]:.1f}")
