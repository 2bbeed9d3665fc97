#!/usr/bin/env bash
# Make (or reuse) a Python venv at DIR holding the real urlgrabber from PyPI with pycurl,
# for tests/urlgrabber_ext_down.rs: the parent side of yum's external downloader protocol,
# and its stock helper at DIR/libexec/urlgrabber-ext-down to compare fetchmux against.
# Idempotent: a venv that already imports urlgrabber and pycurl is left as it is.
set -euo pipefail

dir=${1:?usage: urlgrabber-venv.sh DIR}
python=${PYTHON:-python3}

ready() {
  [ -x "$dir/bin/python" ] && [ -f "$dir/libexec/urlgrabber-ext-down" ] &&
    "$dir/bin/python" -c 'import urlgrabber, pycurl, six' 2>/dev/null
}

ready && exit 0
# A half-made venv (an interrupted earlier run) is made again from scratch.
rm -rf "$dir"
"$python" -m venv "$dir"
# pycurl has manylinux wheels: no compiler or libcurl headers needed. Versions pinned so
# the test compares against the helper the spec was written from (urlgrabber 4.1.0).
"$dir/bin/pip" install --quiet --disable-pip-version-check \
  'urlgrabber==4.1.0' 'pycurl>=7.45' 'six'
ready || { echo "urlgrabber-venv: $dir was made but urlgrabber/pycurl/libexec helper are missing" >&2; exit 1; }
