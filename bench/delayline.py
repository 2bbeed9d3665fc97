#!/usr/bin/env python3
"""A userspace delay line between two network namespaces (this kernel has no `tc netem`).

Creates two TUN devices, moves one into each namespace, and forwards every IP packet from
one to the other after a fixed delay, so that the round-trip time between the namespaces is
twice that delay. Runs until killed (SIGTERM) or until --seconds have passed.

usage: delayline.py NS_A ADDR_A NS_B ADDR_B --delay-ms 25 [--seconds 3600]
(addresses like 10.77.0.1/24; the namespaces must exist; root only)
"""
import argparse
import fcntl
import heapq
import os
import select
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def sh(*args):
    subprocess.run(args, check=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ns_a"), p.add_argument("addr_a"), p.add_argument("ns_b"), p.add_argument("addr_b")
    p.add_argument("--delay-ms", type=float, default=25.0)
    p.add_argument("--seconds", type=float, default=3600.0)
    args = p.parse_args()
    delay = args.delay_ms / 1000.0
    tuns = {}
    for ns, addr, name in ((args.ns_a, args.addr_a, "fmbtun0"), (args.ns_b, args.addr_b, "fmbtun1")):
        fd = open_tun(name)
        # The open descriptor stays attached when the device moves to the namespace.
        sh("ip", "link", "set", name, "netns", ns)
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", addr, "dev", name)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", name, "mtu", "1500", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        tuns[fd] = None
    a, b = list(tuns)
    other = {a: b, b: a}
    print("delayline: ready", flush=True)
    queue = []  # (due, seq, fd, packet)
    seq = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.5
        readable, _, _ = select.select([a, b], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    return 0  # a namespace (and its device) went away: done
                seq += 1
                heapq.heappush(queue, (now + delay, seq, other[fd], packet))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, fd, packet = heapq.heappop(queue)
            try:
                os.write(fd, packet)
            except OSError:
                pass  # a full queue drops the packet, like a real link would
    return 0


if __name__ == "__main__":
    sys.exit(main())
