#!/usr/bin/env python3
"""Driver of scripts/bench-replicas.sh: submits runs to Sluice replicas and reads their records.

    replicas.py load  OUT TOKEN PORTS BODY_FILE RUNS      RUNS runs round-robin, then wait for all
    replicas.py claim OUT TOKEN PORTS BODY_FILE RUNS      RUNS runs one at a time on an idle cluster

PORTS is a comma list of the replicas' ports. BODY_FILE holds the JSON body of `POST runs` with
`{connection}` where the connection id goes. Writes every final run record and the wall time
(first submission to last end seen) and the number of `GET runs` it made as one JSON document to OUT.
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


polls = 0


def wait(ids):
    """One `GET runs` (one list read, through the replicas in turn) every 0.2 s until every
    run of `ids` has ended: the bench's own load on the database stays small and countable."""
    global polls
    want = set(ids)
    while True:
        status, answer = call(ports[polls % len(ports)], "GET", "/runs")
        polls += 1
        if status == 200:
            done = {r["run_id"]: r for r in answer["runs"] if r["run_id"] in want and r["status"] in TERMINAL}
            if len(done) == len(want):
                return [done[i] for i in ids]
        time.sleep(0.2)


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
json.dump({"wall_s": wall, "polls": polls, "runs": records}, open(out, "w"))
