#!/usr/bin/env python3
"""Download a tree of index files, to any depth, through one fetchmux process.

This is how a package manager uses fetchmux when metadata names more metadata (Pulp's
"arbitrarily deep content"): one helper stays up, indexes are requested as they are learned
about, each finished index is read and its entries are added to the same batch, and the
batch ends when nothing is left to fetch. Built on the Python client (clients/python).

Index format (text, one entry per line):  <sha256> <size> <name>
A name ending in ".idx" is another index, fetched and read in turn; anything else is a
plain file. Names are relative to --base and to --out.

usage: discover.py [--fetchmux BIN] --base URL --out DIR ROOT.idx [--root-sha256 HEX]
exit status: 0 when every file arrived verified, 1 otherwise.
"""
import argparse
import os
import sys

# The client is one module: this repository's, beside this example.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "clients", "python"))
import fetchmux  # noqa: E402


def entries(index_path):
    with open(index_path) as index:
        for line in index:
            if line.strip():
                sha256, size, name = line.split()
                yield name, sha256, int(size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetchmux", help="the fetchmux binary (default: $FETCHMUX, PATH)")
    parser.add_argument("--base", required=True, help="base URL, ending in /")
    parser.add_argument("--out", required=True, help="directory to download into")
    parser.add_argument("--root-sha256", help="digest of the root index, if known")
    parser.add_argument("root", help="name of the root index, e.g. root.idx")
    args = parser.parse_args()

    def request(name, sha256=None, size=None):
        req = {"id": name, "url": args.base + name, "dest": os.path.join(args.out, name)}
        if sha256:
            req["hashes"] = {"sha256": sha256}
        if size is not None:
            req["size"] = size
        return req

    done = failed = 0
    with fetchmux.Session(args.fetchmux, max_parallel=8, progress=False) as session:
        batch = session.batch([request(args.root, args.root_sha256)])
        for result in batch:
            if not result.ok:
                failed += 1
                print("discover: %s: %s" % (result.id, result.error), file=sys.stderr)
                continue
            done += 1
            if result.id.endswith(".idx"):
                # Metadata that names more files: they join the batch being iterated.
                for name, sha256, size in entries(result.path):
                    batch.add(request(name, sha256, size))
    status = session.returncode
    print("discover: %d done, %d failed, fetchmux exit %s" % (done, failed, status))
    return 0 if failed == 0 and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
