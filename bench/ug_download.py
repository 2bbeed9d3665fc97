#!/usr/bin/env python3
"""Download files the way yum does: urlgrabber's parallel_wait() over a MirrorGroup, each
transfer handed to the external downloader ($URLGRABBER_EXT_DOWN, the stock helper or
fetchmux). For scenario U of bench/bench.py; run with the venv's Python (urlgrabber, pycurl).

    ug_download.py LISTING OUT

LISTING: the mirror's base URL on the first line, then one file name per line. The mirror
allows 5 transfers at once (urlgrabber's default max_connections; a mirror without a limit
would get 2). Exit status 1 if any download failed (each failure on stderr).
"""
import os
import sys

from urlgrabber.grabber import URLGrabber, parallel_wait
from urlgrabber.mirror import MirrorGroup


def main():
    listing, out = sys.argv[1], sys.argv[2]
    with open(listing) as f:
        base, *names = f.read().split()
    # The mirror URL as bytes: urlgrabber 4.1.0's speed estimate splits it on b'@'.
    mirror = {"mirror": base.encode(), "kwargs": {"max_connections": 5}}
    group = MirrorGroup(URLGrabber(retry=1), [mirror])
    failures = []

    def failed(obj):
        failures.append(f"{obj.url}: {obj.exception}")

    for name in names:
        group.urlgrab(name, filename=os.path.join(out, name), async_=True, failfunc=failed)
    parallel_wait()
    for failure in failures:
        print(f"ug_download: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
