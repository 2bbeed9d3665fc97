"""Tests of the Python client against the real helper and a local HTTP server.

The helper is $FETCHMUX (the Makefile's `test` target points it at the binary cargo built),
else `fetchmux` on PATH. The server is Python's http.server in a thread, serving a temporary
directory on 127.0.0.1, with three routes nginx would not give us: /corrupt/NAME (the file
with one byte changed), /slow/NAME (the file in 4 KiB pieces, 20 ms apart) and /hang/NAME
(headers, one piece, then nothing until the client goes). Everything else is the file or 404.
"""

import asyncio
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fetchmux  # noqa: E402


def setUpModule():
    # Fail loudly rather than skip: a client test that did not run is no evidence.
    fetchmux.find_binary()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def body(seed, size):
    out = bytearray()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, n)).digest()
        n += 1
    return bytes(out[:size])


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _piece_out(self, data, piece, pause, hang):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for start in range(0, len(data), piece):
                self.wfile.write(data[start:start + piece])
                self.wfile.flush()
                if hang:
                    # Hold the connection until the client leaves or the test ends.
                    while not self.server.stopping.wait(0.05):
                        self.wfile.write(b"")
                    return
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self.server.log.append(self.path)
        self.server.seen.append((self.path, dict(self.headers)))
        parts = self.path.split("/", 2)
        route = parts[1] if len(parts) == 3 else ""
        if route in ("corrupt", "slow", "hang"):
            path = os.path.join(self.server.root, parts[2])
            if not os.path.isfile(path):
                self.send_error(404)
                return
            with open(path, "rb") as f:
                data = f.read()
            if route == "corrupt":
                data = bytes([data[0] ^ 0xFF]) + data[1:]
                self._piece_out(data, len(data), 0, False)
            else:
                self._piece_out(data, 4096, 0.02, route == "hang")
            return
        super().do_GET()


class Server:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="fetchmux-py-srv.")
        handler = lambda *a, **kw: Handler(*a, directory=self.root, **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.root = self.root
        self.httpd.log = []
        self.httpd.seen = []  # (path, request headers)
        self.httpd.stopping = threading.Event()
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name, data):
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return data

    def url(self, path=""):
        return "http://127.0.0.1:%d/%s" % (self.port, path)

    @property
    def log(self):
        return self.httpd.log

    def stop(self):
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.root, ignore_errors=True)


def dead_url():
    # A port that was just free: nothing listens, so connecting is refused at once.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "http://127.0.0.1:%d/" % port


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Base(unittest.TestCase):
    def setUp(self):
        self.server = Server()
        self.addCleanup(self.server.stop)
        self.out = tempfile.mkdtemp(prefix="fetchmux-py-out.")
        self.addCleanup(shutil.rmtree, self.out, True)

    def dest(self, name):
        return os.path.join(self.out, name)

    def leftovers(self):
        found = []
        for _dir, _dirs, files in os.walk(self.out):
            found += [f for f in files if "fetchmux-tmp" in f]
        return found


class SyncTests(Base):
    def test_batch_downloads_verified_bytes_as_they_finish(self):
        files = {"f%02d.bin" % i: self.server.add("f%02d.bin" % i, body(i, 1000 + 997 * i))
                 for i in range(20)}
        requests = [{"url": self.server.url(n), "dest": self.dest(n), "size": len(b),
                     "hashes": {"sha256": sha256(b)}, "x-name": n} for n, b in files.items()]
        seen = set()
        with fetchmux.Session(max_parallel=4, stderr=None) as s:
            for result in s.batch(requests, max_in_flight=8):
                self.assertTrue(result.ok, result)
                name = result.request["x-name"]
                seen.add(name)
                with open(result.path, "rb") as f:
                    on_disk = f.read()
                self.assertEqual(on_disk, files[name])
                self.assertEqual(result.hashes["sha256"], sha256(on_disk))
                self.assertEqual(result.size, len(on_disk))
                self.assertEqual(result.status, 200)
        self.assertEqual(seen, set(files))
        self.assertEqual(s.returncode, 0)
        self.assertEqual(s.summary["ok"], 20)

    def test_batch_keeps_few_in_flight_from_a_generator(self):
        self.server.add("small", b"x" * 100)
        pulled = []
        yielded = []

        def requests():
            for i in range(200):
                # At most max_in_flight taken beyond what has come back.
                pulled.append(i)
                self.assertLessEqual(len(pulled) - len(yielded), 5)
                yield {"url": self.server.url("small"), "dest": self.dest("s/%d" % i)}

        with fetchmux.Session(stderr=None) as s:
            batch = s.batch(requests(), max_in_flight=5)
            for result in batch:
                self.assertTrue(result.ok, result)
                self.assertLessEqual(batch.in_flight, 5)
                yielded.append(result)
        self.assertEqual(len(yielded), 200)
        self.assertEqual(len(os.listdir(self.dest("s"))), 200)

    def test_errors_are_typed_results_in_a_batch_and_raised_by_download(self):
        good = self.server.add("good", body(1, 5000))
        requests = [
            {"url": self.server.url("missing"), "dest": self.dest("missing")},
            {"url": self.server.url("corrupt/good"), "dest": self.dest("corrupt"),
             "hashes": {"sha256": sha256(good)}},
            {"url": self.server.url("good"), "dest": self.dest("short"), "size": 6000},
            {"url": "gopher://127.0.0.1/x", "dest": self.dest("gopher")},
            {"url": self.server.url("good"), "dest": self.dest("bad"), "size": -1},
            {"url": dead_url() + "good", "dest": self.dest("dead")},
        ]
        with fetchmux.Session(retries=0, stderr=None) as s:
            results = {r.id: r for r in s.batch(requests)}
            with self.assertRaises(fetchmux.HttpStatusError) as raised:
                s.download(self.server.url("missing"), self.dest("again"))
        self.assertEqual(raised.exception.status, 404)
        self.assertEqual(raised.exception.kind, "http_status")
        expect = {"missing": fetchmux.HttpStatusError, "corrupt": fetchmux.ChecksumMismatch,
                  "short": fetchmux.SizeMismatch, "gopher": fetchmux.UnsupportedScheme,
                  "bad": fetchmux.InvalidRequest, "dead": fetchmux.ConnectError}
        for name, cls in expect.items():
            result = results[self.dest(name)]
            self.assertFalse(result.ok)
            self.assertIsInstance(result.error, cls, result)
            self.assertIsInstance(result.error, fetchmux.FetchmuxError)
            self.assertEqual(result.error.kind, cls.kind)
            self.assertFalse(os.path.exists(self.dest(name)), name)
            with self.assertRaises(cls):
                result.raise_for_error()
        self.assertEqual(results[self.dest("missing")].error.status, 404)
        self.assertEqual(results[self.dest("bad")].error.line, 5)
        self.assertIn("size", results[self.dest("bad")].error.message)
        self.assertEqual(self.leftovers(), [])
        self.assertEqual(s.returncode, 1)

    def test_mirror_set_with_a_dead_first_mirror(self):
        files = {"p/%d.rpm" % i: self.server.add("p/%d.rpm" % i, body(i, 3000)) for i in range(6)}
        events = []
        dead = dead_url()
        with fetchmux.Session(stderr=None, on_event=events.append) as s:
            s.mirrors("m", [dead, self.server.url()], max_per_mirror=2)
            handles = [s.submit(mirror="m", path=n, dest=self.dest(n),
                                hashes={"sha256": sha256(b)}) for n, b in files.items()]
            results = list(s.as_completed(handles, timeout=60))
        self.assertEqual(len(results), 6)
        for r in results:
            self.assertTrue(r.ok, r)
            self.assertTrue(r.url.startswith(self.server.url()), r.url)
            with open(r.path, "rb") as f:
                self.assertEqual(f.read(), files[r.request["path"]])
        # Some downloads tried the dead mirror first, and the live one served every file.
        starts = [e for e in events if e["event"] == "start"]
        firsts = [e["url"] for e in starts if e["attempt"] == 1]
        self.assertTrue(any(u.startswith(dead) for u in firsts), firsts)
        self.assertGreater(sum(r.attempts for r in results), 6)
        self.assertEqual(events[0]["event"], "hello")
        self.assertEqual(events[-1]["event"], "bye")
        self.assertEqual(sorted(p for p in self.server.log if p.startswith("/p/")),
                         sorted("/" + n for n in files))

    def test_results_list_failed_attempts_and_the_session_knows_mirrors_put_aside(self):
        data = self.server.add("y.bin", body(7, 2000))
        dead = dead_url()
        with fetchmux.Session(stderr=None, retries=1, put_aside_for=60) as s:
            r = s.download(urls=[self.server.url("missing.bin"), self.server.url("y.bin")],
                           dest=self.dest("y.bin"), hashes={"sha256": sha256(data)})
            self.assertEqual(r.attempts, 2)
            self.assertEqual(len(r.failures), 1, r.failures)
            url, err = r.failures[0]
            self.assertEqual(url, self.server.url("missing.bin"))
            self.assertIsInstance(err, fetchmux.HttpStatusError)
            self.assertEqual(err.status, 404)
            # A mirror that fails 5 times in a row on its own is put aside.
            s.mirrors("gone", [dead], max_per_mirror=1)
            for i in range(3):
                bad = s.submit(mirror="gone", path="z", dest=self.dest("z%d" % i)).result(60)
                self.assertFalse(bad.ok)
                self.assertIsInstance(bad.error, fetchmux.ConnectError)
            state = s.mirror_states[dead]
            self.assertEqual(state["state"], "aside")
            self.assertEqual(state["failures"], 5)
            self.assertEqual(state["back_in_ms"], 60000)

    def test_cancel_a_running_download(self):
        self.server.add("big", body(7, 1 << 20))
        started = threading.Event()
        with fetchmux.Session(stderr=None,
                              on_progress=lambda p: p.bytes and started.set()) as s:
            d = s.submit(self.server.url("hang/big"), self.dest("big"))
            self.assertTrue(started.wait(30), "no progress from the hanging route")
            d.cancel()
            result = d.result(timeout=30)
        self.assertIsInstance(result.error, fetchmux.Cancelled)
        self.assertFalse(os.path.exists(self.dest("big")))
        self.assertEqual(self.leftovers(), [])
        self.assertEqual(s.summary["failed"], 1)

    def test_progress_aggregates_files_bytes_and_rate(self):
        sizes = [100000, 150000, 200000]
        names = []
        for i, size in enumerate(sizes):
            names.append(self.server.add("prog%d" % i, body(i, size)) and "prog%d" % i)
        snapshots = []
        with fetchmux.Session(stderr=None, on_progress=snapshots.append) as s:
            for i, n in enumerate(names):
                # One with a size, the others learn it from Content-Length.
                s.submit(self.server.url("slow/" + n), self.dest(n),
                         size=sizes[i] if i == 0 else None)
            s.submit(self.server.url("missing"), self.dest("missing"))
        final = s.progress()
        total = sum(sizes)
        self.assertEqual((final.files_total, final.files_done, final.files_failed), (4, 3, 1))
        self.assertEqual(final.bytes, total)
        self.assertEqual(final.bytes_total, total)
        self.assertEqual(final.unknown_totals, 0)
        # Bytes count while files arrive, not only when they finish (the slow route takes
        # half a second or more per file; progress events come every 250 ms).
        arriving = [p for p in snapshots if p.files_done == 0 and p.bytes > 0]
        self.assertTrue(arriving, "no bytes counted before the first file finished")
        self.assertTrue(any(p.rate > 0 for p in arriving))
        for a, b in zip(snapshots, snapshots[1:]):
            self.assertLessEqual(a.files_finished, b.files_finished)
            self.assertLessEqual(a.bytes, b.bytes)  # no retries here: never backwards
        self.assertTrue(all(p.bytes <= p.bytes_total or p.unknown_totals for p in snapshots))
        self.assertEqual(snapshots[-1].files_done, 3)

    def test_body_raising_leaves_no_helper_and_no_temporary_file(self):
        self.server.add("big", body(9, 1 << 20))
        with self.assertRaises(RuntimeError):
            with fetchmux.Session(stderr=None) as s:
                pid = s.pid
                d = s.submit(self.server.url("hang/big"), self.dest("big"))
                while not s.progress().bytes:
                    time.sleep(0.02)
                raise RuntimeError("the package manager's own bug")
        self.assertFalse(alive(pid), "helper %d still running" % pid)
        self.assertEqual(s.returncode, 128 + 15)
        self.assertIsInstance(d.result(timeout=5).error, fetchmux.Aborted)
        self.assertEqual(self.leftovers(), [])

    def test_an_unclosed_session_is_stopped_at_interpreter_exit(self):
        self.server.add("big", body(8, 1 << 20))
        script = "\n".join([
            "import atexit, os, sys",
            "sys.path.insert(0, %r)" % os.path.dirname(os.path.abspath(fetchmux.__file__)),
            # Registered before the client's own handler, so it runs after it.
            "atexit.register(lambda: print('exit', s.returncode, flush=True))",
            "import fetchmux",
            "s = fetchmux.Session(stderr=None)",
            "d = s.submit(%r, %r)" % (self.server.url("hang/big"), self.dest("big")),
            "print('pid', s.pid, flush=True)",
            "while not s.progress().bytes: pass",
        ])
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60).stdout.split()
        self.assertEqual(out[0], "pid")
        # The helper was stopped (SIGTERM: 143) and reaped before the interpreter ended.
        self.assertEqual(out[2:], ["exit", "143"])
        self.assertFalse(alive(int(out[1])))
        self.assertEqual(self.leftovers(), [])

    def test_a_killed_helper_fails_what_is_pending_instead_of_hanging(self):
        self.server.add("big", body(3, 1 << 20))
        with fetchmux.Session(stderr=None) as s:
            d = s.submit(self.server.url("hang/big"), self.dest("big"))
            os.kill(s.pid, 9)
            result = d.result(timeout=30)
        self.assertIsInstance(result.error, fetchmux.HelperError)
        self.assertIn("signal 9", result.error.message)

    def test_many_requests_before_reading_do_not_deadlock(self):
        src = os.path.join(self.out, "src")
        with open(src, "wb") as f:
            f.write(b"abc")
        start = time.monotonic()
        with fetchmux.Session(stderr=None, file_urls=True) as s:
            # Submitting never blocks on the pipe; nobody reads results until all are in.
            handles = [s.submit("file://" + src, self.dest("n/%d" % i),
                                hashes={"sha256": sha256(b"abc")}, progress=False,
                                headers={"X-Pad": "p" * 500}) for i in range(5000)]
            results = [h.result(timeout=120) for h in handles]
        self.assertTrue(all(r.ok for r in results), [r.error for r in results if not r.ok][:3])
        self.assertEqual(len(os.listdir(self.dest("n"))), 5000)
        self.assertLess(time.monotonic() - start, 120)

    def test_bad_flag_is_a_helper_error_naming_it(self):
        with self.assertRaises(fetchmux.HelperError) as raised:
            fetchmux.Session(stderr=None, max_parallel="lots")
        self.assertIn("status 2", str(raised.exception))
        # The helper's own words (its stderr) reach the exception.
        self.assertIn("invalid value 'lots' for '--max-parallel", str(raised.exception))

    def test_resume_range_conditional_and_headers_reach_the_server(self):
        data = self.server.add("r.bin", body(4, 10000))
        with fetchmux.Session(stderr=None) as s:
            part = s.download(self.server.url("r.bin"), self.dest("part"), range=(100, 199),
                              hashes={"sha256": sha256(data[100:200])})
            whole = s.download(self.server.url("r.bin"), self.dest("whole"), resume=True,
                               priority=3, headers={"X-Test": "1"}, **{"x-tag": "t"})
            again = s.download(self.server.url("r.bin"), self.dest("whole"),
                               if_modified_since=whole.last_modified)
        with open(self.dest("part"), "rb") as f:
            self.assertEqual(f.read(), data[100:200])
        heads = [h for p, h in self.server.httpd.seen if p == "/r.bin"]
        self.assertEqual(heads[0].get("Range"), "bytes=100-199")
        self.assertEqual(heads[1].get("X-Test"), "1")
        self.assertEqual(heads[2].get("If-Modified-Since"), whole.last_modified)
        self.assertEqual(whole.size, 10000)
        self.assertTrue(again.not_modified, again.event)
        self.assertEqual(again.status, 304)

    def test_download_many_returns_results_in_input_order(self):
        for i in range(5):
            self.server.add("m%d" % i, body(i, 100 * (i + 1)))
        requests = [(self.server.url("m%d" % i), self.dest("m%d" % i)) for i in range(5)]
        requests.insert(2, (self.server.url("nope"), self.dest("nope")))
        results = fetchmux.download_many(requests, stderr=None)
        self.assertEqual([r.path for r in results], [d for _u, d in requests])
        self.assertEqual([r.ok for r in results], [True, True, False, True, True, True])
        with self.assertRaises(fetchmux.HttpStatusError):
            fetchmux.download_many(requests, raise_on_error=True, stderr=None)


class AsyncTests(Base):
    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, 120))

    def test_download_gather_as_completed_and_batch(self):
        files = {"a%d" % i: self.server.add("a%d" % i, body(i, 2000 * (i + 1)))
                 for i in range(8)}

        async def main():
            async with fetchmux.AsyncSession(stderr=None, max_parallel=4) as s:
                one = await s.download(self.server.url("a0"), self.dest("one"),
                                       hashes={"sha256": sha256(files["a0"])})
                many = await asyncio.gather(*(s.download(self.server.url(n), self.dest(n))
                                              for n in files))
                futs = [s.submit(self.server.url(n), self.dest("c/" + n)) for n in files]
                completed = [await f for f in s.as_completed(futs)]
                batched = [r async for r in s.batch(
                    ({"url": self.server.url(n), "dest": self.dest("b/" + n)} for n in files),
                    max_in_flight=3)]
                with self.assertRaises(fetchmux.HttpStatusError):
                    await s.download(self.server.url("missing"), self.dest("missing"))
                failed = await s.submit(self.server.url("missing"), self.dest("missing2"))
                return one, many, completed, batched, failed, s

        one, many, completed, batched, failed, s = self.run_async(main())
        self.assertEqual(one.hashes["sha256"], sha256(files["a0"]))
        for group in (many, completed, batched):
            self.assertEqual(len(group), 8)
            for r in group:
                self.assertTrue(r.ok, r)
                with open(r.path, "rb") as f:
                    self.assertEqual(sha256(f.read()), r.hashes["sha256"])
                self.assertEqual(r.hashes["sha256"], sha256(files[os.path.basename(r.path)]))
        self.assertIsInstance(failed.error, fetchmux.HttpStatusError)
        self.assertFalse(alive(s.pid))

    def test_cancelling_the_task_cancels_the_download(self):
        self.server.add("big", body(5, 1 << 20))

        async def main():
            async with fetchmux.AsyncSession(stderr=None) as s:
                task = asyncio.ensure_future(
                    s.download(self.server.url("hang/big"), self.dest("big")))
                while not s.progress().bytes:
                    await asyncio.sleep(0.02)
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await task
            return s

        s = self.run_async(main())
        self.assertEqual(s.session.summary["failed"], 1)
        self.assertFalse(os.path.exists(self.dest("big")))

    def test_body_raising_stops_the_helper(self):
        async def main():
            async with fetchmux.AsyncSession(stderr=None) as s:
                self.pid = s.pid
                raise KeyError("boom")

        with self.assertRaises(KeyError):
            self.run_async(main())
        self.assertFalse(alive(self.pid))


if __name__ == "__main__":
    unittest.main()
