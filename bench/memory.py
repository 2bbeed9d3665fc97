#!/usr/bin/env python3
"""Memory per queued download (scenario M of bench/bench.py; issue 13, item 2).

Submits N small downloads to fetchmux that stay unfinished, and reads the helper's peak
RSS (VmHWM in /proc/PID/status) once every one of them is in the helper:

- "queued": every URL points at a listening socket that never accepts (the kernel completes
  the handshake, nobody ever answers), with --max-parallel 1: one transfer hangs, N - 1 wait
  in the queue. The line after the N requests cancels an id nobody has; its `invalid` event
  says that every earlier line has been carried out (lines are carried out in order).
- "retry": every URL is answered 503 with `Retry-After: 600` (nginx, bench/nginx.conf.in,
  location /fmbench-503/), --max-retry-wait 600: once each download has been tried once
  (N `start` events, then a second for the last answers), all N wait on a retry timer.

Then SIGTERM: the run must end with status 143 and `bye`, N `failed` events of kind
`aborted`, and nothing left in the destination directory; otherwise the run fails.

Standalone: python3 bench/memory.py FETCHMUX N queued|retry [URL_BASE_OF_THE_503_LOCATION]
(prints one JSON object). Python 3 standard library only.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Seconds every step may take before the run counts as failed.
STEP_TIMEOUT = 300.0
# After the last first attempt started (retry mode): time for the last answers to arrive.
RETRY_SETTLE_S = 1.0


def request_lines(n, url_base, dest_dir):
    """N download lines of the usual shape of a package manager's request: id, URL, dest,
    size and SHA-256 (distinct for every file)."""
    for i in range(n):
        name = f"f{i:06d}.bin"
        sha = hashlib.sha256(name.encode()).hexdigest()
        yield json.dumps({"op": "download", "id": name, "url": url_base + name,
                          "dest": os.path.join(dest_dir, name), "size": 4096,
                          "hashes": {"sha256": sha}}) + "\n"


class Events:
    """Counts what fetchmux writes on stdout (a thread reads it, so the helper never blocks)."""

    def __init__(self, stdout):
        self.cond = threading.Condition()
        self.counts = {}
        self.invalid_lines = []
        self.failed_kinds = {}
        self.bye = None
        self.bad = []
        self.thread = threading.Thread(target=self._read, args=(stdout,), daemon=True)
        self.thread.start()

    def _read(self, stdout):
        for raw in stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                self.bad.append(raw[:200])
                continue
            with self.cond:
                name = event.get("event")
                self.counts[name] = self.counts.get(name, 0) + 1
                if name == "invalid":
                    self.invalid_lines.append(event.get("line"))
                elif name == "failed":
                    kind = event.get("error", {}).get("kind")
                    self.failed_kinds[kind] = self.failed_kinds.get(kind, 0) + 1
                elif name == "bye":
                    self.bye = event
                self.cond.notify_all()

    def wait_for(self, what, timeout=STEP_TIMEOUT):
        with self.cond:
            return self.cond.wait_for(lambda: what(self), timeout)

    def count(self, name):
        return self.counts.get(name, 0)


def proc_status(pid):
    """VmHWM and VmRSS of `pid`, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    return values


def run(fetchmux, n, mode, dest_dir, url_base=None):
    """One run: returns dict(n, mode, peak_kib, rss_kib, submit_s, ok, error)."""
    result = dict(n=n, mode=mode, peak_kib=0, rss_kib=0, submit_s=0.0, ok=False, error="")
    holder = None
    if mode == "queued":
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(8)  # never accepted: connections complete and hang
        url_base = f"http://127.0.0.1:{holder.getsockname()[1]}/"
        args = ["--max-parallel", "1", "--max-per-host", "1"]
    elif mode == "retry":
        if not url_base:
            raise ValueError("retry mode needs the URL of a location that answers 503")
        args = ["--max-parallel", "64", "--max-per-host", "64", "--max-retry-wait", "600"]
    else:
        raise ValueError(mode)
    proc = subprocess.Popen([fetchmux] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, bufsize=1 << 20)
    try:
        events = Events(proc.stdout)
        started = time.monotonic()
        for line in request_lines(n, url_base, dest_dir):
            proc.stdin.write(line.encode())
        sync_line = n + 1
        proc.stdin.write(b'{"op":"cancel","id":"fmbench-sync"}\n')
        proc.stdin.flush()
        if not events.wait_for(lambda e: sync_line in e.invalid_lines):
            raise RuntimeError(f"the helper did not take in {n} requests in {STEP_TIMEOUT:.0f} s")
        if mode == "retry":
            if not events.wait_for(lambda e: e.count("start") >= n):
                raise RuntimeError(f"only {events.count('start')} of {n} first attempts started")
            time.sleep(RETRY_SETTLE_S)
        result["submit_s"] = round(time.monotonic() - started, 2)
        status = proc_status(proc.pid)
        result["peak_kib"], result["rss_kib"] = status["VmHWM"], status["VmRSS"]
        if mode == "retry" and events.count("start") != n:
            raise RuntimeError(f"{events.count('start')} attempts started, not {n}: some retried "
                               f"before Retry-After")
        proc.send_signal(signal.SIGTERM)
        proc.stdin.close()
        code = proc.wait(timeout=STEP_TIMEOUT)
        events.thread.join(STEP_TIMEOUT)
        problems = []
        if code != 128 + signal.SIGTERM:
            problems.append(f"exit status {code}, not {128 + signal.SIGTERM}")
        if events.bye is None:
            problems.append("no bye")
        if events.failed_kinds != {"aborted": n}:
            problems.append(f"failed events by kind {events.failed_kinds}, not {{'aborted': {n}}}")
        if events.count("done") or events.bad:
            problems.append(f"{events.count('done')} done, {len(events.bad)} lines not JSON")
        left = os.listdir(dest_dir)
        if left:
            problems.append(f"{len(left)} files left in the destination, e.g. {left[:3]}")
        result["ok"] = not problems
        result["error"] = "; ".join(problems)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        result["error"] = str(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if holder:
            holder.close()
    return result


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    fetchmux, n, mode = argv[0], int(argv[1]), argv[2]
    with tempfile.TemporaryDirectory(prefix="fetchmux-memory.", dir="/dev/shm") as dest:
        result = run(fetchmux, n, mode, dest, argv[3] if len(argv) > 3 else None)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
