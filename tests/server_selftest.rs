//! The test server checked on its own, with a plain HTTP/1.1 client over std sockets: every
//! route's status line, headers and body, the faults on the wire, and connection counting.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::server::{etag_of, Stats, TestServer, LAST_MODIFIED};

/// A response as read off the wire.
struct Response {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .expect("a Content-Length")
            .parse()
            .unwrap()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Send one request; `close` adds `Connection: close`.
fn send(stream: &mut TcpStream, method: &str, path: &str, extra: &[(&str, &str)], close: bool) {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).unwrap();
}

/// Read a status line and headers, byte by byte so the body stays in the socket.
fn read_head(stream: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("reading the response head");
        assert_eq!(n, 1, "EOF inside the response head: {head:?}");
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    (status, headers)
}

/// Everything up to EOF.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut body = Vec::new();
    stream.read_to_end(&mut body).expect("reading to EOF");
    body
}

/// One request on its own connection (`Connection: close`); the body is everything
/// after the head up to EOF.
fn request(server: &TestServer, method: &str, path: &str, extra: &[(&str, &str)]) -> Response {
    let mut stream = connect(server.addr());
    send(&mut stream, method, path, extra, true);
    let (status, headers) = read_head(&mut stream);
    let body = read_to_eof(&mut stream);
    Response {
        status,
        headers,
        body,
    }
}

fn get(server: &TestServer, path: &str) -> Response {
    request(server, "GET", path, &[])
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Wait up to a second for `check`.
fn eventually(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    check()
}

#[test]
fn files_are_served_with_validators_and_unknown_paths_are_404() {
    let server = TestServer::start();
    let body = sample(1000);
    server.add_file("a.bin", body.clone());

    let r = get(&server, "/files/a.bin");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 1000);
    assert_eq!(r.body, body);
    assert_eq!(r.header("etag"), Some(etag_of(&body).as_str()));
    assert!(r.header("etag").unwrap().starts_with('"'));
    assert_eq!(r.header("last-modified"), Some(LAST_MODIFIED));

    let r = request(&server, "HEAD", "/files/a.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 1000);
    assert!(r.body.is_empty(), "HEAD has no body");

    let r = get(&server, "/norange/a.bin");
    assert_eq!((r.status, r.body), (200, body.clone()));

    for path in [
        "/files/missing",
        "/norange/missing",
        "/nowhere",
        "/",
        "/files/",
    ] {
        assert_eq!(get(&server, path).status, 404, "{path}");
    }
}

#[test]
fn ranges_give_206_or_416_and_norange_ignores_them() {
    let server = TestServer::start();
    let body = sample(1000);
    server.add_file("a", body.clone());
    let ranged = |path: &str, range: &str| request(&server, "GET", path, &[("Range", range)]);

    let r = ranged("/files/a", "bytes=10-19");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(r.content_length(), 10);
    assert_eq!(r.body, &body[10..20]);
    assert_eq!(r.header("etag"), Some(etag_of(&body).as_str()));

    let r = ranged("/files/a", "bytes=990-");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 990-999/1000"));
    assert_eq!(r.body, &body[990..]);

    let r = ranged("/files/a", "bytes=995-5000");
    assert_eq!(r.header("content-range"), Some("bytes 995-999/1000"));
    assert_eq!(r.body, &body[995..]);

    let r = ranged("/files/a", "bytes=-3");
    assert_eq!(r.header("content-range"), Some("bytes 997-999/1000"));
    assert_eq!(r.body, &body[997..]);

    for range in ["bytes=1000-", "bytes=1000-1001", "bytes=-0"] {
        let r = ranged("/files/a", range);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */1000"), "{range}");
        assert!(r.body.is_empty());
    }

    let r = ranged("/norange/a", "bytes=10-19");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-range"), None);
    assert_eq!(r.body, body);

    // If-Range: the current validator gets the range, a stale one the whole file.
    let etag = etag_of(&body);
    let r = request(
        &server,
        "GET",
        "/files/a",
        &[("Range", "bytes=500-"), ("If-Range", &etag)],
    );
    assert_eq!((r.status, r.body.len()), (206, 500));
    let r = request(
        &server,
        "GET",
        "/files/a",
        &[("Range", "bytes=500-"), ("If-Range", "\"stale\"")],
    );
    assert_eq!((r.status, r.body), (200, body));
}

#[test]
fn a_matching_if_none_match_gives_304() {
    let server = TestServer::start();
    let body = sample(100);
    server.add_file("c", body.clone());
    let etag = etag_of(&body);

    let r = request(&server, "GET", "/files/c", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.body.is_empty());

    let r = request(
        &server,
        "GET",
        "/files/c",
        &[("If-None-Match", "\"other\"")],
    );
    assert_eq!((r.status, r.body), (200, body));
}

#[test]
fn status_routes_answer_with_that_status() {
    let server = TestServer::start();
    for code in [404u16, 500, 503] {
        let r = get(&server, &format!("/status/{code}"));
        assert_eq!(r.status, code);
        assert!(!r.body.is_empty());
        assert_eq!(r.header("retry-after"), None);
    }
    let r = get(&server, "/status/503?retry_after=7");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(get(&server, "/status/abc").status, 400);
}

#[test]
fn redirect_sends_the_decoded_location() {
    let server = TestServer::start();
    let r = get(
        &server,
        "/redirect?to=http%3A%2F%2F127.0.0.1%3A9%2Ffiles%2Fx%3Fa%3D1%26b%3D%25",
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("http://127.0.0.1:9/files/x?a=1&b=%")
    );

    let r = get(&server, "/redirect?to=file%3A%2F%2F%2Fetc%2Fpasswd");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("file:///etc/passwd"));
}

#[test]
fn delay_waits_then_serves_the_file() {
    let server = TestServer::start();
    let body = sample(300);
    server.add_file("d", body.clone());
    let started = Instant::now();
    let r = get(&server, "/delay/300/d");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!((r.status, r.body), (200, body));
    assert_eq!(get(&server, "/delay/1/missing").status, 404);
}

#[test]
fn cut_sends_fewer_bytes_than_promised_then_closes() {
    let server = TestServer::start();
    let body = sample(200_000);
    server.add_file("big", body.clone());
    let r = get(&server, "/cut/120000/big");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 200_000);
    assert_eq!(r.body, &body[..120_000], "the first n bytes, then EOF");

    // Also on a kept-alive connection, after a normal response.
    let mut stream = connect(server.addr());
    send(&mut stream, "GET", "/files/big", &[], false);
    let (status, headers) = read_head(&mut stream);
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".into(), "200000".into())));
    let mut first = vec![0u8; 200_000];
    stream.read_exact(&mut first).unwrap();
    send(&mut stream, "GET", "/cut/10/big", &[], false);
    let (status, headers) = read_head(&mut stream);
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".into(), "200000".into())));
    assert_eq!(read_to_eof(&mut stream), &body[..10]);
    assert_eq!(server.total_connections(), 2);
}

#[test]
fn lying_lengths_are_sent_as_they_lie() {
    let server = TestServer::start();
    let body = sample(100);
    server.add_file("l", body.clone());
    for claimed in [10usize, 500] {
        let r = get(&server, &format!("/lying/{claimed}/l"));
        assert_eq!(r.status, 200);
        assert_eq!(r.content_length(), claimed);
        assert_eq!(r.body, body, "the whole file whatever the claim, then EOF");
    }
}

#[test]
fn gzip_is_labelled_but_the_bytes_are_as_registered() {
    let server = TestServer::start();
    // A gzip member header and some bytes; the server never looks inside.
    let mut body = vec![0x1f, 0x8b, 0x08, 0x00];
    body.extend(sample(5000));
    server.add_file("repodata.xml.gz", body.clone());
    let r = get(&server, "/gzip/repodata.xml.gz");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-type"), Some("application/gzip"));
    assert_eq!(r.content_length(), body.len());
    assert_eq!(r.body, body);
}

#[test]
fn trickle_sends_slowly_and_stops_when_the_client_goes() {
    let server = TestServer::start();
    let body = sample(1000);
    server.add_file("t", body.clone());

    // 10 bytes a second: one byte every 100 ms.
    let mut stream = connect(server.addr());
    send(&mut stream, "GET", "/trickle/10/t", &[], true);
    let (status, headers) = read_head(&mut stream);
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".into(), "1000".into())));
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 100];
    while got.len() < 5 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "EOF in a trickle");
        got.extend_from_slice(&buf[..n]);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "5 bytes in {took:?}");
    assert!(took < Duration::from_secs(2), "5 bytes in {took:?}");
    assert_eq!(got, &body[..got.len()]);
    drop(stream);
    assert!(
        eventually(|| server.current_connections() == 0),
        "the trickle ends when the client goes"
    );

    // Faster, to the end.
    let started = Instant::now();
    let r = get(&server, "/trickle/2000/t");
    let took = started.elapsed();
    assert_eq!(r.body, body);
    assert!(took >= Duration::from_millis(400), "1000 bytes in {took:?}");
}

#[test]
fn stall_sends_the_first_bytes_then_nothing() {
    let server = TestServer::start();
    let body = sample(1000);
    server.add_file("s", body.clone());
    let mut stream = connect(server.addr());
    send(&mut stream, "GET", "/stall/300/s", &[], true);
    let (status, headers) = read_head(&mut stream);
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-length".into(), "1000".into())));
    let mut got = vec![0u8; 300];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, &body[..300]);
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 100];
    let err = stream
        .read(&mut buf)
        .expect_err("nothing after the first 300 bytes");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
}

#[test]
fn endless_streams_until_the_client_goes() {
    let server = TestServer::start();
    let mut stream = connect(server.addr());
    send(&mut stream, "GET", "/endless", &[], true);
    let (status, headers) = read_head(&mut stream);
    assert_eq!(status, 200);
    assert!(!headers.iter().any(|(n, _)| n == "content-length"));
    let mut read = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while read < 1 << 20 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {read} bytes of an endless body");
        read += n;
    }
    drop(stream);
    assert!(eventually(|| server.current_connections() == 0));
}

#[test]
fn headers_route_echoes_and_requests_are_recorded() {
    let server = TestServer::start();
    server.add_file("x", sample(10));
    let r = request(&server, "GET", "/headers", &[("X-Test", "Yes please")]);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("x-test: Yes please\n"), "{text}");
    assert!(text.contains("host: test\n"), "{text}");
    request(
        &server,
        "HEAD",
        "/files/x?v=1",
        &[("User-Agent", "selftest/1")],
    );

    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/headers");
    assert_eq!(seen[0].header("x-test"), Some("Yes please"));
    assert_eq!(seen[0].header("X-TEST"), Some("Yes please"));
    assert!(seen[0].headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(seen[1].method, "HEAD");
    assert_eq!(seen[1].path, "/files/x?v=1");
    assert_eq!(seen[1].header("user-agent"), Some("selftest/1"));
    assert_eq!(seen[1].header("x-test"), None);
    assert!(seen[0].at <= seen[1].at);
    assert_eq!(server.stats().total_requests(), 2);
}

#[test]
fn concurrent_connections_are_counted_and_closes_seen() {
    let server = TestServer::start();
    server.add_file("a", sample(1000));
    let addr = server.addr();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                let mut stream = connect(addr);
                send(&mut stream, "GET", "/delay/400/a", &[], true);
                let (status, _) = read_head(&mut stream);
                assert_eq!(status, 200);
                read_to_eof(&mut stream).len()
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), 1000);
    }
    assert!(server.peak_connections() >= 3);
    assert_eq!(server.stats().peak_connections(), server.peak_connections());
    assert_eq!(server.total_connections(), 3);
    assert!(eventually(|| server.current_connections() == 0));
    assert_eq!(server.stats().current_connections(), 0);
}

#[test]
fn keep_alive_is_one_connection_for_many_requests() {
    let server = TestServer::start();
    let body = sample(5000);
    server.add_file("k", body.clone());
    let mut stream = connect(server.addr());
    for path in ["/files/k", "/delay/10/k", "/norange/k"] {
        send(&mut stream, "GET", path, &[], false);
        let (status, headers) = read_head(&mut stream);
        assert_eq!(status, 200);
        assert!(!headers
            .iter()
            .any(|(n, v)| n == "connection" && v == "close"));
        let mut got = vec![0u8; body.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(got, body);
    }
    let stats = server.stats();
    assert_eq!(stats.total_requests(), 3);
    assert_eq!(stats.total_connections(), 1);
    assert_eq!(stats.peak_connections(), 1);
    assert_eq!(
        stats.current_connections(),
        1,
        "still open between requests"
    );
    // The client closing is seen even though the server is idle on that connection.
    stream.shutdown(Shutdown::Both).unwrap();
    drop(stream);
    assert!(eventually(|| stats.current_connections() == 0));
}

#[test]
fn shared_stats_count_across_servers_and_own_peaks_stay_apart() {
    let stats = Stats::new();
    let one = TestServer::start_on("127.0.0.1", stats.clone());
    let two = TestServer::start_on("127.0.0.2", stats.clone());
    assert_eq!(two.addr().ip().to_string(), "127.0.0.2");
    assert!(two.url("/files/a").starts_with("http://127.0.0.2:"));
    let streams: Vec<TcpStream> = [&one, &one, &two]
        .iter()
        .map(|server| connect(server.addr()))
        .collect();
    assert!(eventually(|| stats.current_connections() == 3));
    assert_eq!(stats.peak_connections(), 3);
    assert_eq!(stats.total_connections(), 3);
    assert_eq!(one.peak_connections(), 2);
    assert_eq!(two.peak_connections(), 1);
    drop(streams);
    assert!(eventually(|| stats.current_connections() == 0));
    assert_eq!(one.current_connections(), 0);
    // A new connection after the others closed does not raise the peak.
    let _again = connect(two.addr());
    assert!(eventually(|| two.total_connections() == 2));
    assert_eq!(stats.peak_connections(), 3);
    assert_eq!(two.peak_connections(), 1);
}

#[test]
fn dropping_the_server_stops_it_and_closes_its_connections() {
    let server = TestServer::start();
    let addr = server.addr();
    let stats = server.stats();
    let mut idle = connect(addr);
    assert!(eventually(|| stats.current_connections() == 1));
    drop(server);
    assert_eq!(stats.current_connections(), 0, "connections released");
    let mut buf = [0u8; 1];
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0, "the client sees EOF");
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );
}

/// `/silent` reads the request (it is recorded) and never answers: not a byte, and the
/// connection stays open.
#[test]
fn silent_never_answers_and_keeps_the_connection_open() {
    let server = TestServer::start();
    let mut stream = connect(server.addr());
    send(&mut stream, "GET", "/silent", &[], false);
    stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = stream.read(&mut byte);
    assert!(
        matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "{read:?}"
    );
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.current_connections(), 1);
}
