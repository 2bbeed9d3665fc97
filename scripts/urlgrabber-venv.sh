#!/usr/bin/env bash
# Make (or reuse) a Python venv at DIR holding the real urlgrabber from PyPI with pycurl,
# for tests/urlgrabber_ext_down.rs: the parent side of yum's external downloader protocol,
# and its stock helper at DIR/libexec/urlgrabber-ext-down to compare fetchmux against (run
# through DIR/bin/urlgrabber-ext-down-stock).
# Idempotent: a venv that already imports urlgrabber and pycurl is kept as it is.
set -euo pipefail

dir=${1:?usage: urlgrabber-venv.sh DIR}
python=${PYTHON:-python3}

ready() {
  [ -x "$dir/bin/python" ] && [ -f "$dir/libexec/urlgrabber-ext-down" ] &&
    "$dir/bin/python" -c 'import urlgrabber, pycurl, six' 2>/dev/null
}

if ! ready; then
  # A half-made venv (an interrupted earlier run) is made again from scratch.
  rm -rf "$dir"
  "$python" -m venv "$dir"
  # pycurl has manylinux wheels: no compiler or libcurl headers needed. urlgrabber pinned
  # to the version the spec was written from.
  "$dir/bin/pip" install --quiet --disable-pip-version-check \
    'urlgrabber==4.1.0' 'pycurl>=7.45' 'six'
  ready || { echo "urlgrabber-venv: $dir was made but does not import urlgrabber and pycurl, or has no libexec/urlgrabber-ext-down" >&2; exit 1; }
fi
# The stock helper's first line is `#! /usr/bin/python`, which Debian does not have: run it
# with the venv's Python instead.
stock="$dir/bin/urlgrabber-ext-down-stock"
printf '#!/bin/sh\nexec "%s/bin/python" "%s/libexec/urlgrabber-ext-down" "$@"\n' "$dir" "$dir" > "$stock.tmp"
chmod +x "$stock.tmp"
mv "$stock.tmp" "$stock"
