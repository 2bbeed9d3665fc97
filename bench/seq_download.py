#!/usr/bin/env python3
"""The one-at-a-time baseline: download URLs in order with urllib, like pip does.

usage: seq_download.py LIST OUTDIR [CAFILE]   (LIST: one "URL NAME" per line)
"""
import shutil
import ssl
import sys
import urllib.request


def main():
    listing, outdir = sys.argv[1], sys.argv[2]
    context = ssl.create_default_context(cafile=sys.argv[3]) if len(sys.argv) > 3 else None
    with open(listing) as lines:
        for line in lines:
            url, name = line.split()
            with urllib.request.urlopen(url, context=context) as response:
                with open(f"{outdir}/{name}", "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)


if __name__ == "__main__":
    main()
