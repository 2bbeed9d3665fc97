#!/usr/bin/env python3
"""A userspace delay line between two network namespaces (this kernel has no `tc netem`).

Opens one TUN device (IFF_TUN | IFF_NO_PI) per namespace, gives each an address, and forwards
every IP packet read from one device to the other after a fixed delay. With 25 ms each way
the round trip between the namespaces is 50 ms. Nothing is reordered or dropped on purpose:
the delay is the same for every packet, so two FIFO queues are enough.

Each device is created in the initial namespace and moved into its namespace with
`ip link set DEV netns NS`; the open descriptor stays attached to it.

Runs until SIGTERM/SIGINT, until --seconds have passed, or until a device goes away; then
prints one line of counters on stdout.

usage: delayline.py NS_A ADDR_A NS_B ADDR_B [--delay-ms 25] [--seconds 3600]
(addresses like 10.77.0.1/24; the namespaces must exist; root only)
"""
import argparse
import collections
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
BATCH = 256  # packets read from one device before the queues are served again


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def link_like_scheduling():
    """A link does not wait for a CPU: run this process ahead of the tools and servers it
    carries traffic for (SCHED_FIFO), and wake it on time (timer slack 1 us instead of the
    default 50 us). Without this, on 2 cores busy with a client and nginx, every packet
    waited for this process to be scheduled and the round trip grew with the load."""
    done = []
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        done.append("SCHED_FIFO 10")
    except (OSError, AttributeError):
        pass
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(29, 1, 0, 0, 0) == 0:  # PR_SET_TIMERSLACK, 1 ns
            done.append("timer slack 1 ns")
    except OSError:
        pass
    return ", ".join(done) or "default scheduling"


def sh(*args):
    subprocess.run(args, check=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ns_a")
    p.add_argument("addr_a")
    p.add_argument("ns_b")
    p.add_argument("addr_b")
    p.add_argument("--delay-ms", type=float, default=25.0)
    p.add_argument("--seconds", type=float, default=3600.0)
    p.add_argument("--names", default="fmbtun0,fmbtun1")
    args = p.parse_args()
    delay = args.delay_ms / 1000.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    fds = []
    for ns, addr, name in ((args.ns_a, args.addr_a, args.names.split(",")[0]),
                           (args.ns_b, args.addr_b, args.names.split(",")[1])):
        fd = open_tun(name)
        sh("ip", "link", "set", name, "netns", ns)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", addr, "dev", name)
        # A long device queue: 64 connections opening their windows at once must not overflow
        # it while this process is busy with the other direction.
        sh("ip", "netns", "exec", ns, "ip", "link", "set", name, "mtu", "1500",
           "txqueuelen", "10000", "up")
        fds.append(fd)
    a, b = fds
    realtime = link_like_scheduling()
    # queue[fd] holds (due time, packet) to be written to fd, in arrival order.
    queue = {a: collections.deque(), b: collections.deque()}
    other = {a: b, b: a}
    forwarded = write_errors = max_queued = 0
    print("delayline: ready", flush=True)
    print(f"delayline: {realtime}", file=sys.stderr, flush=True)

    end = time.monotonic() + args.seconds
    while not stop and time.monotonic() < end:
        heads = [q[0][0] for q in queue.values() if q]
        timeout = max(0.0, min(heads) - time.monotonic()) if heads else 0.5
        try:
            readable, _, _ = select.select([a, b], [], [], min(timeout, 0.5))
        except InterruptedError:
            continue
        for fd in readable:
            due = time.monotonic() + delay
            target = queue[other[fd]]
            for _ in range(BATCH):
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    stop.append(1)  # a namespace (and its device) went away
                    break
                target.append((due, packet))
            max_queued = max(max_queued, len(target))
        now = time.monotonic()
        for fd, q in queue.items():
            while q and q[0][0] <= now:
                _, packet = q.popleft()
                try:
                    os.write(fd, packet)
                    forwarded += 1
                except OSError:
                    write_errors += 1  # the receiving stack refused it, like a full link
    print(f"delayline: forwarded {forwarded} packets, {write_errors} write errors, "
          f"at most {max_queued} queued in one direction", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
