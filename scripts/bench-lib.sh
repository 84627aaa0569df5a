# Sourced by the bench scripts: submit a run to a local `sluice serve` and wait for its end.

# run_to_end PORT TOKEN BODY: POSTs the run, polls it every 50 ms, prints its final JSON.
run_to_end() {
  local port=$1 token=$2 body=$3 run r s
  run=$(curl -sf -XPOST "http://127.0.0.1:$port/internal/mirror-connections/runs" \
    -H "x-connect-service-token: $token" -H 'content-type: application/json' -d "$body" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  while :; do
    r=$(curl -sf "http://127.0.0.1:$port/internal/mirror-connections/runs/$run" -H "x-connect-service-token: $token")
    s=$(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    [ "$s" = queued ] || [ "$s" = running ] || break
    sleep 0.05
  done
  echo "$r"
}
