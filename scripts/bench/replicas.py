#!/usr/bin/env python3
"""Driver of scripts/bench-replicas.sh: submits runs to Sluice replicas and reads their records.

    replicas.py load  OUT TOKEN PORTS BODY_FILE RUNS      RUNS runs round-robin, then wait for all
    replicas.py claim OUT TOKEN PORTS BODY_FILE RUNS      RUNS runs one at a time on an idle cluster

PORTS is a comma list of the replicas' ports. BODY_FILE holds the JSON body of `POST runs` with
`{connection}` where the connection id goes. Writes every final run record and the wall time
(first submission to last end seen) as one JSON document to OUT.
"""

import json
import sys
import time
import urllib.error
import urllib.request

mode, out, token, ports, body_file, runs = sys.argv[1:7]
ports = [int(p) for p in ports.split(",")]
runs = int(runs)
template = open(body_file).read()
TERMINAL = {"succeeded", "failed", "cancelled"}


def call(port, method, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/internal/mirror-connections{path}",
        method=method,
        data=None if body is None else body.encode(),
        headers={"x-connect-service-token": token, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def submit(i, connection):
    status, answer = call(ports[i % len(ports)], "POST", "/runs", template.replace("{connection}", connection))
    if status != 202:
        sys.exit(f"POST runs answered {status}: {answer}")
    return answer["run_id"]


def wait(ids):
    done = {}
    k = 0
    while len(done) < len(ids):
        for run_id in ids:
            if run_id in done:
                continue
            # Read through the replicas in turn: any of them answers any run.
            status, r = call(ports[k % len(ports)], "GET", f"/runs/{run_id}")
            k += 1
            if status == 200 and r.get("status") in TERMINAL:
                done[run_id] = r
        if len(done) < len(ids):
            time.sleep(0.1)
    return [done[i] for i in ids]


stamp = time.time_ns()
t0 = time.monotonic()
if mode == "load":
    ids = [submit(i, f"bench-{stamp}-{i}") for i in range(runs)]
    records = wait(ids)
elif mode == "claim":
    records = []
    for i in range(runs):
        records += wait([submit(i, f"claim-{stamp}-{i}")])
else:
    sys.exit(f"unknown mode {mode}")
wall = time.monotonic() - t0
json.dump({"wall_s": wall, "runs": records}, open(out, "w"))
