#!/usr/bin/env python3
"""fetchmux benchmarks: fetchmux against curl, wget2, aria2 and a one-at-a-time baseline.

`make bench` runs every scenario several times per tool, alternating tools, each run into a
brand-new directory, checks every file of every run (size and SHA-256), and writes
docs/benchmarks.md and docs/benchmarks.svg. `make bench-smoke` runs small versions of the
scenarios once, checks correctness only, and writes no report (CI).

Scenarios: A 10,000 x 4 KiB; B 1,000 x 256 KiB; C 4 x 512 MiB; L 2,000 x 4 KiB over a 50 ms
round trip (a delay line between two network namespaces: this kernel has no `tc netem`);
L2 = L over TLS with HTTP/2. Python 3 standard library only; root for apt and namespaces.

Environment: BENCH_RUNS (default 5; C uses 3), BENCH_DIR (default /var/tmp/fetchmux-bench),
BENCH_PARALLEL (default 64), BENCH_ONLY (comma-separated scenario names).
"""
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FETCHMUX = os.path.join(REPO, "target", "release", "fetchmux")
SMOKE = "--smoke" in sys.argv
WORK = os.environ.get("BENCH_DIR", "/var/tmp/fetchmux-bench" + ("-smoke" if SMOKE else ""))
RUNS = 1 if SMOKE else int(os.environ.get("BENCH_RUNS", "5"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "64"))
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
HTTP_PORT, HTTPS_PORT = 18181, 18443
NS_SRV, NS_CLI = "fmb-srv", "fmb-cli"
SRV_ADDR, CLI_ADDR = "10.77.0.1", "10.77.0.2"
RTT_MS = 50
PACKAGES = {
    "nginx": "nginx-light", "curl": "curl", "wget2": "wget2", "aria2c": "aria2",
    "openssl": "openssl", "ip": "iproute2",
}
TOOLS = ["fetchmux", "curl", "wget2", "aria2c", "sequential"]
PEERS = ["curl", "wget2", "aria2c"]

KIB, MIB = 1024, 1024 * 1024
if SMOKE:
    SCENARIOS = [
        dict(name="A", files=200, size=4 * KIB, parallel=PARALLEL, tls=False, delay=False),
        dict(name="B", files=20, size=256 * KIB, parallel=PARALLEL, tls=False, delay=False),
        dict(name="C", files=1, size=8 * MIB, parallel=4, tls=False, delay=False),
        dict(name="L", files=50, size=4 * KIB, parallel=PARALLEL, tls=False, delay=True),
        dict(name="L2", files=50, size=4 * KIB, parallel=PARALLEL, tls=True, delay=True),
    ]
else:
    SCENARIOS = [
        dict(name="A", files=10_000, size=4 * KIB, parallel=PARALLEL, tls=False, delay=False),
        dict(name="B", files=1_000, size=256 * KIB, parallel=PARALLEL, tls=False, delay=False),
        dict(name="C", files=4, size=512 * MIB, parallel=4, tls=False, delay=False, runs=3),
        dict(name="L", files=2_000, size=4 * KIB, parallel=PARALLEL, tls=False, delay=True),
        dict(name="L2", files=2_000, size=4 * KIB, parallel=PARALLEL, tls=True, delay=True),
    ]
# The sequential baseline runs on a subset (it is bounded by files x round trips).
SEQ_SUBSET = {"A": 1000, "B": 0, "C": 0, "L": 200, "L2": 200}
if SMOKE:
    SEQ_SUBSET = {"A": 20, "B": 0, "C": 0, "L": 5, "L2": 5}

children = []


def log(*args):
    print("bench:", *args, flush=True)


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, **kw)


def ensure_tools():
    missing = [pkg for cmd, pkg in PACKAGES.items() if shutil.which(cmd) is None]
    if not os.path.exists("/usr/bin/time"):
        missing.append("time")
    if missing:
        log("installing", " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh("apt-get", "update", "-qq", env=env)
        sh("apt-get", "install", "-y", "-qq", *missing, env=env, stdout=subprocess.DEVNULL)


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


# ---------------------------------------------------------------------------------------
# Fixtures and servers

def fixtures(scenario):
    """Files of the scenario under WORK/fixtures/NAME, with a manifest (reused when present)."""
    root = os.path.join(WORK, "fixtures", f"{scenario['files']}x{scenario['size']}")
    manifest_path = root + ".json"
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            return root, json.load(f)
    log(f"generating {scenario['files']} x {scenario['size']} bytes")
    os.makedirs(root, exist_ok=True)
    manifest = []
    for i in range(scenario["files"]):
        name = f"f{i}"
        digest = hashlib.sha256()
        with open(os.path.join(root, name), "wb") as out:
            left = scenario["size"]
            while left:
                chunk = os.urandom(min(left, 4 * MIB))
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        manifest.append([name, scenario["size"], digest.hexdigest()])
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    return root, manifest


def make_cert(directory):
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
       "-subj", "/CN=fetchmux-bench",
       "-addext", f"subjectAltName=IP:127.0.0.1,IP:{SRV_ADDR}",
       "-keyout", os.path.join(directory, "key.pem"), "-out", os.path.join(directory, "cert.pem"),
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_nginx(directory, addr, netns=None):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(REPO, "bench", "nginx.conf.in")) as f:
        conf = f.read()
    for key, value in {"@DIR@": directory, "@ADDR@": addr, "@HTTP_PORT@": str(HTTP_PORT),
                       "@HTTPS_PORT@": str(HTTPS_PORT), "@ROOT@": os.path.join(WORK, "fixtures")}.items():
        conf = conf.replace(key, value)
    shutil.copy(os.path.join(WORK, "cert.pem"), directory)
    shutil.copy(os.path.join(WORK, "key.pem"), directory)
    with open(os.path.join(directory, "nginx.conf"), "w") as f:
        f.write(conf)
    cmd = ["nginx", "-p", directory, "-c", os.path.join(directory, "nginx.conf")]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    proc = subprocess.Popen(cmd)
    children.append(proc)
    probe = ["curl", "-s", "-o", "/dev/null", "--max-time", "2", f"http://{addr}:{HTTP_PORT}/"]
    if netns:
        probe = ["ip", "netns", "exec", NS_CLI] + probe
    for _ in range(100):
        if subprocess.run(probe).returncode == 0:
            return proc
        time.sleep(0.1)
    raise SystemExit(f"bench: nginx on {addr} did not start")


def start_delay_line():
    """Two namespaces joined by the TUN delay line; False if the sandbox forbids it."""
    for ns in (NS_SRV, NS_CLI):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        if subprocess.run(["ip", "netns", "add", ns]).returncode != 0:
            return False
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "bench", "delayline.py"), NS_SRV, f"{SRV_ADDR}/24",
         NS_CLI, f"{CLI_ADDR}/24", "--delay-ms", str(RTT_MS / 2), "--seconds", "7200"],
        stdout=subprocess.PIPE, text=True)
    children.append(proc)
    if proc.stdout.readline().strip() != "delayline: ready":
        return False
    return True


def measure_rtt():
    out = subprocess.run(
        ["ip", "netns", "exec", NS_CLI, "curl", "-s", "-o", "/dev/null", "-w", "%{time_connect}",
         f"http://{SRV_ADDR}:{HTTP_PORT}/"], capture_output=True, text=True)
    try:
        return float(out.stdout) * 1000
    except ValueError:
        return float("nan")


def cleanup():
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
    for ns in (NS_SRV, NS_CLI):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------
# Tools

def base_url(scenario):
    host = SRV_ADDR if scenario["delay"] else "127.0.0.1"
    scheme, port = ("https", HTTPS_PORT) if scenario["tls"] else ("http", HTTP_PORT)
    return f"{scheme}://{host}:{port}/{scenario['files']}x{scenario['size']}/"


def command(tool, scenario, manifest, out, scratch):
    """The command line (and stdin path) of one run of `tool`."""
    url = base_url(scenario)
    cert = os.path.join(WORK, "cert.pem")
    n = str(scenario["parallel"])
    os.makedirs(scratch, exist_ok=True)
    listing = os.path.join(scratch, f"{tool}.list")
    stdin = None
    if tool == "fetchmux":
        with open(listing, "w") as f:
            for name, size, sha in manifest:
                f.write(json.dumps({"op": "download", "id": name, "url": url + name,
                                    "dest": os.path.join(out, name), "size": size,
                                    "hashes": {"sha256": sha}}) + "\n")
        cmd = [FETCHMUX, "--max-parallel", n, "--max-per-host", n, "--ca-file", cert]
        cmd += os.environ.get("BENCH_FETCHMUX_ARGS", "").split()
        stdin = listing
    elif tool == "curl":
        with open(listing, "w") as f:
            for name, _, _ in manifest:
                f.write(f'url = "{url}{name}"\noutput = "{os.path.join(out, name)}"\n')
        cmd = ["curl", "-s", "--fail", "--parallel", "--parallel-max", n, "--cacert", cert, "-K", listing]
    elif tool == "wget2":
        with open(listing, "w") as f:
            f.writelines(url + name + "\n" for name, _, _ in manifest)
        cmd = ["wget2", "-q", "--max-threads", n, "--no-robots", "-nd", "-P", out,
               "--ca-certificate", cert, "-i", listing]
    elif tool == "aria2c":
        with open(listing, "w") as f:
            for name, _, sha in manifest:
                f.write(f"{url}{name}\n  out={name}\n  checksum=sha-256={sha}\n")
        cmd = ["aria2c", "-q", "-j", n, "-x", "1", "-d", out, "--ca-certificate", cert,
               "--file-allocation=none", "--allow-overwrite=true", "--auto-file-renaming=false",
               "--check-integrity=true", "-i", listing]
    elif tool == "sequential":
        with open(listing, "w") as f:
            f.writelines(f"{url}{name} {name}\n" for name, _, _ in manifest)
        cmd = [sys.executable, os.path.join(REPO, "bench", "seq_download.py"), listing, out, cert]
    else:
        raise ValueError(tool)
    if scenario["delay"]:
        cmd = ["ip", "netns", "exec", NS_CLI] + cmd
    return cmd, stdin


def verify(out, manifest):
    for name, size, sha in manifest:
        path = os.path.join(out, name)
        try:
            if os.path.getsize(path) != size:
                return f"{name}: wrong size"
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != sha:
                return f"{name}: wrong sha256"
        except OSError as e:
            return f"{name}: {e.strerror}"
    return None


def run_once(tool, scenario, manifest, index):
    scratch = os.path.join(WORK, "runs")
    os.makedirs(scratch, exist_ok=True)
    out = os.path.join(scratch, f"{scenario['name']}-{tool}-{index}-{time.monotonic_ns()}")
    os.makedirs(out)
    cmd, stdin = command(tool, scenario, manifest, out, scratch)
    timefile = os.path.join(scratch, "time")
    with open(stdin or os.devnull) as inp:
        result = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", timefile] + cmd,
                                stdin=inp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, timeout=1800)
    with open(timefile) as f:
        wall, user, sys_, rss = f.read().split()[-4:]
    error = verify(out, manifest)
    if error is None and result.returncode != 0:
        error = f"exit status {result.returncode}: {result.stderr.strip()[:200]}"
    # Deleting thousands of files makes creating the next thousands slow on ext4 here, and
    # would penalise whichever tool runs next: run directories go only after the scenario.
    if SMOKE:
        shutil.rmtree(out, ignore_errors=True)
    return dict(scenario=scenario["name"], tool=tool, run=index, wall=float(wall),
                cpu=float(user) + float(sys_), rss_mb=int(rss) / 1024, ok=error is None,
                error=error, bytes=sum(m[1] for m in manifest))


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------
# Report

def summarize(results):
    rows = {}
    for r in results:
        rows.setdefault((r["scenario"], r["tool"]), []).append(r)
    summary = []
    for (scenario, tool), runs in rows.items():
        good = [r for r in runs if r["ok"]]
        if not good:
            summary.append(dict(scenario=scenario, tool=tool, ok=0, runs=len(runs)))
            continue
        gb = good[0]["bytes"] / 1e9
        summary.append(dict(
            scenario=scenario, tool=tool, ok=len(good), runs=len(runs),
            wall=statistics.median(r["wall"] for r in good),
            cpu=statistics.median(r["cpu"] for r in good),
            cpu_per_gb=statistics.median(r["cpu"] for r in good) / gb,
            rss=statistics.median(r["rss_mb"] for r in good)))
    return summary


TARGETS = {"A": 0.8, "B": 1.0, "C": 1.0, "L2": 0.8}


def write_report(summary, notes, versions, bounds):
    lines = ["# Benchmarks", "",
             f"Generated by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "Medians over the runs of each tool, tools alternating run by run, every run into a "
             "fresh directory on disk and every file of every run checked (size and SHA-256); a "
             "run with a wrong or missing file does not count. fetchmux verifies SHA-256 and size "
             "of every file while downloading (digests passed in the requests); aria2c verifies "
             "SHA-256 too (`checksum=` per file, `--check-integrity`); curl, wget2 and the "
             "sequential baseline verify nothing.", "",
             "| scenario | tool | median wall s | median CPU s | CPU s/GB | peak RSS MB | ok runs | fetchmux / best peer |",
             "|---|---|---|---|---|---|---|---|"]
    by = {(s["scenario"], s["tool"]): s for s in summary}
    for scenario in [s["name"] for s in SCENARIOS]:
        peers = [by[(scenario, p)] for p in PEERS if (scenario, p) in by and by[(scenario, p)]["ok"]]
        best = min(peers, key=lambda s: s["wall"]) if peers else None
        for tool in TOOLS:
            s = by.get((scenario, tool))
            if s is None:
                continue
            if not s["ok"]:
                lines.append(f"| {scenario} | {tool} | failed | | | | 0/{s['runs']} | |")
                continue
            ratio = ""
            if tool == "fetchmux" and best:
                ratio = f"{s['wall'] / best['wall']:.2f} (best: {best['tool']})"
            label = tool
            if tool == "sequential":
                label = f"sequential ({SEQ_SUBSET[scenario]}-file subset)"
            lines.append(f"| {scenario} | {label} | {s['wall']:.2f} | {s['cpu']:.2f} | "
                         f"{s['cpu_per_gb']:.1f} | {s['rss']:.0f} | {s['ok']}/{s['runs']} | {ratio} |")
    lines += ["", "## Targets", ""]
    for scenario in [s["name"] for s in SCENARIOS]:
        fm = by.get((scenario, "fetchmux"))
        peers = [by[(scenario, p)] for p in PEERS if (scenario, p) in by and by[(scenario, p)]["ok"]]
        if not fm or not fm["ok"]:
            lines.append(f"- {scenario}: no fetchmux result.")
            continue
        best = min(peers, key=lambda s: s["wall"]) if peers else None
        if scenario in ("L",):
            bound = bounds.get("L")
            if bound:
                verdict = "holds" if fm["wall"] <= bound * 1.1 else "does not hold"
                lines.append(f"- L: fetchmux {fm['wall']:.2f} s against the latency bound "
                             f"{bound:.2f} s (files / parallel x RTT): target within 10 % {verdict}.")
            continue
        if best is None:
            continue
        ratio = fm["wall"] / best["wall"]
        target = TARGETS[scenario]
        verdict = "holds" if ratio <= target else "does not hold"
        extra = ""
        if scenario == "C" and "sha256" in bounds:
            within = fm["wall"] <= bounds["sha256"] * 1.1
            extra = (f" The single-core SHA-256 bound measured in the same run is "
                     f"{bounds['sha256']:.2f} s; within 10 % of it: {'yes' if within else 'no'}.")
        lines.append(f"- {scenario}: fetchmux / best peer ({best['tool']}) = {ratio:.2f}; "
                     f"target ≤ {target}: {verdict}.{extra}")
    if bounds:
        lines += ["", "## Floors and bounds measured in the same run", ""]
        for key, value in bounds.items():
            lines.append(f"- {key}: {value:.2f} s")
    lines += ["", "## Machine and versions", ""] + [f"- {k}: {v}" for k, v in versions.items()]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "## Commands", "", "```"]
    for tool in TOOLS:
        cmd, _ = command(tool, dict(SCENARIOS[0], delay=False, tls=False), [["fN", 0, "…"]],
                         "OUT", os.path.join(WORK, "runs"))
        lines.append(" ".join(cmd) + ("  < requests.jsonl" if tool == "fetchmux" else ""))
    lines += ["```", "", "![median wall time](benchmarks.svg)", ""]
    with open(os.path.join(REPO, "docs", "benchmarks.md"), "w") as f:
        f.write("\n".join(lines))
    write_svg(summary)


def write_svg(summary):
    scenarios = [s["name"] for s in SCENARIOS]
    colors = dict(fetchmux="#1f77b4", curl="#ff7f0e", wget2="#2ca02c", aria2c="#d62728",
                  sequential="#9467bd")
    by = {(s["scenario"], s["tool"]): s for s in summary if s["ok"]}
    width, height, left, bottom = 900, 420, 60, 360
    group = (width - left - 20) / len(scenarios)
    bar = group / (len(TOOLS) + 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="{width/2}" y="20" text-anchor="middle" font-size="14">Median wall time '
             f'per scenario (each group scaled to its slowest tool; seconds on the bars)</text>']
    for gi, scenario in enumerate(scenarios):
        values = [by[(scenario, t)]["wall"] for t in TOOLS if (scenario, t) in by]
        top = max(values) if values else 1
        x0 = left + gi * group
        parts.append(f'<text x="{x0 + group/2}" y="{bottom + 20}" text-anchor="middle">{scenario}</text>')
        for ti, tool in enumerate(TOOLS):
            s = by.get((scenario, tool))
            if not s:
                continue
            h = (bottom - 40) * s["wall"] / top
            x = x0 + (ti + 0.5) * bar
            parts.append(f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{bar*0.9:.1f}" '
                         f'height="{h:.1f}" fill="{colors[tool]}"/>')
            parts.append(f'<text x="{x + bar*0.45:.1f}" y="{bottom - h - 3:.1f}" '
                         f'text-anchor="middle" font-size="9">{s["wall"]:.2f}</text>')
    for ti, tool in enumerate(TOOLS):
        parts.append(f'<rect x="{left + ti*150}" y="{height-25}" width="12" height="12" fill="{colors[tool]}"/>'
                     f'<text x="{left + ti*150 + 16}" y="{height-15}">{tool}</text>')
    parts.append("</svg>")
    with open(os.path.join(REPO, "docs", "benchmarks.svg"), "w") as f:
        f.write("\n".join(parts))


# ---------------------------------------------------------------------------------------

def main():
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (apt-get, network namespaces)")
    if not os.path.exists(FETCHMUX):
        raise SystemExit("bench: build first: cargo build --release")
    ensure_tools()
    os.makedirs(WORK, exist_ok=True)
    make_cert(WORK)
    notes = []
    scenarios = [s for s in SCENARIOS if not ONLY or s["name"] in ONLY]
    need_delay = any(s["delay"] for s in scenarios)
    if any(not s["delay"] for s in scenarios):
        start_nginx(os.path.join(WORK, "nginx-local"), "127.0.0.1")
    delay_ok = need_delay and start_delay_line()
    bounds = {}
    if need_delay and not delay_ok:
        notes.append("L and L2 were skipped: network namespaces or TUN devices are not available.")
        scenarios = [s for s in scenarios if not s["delay"]]
    elif delay_ok:
        start_nginx(os.path.join(WORK, "nginx-netns"), SRV_ADDR, netns=NS_SRV)
        rtt = measure_rtt()
        log(f"round trip between the namespaces: {rtt:.1f} ms")
        notes.append(f"L and L2: clients in namespace {NS_CLI}, nginx in {NS_SRV}, joined by "
                     f"bench/delayline.py (a TUN delay line, {RTT_MS // 2} ms each way; `tc netem` is "
                     f"not available on this kernel). Measured TCP connect time: {rtt:.1f} ms.")
    results = []
    failures = []
    for scenario in scenarios:
        root, manifest = fixtures(scenario)
        runs = RUNS if SMOKE else scenario.get("runs", RUNS)
        tools = list(TOOLS)
        if scenario["name"] == "L" and delay_ok and not SMOKE:
            bounds["L"] = scenario["files"] / scenario["parallel"] * RTT_MS / 1000
        for index in range(runs):
            rotated = tools[index % len(tools):] + tools[:index % len(tools)]
            for tool in rotated:
                subset = manifest
                if tool == "sequential":
                    if not SEQ_SUBSET[scenario["name"]]:
                        continue
                    subset = manifest[:SEQ_SUBSET[scenario["name"]]]
                r = run_once(tool, scenario, subset, index)
                results.append(r)
                state = "ok" if r["ok"] else f"FAILED ({r['error']})"
                log(f"{scenario['name']} {tool} run {index + 1}/{runs}: {r['wall']:.2f} s wall, "
                    f"{r['cpu']:.2f} s CPU, {r['rss_mb']:.0f} MB: {state}")
                if not r["ok"]:
                    failures.append(f"{scenario['name']} {tool}: {r['error']}")
        if not SMOKE and scenario["name"] in ("A", "C"):
            copy = os.path.join(WORK, "runs", f"cp-{time.monotonic_ns()}")
            bounds[f"{scenario['name']}: cp of the same files"] = timed(["cp", "-r", root, copy])
        if not SMOKE and scenario["name"] == "C":
            files = [os.path.join(root, m[0]) for m in manifest]
            timed(["cat"] + files)  # page cache, so the next line measures hashing alone
            bounds["sha256"] = timed(["openssl", "dgst", "-sha256"] + files)
        if not SMOKE:
            shutil.rmtree(os.path.join(WORK, "runs"), ignore_errors=True)
            subprocess.run(["sync"])
            time.sleep(5)
    if SMOKE:
        if failures:
            log("FAILED:", *failures)
            return 1
        log(f"smoke: {len(results)} runs, every file verified")
        return 0
    cpu_model = version(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"])
    versions = {
        "machine": f"{os.cpu_count()} cores, kernel {version(['uname', '-r'])}, {cpu_model}",
        "memory": version(["sh", "-c", "free -h | awk '/Mem:/ {print $2}'"]),
        "fetchmux": version([FETCHMUX, "--version"]) + ", libcurl " + json.loads(
            subprocess.run([FETCHMUX], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True).stdout.splitlines()[0])["libcurl"],
        "curl": version(["curl", "--version"]),
        "wget2": version(["wget2", "--version"]),
        "aria2c": version(["aria2c", "--version"]),
        "nginx": version(["nginx", "-v"]),
        "parallel transfers": f"{PARALLEL} (C: 4)",
    }
    summary = summarize(results)
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump(dict(results=results, bounds=bounds, notes=notes, versions=versions), f, indent=1)
    log(f"raw results: {os.path.join(WORK, 'results.json')}")
    write_report(summary, notes, versions, bounds)
    log("wrote docs/benchmarks.md and docs/benchmarks.svg")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        cleanup()
