"""A Python client for fetchmux, the download helper for package managers.

One module, standard library only, Python 3.9 or later. It owns everything an integrator
would otherwise rewrite around the JSON Lines protocol (docs/protocol.md): spawning the
helper, a writer thread and a reader thread (so that neither pipe can block the other),
matching events to requests, typed exceptions for the error kinds, aggregated progress,
and shutting the helper down on every way out of a ``with`` block.

Sync::

    with fetchmux.Session(max_parallel=8) as s:
        for result in s.batch(requests):          # results as they finish
            if not result.ok:
                print(result.id, result.error)

Asyncio::

    async with fetchmux.AsyncSession() as s:
        result = await s.download("https://m/a.rpm", "/var/cache/a.rpm", hashes={...})

Simple::

    results = fetchmux.download_many([("https://m/a.rpm", "/tmp/a.rpm"), ...])

The helper is found as the ``binary`` argument, else the ``FETCHMUX`` environment variable,
else ``fetchmux`` on ``PATH``.
"""

import asyncio
import atexit
import collections
import dataclasses
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref

__all__ = [
    "Session", "AsyncSession", "Batch", "Download", "Result", "Progress",
    "download", "download_many", "find_binary",
    "FetchmuxError", "HelperError", "error_from",
    "InvalidRequest", "UnsupportedScheme", "DnsError", "ConnectError", "TlsError",
    "TransferTimeout", "TooSlow", "NetworkError", "Truncated", "HttpStatusError",
    "NotFound", "TooManyRedirects", "SizeMismatch", "TooLarge", "ChecksumMismatch",
    "RangeNotSatisfied", "LocalIOError", "Cancelled", "Aborted",
]

__version__ = "0.1.0"

# --------------------------------------------------------------------------------------
# Errors: one class per error kind of docs/protocol.md, under one base.


class FetchmuxError(Exception):
    """A download did not succeed, or the helper itself failed (``HelperError``).

    ``kind`` is the protocol's stable error kind; ``message`` is for people. ``status`` is
    the HTTP status for ``http_status``. ``id`` names the download, ``attempts`` lists the
    helper's earlier attempts as ``(url, FetchmuxError)`` pairs.
    """

    kind = None

    def __init__(self, message, *, kind=None, status=None, id=None, attempts=(), line=None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.status = status
        self.id = id
        self.attempts = list(attempts)
        self.line = line

    def __str__(self):
        where = "" if self.id is None else "%s: " % self.id
        return "%s%s (%s)" % (where, self.message, self.kind)


class HelperError(FetchmuxError):
    """The helper could not be started, or exited before it finished a download."""

    kind = "helper"


def _kind(name, doc, *bases):
    cls = type(name, bases or (FetchmuxError,), {"__doc__": doc})
    return cls


InvalidRequest = _kind("InvalidRequest", "invalid_request: the request is malformed; fix it.")
UnsupportedScheme = _kind("UnsupportedScheme", "unsupported_scheme: use another URL.")
DnsError = _kind("DnsError", "dns: a host name could not be resolved.")
ConnectError = _kind("ConnectError", "connect: the connection could not be made.")
TlsError = _kind("TlsError", "tls: handshake or certificate verification failed.")
TransferTimeout = _kind("TransferTimeout", "timeout: a libcurl timeout hit.")
TooSlow = _kind("TooSlow", "too_slow: below --low-speed-limit for --low-speed-time.")
NetworkError = _kind("NetworkError", "network: a reset connection or protocol error.")
Truncated = _kind("Truncated", "truncated: the body ended before its announced length.")
HttpStatusError = _kind("HttpStatusError", "http_status: not a success; see .status.")
NotFound = _kind("NotFound", "not_found: a file:// or ftp:// path does not exist.")
TooManyRedirects = _kind("TooManyRedirects", "too_many_redirects: more than --max-redirects.")
SizeMismatch = _kind("SizeMismatch", "size_mismatch: the body is shorter than `size`.")
TooLarge = _kind("TooLarge", "too_large: the body is over `size`/`max_size`/--max-size.")
ChecksumMismatch = _kind("ChecksumMismatch", "checksum_mismatch: a digest did not match.")
RangeNotSatisfied = _kind("RangeNotSatisfied", "range_not_satisfied: 416 or a wrong 206.")
LocalIOError = _kind("LocalIOError", "io: a local file-system error (ENOSPC, EACCES, ...).")
Cancelled = _kind("Cancelled", "cancelled: the client cancelled the download.")
Aborted = _kind("Aborted", "aborted: the helper shut down; resubmit to a new helper.")

_KINDS = {
    "invalid_request": InvalidRequest, "unsupported_scheme": UnsupportedScheme,
    "dns": DnsError, "connect": ConnectError, "tls": TlsError, "timeout": TransferTimeout,
    "too_slow": TooSlow, "network": NetworkError, "truncated": Truncated,
    "http_status": HttpStatusError, "not_found": NotFound,
    "too_many_redirects": TooManyRedirects, "size_mismatch": SizeMismatch,
    "too_large": TooLarge, "checksum_mismatch": ChecksumMismatch,
    "range_not_satisfied": RangeNotSatisfied, "io": LocalIOError,
    "cancelled": Cancelled, "aborted": Aborted,
}
for _k, _cls in _KINDS.items():
    _cls.kind = _k


def error_from(obj, id=None, attempts=(), line=None):
    """The exception for a protocol error object ``{"kind", "message", "status"?}``.

    A kind this client does not know yet (a newer helper) becomes a plain
    ``FetchmuxError`` carrying that kind, so branching on ``.kind`` still works.
    """
    kind = obj.get("kind")
    cls = _KINDS.get(kind, FetchmuxError)
    return cls(obj.get("message", kind or "error"), kind=kind, status=obj.get("status"),
               id=id, attempts=attempts, line=line)


# --------------------------------------------------------------------------------------
# Results and handles.


class Result:
    """How one download ended: ``ok`` and the ``done`` fields, or ``error``.

    Iterating many downloads never raises for one of them: the error is held here
    (``error``, an instance of the kind's class); ``raise_for_error()`` raises it.
    ``event`` is the raw ``done``/``failed``/``invalid`` event; ``request`` what was sent.
    ``failures`` lists the attempts that failed, as ``(url, error)``: before the success for
    a ``done`` (a mirror that answered 503 before another served the file), every attempt
    for a ``failed``.
    """

    __slots__ = ("id", "request", "event", "error", "path", "url", "size", "hashes", "status",
                 "attempts", "failures", "elapsed_ms", "cached", "not_modified", "etag",
                 "last_modified")

    def __init__(self, request, event=None, error=None):
        self.id = request["id"]
        self.request = request
        self.event = event or {}
        self.error = error
        e = self.event if error is None else {}
        self.path = e.get("path", request.get("dest"))
        self.url = e.get("url")
        self.size = e.get("size")
        self.hashes = e.get("hashes", {})
        self.status = e.get("status")
        attempts = self.event.get("attempts", 0)
        self.attempts = len(attempts) if isinstance(attempts, list) else attempts
        failed = attempts if isinstance(attempts, list) else self.event.get("failures", [])
        self.failures = [(a.get("url"), error_from(a.get("error", {}), id=self.id))
                         for a in failed]
        self.elapsed_ms = e.get("elapsed_ms")
        self.cached = e.get("cached", False)
        self.not_modified = e.get("not_modified", False)
        self.etag = e.get("etag")
        self.last_modified = e.get("last_modified")

    @property
    def ok(self):
        return self.error is None

    def raise_for_error(self):
        """Raise ``error`` if the download failed; return self otherwise."""
        if self.error is not None:
            raise self.error
        return self

    def __repr__(self):
        if self.ok:
            return "<Result %r ok size=%r>" % (self.id, self.size)
        return "<Result %r %s: %s>" % (self.id, self.error.kind, self.error.message)


class Download:
    """A submitted download: a handle to wait on, cancel, or attach callbacks to."""

    def __init__(self, session, request, line):
        self.session = session
        self.request = request
        self.id = request["id"]
        self.line = line
        self.attempt = 0
        self.url = None
        self._event = threading.Event()
        self._result = None
        self._callbacks = []

    def done(self):
        return self._event.is_set()

    def result(self, timeout=None):
        """The ``Result`` (never raises for a failed download; see ``Result.error``)."""
        if not _wait(self._event, timeout):
            raise TimeoutError("download %r not finished within %s s" % (self.id, timeout))
        return self._result

    def cancel(self):
        """Ask the helper to cancel; the result becomes ``Cancelled`` unless it won the race."""
        self.session.cancel(self)

    def add_done_callback(self, fn):
        """Call ``fn(result)`` when finished (at once if already): on the reader thread."""
        with self.session._lock:
            if self._result is None:
                self._callbacks.append(fn)
                return
        fn(self._result)

    def _finish(self, result):
        # Called by the reader thread with the session lock held.
        self._result = result
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        return callbacks

    def __repr__(self):
        return "<Download %r %s>" % (self.id, "done" if self.done() else "pending")


def _wait(event, timeout):
    # Event.wait in slices so that Ctrl-C reaches the main thread promptly on every Python.
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if left <= 0:
            return event.is_set()
        if event.wait(left):
            return True


# --------------------------------------------------------------------------------------
# Progress.


@dataclasses.dataclass(frozen=True)
class Progress:
    """A snapshot of the session's downloads.

    ``bytes`` counts finished files' sizes plus what running attempts have stored;
    ``bytes_total`` the sizes known so far (the request's ``size``, else the response's
    length) of files done or unfinished; failed files drop out of both. ``unknown_totals``
    is the number of unfinished downloads whose size is not known yet. ``rate`` is bytes
    per second received over the last few seconds (cached files do not count).
    """

    files_total: int
    files_done: int
    files_failed: int
    bytes: int
    bytes_total: int
    unknown_totals: int
    rate: float
    elapsed: float

    @property
    def files_finished(self):
        return self.files_done + self.files_failed

    @property
    def eta(self):
        """Seconds left at the current rate, or None when it cannot be told."""
        if self.unknown_totals or self.rate <= 0:
            return None
        return max(0, self.bytes_total - self.bytes) / self.rate


class _Progress:
    """The running sums behind ``Progress``: O(1) per event, fed by the reader thread."""

    WINDOW = 3.0

    def __init__(self):
        self.started = time.monotonic()
        self.files_total = self.files_done = self.files_failed = 0
        self.finished_bytes = 0
        self.current = {}      # id -> bytes the running attempt has stored
        self.current_sum = 0
        self.totals = {}       # id -> known size of an unfinished download
        self.totals_sum = 0
        self.unknown = 0
        self.received = 0      # cumulative bytes received, for the rate
        self.samples = collections.deque([(self.started, 0)])

    def submitted(self, id, size):
        self.files_total += 1
        if size is None:
            self.unknown += 1
        else:
            self.totals[id] = size
            self.totals_sum += size

    def _received(self, n):
        if n > 0:
            self.received += n
            now = time.monotonic()
            self.samples.append((now, self.received))
            # Keep one sample at or before the window's start, for the rate's base.
            while len(self.samples) > 2 and self.samples[1][0] <= now - self.WINDOW:
                self.samples.popleft()

    def _set_current(self, id, n):
        self.current_sum += n - self.current.get(id, 0)
        self.current[id] = n

    def _set_total(self, id, total):
        if id not in self.totals:
            self.unknown -= 1
            self.totals[id] = total
            self.totals_sum += total

    def attempt_started(self, id, attempt):
        if attempt > 1:
            self._set_current(id, 0)  # the count starts again with each attempt

    def progress(self, id, n, total):
        before = self.current.get(id, 0)
        self._received(n - before if n >= before else n)
        self._set_current(id, n)
        if total is not None:
            self._set_total(id, total)

    def _forget(self, id):
        self.current_sum -= self.current.pop(id, 0)
        if id in self.totals:
            self.totals_sum -= self.totals.pop(id)
        else:
            self.unknown -= 1

    def done(self, id, size, fetched):
        size = size or 0
        if fetched:
            self._received(size - self.current.get(id, 0))
        self._forget(id)
        self.files_done += 1
        self.finished_bytes += size

    def failed(self, id):
        self._forget(id)
        self.files_failed += 1

    def snapshot(self):
        now = time.monotonic()
        base_t, base_n = self.samples[0]
        for t, n in self.samples:
            if t > now - self.WINDOW:
                break
            base_t, base_n = t, n
        span = now - base_t
        rate = (self.received - base_n) / span if span > 0.05 else 0.0
        return Progress(
            files_total=self.files_total, files_done=self.files_done,
            files_failed=self.files_failed,
            bytes=self.finished_bytes + self.current_sum,
            bytes_total=self.finished_bytes + self.totals_sum,
            unknown_totals=self.unknown, rate=rate, elapsed=now - self.started)


# --------------------------------------------------------------------------------------
# Finding and starting the helper.


def find_binary(binary=None):
    """The helper to run: ``binary``, else ``$FETCHMUX``, else ``fetchmux`` on PATH."""
    candidate = binary or os.environ.get("FETCHMUX") or shutil.which("fetchmux")
    if not candidate:
        raise HelperError(
            "fetchmux not found: install it (cargo install --locked --path .), put it on "
            "PATH, set FETCHMUX=/path/to/fetchmux, or pass binary=...")
    candidate = os.fspath(candidate)
    if os.sep in candidate and not os.access(candidate, os.X_OK):
        raise HelperError("fetchmux binary %r is not an executable file: build it "
                          "(cargo build --release) or fix binary=/FETCHMUX" % candidate)
    return candidate


def _flags(flags):
    # max_parallel=8 -> --max-parallel 8; True -> --flag alone; None/False -> left out.
    args = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        args.append("--" + name.replace("_", "-"))
        if value is not True:
            args.append(str(value))
    return args


_LIVE = weakref.WeakSet()
_RELAY = object()  # the default for `stderr`: relay the helper's lines to sys.stderr


@atexit.register
def _stop_all():
    # The safety net: no helper outlives the interpreter, even an unclosed session's.
    for session in list(_LIVE):
        session.abort(timeout=2.0)


_REQUEST_FIELDS = ("url", "urls", "mirror", "path", "dest", "size", "max_size", "hashes",
                   "headers", "priority", "progress", "resume", "range", "if_none_match",
                   "if_modified_since")


def _build_request(id, fields, default_progress):
    req = {"op": "download"}
    if id is not None:
        req["id"] = str(id)
    for key, value in fields.items():
        if value is None:
            continue
        if key == "range" and isinstance(value, (tuple, list)):
            value = {"start": value[0], "end": value[1]}
        if key == "dest":
            value = os.fspath(value)
        req[key] = value
    if "dest" not in req:
        raise TypeError("a download needs `dest`, the path of the file to create")
    sources = [k for k in ("url", "urls", "mirror") if k in req]
    if len(sources) != 1:
        raise TypeError("a download needs exactly one source: url, urls, or mirror + path")
    if "mirror" in req and "path" not in req:
        raise TypeError("`mirror` needs `path`, relative to the set's base URLs")
    req.setdefault("progress", default_progress)
    return req


def _expected_size(req):
    if req.get("size") is not None:
        return req["size"]
    r = req.get("range")
    if isinstance(r, dict) and "start" in r and "end" in r:
        return r["end"] - r["start"] + 1
    return None


def _as_fields(request):
    # A request may be a dict of protocol fields, or a (url, dest) pair.
    if isinstance(request, dict):
        return dict(request)
    url, dest = request
    return {"url": url, "dest": dest}


class Session:
    """One running helper. Use it as a context manager.

    Keyword arguments that are not the session's own become command-line flags
    (``max_parallel=8`` is ``--max-parallel 8``; ``True`` gives the flag alone).
    ``progress`` is the default of each request's ``progress`` field (byte counts while
    files arrive); ``stderr`` is a file to relay the helper's diagnostics to (default
    ``sys.stderr``; ``None`` drops them; the last lines are kept for error messages);
    ``on_progress(Progress)`` is called from the reader thread after each event that
    changes the aggregate; ``on_event(dict)`` with every event line as read (for logs, or
    events this client does not interpret), before the client acts on it.

    On a normal exit from ``with`` the session closes stdin, lets the helper finish
    everything submitted (each download is bounded by the helper's retries and low-speed
    guard) and waits ``close_timeout`` seconds at most (None: as long as that takes);
    then, or when the ``with`` body raises, it sends SIGTERM (the helper aborts what is
    left, removes temporary files and says ``bye``), waits ``kill_timeout`` and kills.
    """

    def __init__(self, binary=None, *, progress=True, stderr=_RELAY, on_progress=None,
                 on_event=None, start_timeout=30.0, close_timeout=None, kill_timeout=5.0,
                 env=None, **flags):
        self.binary = find_binary(binary)
        self.args = [self.binary] + _flags(flags)
        self.default_progress = bool(progress)
        self.on_progress = on_progress
        self.on_event = on_event
        self.close_timeout = close_timeout
        self.kill_timeout = kill_timeout
        self.hello = None
        self.summary = None      # the `bye` event, once read
        self.problems = []       # `invalid` events for mirrors lines and unknown lines
        self.mirror_states = {}  # base URL -> its latest `mirror` event (put aside, or back)
        self._stderr_to = sys.stderr if stderr is _RELAY else stderr
        self._stderr_tail = collections.deque(maxlen=20)
        self._lock = threading.Lock()
        self._lines = 0
        self._by_line = {}       # line -> Download, until accepted or refused
        self._by_id = {}         # id -> Download, until done/failed
        self._mirror_lines = {}  # line -> set name
        self._cancel_lines = set()
        self._counter = itertools.count(1)
        self._progress = _Progress()
        self._hello_seen = threading.Event()
        self._finished = threading.Event()   # stdout reached EOF and the process was reaped
        self._outbox = queue.Queue()
        self._closing = False
        try:
            self._proc = subprocess.Popen(
                self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, close_fds=True)
        except OSError as e:
            raise HelperError("cannot start %s: %s" % (self.binary, e)) from e
        _LIVE.add(self)
        self._threads = [
            threading.Thread(target=self._write_loop, name="fetchmux-writer", daemon=True),
            threading.Thread(target=self._read_loop, name="fetchmux-reader", daemon=True),
            threading.Thread(target=self._stderr_loop, name="fetchmux-stderr", daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            _wait(self._hello_seen, start_timeout)
            if self.hello is None:
                if not self._finished.is_set():
                    raise HelperError("%s wrote no `hello` within %s s" % (
                        self.binary, start_timeout))
                raise HelperError("%s exited with status %s before `hello`: %s" % (
                    " ".join(self.args), self._proc.returncode, self.stderr_tail()))
        except BaseException:
            self.abort()
            raise

    # ---- what a user calls ------------------------------------------------------------

    @property
    def pid(self):
        return self._proc.pid

    @property
    def returncode(self):
        """The helper's exit status once it has exited (see docs/protocol.md), else None."""
        return self._proc.returncode if self._finished.is_set() else None

    @property
    def features(self):
        return list((self.hello or {}).get("features", []))

    def stderr_tail(self):
        """The helper's last lines on stderr (diagnostics for people), joined."""
        return " | ".join(self._stderr_tail) or "(nothing on stderr)"

    def submit(self, url=None, dest=None, *, id=None, **fields):
        """Queue a download; return its ``Download`` handle at once.

        Fields are the protocol's (docs/protocol.md): ``url`` | ``urls`` | ``mirror`` +
        ``path``, ``dest``, ``size``, ``max_size``, ``hashes``, ``headers``, ``priority``,
        ``progress``, ``resume``, ``range`` (a dict or a (start, end) pair),
        ``if_none_match``, ``if_modified_since``; any other keyword (an ``x-`` field, or a
        field of a newer helper) is sent as given. ``id`` defaults to ``dest``.
        """
        fields = dict(fields, url=url, dest=dest) if url is not None else dict(fields, dest=dest)
        req = _build_request(id, fields, self.default_progress)
        with self._lock:
            self._check_open()
            if "id" in req:
                if req["id"] in self._by_id:
                    raise ValueError("id %r is already in use by an unfinished download: "
                                     "wait for it, or choose another id" % req["id"])
            else:
                # The default id is `dest`, made unique among unfinished downloads.
                req["id"] = base = req["dest"]
                while req["id"] in self._by_id:
                    req["id"] = "%s#%d" % (base, next(self._counter))
            line = self._send_locked(req)
            d = Download(self, req, line)
            self._by_line[line] = d
            self._by_id[req["id"]] = d
            self._progress.submitted(req["id"], _expected_size(req))
        return d

    def download(self, url=None, dest=None, *, timeout=None, **fields):
        """Download one file and wait: the ``Result``, or the kind's exception raised."""
        return self.submit(url, dest, **fields).result(timeout).raise_for_error()

    def mirrors(self, name, urls, max_per_mirror=None, **fields):
        """Declare (or replace) mirror set ``name``; downloads then use mirror=name, path=."""
        req = {"op": "mirrors", "set": name, "urls": list(urls)}
        if max_per_mirror is not None:
            req["max_per_mirror"] = max_per_mirror
        req.update(fields)
        with self._lock:
            self._check_open()
            self._mirror_lines[self._send_locked(req)] = name

    def cancel(self, download):
        """Cancel a download (a ``Download`` or its id). A finished one is left alone."""
        id = download.id if isinstance(download, Download) else download
        with self._lock:
            if id not in self._by_id or self._closing:
                return  # finished already, or stdin is closed: nothing can be sent
            self._cancel_lines.add(self._send_locked({"op": "cancel", "id": id}))

    def batch(self, requests=(), max_in_flight=1000):
        """A ``Batch``: hand in an iterable of requests, iterate results as they finish."""
        return Batch(self, requests, max_in_flight)

    def as_completed(self, downloads, timeout=None):
        """Yield the ``Result`` of each download as it finishes (like concurrent.futures)."""
        downloads = list(downloads)
        q = queue.Queue()
        for d in downloads:
            d.add_done_callback(q.put)
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in downloads:
            yield _get(q, deadline)

    def progress(self):
        """A ``Progress`` snapshot of every download of this session."""
        with self._lock:
            return self._progress.snapshot()

    def close(self, timeout=None):
        """No more requests: let the helper finish, wait, and return the ``bye`` event.

        After ``timeout`` seconds (default: the session's ``close_timeout``) the helper is
        stopped as by ``abort()``.
        """
        if timeout is None:
            timeout = self.close_timeout
        self._close_stdin()
        try:
            if not _wait(self._finished, timeout):
                self.abort()
        except BaseException:
            self.abort()
            raise
        return self.summary

    def abort(self, timeout=None):
        """Stop now: SIGTERM (running downloads end ``aborted``), then SIGKILL if need be."""
        timeout = self.kill_timeout if timeout is None else timeout
        self._close_stdin()
        proc = getattr(self, "_proc", None)
        if proc is None:
            return self.summary
        if proc.poll() is None:
            _signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
        # The reader fails whatever is left once stdout ends; give it a moment.
        self._finished.wait(timeout)
        _LIVE.discard(self)
        return self.summary

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __del__(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            _signal(proc, signal.SIGKILL)

    # ---- the plumbing -------------------------------------------------------------------

    def _check_open(self):
        if self._closing:
            raise HelperError("this session is closed: start a new Session")

    def _send_locked(self, req):
        # Line numbers are given in the order lines enter the writer's queue, which is the
        # order they reach stdin, so an `invalid` event's `line` names the request exactly.
        self._lines += 1
        self._outbox.put((json.dumps(req, separators=(",", ":")) + "\n").encode("utf-8"))
        return self._lines

    def _close_stdin(self):
        with self._lock:
            if not self._closing:
                self._closing = True
                self._outbox.put(None)

    def _write_loop(self):
        # The only thread that writes stdin: the caller never blocks on the pipe, and the
        # reader never waits for a write (the helper reads stdin while it writes events).
        stdin = self._proc.stdin
        try:
            while True:
                data = self._outbox.get()
                if data is None:
                    break
                stdin.write(data)
                if self._outbox.empty():
                    stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the helper is gone; the reader reports what that means
        finally:
            try:
                stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def _stderr_loop(self):
        with self._proc.stderr:
            for raw in self._proc.stderr:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                if text.strip():
                    self._stderr_tail.append(text)
                if self._stderr_to is not None:
                    try:
                        print(text, file=self._stderr_to, flush=True)
                    except (OSError, ValueError):
                        pass

    def _read_loop(self):
        try:
            for raw in self._proc.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue  # not ours to judge: the protocol promises JSON objects
                if isinstance(event, dict):
                    self._dispatch(event)
        finally:
            self._proc.stdout.close()
            self._proc.wait()
            # Wait for stderr too, so that an error names the helper's last words.
            self._threads[2].join(2.0)
            with self._lock:
                self._closing = True
                left = list(self._by_id.values())
                self._by_id.clear()
                self._by_line.clear()
                how = ("was stopped by signal %d" % -self._proc.returncode
                       if self._proc.returncode < 0
                       else "exited with status %d" % self._proc.returncode)
                callbacks = []
                for d in left:
                    err = HelperError("fetchmux %s before finishing this download: %s"
                                      % (how, self.stderr_tail()), id=d.id)
                    self._progress.failed(d.id)
                    callbacks.append((d._finish(Result(d.request, error=err)), d._result))
            # `_finished` first: a constructor woken by `_hello_seen` then tells "exited" from
            # "silent" right.
            self._finished.set()
            self._hello_seen.set()
            _LIVE.discard(self)
            for fns, result in callbacks:
                _call(fns, result)

    def _dispatch(self, event):
        if self.on_event is not None:
            _call([self.on_event], event)
        kind = event.get("event")
        callbacks = ()
        tick = False
        with self._lock:
            id = event.get("id")
            if kind == "hello":
                self.hello = event
                self._hello_seen.set()
                return
            if kind == "bye":
                self.summary = event
                return
            if kind == "mirror":
                # The latest word on each mirror: "aside" (with back_in_ms) or "back".
                self.mirror_states[event.get("url")] = event
                return
            if kind == "invalid":
                d = self._by_line.pop(event.get("line"), None)
                if d is None:
                    line = event.get("line")
                    if line in self._cancel_lines:
                        self._cancel_lines.discard(line)  # a cancel that lost the race
                    else:
                        self._mirror_lines.pop(line, None)
                        self.problems.append(event)
                    return
                del self._by_id[d.id]
                err = error_from(event.get("error", {}), id=d.id, line=event.get("line"))
                self._progress.failed(d.id)
                callbacks = d._finish(Result(d.request, event, err))
                tick = True
            else:
                d = self._by_id.get(id)
                if d is None:
                    return
                if d.line is not None:
                    self._by_line.pop(d.line, None)  # accepted: no `invalid` can follow
                    d.line = None
                if kind == "start":
                    d.attempt = event.get("attempt", d.attempt + 1)
                    d.url = event.get("url")
                    self._progress.attempt_started(id, d.attempt)
                elif kind == "progress":
                    self._progress.progress(id, event.get("bytes", 0), event.get("total"))
                    tick = True
                elif kind == "done":
                    del self._by_id[id]
                    self._progress.done(id, event.get("size"),
                                        not event.get("cached") and not event.get("not_modified"))
                    callbacks = d._finish(Result(d.request, event))
                    tick = True
                elif kind == "failed":
                    del self._by_id[id]
                    attempts = [(a.get("url"), error_from(a.get("error", {}), id=id))
                                for a in event.get("attempts", [])]
                    err = error_from(event.get("error", {}), id=id, attempts=attempts)
                    self._progress.failed(id)
                    callbacks = d._finish(Result(d.request, event, err))
                    tick = True
            snapshot = self._progress.snapshot() if tick and self.on_progress else None
        _call(callbacks, d._result if callbacks else None)
        if snapshot is not None:
            _call([self.on_progress], snapshot)


def _call(fns, arg):
    for fn in fns:
        try:
            fn(arg)
        except Exception:  # a callback's bug must not stop the reader thread
            import traceback
            traceback.print_exc()


def _signal(proc, sig):
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass


def _get(q, deadline):
    while True:
        left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError("no download finished in time")
        try:
            return q.get(timeout=left)
        except queue.Empty:
            continue


class Batch:
    """Hand in requests, get ``Result``s back as they finish, with few in flight.

    ``requests`` is any iterable (a generator of a million is fine): at most
    ``max_in_flight`` of them are submitted and unfinished at once, and the next is taken
    only when one finishes. ``add()`` queues more while iterating (metadata that names more
    files); they go ahead of the rest of the iterable. Iteration ends when the iterable is
    exhausted and every download has finished. Failed downloads are results too.
    """

    def __init__(self, session, requests=(), max_in_flight=1000):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.session = session
        self.max_in_flight = max_in_flight
        self._source = iter(requests)
        self._added = collections.deque()
        self._done = queue.Queue()
        self.in_flight = 0

    def add(self, request=None, **fields):
        """Queue one more request (a dict, a (url, dest) pair, or keyword fields)."""
        self._added.append(fields if request is None else dict(_as_fields(request), **fields))

    def _next_request(self):
        if self._added:
            return self._added.popleft()
        if self._source is not None:
            try:
                return next(self._source)
            except StopIteration:
                self._source = None
        return None

    def _fill(self):
        while self.in_flight < self.max_in_flight:
            request = self._next_request()
            if request is None:
                return
            d = self.session.submit(**_as_fields(request))
            self.in_flight += 1
            d.add_done_callback(self._done.put)

    def __iter__(self):
        while True:
            self._fill()
            if self.in_flight == 0:
                return
            result = _get(self._done, None)
            self.in_flight -= 1
            yield result


# --------------------------------------------------------------------------------------
# asyncio.


class AsyncSession:
    """The asyncio face of ``Session``: ``async with AsyncSession(**flags) as s``.

    ``await s.download(...)`` returns the ``Result`` or raises the kind's exception;
    ``s.submit(...)`` returns an ``asyncio.Future`` of a ``Result`` (never raising for a
    failed download) for ``asyncio.gather`` and ``s.as_completed``; ``s.batch(...)`` is an
    async iterator of results. The helper's pipes are served by the session's threads, so
    the event loop never blocks on them. Cancelling a task awaiting ``download`` cancels
    the download in the helper.
    """

    def __init__(self, binary=None, **kwargs):
        self._binary = binary
        self._kwargs = kwargs
        self.session = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is None:
            await self.close()
        else:
            await self.abort()
        return False

    async def start(self):
        loop = asyncio.get_running_loop()
        self.session = await loop.run_in_executor(
            None, lambda: Session(self._binary, **self._kwargs))
        return self

    async def close(self, timeout=None):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self.session.close, timeout)
        except BaseException:
            self.session.abort()
            raise

    async def abort(self):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.session.abort)

    @property
    def hello(self):
        return self.session.hello

    @property
    def pid(self):
        return self.session.pid

    def mirrors(self, name, urls, max_per_mirror=None, **fields):
        self.session.mirrors(name, urls, max_per_mirror, **fields)

    def cancel(self, download):
        self.session.cancel(getattr(download, "fetchmux_id", download))

    def progress(self):
        return self.session.progress()

    def submit(self, url=None, dest=None, **fields):
        loop = asyncio.get_running_loop()
        d = self.session.submit(url, dest, **fields)
        fut = loop.create_future()
        fut.fetchmux_id = d.id

        def resolve(result):
            if not fut.cancelled():
                fut.set_result(result)

        def deliver(result):
            try:
                loop.call_soon_threadsafe(resolve, result)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

        d.add_done_callback(deliver)
        return fut

    async def download(self, url=None, dest=None, **fields):
        fut = self.submit(url, dest, **fields)
        try:
            result = await asyncio.shield(fut)
        except asyncio.CancelledError:
            self.session.cancel(fut.fetchmux_id)
            raise
        return result.raise_for_error()

    @staticmethod
    def as_completed(futures, timeout=None):
        """``asyncio.as_completed`` over futures from ``submit``: each yields a Result."""
        return asyncio.as_completed(futures, timeout=timeout)

    async def batch(self, requests, max_in_flight=1000):
        """Async-iterate results as they finish; ``requests`` may be sync or async."""
        if hasattr(requests, "__aiter__"):
            source = requests.__aiter__()

            async def next_request():
                try:
                    return await source.__anext__()
                except StopAsyncIteration:
                    return None
        else:
            it = iter(requests)

            async def next_request():
                return next(it, None)
        pending = set()
        exhausted = False
        while True:
            while not exhausted and len(pending) < max_in_flight:
                request = await next_request()
                if request is None:
                    exhausted = True
                    break
                pending.add(self.submit(**_as_fields(request)))
            if not pending:
                return
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in finished:
                yield fut.result()


# --------------------------------------------------------------------------------------
# pip-style one-liners.


def download(url, dest, *, binary=None, **fields):
    """Download one file with a helper of its own; raises the kind's exception."""
    flags = {k: fields.pop(k) for k in list(fields) if k not in _REQUEST_FIELDS
             and not k.startswith("x-") and k != "id"}
    with Session(binary, **flags) as s:
        return s.download(url, dest, **fields)


def download_many(requests, *, binary=None, max_in_flight=1000, raise_on_error=False,
                  on_progress=None, **flags):
    """Download every request with one helper; return the ``Result``s in input order.

    A request is a dict of protocol fields or a ``(url, dest)`` pair. Failed downloads are
    results holding their error; with ``raise_on_error`` the first failure (in input
    order) is raised once all have finished. Other keywords are helper flags.
    """
    results = []
    with Session(binary, on_progress=on_progress, **flags) as s:
        order = {}
        tagged = []
        for n, request in enumerate(requests):
            fields = _as_fields(request)
            fields.setdefault("id", "%d:%s" % (n, os.fspath(fields["dest"])))
            order[fields["id"]] = n
            tagged.append(fields)
        results = [None] * len(tagged)
        for result in s.batch(tagged, max_in_flight=max_in_flight):
            results[order[result.id]] = result
    if raise_on_error:
        for result in results:
            result.raise_for_error()
    return results


if __name__ == "__main__":  # pragma: no cover - a tiny manual check
    for r in download_many([(u, os.path.basename(u) or "index.html") for u in sys.argv[1:]]):
        print(r)
