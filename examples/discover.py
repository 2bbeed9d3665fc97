#!/usr/bin/env python3
"""Download a tree of index files, to any depth, through one fetchmux process.

This is how a package manager uses fetchmux when metadata names more metadata: it keeps
stdin open, requests what it has learned about, reads events, requests more as indexes
arrive, and closes stdin only when nothing is pending. Python 3 standard library only.

Index format (text, one entry per line):  <sha256> <size> <name>
A name ending in ".idx" is another index, fetched and read in turn; anything else is a
plain file. Names are relative to --base and to --out.

usage: discover.py --fetchmux BIN --base URL --out DIR ROOT.idx [--root-sha256 HEX]
exit status: 0 when every file arrived verified, 1 otherwise.
"""
import argparse
import json
import os
import subprocess
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetchmux", required=True, help="path to the fetchmux binary")
    parser.add_argument("--base", required=True, help="base URL, ending in /")
    parser.add_argument("--out", required=True, help="directory to download into")
    parser.add_argument("--root-sha256", help="digest of the root index, if known")
    parser.add_argument("root", help="name of the root index, e.g. root.idx")
    args = parser.parse_args()

    helper = subprocess.Popen(
        [args.fetchmux, "--max-parallel", "8"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    pending = set()

    def request(name, sha256=None, size=None):
        req = {"op": "download", "id": name, "url": args.base + name,
               "dest": os.path.join(args.out, name)}
        if sha256:
            req["hashes"] = {"sha256": sha256}
        if size is not None:
            req["size"] = size
        pending.add(name)
        helper.stdin.write(json.dumps(req) + "\n")
        helper.stdin.flush()

    request(args.root, args.root_sha256)
    done = failed = 0
    for line in helper.stdout:
        event = json.loads(line)
        kind = event["event"]
        if kind == "done":
            done += 1
            name = event["id"]
            pending.discard(name)
            if name.endswith(".idx"):
                with open(event["path"]) as index:
                    for entry in index:
                        if entry.strip():
                            sha256, size, child = entry.split()
                            request(child, sha256, int(size))
        elif kind in ("failed", "invalid"):
            failed += 1
            pending.discard(event.get("id"))
            print(f"discover: {event}", file=sys.stderr)
        elif kind == "bye":
            break
        if not pending and not helper.stdin.closed:
            helper.stdin.close()  # nothing left to ask for: let fetchmux finish
    status = helper.wait()
    print(f"discover: {done} done, {failed} failed, fetchmux exit {status}")
    return 0 if failed == 0 and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
