#!/usr/bin/env python3
"""fetchmux benchmarks: fetchmux against curl, wget2, aria2c and a one-at-a-time downloader.

Run through bench/run.sh (`make bench`, `make bench-smoke`), which installs the Debian
packages and gives this script a fresh scratch directory (BENCH_WORK). Root only: nginx in a
network namespace, TUN devices. Python 3 standard library only.

Scenarios (full):  A 10,000 x 4 KiB; B 1,000 x 256 KiB; C 4 x 512 MiB (4 at once);
                   L 2,000 x 4 KiB over a 50 ms round trip; L2 = L over TLS + HTTP/2;
                   P `apt-get download` of 300 packages (1 KiB to 4 MiB) over the 50 ms
                   link, stock http method vs fetchmux as the method; U urlgrabber's
                   parallel_wait() of the same files, stock urlgrabber-ext-down vs fetchmux.
Scenarios (smoke): A 200 x 4 KiB; B 20 x 256 KiB; C 1 x 8 MiB; L 50 x 4 KiB over the delay
                   line (only if namespaces work); L2 50 x 4 KiB over TLS + HTTP/2 on loopback;
                   P and U with 20 packages over the delay line.
Scenario M (memory, fetchmux only; bench/memory.py): peak RSS with N small downloads in the
                   helper at once: 10,000 and 100,000 queued, and 100,000 all waiting for a
                   retry (smoke: 1,000 queued, 1,000 waiting). Targets: 24 MiB at 10,000,
                   64 MiB at 100,000 (issue 13).

The round trip comes from bench/delayline.py (this kernel has no `tc netem`): two network
namespaces of our own joined by TUN devices, each packet forwarded after 25 ms.

Method: one untimed warm-up run of every tool, then several runs per tool, tools alternating
(run 1 of every tool, then run 2, ...; the order rotates by one each round), every run into
a brand-new directory that is deleted after its files are checked (size and SHA-256 of every
file against the manifest; a wrong, missing or unexpected file, or a non-zero exit status,
fails the run and it does not count). Each run
is timed with GNU time (wall, user, sys, max RSS), tools in the client namespace with the
whole `ip netns exec ...` command timed. Raw results go to WORK/results.csv.

Environment (all optional):
  BENCH_RUNS=7         runs per tool for A, B, L, L2 (smoke: 1)
  BENCH_RUNS_C=3       runs per tool for C (smoke: 1)
  BENCH_RUNS_M=3       runs per case of M (smoke: 1)
  BENCH_PARALLEL=64    N: --max-parallel/--max-per-host, --parallel-max, --max-threads, -j
  BENCH_PARALLEL_C=4   N for C
  BENCH_SEQ_FILES=1000 files of A and L given to the one-at-a-time downloader (smoke: 20)
  BENCH_SETTLE=2       seconds to wait after deleting a run's directory and `sync` (smoke: 0)
  BENCH_RUN_TIMEOUT=900  seconds before a run is killed and counted as failed (smoke: 120)
  BENCH_RTT_MS=50      round trip of the delay line
  BENCH_RUNS_DIR       where the run directories are made. bench/run.sh mounts an ext4 of
                       the bench's own (an image on a loop device, no `discard`) for full
                       runs: this VM's disk, mounted with `discard`, degrades after the
                       first run (cp of A's 10,000 files: 5.2 s, against 0.4 s documented),
                       so on it every tool measured the disk. Default here: /dev/shm
  BENCH_ONLY=A,C       only these scenarios (the report then goes to WORK, not docs/,
                       unless BENCH_WRITE_DOCS=1)
  BENCH_TOOLS=fetchmux,curl  only these tools (for quick comparisons; the report then goes to
                       WORK, as with BENCH_ONLY)
  BENCH_FETCHMUX_ARGS  extra flags for fetchmux
  BENCH_KEEP=1         keep the fixtures in WORK at exit
  BENCH_NETNS_PREFIX=fmb  names of our namespaces (PREFIX-srv, PREFIX-cli) and TUN devices
"""
import csv
import hashlib
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--smoke" in sys.argv[1:]
FETCHMUX = os.environ.get("BENCH_FETCHMUX") or os.path.join(REPO, "target", "release", "fetchmux")


def env_num(name, default, kind=int):
    value = os.environ.get(name, "").strip()
    return kind(value) if value else default


RUNS = env_num("BENCH_RUNS", 1 if SMOKE else 7)
RUNS_C = env_num("BENCH_RUNS_C", 1 if SMOKE else 3)
RUNS_M = env_num("BENCH_RUNS_M", 1 if SMOKE else 3)
PARALLEL = env_num("BENCH_PARALLEL", 64)
PARALLEL_C = env_num("BENCH_PARALLEL_C", 4)
SEQ_FILES = env_num("BENCH_SEQ_FILES", 20 if SMOKE else 1000)
SETTLE = env_num("BENCH_SETTLE", 0.0 if SMOKE else 2.0, float)
RUN_TIMEOUT = env_num("BENCH_RUN_TIMEOUT", 120 if SMOKE else 900, float)
RTT_MS = env_num("BENCH_RTT_MS", 50.0, float)
ONLY = [s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()]
ONLY_TOOLS = [s.strip() for s in os.environ.get("BENCH_TOOLS", "").split(",") if s.strip()]
FETCHMUX_ARGS = os.environ.get("BENCH_FETCHMUX_ARGS", "").split()
KEEP = os.environ.get("BENCH_KEEP", "") not in ("", "0")
RUNS_BASE = os.environ.get("BENCH_RUNS_DIR") or "/dev/shm"
WRITE_DOCS = not SMOKE and (not (ONLY or ONLY_TOOLS) or os.environ.get("BENCH_WRITE_DOCS", "") not in ("", "0"))

NS_PREFIX = os.environ.get("BENCH_NETNS_PREFIX", "fmb")[:8]
NS_SRV, NS_CLI = f"{NS_PREFIX}-srv", f"{NS_PREFIX}-cli"
TUN_SRV, TUN_CLI = f"{NS_PREFIX}tun0", f"{NS_PREFIX}tun1"
SRV_ADDR, CLI_ADDR = "10.77.0.1", "10.77.0.2"
NS_PORTS = dict(http=8080, https=8443, probe=9443)  # inside our own namespace

NETWORK_TOOLS = ["fetchmux", "curl", "wget2", "aria2c"]
PEERS = ["curl", "wget2", "aria2c"]
# Scenarios P and U: (fetchmux as the helper, the stock helper) of each package manager.
FRONT_TOOLS = {"apt": ("apt-fetchmux", "apt-stock"), "urlgrabber": ("ug-fetchmux", "ug-stock")}
FRONT_LABELS = {"apt-fetchmux": "**apt-get download, fetchmux as the http method**",
                "apt-stock": "apt-get download, stock http method",
                "ug-fetchmux": "**urlgrabber parallel_wait, fetchmux as urlgrabber-ext-down**",
                "ug-stock": "urlgrabber parallel_wait, stock urlgrabber-ext-down"}
CLIENT_TOOLS = NETWORK_TOOLS + ["sequential"] + [t for pair in FRONT_TOOLS.values() for t in pair]
ALL_TOOLS = CLIENT_TOOLS + ["cp", "sha256"]
# Package sizes of P and U, cycled: 1 KiB to 4 MiB, most of them small, as in a Debian
# archive (mean about 0.8 MiB).
PACKAGE_SIZES = "1K,3K,8K,20K,40K,80K,150K,300K,600K,1M,2M,4M"
KIB, MIB = 1024, 1024 * 1024


def scenario(name, files, size, n, tls=False, delay=False, runs=None, extra=(), seq=False):
    tools = NETWORK_TOOLS + (["sequential"] if seq else []) + list(extra)
    tools = [t for t in tools if not ONLY_TOOLS or t in ONLY_TOOLS]
    return dict(name=name, kind="files", files=files, size=size, n=n, tls=tls, delay=delay,
                runs=runs or RUNS, tools=tools, seq=min(SEQ_FILES, files) if seq else 0,
                fm="fetchmux", peers=PEERS)


def front_scenario(name, kind, packages):
    """A package manager's own client over the delay line, with its stock helper and with
    fetchmux as that helper (docs/fronts.md): `kind` is "apt" or "urlgrabber". fetchmux on
    its own (JSON Lines, N at once) fetches the same files too, for comparison."""
    fm, stock = FRONT_TOOLS[kind]
    tools = [t for t in (fm, stock, "fetchmux") if not ONLY_TOOLS or t in ONLY_TOOLS]
    return dict(name=name, kind=kind, files=packages, size=None, n=PARALLEL, tls=False,
                delay=True, runs=RUNS, tools=tools, seq=0, fm=fm, peers=[stock])


if SMOKE:
    SCENARIOS = [
        scenario("A", 200, 4 * KIB, PARALLEL, seq=True, extra=["cp"]),
        scenario("B", 20, 256 * KIB, PARALLEL, extra=["sha256"]),
        scenario("C", 1, 8 * MIB, PARALLEL_C, runs=RUNS_C, extra=["cp", "sha256"]),
        scenario("L", 50, 4 * KIB, PARALLEL, delay=True, seq=True),
        scenario("L2", 50, 4 * KIB, PARALLEL, tls=True),  # TLS + HTTP/2 on loopback
        front_scenario("P", "apt", 20),
        front_scenario("U", "urlgrabber", 20),
        dict(name="M", kind="memory", cases=[(1_000, "queued", None), (1_000, "retry", None)],
             delay=False, tls=False, runs=RUNS_M),
    ]
else:
    SCENARIOS = [
        scenario("A", 10_000, 4 * KIB, PARALLEL, seq=True, extra=["cp"]),
        scenario("B", 1_000, 256 * KIB, PARALLEL, extra=["sha256"]),
        scenario("C", 4, 512 * MIB, PARALLEL_C, runs=RUNS_C, extra=["cp", "sha256"]),
        scenario("L", 2_000, 4 * KIB, PARALLEL, delay=True, seq=True),
        scenario("L2", 2_000, 4 * KIB, PARALLEL, tls=True, delay=True),
        front_scenario("P", "apt", 300),
        front_scenario("U", "urlgrabber", 300),
        dict(name="M", kind="memory", delay=False, tls=False, runs=RUNS_M,
             cases=[(10_000, "queued", 24), (100_000, "queued", 64), (100_000, "retry", None)]),
    ]
TARGETS = {"A": 0.8, "B": 1.0, "C": 1.0, "L2": 0.8, "P": 0.5, "U": 0.5}

WORK = os.environ.get("BENCH_WORK") or tempfile.mkdtemp(
    prefix="fetchmux-bench.", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
RUNS_DIR = os.path.join(RUNS_BASE, f"fetchmux-bench-runs.{os.getpid()}")
CERT = os.path.join(WORK, "cert.pem")
children = []  # (name, Popen) we started and must stop
CREATED_NS = []  # network namespaces this bench created and must delete


def log(*args):
    print("bench:", *args, flush=True)


def human_size(n):
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    return f"{n // KIB} KiB" if n % KIB == 0 else f"{n} B"


# ---------------------------------------------------------------------------------------
# Fixtures, certificate, nginx, namespaces

def fixture_dir(sc):
    return os.path.join(WORK, "fixtures", fixture_name(sc))


def fixture_name(sc):
    """The fixtures' directory under nginx's root: a flat Debian repository for P and U."""
    if sc["kind"] != "files":
        return f"debs-{sc['files']}"
    return f"{sc['files']}x{sc['size']}"


def shape(sc):
    if sc["size"] is None:
        sizes = PACKAGE_SIZES.split(",")
        return f"{sc['files']:,} packages of {sizes[0]}–{sizes[-1]}"
    return f"{sc['files']:,} × {human_size(sc['size'])}"


def fs_type(path):
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return r.stdout.strip() or "unknown file system"


def make_fixtures(sc):
    """Random files for a scenario (shared by scenarios of the same shape) and the manifest:
    a list of [name, size, sha256]."""
    root = fixture_dir(sc)
    manifest_path = root + ".json"
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            return json.load(f)
    if sc["kind"] != "files":
        return make_package_repo(sc, root, manifest_path)
    log(f"generating fixtures: {sc['files']} x {human_size(sc['size'])}")
    os.makedirs(root)
    manifest = []
    width = len(str(sc["files"] - 1))
    for i in range(sc["files"]):
        name = f"f{i:0{width}d}.bin"
        digest = hashlib.sha256()
        with open(os.path.join(root, name), "wb") as out:
            left = sc["size"]
            while left:
                chunk = os.urandom(min(left, 4 * MIB))
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        manifest.append([name, sc["size"], digest.hexdigest()])
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    return manifest


def make_package_repo(sc, root, manifest_path):
    """A flat Debian repository of real .debs (tests/support/debrepo.py, shared with the apt
    tests); the manifest lists the .deb files."""
    log(f"generating a Debian repository: {shape(sc)}")
    made = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "support", "debrepo.py"), root,
         "--count", str(sc["files"]), "--sizes", PACKAGE_SIZES, "--prefix", "fmbench"],
        check=True, capture_output=True, text=True)
    manifest = []
    for line in made.stdout.split("\n"):
        if line.strip():
            package, size, sha = line.split()
            manifest.append([f"{package}_1.0_all.deb", int(size), sha])
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    return manifest


def make_cert():
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=fetchmux-bench", "-addext", f"subjectAltName=IP:127.0.0.1,IP:{SRV_ADDR}",
         "-keyout", os.path.join(WORK, "key.pem"), "-out", CERT],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tag, addr, ports, netns=None):
    directory = os.path.join(WORK, f"nginx-{tag}")
    os.makedirs(directory)
    with open(os.path.join(REPO, "bench", "nginx.conf.in")) as f:
        conf = f.read()
    values = {"@DIR@": directory, "@ADDR@": addr, "@ROOT@": os.path.join(WORK, "fixtures"),
              "@HTTP_PORT@": str(ports["http"]), "@HTTPS_PORT@": str(ports["https"]),
              "@PROBE_PORT@": str(ports["probe"])}
    for key, value in values.items():
        conf = conf.replace(key, value)
    shutil.copy(CERT, directory)
    shutil.copy(os.path.join(WORK, "key.pem"), directory)
    with open(os.path.join(directory, "nginx.conf"), "w") as f:
        f.write(conf)
    cmd = ["nginx", "-p", directory + "/", "-c", os.path.join(directory, "nginx.conf")]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    with open(os.path.join(directory, "stderr.log"), "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    children.append((f"nginx-{tag}", proc))
    probes = [f"http://{addr}:{ports['http']}/", f"https://{addr}:{ports['https']}/"]
    for _ in range(100):  # at most ~10 s (more across the delay line)
        if proc.poll() is not None:
            break
        ok = True
        for url in probes:
            probe = ["curl", "-s", "-o", "/dev/null", "--max-time", "2", "--cacert", CERT, url]
            if netns:
                probe = ["ip", "netns", "exec", NS_CLI] + probe
            ok = ok and subprocess.run(probe).returncode == 0
        if ok:
            return directory
        time.sleep(0.1)
    with open(os.path.join(directory, "error.log")) as f:
        raise SystemExit(f"bench: nginx on {addr} did not start:\n{f.read()[-2000:]}")


def start_delay_line():
    """Our two namespaces joined by the TUN delay line; (True, "") or (False, reason)."""
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns in (NS_SRV, NS_CLI):
        if re.search(rf"^{ns}\b", existing, re.M):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            if pids:  # never take over a namespace another bench is still using
                return False, (f"namespace {ns} exists and processes {' '.join(pids[:5])} "
                               f"run in it (another bench?)")
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)  # stale
        r = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
        if r.returncode != 0:
            return False, f"`ip netns add {ns}` failed: {r.stderr.strip()}"
        CREATED_NS.append(ns)
        with open(os.path.join(WORK, "netns-created"), "a") as f:
            f.write(ns + "\n")
    if not os.path.exists("/dev/net/tun"):
        return False, "/dev/net/tun does not exist"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "bench", "delayline.py"), NS_SRV, f"{SRV_ADDR}/24",
         NS_CLI, f"{CLI_ADDR}/24", "--delay-ms", str(RTT_MS / 2), "--seconds", "7200",
         "--names", f"{TUN_SRV},{TUN_CLI}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.append(("delayline", proc))
    with open(os.path.join(WORK, "delayline.pid"), "w") as f:
        f.write(str(proc.pid))
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().strip() if ready else ""
    if line != "delayline: ready":
        proc.kill()
        err = proc.stderr.read().strip().splitlines()
        return False, "the delay line did not start: " + (err[-1] if err else "no output")
    return True, ""


def stop_delay_line():
    for name, proc in children:
        if name == "delayline" and proc.poll() is None:
            proc.terminate()
            try:
                out, _ = proc.communicate(timeout=5)
                return out.strip().splitlines()[-1] if out.strip() else ""
            except subprocess.TimeoutExpired:
                proc.kill()
    return ""


def ping_rtt():
    r = subprocess.run(["ip", "netns", "exec", NS_CLI, "ping", "-c", "10", "-i", "0.2", "-W", "2",
                        SRV_ADDR], capture_output=True, text=True, timeout=30)
    summary = [line for line in r.stdout.splitlines() if "min/avg/max" in line]
    if r.returncode != 0 or not summary:
        return None, (r.stdout + r.stderr).strip()
    avg = float(summary[0].split("=")[1].split("/")[1])
    return avg, summary[0].strip()


def tun_drops():
    """Drop counters of our TUN devices, as `ip -s link` reports them."""
    counts = []
    for ns, dev in ((NS_SRV, TUN_SRV), (NS_CLI, TUN_CLI)):
        r = subprocess.run(["ip", "netns", "exec", ns, "ip", "-s", "-j", "link", "show", dev],
                           capture_output=True, text=True)
        try:
            stats = json.loads(r.stdout)[0]["stats64"]
            counts.append(f"{dev}: rx dropped {stats['rx']['dropped']}, "
                          f"tx dropped {stats['tx']['dropped']}")
        except (ValueError, LookupError):
            pass
    return "; ".join(counts)


def cleanup():
    for name, proc in reversed(children):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for ns in CREATED_NS:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    CREATED_NS.clear()
    if not KEEP:
        shutil.rmtree(os.path.join(WORK, "fixtures"), ignore_errors=True)
    shutil.rmtree(RUNS_DIR, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Tools

class Env:
    """Where a scenario is served from: addresses, ports, namespace."""

    def __init__(self, local_ports):
        self.local_ports = local_ports
        # The delay line's round trip as ping measured it before the runs (ms), if run.
        self.rtt_ms = None

    def host_ports(self, sc):
        return (SRV_ADDR, NS_PORTS) if sc["delay"] else ("127.0.0.1", self.local_ports)


def base_url(sc, host, ports, probe=False):
    if probe:
        scheme, port = "https", ports["probe"]
    elif sc["tls"]:
        scheme, port = "https", ports["https"]
    else:
        scheme, port = "http", ports["http"]
    return f"{scheme}://{host}:{port}/{fixture_name(sc)}/"


def command(tool, sc, manifest, out, lists, host, ports, probe=False):
    """The command line of one run of `tool` and the file to give it on stdin (or None).
    Writes the tool's input file under `lists`."""
    url = base_url(sc, host, ports, probe)
    tls = sc["tls"] or probe
    n = str(sc["n"])
    listing = os.path.join(lists, f"{sc['name']}-{tool}.{'jsonl' if tool == 'fetchmux' else 'txt'}")
    stdin = None
    os.makedirs(lists, exist_ok=True)
    with open(listing, "w") as f:
        if tool == "fetchmux":
            for name, size, sha in manifest:
                f.write(json.dumps({"op": "download", "id": name, "url": url + name,
                                    "dest": os.path.join(out, name), "size": size,
                                    "hashes": {"sha256": sha}}) + "\n")
            cmd = [FETCHMUX, "--max-parallel", n, "--max-per-host", n]
            cmd += ["--ca-file", CERT] if tls else []
            cmd += FETCHMUX_ARGS
            stdin = listing
        elif tool == "curl":
            for name, _, _ in manifest:
                f.write(f'url = "{url}{name}"\noutput = "{os.path.join(out, name)}"\n')
            cmd = ["curl", "--silent", "--show-error", "--fail", "--parallel",
                   "--parallel-max", n] + (["--cacert", CERT] if tls else []) + ["-K", listing]
        elif tool == "wget2":
            f.writelines(url + name + "\n" for name, _, _ in manifest)
            cmd = ["wget2", "--quiet", "--max-threads", n, "--directory-prefix", out]
            cmd += ["--ca-certificate", CERT] if tls else []
            cmd += ["--input-file", listing]
        elif tool == "aria2c":
            for name, _, sha in manifest:
                f.write(f"{url}{name}\n  out={name}\n  checksum=sha-256={sha}\n")
            cmd = ["aria2c", "--quiet", "-j", n, "-x1", "--dir", out]
            cmd += ["--ca-certificate", CERT] if tls else []
            cmd += ["-i", listing]
        elif tool == "sequential":
            f.writelines(f"{url}{name} {name}\n" for name, _, _ in manifest)
            cmd = [sys.executable, os.path.join(REPO, "bench", "seq_download.py"), listing, out]
            cmd += [CERT] if tls else []
        elif tool.startswith("apt-"):
            # apt-get download writes into the working directory: run in OUT.
            names = " ".join(name.split("_")[0] for name, _, _ in manifest)
            conf = FRONT_SETUP[sc["name"]][tool]
            cmd = ["sh", "-c", f"cd {out} && exec apt-get download -q {names}"]
            cmd = ["env", f"APT_CONFIG={conf}"] + cmd
        elif tool.startswith("ug-"):
            f.write(url + "\n")
            f.writelines(name + "\n" for name, _, _ in manifest)
            python, helper = FRONT_SETUP[sc["name"]][tool]
            cmd = ["env", f"URLGRABBER_EXT_DOWN={helper}", python,
                   os.path.join(REPO, "bench", "ug_download.py"), listing, out]
        elif tool == "cp":
            cmd = ["cp", "-r", fixture_dir(sc) + "/.", out]
        elif tool == "sha256":
            cmd = ["openssl", "dgst", "-sha256"] + [os.path.join(fixture_dir(sc), m[0])
                                                    for m in manifest]
        else:
            raise ValueError(tool)
    if sc["delay"] and tool in CLIENT_TOOLS:
        cmd = ["ip", "netns", "exec", NS_CLI] + cmd
    return cmd, stdin


FRONT_SETUP = {}  # scenario name -> {tool: what `command` needs for it}


def prepare_front(sc, env):
    """The untimed set-up of P or U: two apt roots, each updated once (so the timed runs
    fetch packages only), or the urlgrabber venv and a link named urlgrabber-ext-down."""
    url = base_url(sc, *env.host_ports(sc))
    if sc["kind"] == "apt":
        FRONT_SETUP[sc["name"]] = {
            tool: make_apt_root(os.path.join(WORK, f"apt-{sc['name']}-{tool}"), url,
                                fetchmux=tool == "apt-fetchmux")
            for tool in sc["tools"]}
        return
    venv = os.path.join(WORK, "urlgrabber-venv")
    subprocess.run(["bash", os.path.join(REPO, "scripts", "urlgrabber-venv.sh"), venv],
                   check=True)
    link = os.path.join(WORK, "ug-bin", "urlgrabber-ext-down")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.lexists(link):
        os.symlink(FETCHMUX, link)
    python = os.path.join(venv, "bin", "python")
    FRONT_SETUP[sc["name"]] = {
        "ug-fetchmux": (python, link),
        "ug-stock": (python, os.path.join(venv, "bin", "urlgrabber-ext-down-stock"))}


def make_apt_root(root, url, fetchmux):
    """A throw-away apt root whose http method is the stock one or fetchmux (every other
    method is the system's); returns its APT_CONFIG file."""
    for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
              "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg",
              "methods"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
    for method in os.listdir("/usr/lib/apt/methods"):
        stock = os.path.join("/usr/lib/apt/methods", method)
        link = os.path.join(root, "methods", method)
        if not os.path.lexists(link):
            os.symlink(FETCHMUX if fetchmux and method in ("http", "https") else stock, link)
    with open(os.path.join(root, "etc/apt/sources.list"), "w") as f:
        f.write(f"deb [trusted=yes] {url} ./\n")
    conf = os.path.join(root, "apt.conf")
    with open(conf, "w") as f:
        f.write(f'Dir "{root}/";\nDir::State::status "{root}/var/lib/dpkg/status";\n'
                f'Dir::Bin::Methods "{root}/methods/";\n'
                f'Dir::Etc::Parts "{root}/etc/apt/apt.conf.d/";\n'
                'Acquire::Languages "none";\nAPT::Sandbox::User "root";\n')
    update = ["ip", "netns", "exec", NS_CLI, "env", f"APT_CONFIG={conf}", "apt-get", "update", "-q"]
    r = subprocess.run(update, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench: apt-get update in {root} failed:\n{r.stdout[-1500:]}"
                         f"{r.stderr[-1500:]}")
    return conf


def check_files(out, manifest):
    """None if `out` holds exactly the manifest's files with the right sizes and digests."""
    present = set(os.listdir(out))
    problems = []
    for name, size, sha in manifest:
        path = os.path.join(out, name)
        if name not in present:
            problems.append(f"{name} missing")
            continue
        present.discard(name)
        if os.path.getsize(path) != size:
            problems.append(f"{name} has {os.path.getsize(path)} bytes, not {size}")
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha:
            problems.append(f"{name}: wrong sha256")
    if present:
        problems.append(f"unexpected files: {', '.join(sorted(present)[:5])}")
    if problems:
        return f"{len(problems)} problem(s): " + "; ".join(problems[:5])
    return None


def check_digests(stdout_path, manifest):
    """For the sha256 bound: openssl's digests must be the manifest's."""
    with open(stdout_path) as f:
        got = dict(re.findall(r"\(.*/([^/]+)\)= ([0-9a-f]{64})", f.read()))
    bad = [m[0] for m in manifest if got.get(m[0]) != m[2]]
    return f"wrong or missing digest for {', '.join(bad[:5])}" if bad else None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def machine_busy_s():
    """CPU seconds the whole machine has been busy so far, summed over its cores: every
    process and kernel thread (user, nice, system, irq, softirq), not idle, iowait or steal."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def timed(cmd, stdin_path, stdout_path, stderr_path, timefile):
    """Run under GNU time in a session of its own; (exit status or None on timeout, times,
    CPU seconds the whole machine was busy meanwhile)."""
    busy_before = machine_busy_s()
    with open(stdin_path or os.devnull, "rb") as inp, open(stdout_path, "wb") as so, \
            open(stderr_path, "wb") as se:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%e %U %S %M", "-o", timefile] + cmd,
                                stdin=inp, stdout=so, stderr=se, start_new_session=True)
        try:
            status = proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = None
    try:
        with open(timefile) as f:
            wall, user, sys_, rss = f.read().split()[-4:]
        times = float(wall), float(user), float(sys_), int(rss)
    except (OSError, ValueError):
        times = (RUN_TIMEOUT, 0.0, 0.0, 0)
    return status, times, machine_busy_s() - busy_before


def run_once(tool, sc, manifest, index, position, env):
    runs = RUNS_DIR
    lists = os.path.join(WORK, "lists")
    os.makedirs(runs, exist_ok=True)
    os.makedirs(lists, exist_ok=True)
    out = os.path.join(runs, f"{sc['name']}-{tool}-{index}-{time.monotonic_ns()}")
    os.mkdir(out)
    host, ports = env.host_ports(sc)
    cmd, stdin = command(tool, sc, manifest, out, lists, host, ports)
    logs = os.path.join(WORK, "logs")
    os.makedirs(logs, exist_ok=True)
    stem = os.path.join(logs, f"{sc['name']}-{tool}-{index}")
    status, (wall, user, sys_, rss), machine = timed(cmd, stdin, stem + ".out", stem + ".err", stem + ".time")
    if tool == "sha256":
        error = check_digests(stem + ".out", manifest)
    else:
        error = check_files(out, manifest)
    if status is None:
        error = f"killed after {RUN_TIMEOUT:.0f} s" + (f"; {error}" if error else "")
    elif status != 0:
        with open(stem + ".err", errors="replace") as f:
            tail = " ".join(f.read().split())[-200:]
        error = f"exit status {status}: {tail}" + (f"; {error}" if error else "")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["sync"])
    if SETTLE:
        time.sleep(SETTLE)
    return dict(scenario=sc["name"], tool=tool, run=index + 1, position=position + 1,
                files=len(manifest), bytes=sum(m[1] for m in manifest), wall_s=wall,
                user_s=user, sys_s=sys_, cpu_s=round(user + sys_, 2), machine_cpu_s=round(machine, 2),
                maxrss_kib=rss,
                exit_status="timeout" if status is None else status, ok=error is None,
                error=error or "")


def probe_protocols(sc, manifest, env):
    """Untimed: each network tool fetches 8 files from the logging port; which protocol did
    nginx see, over how many connections?"""
    host, ports = env.host_ports(sc)
    logfile = os.path.join(WORK, "nginx-netns" if sc["delay"] else "nginx-local", "probe.log")
    found = {}
    for tool in [t for t in sc["tools"] if t in NETWORK_TOOLS + ["sequential"]]:
        out = os.path.join(RUNS_DIR, f"probe-{sc['name']}-{tool}")
        os.makedirs(out)
        offset = os.path.getsize(logfile) if os.path.exists(logfile) else 0
        cmd, stdin = command(tool, sc, manifest[:8], out, os.path.join(WORK, "lists"), host,
                             ports, probe=True)
        with open(stdin or os.devnull, "rb") as inp:
            r = subprocess.run(cmd, stdin=inp, capture_output=True, timeout=120)
        error = check_files(out, manifest[:8])
        shutil.rmtree(out, ignore_errors=True)
        lines = []
        if os.path.exists(logfile):
            with open(logfile) as f:
                f.seek(offset)
                lines = [line.split() for line in f if line.strip()]
        protocols = sorted({line[0] for line in lines})
        connections = len({line[-1] for line in lines})
        found[tool] = (f"{'/'.join(protocols) or '?'}, {len(lines)} requests on "
                       f"{connections} connection(s)"
                       + ("" if r.returncode == 0 and not error else f"; probe FAILED: {error}"))
    return found


# ---------------------------------------------------------------------------------------
# Scenario M: memory per queued download (bench/memory.py)

def run_memory(sc, env, writer, csv_file):
    """Every case of M, RUNS_M times each; the rows also go to the CSV file."""
    rows = []
    retry_base = f"http://127.0.0.1:{env.local_ports['http']}/fmbench-503/"
    for n, mode, _target in sc["cases"]:
        for index in range(sc["runs"]):
            dest = os.path.join(RUNS_DIR, f"M-{mode}-{n}-{index}")
            os.makedirs(dest)
            r = memory.run(FETCHMUX, n, mode, dest, retry_base if mode == "retry" else None)
            shutil.rmtree(dest, ignore_errors=True)
            row = dict(scenario="M", tool=f"fetchmux {mode} {n}", run=index + 1, position=1,
                       files=n, bytes=0, wall_s=r["submit_s"], user_s=0.0, sys_s=0.0,
                       cpu_s=0.0, machine_cpu_s=0.0, maxrss_kib=r["peak_kib"],
                       exit_status="", ok=r["ok"], error=r["error"])
            writer.writerow(row)
            csv_file.flush()
            rows.append(dict(row, n=n, mode=mode))
            state = "ok" if r["ok"] else f"FAILED: {r['error']}"
            log(f"M {mode:6} {n:>7,} run {index + 1}/{sc['runs']}: peak RSS "
                f"{r['peak_kib'] / 1024:6.1f} MiB ({r['submit_s']:.2f} s)  {state}")
    return rows


def memory_section(rows, scenarios):
    """The table of M and its targets (an empty list when M did not run)."""
    sc = next((s for s in scenarios if s["kind"] == "memory"), None)
    if sc is None:
        return []
    lines = ["## Memory (scenario M)", "",
             "Peak RSS of fetchmux (VmHWM in /proc/PID/status) once every download of the case "
             "is in the helper: *queued* is N downloads of 4 KiB files with `size` and "
             "`sha256`, `--max-parallel 1`, every URL on a socket that accepts and never "
             "answers (one transfer hangs, the others wait in the queue); *waiting for a "
             "retry* is N downloads each answered 503 with `Retry-After: 600` by nginx, all on "
             "their retry timers. Then SIGTERM: each run must end with `bye`, N `aborted` "
             "failures and nothing on disk. bench/memory.py makes both. The targets are "
             "issue 13's, for queued downloads; the retry case has none and is shown to "
             "compare (issue 13 measured 216 MiB for it before).", "",
             "| case | N | ok runs | median peak RSS MiB (min–max) | peak ÷ N | target |",
             "|---|---|---|---|---|---|"]
    verdicts = []
    for n, mode, target in sc["cases"]:
        runs = [r for r in rows if r["n"] == n and r["mode"] == mode]
        good = [r["maxrss_kib"] / 1024 for r in runs if r["ok"]]
        case = "queued" if mode == "queued" else "waiting for a retry"
        goal = f"≤ {target} MiB" if target else "–"
        if not good:
            lines.append(f"| {case} | {n:,} | 0/{len(runs)} | failed | | {goal} |")
            if target:
                verdicts.append(f"- **M, {n:,} {case}** (≤ {target} MiB): does not hold: no "
                                f"successful run.")
            continue
        med = statistics.median(good)
        lines.append(f"| {case} | {n:,} | {len(good)}/{len(runs)} | {med:.1f} "
                     f"({min(good):.1f}–{max(good):.1f}) | {med * MIB / n:,.0f} B | {goal} |")
        if target:
            verdicts.append(f"- **M, {n:,} {case}** (peak RSS ≤ {target} MiB): {med:.1f} MiB: "
                            f"**{'holds' if med <= target else 'does not hold'}**.")
    return lines + [""] + verdicts + [""]


# ---------------------------------------------------------------------------------------
# Summary, report, plot

def median(values):
    return statistics.median(values) if values else None


def summarize(results):
    rows = {}
    for r in results:
        rows.setdefault((r["scenario"], r["tool"]), []).append(r)
    summary = {}
    for key, runs in rows.items():
        good = [r for r in runs if r["ok"]]
        s = dict(scenario=key[0], tool=key[1], runs=len(runs), ok=len(good),
                 files=runs[0]["files"], bytes=runs[0]["bytes"])
        if good:
            s.update(wall=median([r["wall_s"] for r in good]),
                     wall_min=min(r["wall_s"] for r in good),
                     wall_max=max(r["wall_s"] for r in good),
                     cpu=median([r["cpu_s"] for r in good]),
                     machine=median([r["machine_cpu_s"] for r in good]),
                     rss=median([r["maxrss_kib"] for r in good]) / 1024)
            s["cpu_per_gb"] = s["cpu"] / (s["bytes"] / 1e9) if s["bytes"] else 0.0
        summary[key] = s
    return summary


def best_peer(summary, sc):
    name = sc["name"]
    peers = [summary[(name, p)] for p in sc["peers"]
             if (name, p) in summary and summary[(name, p)]["ok"]]
    return min(peers, key=lambda s: s["wall"]) if peers else None


def table(summary, scenarios):
    lines = ["| scenario | tool | files | ok runs | median wall s (min–max) | rate | "
             "median CPU s (user+sys) | CPU s / GB | median machine CPU s | median peak RSS MiB | "
             "fetchmux / best peer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for sc in scenarios:
        if sc["kind"] == "memory":
            continue
        best = best_peer(summary, sc)
        for tool in ALL_TOOLS:
            s = summary.get((sc["name"], tool))
            if s is None:
                continue
            label = {"sequential": "one at a time (subset)", "cp": "cp (floor)",
                     "sha256": "openssl sha256 (1 core)"}.get(tool, tool)
            if tool == "aria2c":
                label = "aria2c (verifies sha-256)"
            if tool == "fetchmux":
                label = "**fetchmux** (verifies sha-256 + size)"
            label = FRONT_LABELS.get(tool, label)
            if sc["kind"] != "files" and tool == "fetchmux":
                label = f"fetchmux alone, JSON Lines, {sc['n']} at once"
            files = shape(sc)
            if not s["ok"]:
                lines.append(f"| {sc['name']} | {label} | {files} | 0/{s['runs']} | failed | | | | | | |")
                continue
            if s["wall"] <= 0:
                rate = "–"
            elif sc["size"] is None or sc["size"] >= MIB:
                rate = f"{s['bytes'] / s['wall'] / 1e6:,.0f} MB/s"
            else:
                rate = f"{s['files'] / s['wall']:,.0f} files/s"
            ratio = ""
            if tool == sc["fm"] and best and best["wall"] > 0:
                ratio = f"**{s['wall'] / best['wall']:.2f}** (best: {best['tool']})"
            lines.append(
                f"| {sc['name']} | {label} | {files} | {s['ok']}/{s['runs']} | "
                f"{s['wall']:.2f} ({s['wall_min']:.2f}–{s['wall_max']:.2f}) | {rate} | "
                f"{s['cpu']:.2f} | {s['cpu_per_gb']:.1f} | {s['machine']:.2f} | {s['rss']:.1f} | "
                f"{ratio} |")
    return lines


def targets(summary, scenarios, skipped, rtt_ms):
    lines = []
    names = [sc["name"] for sc in scenarios]
    for name in ["A", "B", "C", "L", "L2", "P", "U"]:
        sc = next((s for s in SCENARIOS if s["name"] == name), None)
        fm = summary.get((name, sc["fm"]))
        if name in skipped:
            lines.append(f"- **{name}**: not measured ({skipped[name]}).")
            continue
        if name not in names:
            lines.append(f"- **{name}**: not run (BENCH_ONLY).")
            continue
        if not fm or not fm["ok"]:
            lines.append(f"- **{name}**: does not hold: fetchmux had no successful run.")
            continue
        if name == "L":
            # The bound uses the round trip the link has (ping, before the runs); the delay
            # line's own forwarding adds to the nominal delay, and no transfer can beat it.
            rtt = rtt_ms or RTT_MS
            rounds = sc["files"] / sc["n"]
            bound = rounds * rtt / 1000
            nominal = rounds * RTT_MS / 1000
            verdict = "holds" if fm["wall"] <= 1.1 * bound else "does not hold"
            lines.append(f"- **L** (within 10 % of files / parallel × RTT = {sc['files']:,} / "
                         f"{sc['n']} × {rtt:.1f} ms (the link's round trip, ping's average) = "
                         f"{bound:.2f} s, so ≤ {1.1 * bound:.2f} s): "
                         f"fetchmux {fm['wall']:.2f} s = {fm['wall'] / bound:.2f} × the bound: "
                         f"**{verdict}**. Against the nominal {RTT_MS:.0f} ms ({nominal:.2f} s, "
                         f"≤ {1.1 * nominal:.2f} s): {fm['wall'] / nominal:.2f} × "
                         f"({'holds' if fm['wall'] <= 1.1 * nominal else 'does not hold'}). "
                         f"No HTTP/1.1 client can go below {math.ceil(rounds) + 1} round trips "
                         f"here ({(math.ceil(rounds) + 1) * rtt / 1000:.2f} s): one to connect, "
                         f"then {math.ceil(rounds)} request rounds on each connection.")
            continue
        best = best_peer(summary, sc)
        if not best or best["wall"] <= 0:
            lines.append(f"- **{name}**: no peer had a successful run.")
            continue
        if sc["kind"] != "files":
            # P and U fetch the same files over the same link: the fastest run of either
            # is the most the link was seen to carry.
            fronts = [s["name"] for s in SCENARIOS if s["kind"] != "files"]
            runs = [s for (n, _), s in summary.items() if n in fronts and s["ok"]]
            fastest = min(runs, key=lambda s: s["wall_min"])
            lines.append(front_target(sc, fm, best, fastest, rtt_ms or RTT_MS))
            continue
        ratio = fm["wall"] / best["wall"]
        ok = ratio <= TARGETS[name]
        text = (f"- **{name}** (fetchmux ≤ {TARGETS[name]} × best peer): fetchmux "
                f"{fm['wall']:.2f} s / {best['tool']} {best['wall']:.2f} s = {ratio:.2f}")
        sha = summary.get((name, "sha256"))
        if sha and not sha["ok"]:
            sha = None
        if name == "C" and sha and sha["wall"] > 0:
            near = fm["wall"] <= 1.1 * sha["wall"]
            text += (f"; single-core SHA-256 bound {sha['wall']:.2f} s, fetchmux = "
                     f"{fm['wall'] / sha['wall']:.2f} × the bound (within 10 %: "
                     f"{'yes' if near else 'no'})")
            ok = ok or near
        text += f": **{'holds' if ok else 'does not hold'}**."
        if sha and not ok:
            text += " " + cpu_bound(fm, best, sha)
        lines.append(text)
    return lines


def front_target(sc, fm, stock, fastest, rtt_ms):
    """P and U: the package manager's own client with fetchmux as its helper against the
    same client with its stock helper, and why the target is or is not within reach:
    `fastest` is the tool whose quickest run moved the scenario's bytes fastest through the
    delay line in P or U (the most this link was seen to carry)."""
    ratio = fm["wall"] / stock["wall"]
    target = TARGETS[sc["name"]]
    verdict = "holds" if ratio <= target else "does not hold"
    mib = fm["bytes"] / MIB
    goal = target * stock["wall"]
    link = mib / fastest["wall_min"]
    rtt = rtt_ms / 1000
    text = (f"- **{sc['name']}** ({shape(sc)}, {mib:.0f} MiB, fetchmux as the helper ≤ "
            f"{target} × the stock helper): {fm['wall']:.2f} s / {stock['wall']:.2f} s = "
            f"{ratio:.2f}: **{verdict}**. The target is {goal:.2f} s, {mib / goal:.0f} MiB/s; "
            f"the fastest run of any tool in P or U moved the same bytes at {link:.0f} MiB/s "
            f"({fastest['scenario']}, {fastest['tool']}, {fastest['wall_min']:.2f} s) through "
            f"the delay line, which forwards every packet in one Python process.")
    if sc["kind"] == "apt":
        rounds = math.ceil(sc["files"] / 10)
        bound = max(rounds * rtt, mib / link)
        text += (f" apt hands a method at most 10 items at a time (Acquire::Max-Pipeline-Depth): "
                 f"the stock method pipelines them on one connection and answers in order; "
                 f"fetchmux runs them at once on several connections and answers each when it "
                 f"is done. Any method needs at least {rounds} rounds × {rtt_ms:.1f} ms = "
                 f"{rounds * rtt:.2f} s of round trips and {mib:.0f} MiB / {link:.0f} MiB/s = "
                 f"{mib / link:.2f} s of bytes, which can overlap: at least {bound:.2f} s, "
                 f"{bound / stock['wall']:.2f} × the stock method, "
                 + ("so the target is out of reach on this link" if bound > goal else
                    "so the target needs the link kept full from the first item to the last")
                 + f"; fetchmux as the method took {fm['wall'] / bound:.2f} × that bound.")
    else:
        per_helper = sc["files"] / 5
        bound = per_helper * rtt + mib / 5 / link
        text += (f" urlgrabber's parent runs one transfer per helper process, at most 5 at once "
                 f"on this mirror (its max_connections), and gives a helper its next file only "
                 f"after the last one's answer, so each helper fetches {per_helper:.0f} files "
                 f"one after another: at least {per_helper:.0f} × {rtt_ms:.1f} ms of round "
                 f"trips plus its fifth of the bytes at no more than {link:.0f} MiB/s, "
                 f"{per_helper * rtt:.2f} + {mib / 5 / link:.2f} = {bound:.2f} s whatever the "
                 f"helper, {bound / stock['wall']:.2f} × the stock helper's time"
                 + (", so the target is out of reach under this parent; fetchmux as the helper "
                    f"took {fm['wall'] / bound:.2f} × that bound, saving the stock helper's "
                    "Python start-up and per-file work." if bound > goal else "."))
    return text


def cpu_bound(fm, best, sha):
    """Why a scenario that hashes cannot keep up with a peer that does not: the machine's CPU
    seconds per run, over its cores, against the wall times."""
    floor = fm["machine"] / CORES
    need = (best["machine"] + sha["cpu"]) / CORES
    return (f"The machine is the limit: fetchmux's runs kept it busy for {fm['machine']:.2f} CPU s "
            f"(every process: fetchmux, nginx, the kernel), and {CORES} cores need "
            f"{floor:.2f} s for that: fetchmux took {fm['wall'] / floor:.2f} × as long. "
            f"{best['tool']}'s runs took {best['machine']:.2f} CPU s without hashing; SHA-256 of "
            f"the same bytes costs {sha['cpu']:.2f} CPU s (openssl, above); a tool doing "
            f"{best['tool']}'s work and the hashing needs at least "
            f"({best['machine']:.2f} + {sha['cpu']:.2f}) / {CORES} = {need:.2f} s with every "
            f"core busy throughout, {need / best['wall']:.2f} × {best['tool']}'s time, so "
            f"fetchmux can only reach the target by doing its own non-hashing work in "
            f"fewer CPU seconds than {best['tool']} (it used "
            f"{max(fm['machine'] - sha['cpu'], 0):.2f} of the machine's, {best['tool']} "
            f"{best['machine']:.2f}).")


def versions():
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return ((r.stdout or "") + (r.stderr or "")).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    cpu = "unknown"
    mem = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    try:
        hello = json.loads(subprocess.run([FETCHMUX], stdin=subprocess.DEVNULL, capture_output=True,
                                          text=True, timeout=10).stdout.splitlines()[0])
        libcurl = hello.get("libcurl", "?")
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        libcurl = "?"
    debian = open("/etc/debian_version").read().strip() if os.path.exists("/etc/debian_version") else "?"
    return {
        "machine": f"{os.cpu_count()} CPUs (nproc {first_line(['nproc'])}), {cpu}",
        "memory": mem,
        "system": f"Debian {debian}, kernel {first_line(['uname', '-r'])}",
        "fetchmux": f"{first_line([FETCHMUX, '--version'])}, libcurl {libcurl} (from its hello "
                    f"event), built by `cargo build --release`",
        "curl": first_line(["curl", "--version"]),
        "wget2": first_line(["wget2", "--version"]),
        "aria2c": first_line(["aria2c", "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "openssl": first_line(["openssl", "version"]),
        "python": sys.version.split()[0],
    }


def commands_section(scenarios, env):
    lines = ["Input files are written before each timed run; OUT is the run's fresh directory, "
             "WORK the scratch directory. One line of each input file is shown.", ""]
    for sc in scenarios:
        if sc["kind"] == "memory":
            lines += [f"**M**: bench/memory.py (its docstring says how each case is made).", ""]
            continue
        host, ports = env.host_ports(sc)
        sample = [["f0000.bin", sc["size"], "<sha256 hex>"]]
        if sc["kind"] != "files":
            sample = [["fmbench-000_1.0_all.deb", 1024, "<sha256 hex>"]]
        lines.append(f"**{sc['name']}** ({shape(sc)}, "
                     f"{'https' if sc['tls'] else 'http'}://{host}"
                     f"{', through the delay line' if sc['delay'] else ''}):")
        lines.append("")
        lines.append("```")
        tmp = tempfile.mkdtemp(dir=WORK)
        for tool in sc["tools"]:
            manifest = sample[:1]
            cmd, stdin = command(tool, sc, manifest, "OUT", tmp, host, ports)
            text = " ".join(cmd).replace(WORK, "WORK").replace(tmp, "WORK/lists")
            text = text.replace(REPO + "/", "")
            if stdin:
                text += f" < {stdin.replace(tmp, 'WORK/lists')} > events.jsonl"
            lines.append(text)
            listing = [p for p in os.listdir(tmp) if p.startswith(f"{sc['name']}-{tool}.")]
            if listing:
                with open(os.path.join(tmp, listing[0])) as f:
                    body = f.read().strip().replace(WORK, "WORK")
                lines.append("    # input: " + body.replace("\n", "\n    #        "))
        shutil.rmtree(tmp)
        lines += ["```", ""]
    return lines


def write_svg(summary, scenarios, path):
    colors = dict(fetchmux="#1f5fbf", curl="#f28e2b", wget2="#59a14f", aria2c="#e15759",
                  sequential="#9c755f", cp="#bab0ac", sha256="#76b7b2")
    colors.update({"apt-fetchmux": "#1f5fbf", "ug-fetchmux": "#1f5fbf",
                   "apt-stock": "#edc948", "ug-stock": "#b07aa1"})
    width, height = 980, 460
    left, top, bottom = 30, 60, 370
    groups = [sc for sc in scenarios if any((sc["name"], t) in summary for t in ALL_TOOLS)]
    group_w = (width - 2 * left) / max(1, len(groups))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="16">'
             f'fetchmux benchmarks: median wall time in seconds (lower is better)</text>',
             f'<text x="{width / 2}" y="42" text-anchor="middle" font-size="11" fill="#555">'
             f'Each scenario has its own scale (its slowest full-size tool); the one-at-a-time '
             f'bar covers a subset and is cut off when taller.</text>']
    for gi, sc in enumerate(groups):
        x0 = left + gi * group_w
        tools = [t for t in ALL_TOOLS if (sc["name"], t) in summary]
        full = [summary[(sc["name"], t)]["wall"] for t in tools
                if summary[(sc["name"], t)]["ok"] and t != "sequential"]
        scale_max = max(full) if full else 1.0
        bar_w = (group_w - 20) / max(1, len(tools))
        parts.append(f'<line x1="{x0 + 8:.1f}" y1="{bottom}" x2="{x0 + group_w - 8:.1f}" '
                     f'y2="{bottom}" stroke="#333"/>')
        label = f"{sc['name']}: {shape(sc)}"
        label += ", 50 ms RTT" if sc["delay"] else ""
        label += ", TLS+h2" if sc["tls"] else ""
        parts.append(f'<text x="{x0 + group_w / 2:.1f}" y="{bottom + 20}" text-anchor="middle" '
                     f'font-size="11">{label}</text>')
        for ti, tool in enumerate(tools):
            s = summary[(sc["name"], tool)]
            x = x0 + 10 + ti * bar_w
            if not s["ok"]:
                parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{bottom - 4}" text-anchor="middle" '
                             f'font-size="9" fill="{colors[tool]}">failed</text>')
                continue
            h = (bottom - top - 20) * min(1.0, s["wall"] / scale_max)
            cut = s["wall"] > scale_max * 1.0001
            parts.append(f'<rect x="{x + 1:.1f}" y="{bottom - h:.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{h:.1f}" fill="{colors[tool]}"><title>{sc["name"]} {tool}: '
                         f'{s["wall"]:.2f} s</title></rect>')
            if cut:
                y = bottom - h + 12
                parts.append(f'<path d="M{x + 1:.1f} {y:.1f} l{(bar_w - 2) / 2:.1f} -5 '
                             f'l{(bar_w - 2) / 2:.1f} 5" stroke="white" stroke-width="3" fill="none"/>')
            value = f"{s['wall']:.2f}" if s["wall"] < 100 else f"{s['wall']:.0f}"
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{bottom - h - 4:.1f}" '
                         f'text-anchor="middle" font-size="9">{value}</text>')
    legend = [t for t in ALL_TOOLS if any((sc["name"], t) in summary for sc in groups)]
    names = dict(sequential="one at a time (subset)", cp="cp floor", sha256="sha256 bound",
                 aria2c="aria2c (verifies)", fetchmux="fetchmux (verifies)")
    names.update({"apt-fetchmux": "fetchmux (apt, urlgrabber)", "ug-fetchmux": "",
                  "apt-stock": "stock apt method", "ug-stock": "stock urlgrabber helper"})
    legend = [t for t in legend if names.get(t, t)]
    step = (width - 2 * left) / max(1, len(legend))
    for i, tool in enumerate(legend):
        x = left + i * step
        parts.append(f'<rect x="{x:.1f}" y="{height - 40}" width="12" height="12" '
                     f'fill="{colors[tool]}"/><text x="{x + 16:.1f}" y="{height - 30}" '
                     f'font-size="11">{names.get(tool, tool)}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def changes_section():
    """bench/changes.md (what each optimisation bought, kept by hand), copied in as is."""
    try:
        with open(os.path.join(REPO, "bench", "changes.md")) as f:
            return f.read().rstrip("\n").split("\n") + [""]
    except OSError:
        return []


def write_report(summary, scenarios, skipped, notes, env, csv_path, started, memory_results):
    docs = os.path.join(REPO, "docs") if WRITE_DOCS else WORK
    md_path = os.path.join(docs, "benchmarks.md")
    svg_path = os.path.join(docs, "benchmarks.svg")
    vers = versions()
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (bench/bench.py) on {started} UTC; do not edit by hand, "
        "run `make bench` again. Raw per-run results were written to a CSV file in the "
        "scratch directory (path printed at the end of the run).",
        "",
        f"fetchmux against the tools a package manager might use instead, on one machine "
        f"(below), nginx on the same machine. N = {PARALLEL} transfers at once for A, B, L, L2 "
        f"and N = {PARALLEL_C} for C, the same N for every tool. Medians over {RUNS} runs per "
        f"tool ({RUNS_C} for C).",
        "",
        "## Results",
        "",
    ] + table(summary, scenarios) + [
        "",
        "fetchmux / best peer: fetchmux's median wall time divided by the lowest median wall "
        "time among curl, wget2 and aria2c (the one-at-a-time baseline runs on a subset and "
        "is not a peer; cp and openssl are floors, not peers). CPU is user + system time of "
        "the whole process tree; CPU s / GB is per 10⁹ bytes of files fetched. Machine CPU is "
        "what the whole machine spent busy during the run, summed over its cores "
        "(`/proc/stat`: user, nice, system, irq and softirq time of every process and kernel "
        "thread: the tool, nginx, the delay line, writeback; not idle, iowait or steal).",
        "",
        "What each tool verifies: **fetchmux** checks size and SHA-256 of every file while it "
        "downloads (`size` and `hashes.sha256` in every request) and places only verified "
        "files; **aria2c** checks SHA-256 after each download (`checksum=sha-256=…` per entry "
        "of its input file; it exits 32 on a mismatch); curl, wget2 and the one-at-a-time "
        "downloader check nothing. The harness checks every file of every run afterwards, "
        "outside the timing.",
        "",
        "## Targets",
        "",
    ] + targets(summary, scenarios, skipped, env.rtt_ms) + [
        "",
    ] + memory_section(memory_results, scenarios) + [
        "",
        "## Method",
        "",
        f"- Every tool runs {RUNS} times per scenario ({RUNS_C} for C), round-robin: run 1 of "
        "every tool, then run 2 of every tool, …, with the order rotated by one each round, "
        "so that no tool always follows the same one. Before the counted runs of a scenario, "
        "every tool runs once untimed (a warm-up, like `hyperfine --warmup 1`): the first run "
        "of a scenario writes where the file system and the VM's memory have not been "
        "written yet and took up to 7 times as long as the next ones, and without the "
        "warm-up the tool first in round 1 (always fetchmux) paid for it.",
        f"- Every run writes into a brand-new directory under `{RUNS_BASE}` "
        f"({os.environ.get('BENCH_RUNS_FS') or fs_type(RUNS_BASE)}; `BENCH_RUNS_DIR` picks "
        "another place). Not the machine's own disk: its ext4 (a virtual disk mounted with "
        "`discard`) degrades after the first run: in a full run on it on 2026-11-23, `cp` "
        "of A's 10,000 files took 5.2 s (0.4 s is the figure documented for this kind of "
        "machine) and every tool took 5–7 s for A, fetchmux's first run 0.66 s and its "
        "others 4.6–5.7 s: the runs measured the disk, not the tools. After the run every "
        "file is checked against the manifest (size and SHA-256; missing, wrong or unexpected "
        "files, or a non-zero exit status, fail the run, and a failed run does not count). "
        f"Then the directory is deleted, `sync` runs and the bench waits {SETTLE:g} s before "
        "the next run.",
        "- Each run is timed by GNU time, `/usr/bin/time -f '%e %U %S %M'` (wall, user, "
        f"system, peak RSS); for L and L2 the whole `ip netns exec {NS_CLI} …` command is timed.",
        "- nginx (one worker process, sendfile, keep-alive, keepalive_requests 100000, no "
        "access log) serves the fixtures from the page cache: plain HTTP/1.1 on one port, TLS "
        "with HTTP/2 on another, with a self-signed certificate made by openssl at bench "
        "time. Every tool is told to trust that certificate (fetchmux `--ca-file`, curl "
        "`--cacert`, wget2 `--ca-certificate`, aria2c `--ca-certificate`, Python "
        "`ssl.create_default_context(cafile=…)`); no tool runs with verification off.",
        "- Fixtures are random bytes, generated at bench time in the scratch directory and "
        "synced to disk before the first run.",
        "- Floors: `cp -r` of the fixture tree into a fresh directory (A and C), and the "
        "single-core SHA-256 bound for C: `openssl dgst -sha256` of the four files from the "
        "page cache; both measured in the same round-robin as the tools.",
        "",
        "## Notes",
        "",
    ] + [f"- {n}" for n in notes] + [
        "",
    ] + changes_section() + [
        "## Machine and versions",
        "",
    ] + [f"- {k}: {v}" for k, v in vers.items()] + [
        "",
        "## Commands",
        "",
    ] + commands_section(scenarios, env) + [
        "## Plot",
        "",
        "![Median wall time per scenario and tool](benchmarks.svg)",
        "",
    ]
    with open(md_path, "w") as f:
        f.write("\n".join(lines))
    write_svg(summary, scenarios, svg_path)
    return md_path, svg_path


# ---------------------------------------------------------------------------------------

def main():
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (network namespaces, TUN devices)")
    if not os.access(FETCHMUX, os.X_OK):
        raise SystemExit(f"bench: {FETCHMUX} is missing: cargo build --release")
    log(f"scratch directory: {WORK}")
    scenarios = [s for s in SCENARIOS if not ONLY or s["name"] in ONLY]
    make_cert()
    notes = []
    skipped = {}
    manifests = {sc["name"]: make_fixtures(sc) for sc in scenarios if sc["kind"] != "memory"}
    subprocess.run(["sync"])
    env = Env(dict(http=free_port(), https=free_port(), probe=free_port()))
    if any(not sc["delay"] for sc in scenarios):
        start_nginx("local", "127.0.0.1", env.local_ports)
    if any(sc["delay"] for sc in scenarios):
        ok, reason = start_delay_line()
        rtt = None
        if ok:
            start_nginx("netns", SRV_ADDR, NS_PORTS, netns=NS_SRV)
            rtt, line = ping_rtt()
            if rtt is None:
                ok, reason = False, f"ping across the delay line failed: {line}"
            else:
                env.rtt_ms = rtt
                log(f"ip netns exec {NS_CLI} ping -c 10 {SRV_ADDR}: {line}")
        if not ok:
            log(f"SKIPPING the delay-line scenarios: {reason}")
            for sc in scenarios:
                if sc["delay"]:
                    skipped[sc["name"]] = f"network namespaces / TUN not usable here: {reason}"
            scenarios = [sc for sc in scenarios if not sc["delay"]]
        else:
            notes.append(
                f"L, L2, P and U: nginx in network namespace `{NS_SRV}` ({SRV_ADDR}), clients in "
                f"`{NS_CLI}` ({CLI_ADDR}), joined by bench/delayline.py: one TUN device in each "
                f"namespace and a Python process that forwards every IP packet to the other "
                f"side after {RTT_MS / 2:g} ms (`tc netem` is not available on this kernel). "
                f"Measured before the runs: `ip netns exec {NS_CLI} ping -c 10 {SRV_ADDR}`: "
                f"{line}. The delay line itself uses CPU on the same 2 cores during these scenarios.")

    results = []
    memory_results = []
    csv_path = os.path.join(WORK, "results.csv")
    fields = ["scenario", "tool", "run", "position", "files", "bytes", "wall_s", "user_s",
              "sys_s", "cpu_s", "machine_cpu_s", "maxrss_kib", "exit_status", "ok", "error"]
    with open(csv_path, "w", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=fields)
        writer.writeheader()
        for sc in scenarios:
            if sc["kind"] == "memory":
                memory_results.extend(run_memory(sc, env, writer, csv_file))
                continue
            manifest = manifests[sc["name"]]
            if sc["kind"] != "files":
                prepare_front(sc, env)
            if sc["tls"]:
                found = probe_protocols(sc, manifest, env)
                for tool, text in found.items():
                    log(f"{sc['name']} protocol probe: {tool}: {text}")
                notes.append(f"{sc['name']}, protocol and connections seen by nginx when each tool "
                             f"fetched 8 files over TLS (untimed probe): " +
                             "; ".join(f"{t}: {v}" for t, v in found.items()) + ".")
            tools = sc["tools"]
            if not SMOKE:
                # One untimed run of every tool first (like hyperfine --warmup 1): the first
                # run of a scenario writes where the file system and the VM's memory have
                # not been written yet, and took up to 7 times as long as the next ones
                # (C: 16.4 s then 4.2 s); without this, the first tool of round 1 paid it.
                for tool in tools:
                    subset = manifest[:sc["seq"]] if tool == "sequential" else manifest
                    r = run_once(tool, sc, subset, -1, 0, env)
                    state = "ok" if r["ok"] else f"FAILED: {r['error']}"
                    log(f"{sc['name']} {tool:10} warm-up (not counted): {r['wall_s']:7.2f} s "
                        f"wall  {state}")
            for index in range(sc["runs"]):
                shift = index % len(tools)
                for position, tool in enumerate(tools[shift:] + tools[:shift]):
                    subset = manifest[:sc["seq"]] if tool == "sequential" else manifest
                    r = run_once(tool, sc, subset, index, position, env)
                    writer.writerow(r)
                    csv_file.flush()
                    results.append(r)
                    state = "ok" if r["ok"] else f"FAILED: {r['error']}"
                    log(f"{sc['name']} {tool:10} run {index + 1}/{sc['runs']}: {r['wall_s']:7.2f} s wall"
                        f" {r['cpu_s']:6.2f} s CPU {r['machine_cpu_s']:6.2f} s machine CPU "
                        f"{r['maxrss_kib'] / 1024:6.1f} MiB  {state}")
            if sc["delay"]:
                drops = tun_drops()
                if drops:
                    notes.append(f"{sc['name']}: TUN counters after the scenario: {drops}.")
    counters = stop_delay_line()
    if counters:
        notes.append(f"Delay line at the end: {counters}.")
    summary = summarize(results)
    failures = [r for r in results + memory_results if not r["ok"]]
    print("\n".join(table(summary, scenarios)), flush=True)
    if memory_results:
        print("\n".join(memory_section(memory_results, scenarios)), flush=True)
    for name, reason in skipped.items():
        log(f"{name} skipped: {reason}")
    log(f"raw results (CSV): {csv_path}")
    if SMOKE:
        if failures:
            for r in failures:
                log(f"FAILED: {r['scenario']} {r['tool']} run {r['run']}: {r['error']}")
            return 1
        log(f"smoke OK: {len(results)} runs, every file of every run verified "
            f"(timings are not checked)")
        return 0
    notes.append("Runs that failed: " + ("none" if not failures else "; ".join(
        f"{r['scenario']} {r['tool']} run {r['run']}: {r['error']}" for r in failures)) + ".")
    notes.append("TLS trust: fetchmux is given the bench certificate with `--ca-file`. "
                 "`CURL_CA_BUNDLE` is read by the curl command-line tool, not by libcurl "
                 "itself, so it would not reach fetchmux.")
    md, svg = write_report(summary, scenarios, skipped, notes, env, csv_path, started,
                           memory_results)
    log(f"wrote {md} and {svg}")
    # A failed peer run is reported, not fatal; a failed fetchmux run is.
    return 1 if any(r["tool"] == "fetchmux" for r in failures) else 0



def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        sys.exit(main())
    finally:
        cleanup()
