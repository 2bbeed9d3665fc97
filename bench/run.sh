#!/usr/bin/env bash
# Entry point of `make bench` and `make bench-smoke` (pass --smoke). Root only.
#
# Installs what the bench needs from Debian when it is missing (apt-get update only then),
# makes a fresh scratch directory (under $BENCH_DIR, default /var/tmp), runs bench/bench.py,
# and on exit, however it ends, stops what the bench started and removes the bench's
# network namespaces and its large files. The raw results (results.csv) and logs stay in the
# scratch directory; its path is printed. Settings: see the top of bench/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: run as root (apt-get, network namespaces, TUN devices)" >&2
  exit 1
fi

# command -> Debian package
declare -A want=(
  [nginx]=nginx-light [curl]=curl [wget2]=wget2 [aria2c]=aria2 [openssl]=openssl
  [ip]=iproute2 [ping]=iputils-ping [python3]=python3 [apt-get]=apt [dpkg-deb]=dpkg
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The binary: BENCH_FETCHMUX, else the release build in CARGO_TARGET_DIR (default target).
bin=${BENCH_FETCHMUX:-${CARGO_TARGET_DIR:-target}/release/fetchmux}
if [ ! -x "$bin" ]; then
  echo "bench: $bin is missing: cargo build --release" >&2
  exit 1
fi
BENCH_FETCHMUX=$(realpath "$bin")
export BENCH_FETCHMUX

# One bench at a time on this machine: the namespace names are fixed.
exec 9>/run/lock/fetchmux-bench.lock
if ! flock -w 1800 9; then
  echo "bench: another bench still holds /run/lock/fetchmux-bench.lock after 30 minutes" >&2
  exit 1
fi

mode=""
for arg in "$@"; do [ "$arg" = "--smoke" ] && mode="-smoke"; done
base=${BENCH_DIR:-/var/tmp}
mkdir -p "$base"
work=$(mktemp -d "$base/fetchmux-bench$mode.XXXXXX")
export BENCH_WORK="$work"

cleanup() {
  # bench.py cleans up after itself; this is the safety net for a bench.py killed outright.
  # Only processes whose pid files this bench wrote, and only our own namespaces.
  local pidfile pid
  for pidfile in "$work"/nginx-*/nginx.pid "$work"/delayline.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  if [ -f "$work/netns-created" ]; then
    sleep 0.5
    while read -r ns; do
      # Only namespaces this bench created, and only once nothing runs in them any more.
      [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && ip netns del "$ns" 2>/dev/null || true
    done <"$work/netns-created"
  fi
  [ -n "${BENCH_KEEP:-}" ] && [ "${BENCH_KEEP}" != 0 ] || rm -rf "$work/fixtures"
  rm -rf "$work/runs" "$work/lists"
  if mountpoint -q "$work/fs" 2>/dev/null; then
    umount "$work/fs" || umount -l "$work/fs" || true
  fi
  rm -f "$work/fs.img"
  echo "bench: scratch directory (results.csv, logs): $work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The runs write into an ext4 file system of the bench's own (an image on a loop device,
# without `discard`): this VM's own disk, mounted with `discard`, degrades after the first
# run (cp of 10,000 small files: 5.2 s instead of 0.4 s), so runs on it measured the disk.
# Where a loop device cannot be had, tmpfs (/dev/shm). BENCH_RUNS_DIR overrides both.
if [ -z "${BENCH_RUNS_DIR:-}" ] && [ -z "$mode" ]; then
  if truncate -s 12G "$work/fs.img" && mkfs.ext4 -q -F "$work/fs.img" && mkdir -p "$work/fs" \
    && mount -o loop,noatime "$work/fs.img" "$work/fs"; then
    export BENCH_RUNS_DIR="$work/fs"
    export BENCH_RUNS_FS="ext4 on a loop device (an image in the scratch directory, no discard)"
  else
    rm -f "$work/fs.img"
    echo "bench: no loop device for an ext4 of our own; the runs write to tmpfs (/dev/shm)"
  fi
fi

python3 bench/bench.py "$@"
