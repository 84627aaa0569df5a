#!/usr/bin/env python3
"""/health's latency while the service is under helper-30's containment attacks (figures, not a test).

  slowloris  N connections (2100) that send a request head one byte a second and reconnect
             whenever the service closes them, against SLUICE_MAX_CONNECTIONS=CAP (2048) and the
             default 10 s header-read timeout (finding F8)
  wide       two runs at once of the hostile test connector's `wide` mode: 20,000 declared
             columns, 400 records that fill all of them (finding F6)

A prober opens a new connection every 0.25 s, as a kubelet does, sends GET /health and waits
up to 5 s (the probes' timeout); it prints the count, the median, the 95th percentile, the
slowest, and the probes over 1 s and over 5 s (failed).

Usage: scripts/bench-probes.py [slowloris|wide|both] [--bin PATH] [--secs 40] [--pod]
  --bin    the sluice binary (default $CARGO_TARGET_DIR/release/sluice): compare two builds
           by running the script once with each
  --pod    confine the service like the pod: cgroup v1 CPU quota 50 ms per 100 ms (500m) under
           /sys/fs/cgroup/cpu/sluice-bench-probes (needs root and cgroup v1) and
           TOKIO_WORKER_THREADS=1 (what Tokio sizes its pool to under that quota)
Needs the built plugins ($SLUICE_PLUGIN_OUT/hostile.wasm). Runs on a free loopback port with
a temporary data directory; kills the service at the end.
"""
import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TOKEN = "bench-probes-token-0123456789abcdef"
CGROUP = "/sys/fs/cgroup/cpu/sluice-bench-probes"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    started = []

    def __init__(self, binary, env, pod):
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="bench-probes-")
        plugins = os.path.join(self.dir.name, "plugins")
        os.makedirs(plugins)
        out = os.environ.get("SLUICE_PLUGIN_OUT", "/var/cache/sluice/plugins")
        with open(os.path.join(out, "hostile.wasm"), "rb") as f:
            data = f.read()
        with open(os.path.join(plugins, "hostile.wasm"), "wb") as f:
            f.write(data)  # a copy: never write through to the shared build output
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "PORT": str(self.port),
            "CONNECT_SERVICE_TOKEN": TOKEN,
            "SLUICE_DATA_DIR": os.path.join(self.dir.name, "data"),
            "PLUGINS_DIR": plugins,
            "RUST_LOG": "warn",
        }
        full_env.update(env)
        pre = None
        if pod:
            full_env["TOKIO_WORKER_THREADS"] = "1"
            os.makedirs(CGROUP, exist_ok=True)
            with open(f"{CGROUP}/cpu.cfs_period_us", "w") as f:
                f.write("100000")
            with open(f"{CGROUP}/cpu.cfs_quota_us", "w") as f:
                f.write("50000")

            def pre():
                with open(f"{CGROUP}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))

        self.log = open(os.path.join(self.dir.name, "serve.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "serve"], env=full_env, stdout=subprocess.DEVNULL, stderr=self.log, preexec_fn=pre
        )
        Service.started.append(self)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url("/ready"), timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                time.sleep(0.2)
        raise SystemExit(f"the service did not get ready; log in {self.log.name}")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def api(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method=method)
        req.add_header("x-connect-service-token", TOKEN)
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


def probe_once(port):
    """Seconds a GET /health on a new connection took, or None past 5 s or on an error."""
    t = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(max(0.01, 5 - (time.monotonic() - t)))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            got = b""
            while b'{"status":"ok"}' not in got:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                got += chunk
                s.settimeout(max(0.01, 5 - (time.monotonic() - t)))
        return time.monotonic() - t
    except OSError:
        return None


def probe_while(port, running):
    results = []
    while running():
        t = time.monotonic()
        results.append(probe_once(port))
        time.sleep(max(0, 0.25 - (time.monotonic() - t)))
    return results


def report(name, results):
    ok = sorted(r for r in results if r is not None)
    failed = len(results) - len(ok)
    if not ok:
        print(f"{name}: {len(results)} probes, all failed (> 5 s or refused)")
        return
    p95 = ok[min(len(ok) - 1, int(len(ok) * 0.95))]
    print(
        f"{name}: {len(results)} probes, median {statistics.median(ok) * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms, slowest answered {ok[-1] * 1000:.1f} ms, "
        f"> 1 s: {sum(r > 1 for r in ok) + failed}, failed (> 5 s): {failed}"
    )


def slowloris(binary, secs, pod, n, cap):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 512)), hard))
    svc = Service(binary, {"SLUICE_MAX_CONNECTIONS": str(cap)}, pod)
    end = time.time() + secs
    opened = [0]

    def one():
        while time.time() < end:
            try:
                s = socket.create_connection(("127.0.0.1", svc.port), timeout=30)
                opened[0] += 1
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                s.settimeout(1)
                while time.time() < end:
                    s.sendall(b"X")
                    try:
                        s.recv(1, socket.MSG_PEEK)
                        break  # closed, or an answer (then it closes)
                    except socket.timeout:
                        pass
                s.close()
            except OSError:
                time.sleep(0.2)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(min(5, secs / 4))  # the connections are open and the cap is reached
    results = probe_while(svc.port, lambda: time.time() < end)
    report(f"slowloris ({n} connections, cap {cap}, {opened[0]} opened)", results)
    svc.stop()


def wide(binary, pod):
    svc = Service(binary, {}, pod)
    config = {"mode": "wide", "n": 20000, "records": 400}
    runs = []
    for conn in ("wide-a", "wide-b"):
        r = svc.api(
            "POST",
            "/internal/mirror-connections/runs",
            {
                "connection_id": conn,
                "connector": "hostile",
                "config": config,
                "credentials": {"token": "x"},
                "storage": {"bucket": "local", "prefix": "bench-probes"},
            },
        )
        runs.append(r["run_id"])
    state = {"done": False}

    def watch():
        while True:
            try:
                ended = [svc.api("GET", f"/internal/mirror-connections/runs/{r}") for r in runs]
            except OSError:  # the service answered nothing within 60 s: ask again
                continue
            if all(e["status"] not in ("queued", "running") for e in ended):
                state["ended"] = ended
                state["done"] = True
                return
            time.sleep(0.5)

    t0 = time.time()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results = probe_while(svc.port, lambda: not state["done"])
    statuses = [(e["status"], e.get("streams", {}).get("items", {}).get("committed_rows")) for e in state["ended"]]
    report(f"wide (two runs of 20,000 columns, {time.time() - t0:.1f} s, {statuses})", results)
    svc.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="both", choices=["slowloris", "wide", "both"])
    target = os.environ.get("CARGO_TARGET_DIR", "/var/cache/sluice/target")
    ap.add_argument("--bin", default=os.path.join(target, "release", "sluice"))
    ap.add_argument("--secs", type=float, default=40)
    ap.add_argument("--pod", action="store_true")
    ap.add_argument("--connections", type=int, default=2100)
    ap.add_argument("--cap", type=int, default=2048)
    a = ap.parse_args()
    print(f"binary {a.bin}{' (pod: 500m CPU, 1 Tokio worker)' if a.pod else ''}; load average {os.getloadavg()[0]:.1f}")
    sys.stdout.flush()
    try:
        if a.what in ("slowloris", "both"):
            slowloris(a.bin, a.secs, a.pod, a.connections, a.cap)
        if a.what in ("wide", "both"):
            wide(a.bin, a.pod)
    finally:
        for svc in Service.started:  # also when the service stopped answering (a timeout)
            if svc.proc.poll() is None:
                svc.proc.kill()
                svc.proc.wait()
        if a.pod:
            try:
                os.rmdir(CGROUP)
            except OSError:
                pass


if __name__ == "__main__":
    main()
