#!/usr/bin/env bash
# Install the Debian packages the build and tests need, when they are missing.
# Idempotent and quiet when everything is present; needs root (or sudo) to install.
set -euo pipefail

# nginx-light and openssl: the interop tests run a real nginx over HTTP/1.1 and TLS + HTTP/2.
# apt: tests/apt_method.rs runs apt-get against a repository that tests/support/debrepo.py
# builds with dpkg-deb (dpkg, always there) and Python's own hashlib and lzma, so neither
# dpkg-scanpackages (dpkg-dev) nor xz (xz-utils) is needed.
# tinyproxy (an HTTP forward proxy) and microsocks (a SOCKS5 proxy): tests/tls_proxy.rs
# downloads through each and reads their logs. Their packages enable services, which the
# tests neither need nor use (each test runs its own instance on an ephemeral port).
# tmux: tests/get_cli.rs runs `fetchmux get` in a real terminal and reads the screen.
# python3 (3.9 or later): the Python client's tests (clients/python), examples/discover.py.
packages=(pkg-config libssl-dev ca-certificates python3 make gcc nginx-light openssl apt
  tinyproxy microsocks tmux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v cargo >/dev/null || { echo "deps: cargo is not on PATH; install Rust (rustup) first" >&2; exit 1; }
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "deps: installing the Debian packages the build and tests need (scripts/deps.sh says" \
     "why each): ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
