#!/usr/bin/env bash
# The demo: serve fixtures/demo on 127.0.0.1, pipe fixtures/demo.jsonl through fetchmux,
# show the events and the files, and check the outcome is the expected one
# (10 done, 1 checksum_mismatch, 1 http_status 404).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/fetchmux"
work=$(mktemp -d /tmp/fetchmux-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root/fixtures/demo" \
  >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done

echo "== requests (fixtures/demo.jsonl, served from http://127.0.0.1:$port)"
sed -e "s|@BASE@|http://127.0.0.1:$port|g" -e "s|@OUT@|$work/out|g" "$root/fixtures/demo.jsonl" \
  >"$work/requests.jsonl"
echo "== events"
set +e
"$bin" --max-parallel 4 --max-per-host 4 <"$work/requests.jsonl" | tee "$work/events.jsonl"
status=${PIPESTATUS[0]}
set -e
echo "== exit status: $status"
echo "== files in $work/out"
(cd "$work/out" && find . -type f | sort | xargs sha256sum)

python3 - "$work/events.jsonl" "$status" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
done = [e for e in events if e["event"] == "done"]
failed = {e["id"]: e["error"] for e in events if e["event"] == "failed"}
assert events[0]["event"] == "hello" and events[-1]["event"] == "bye", "hello first, bye last"
assert len(done) == 10, f"expected 10 done, got {len(done)}"
assert failed["bad-digest"]["kind"] == "checksum_mismatch", failed
assert failed["missing"]["kind"] == "http_status" and failed["missing"]["status"] == 404, failed
assert sys.argv[2] == "1", "exit status 1: some downloads failed"
print("demo: OK (10 done, 1 checksum_mismatch, 1 http_status 404, exit status 1)")
PY
