#!/usr/bin/env python3
"""The one-at-a-time baseline: download files in order, one request at a time, the way pip
does (one keep-alive connection per host, as a requests.Session keeps; Python standard
library only). Checks nothing: the bench checks the files afterwards.

usage: seq_download.py LIST OUTDIR [CAFILE]   (LIST: one "URL NAME" per line)
Exits 1 on the first HTTP status other than 200.
"""
import http.client
import os
import ssl
import sys
import urllib.parse


def main():
    listing, outdir = sys.argv[1], sys.argv[2]
    context = ssl.create_default_context(cafile=sys.argv[3]) if len(sys.argv) > 3 else None
    connections = {}
    with open(listing) as lines:
        for line in lines:
            url, name = line.split()
            parts = urllib.parse.urlsplit(url)
            key = (parts.scheme, parts.netloc)
            for attempt in (1, 2):  # once more on a fresh connection if the kept one was closed
                conn = connections.get(key)
                if conn is None:
                    if parts.scheme == "https":
                        conn = http.client.HTTPSConnection(parts.netloc, timeout=60, context=context)
                    else:
                        conn = http.client.HTTPConnection(parts.netloc, timeout=60)
                    connections[key] = conn
                try:
                    conn.request("GET", parts.path, headers={"User-Agent": "seq-download"})
                    response = conn.getresponse()
                except (http.client.HTTPException, OSError):
                    conn.close()
                    del connections[key]
                    if attempt == 2:
                        raise
                    continue
                break
            if response.status != 200:
                print(f"{url}: HTTP {response.status}", file=sys.stderr)
                return 1
            with open(os.path.join(outdir, name), "wb") as out:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
