#!/usr/bin/env python3
"""Build a flat Debian repository of test packages, for apt to fetch over http.

    debrepo.py DIR [--count N] [--sizes 1K,40K,1M,...] [--prefix fmtest]

DIR gets N packages PREFIX-000 ... (`Architecture: all`, no dependencies, so they are
installable against an empty dpkg status), each a real .deb made by `dpkg-deb --build`
holding one file of random bytes: sizes cycle through --sizes, and random bytes do not
compress, so a package of "1M" is about 1 MiB on the wire. Beside them: `Packages`,
`Packages.xz` and a `Release` with MD5Sum, SHA1 and SHA256, which is what
`deb [trusted=yes] http://HOST:PORT/ ./` needs.

Standard library only (plus dpkg-deb, which every Debian has); the apt tests use it with a
few dozen packages, the benchmarks with hundreds. Prints one line per package
(`name size sha256`) to stdout.
"""

import argparse
import email.utils
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip()
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def build_deb(out_dir, work, name, version, size):
    """One package whose payload is `size` random bytes; returns the .deb's path."""
    root = os.path.join(work, name)
    payload_dir = os.path.join(root, "usr", "share", name)
    os.makedirs(os.path.join(root, "DEBIAN"))
    os.makedirs(payload_dir)
    with open(os.path.join(payload_dir, "payload.bin"), "wb") as f:
        f.write(os.urandom(size))
    control = (
        f"Package: {name}\n"
        f"Version: {version}\n"
        "Architecture: all\n"
        "Maintainer: fetchmux tests <tests@localhost>\n"
        f"Installed-Size: {max(1, size // 1024)}\n"
        "Section: misc\n"
        "Priority: optional\n"
        f"Description: fetchmux test package of {size} random bytes\n"
    )
    with open(os.path.join(root, "DEBIAN", "control"), "w") as f:
        f.write(control)
    deb = os.path.join(out_dir, f"{name}_{version}_all.deb")
    # gzip at its fastest: it cannot shrink the random payload, but it takes out tar's
    # zero padding, so that a "1K" package is about 1 KiB plus its headers.
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", root, deb],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(root)
    return deb, control


def digests(path):
    hashes = {"MD5sum": hashlib.md5(), "SHA1": hashlib.sha1(), "SHA256": hashlib.sha256()}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def packages_stanza(control, filename, path):
    d = digests(path)
    return (
        control
        + f"Filename: ./{filename}\n"
        + f"Size: {os.path.getsize(path)}\n"
        + f"MD5sum: {d['MD5sum']}\nSHA1: {d['SHA1']}\nSHA256: {d['SHA256']}\n"
    )


def release(directory, index_names):
    lines = [
        "Origin: fetchmux-tests",
        "Label: fetchmux-tests",
        "Suite: test",
        "Codename: test",
        "Date: " + email.utils.formatdate(usegmt=True),
        "Architectures: all",
        "Description: packages for fetchmux's apt tests",
    ]
    sums = {name: digests(os.path.join(directory, name)) for name in index_names}
    for field, key in (("MD5Sum", "MD5sum"), ("SHA1", "SHA1"), ("SHA256", "SHA256")):
        lines.append(f"{field}:")
        for name in index_names:
            size = os.path.getsize(os.path.join(directory, name))
            lines.append(f" {sums[name][key]} {size:>16} {name}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--sizes", default="1K,16K,100K,400K,1M,3M")
    parser.add_argument("--prefix", default="fmtest")
    parser.add_argument("--version", default="1.0")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    if shutil.which("dpkg-deb") is None:
        sys.exit("debrepo.py: dpkg-deb is not installed (Debian's dpkg package)")
    os.makedirs(args.dir, exist_ok=True)
    stanzas = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix=".build-") as work:
        for i in range(args.count):
            name = f"{args.prefix}-{i:03d}"
            deb, control = build_deb(args.dir, work, name, args.version, sizes[i % len(sizes)])
            stanzas.append(packages_stanza(control, os.path.basename(deb), deb))
            print(name, os.path.getsize(deb), digests(deb)["SHA256"])
    packages = "\n".join(stanzas).encode()
    with open(os.path.join(args.dir, "Packages"), "wb") as f:
        f.write(packages)
    with open(os.path.join(args.dir, "Packages.xz"), "wb") as f:
        f.write(lzma.compress(packages, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64))
    with open(os.path.join(args.dir, "Release"), "w") as f:
        f.write(release(args.dir, ["Packages", "Packages.xz"]))


if __name__ == "__main__":
    main()
