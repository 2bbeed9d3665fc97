//! The test server: real HTTP/1.1 from hyper, with routes that produce the faults the
//! suite needs (delays, bodies cut short, trickles, endless bodies, redirects, statuses).
//!
//! It runs a current-thread tokio runtime on a background thread, listens on a loopback
//! address with an ephemeral port, and keeps its own accept loop so that it can count TCP
//! connections exactly (current, peak, total), per server and across servers sharing a
//! [`Stats`]. Every request is recorded with its headers. Dropping the server stops it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

type Body = BoxBody<Bytes, std::io::Error>;

/// Connection and request counters; shareable between servers.
///
/// The peak is measured when a connection is accepted, by asking every connection we still
/// hold whether its client has closed it (a non-blocking peek on a duplicate of its socket:
/// end-of-file means closed). Counting closes only when the serving task notices them would
/// overcount: a client that closes one connection and at once opens another may be accepted
/// before the old connection's task has run, though the kernel already has its FIN.
#[derive(Default)]
pub struct Stats {
    peak: AtomicUsize,
    total: AtomicUsize,
    requests: AtomicUsize,
    next_id: AtomicUsize,
    open: Mutex<HashMap<usize, std::net::TcpStream>>,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats::default())
    }
    /// Most TCP connections open at once.
    pub fn peak_connections(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    /// Connections whose clients have not closed them.
    pub fn current_connections(&self) -> usize {
        let mut open = self.open.lock().unwrap();
        open.retain(|_, probe| still_open(probe));
        open.len()
    }
    pub fn total_connections(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
    pub fn total_requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn opened(&self, probe: std::net::TcpStream) -> usize {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        open.insert(id, probe);
        open.retain(|_, probe| still_open(probe));
        self.peak.fetch_max(open.len(), Ordering::SeqCst);
        id
    }
    fn closed(&self, id: usize) {
        self.open.lock().unwrap().remove(&id);
    }
}

/// Has the client not closed this connection? (Non-blocking peek: 0 bytes means EOF.)
fn still_open(probe: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match probe.peek(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    files: Mutex<HashMap<String, Bytes>>,
    /// Requests seen per route-and-file, for routes that change behaviour after N.
    hits: Mutex<HashMap<String, usize>>,
    /// Requests inside the `/limited/` route right now.
    in_flight: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    own: Stats,
    shared: Arc<Stats>,
}

/// A running test server.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    /// A server on 127.0.0.1 with its own stats.
    pub fn start() -> TestServer {
        TestServer::start_on("127.0.0.1", Stats::new())
    }

    /// A server on `ip` (any loopback address) counting into `stats` as well as its own.
    pub fn start_on(ip: &str, stats: Arc<Stats>) -> TestServer {
        let state = Arc::new(State {
            files: Mutex::new(HashMap::new()),
            hits: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            own: Stats::default(),
            shared: stats,
        });
        let listener = std::net::TcpListener::bind((ip, 0)).expect("binding the test server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = Arc::clone(&state);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = accept_loop(listener, serving) => {}
                    _ = stopped => {}
                }
            });
        });
        TestServer {
            addr,
            state,
            stop: Some(stop),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` + `path` (which starts with '/').
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Serve `bytes` at `/files/NAME` (and the fault routes naming NAME).
    pub fn add_file(&self, name: &str, bytes: Vec<u8>) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(name.to_string(), Bytes::from(bytes));
    }

    /// This server's (possibly shared) stats.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.state.shared)
    }

    /// Most connections open at once to this server alone.
    pub fn peak_connections(&self) -> usize {
        self.state.own.peak_connections()
    }

    /// Connections open now to this server alone.
    pub fn current_connections(&self) -> usize {
        self.state.own.current_connections()
    }

    /// Every request seen, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let std_stream = stream.into_std().expect("a tokio stream converts to std");
        let probe = |s: &std::net::TcpStream| s.try_clone().expect("duplicating a socket");
        let own_id = state.own.opened(probe(&std_stream));
        let shared_id = state.shared.opened(probe(&std_stream));
        let stream = tokio::net::TcpStream::from_std(std_stream).unwrap();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service_state = Arc::clone(&state);
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&service_state);
                async move { Ok::<_, Infallible>(route(&state, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            state.own.closed(own_id);
            state.shared.closed(shared_id);
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn respond(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(full(body))
        .unwrap()
}

/// A body fed by a task: `produce` gets the sender and may send, sleep, or abort.
fn streamed<F, Fut>(length: Option<usize>, produce: F) -> Response<Body>
where
    F: FnOnce(http_body_util::channel::Sender<Bytes, std::io::Error>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, body) = http_body_util::channel::Channel::new(4);
    tokio::spawn(produce(sender));
    let mut response = Response::builder().status(200);
    if let Some(length) = length {
        response = response.header("content-length", length);
    }
    response.body(body.boxed()).unwrap()
}

async fn route(state: &State, request: Request<Incoming>) -> Response<Body> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state.shared.requests.fetch_add(1, Ordering::SeqCst);
    state.requests.lock().unwrap().push(RecordedRequest {
        method: request.method().to_string(),
        path: path.clone(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        at: std::time::Instant::now(),
    });
    let file = |name: &str| state.files.lock().unwrap().get(name).cloned();
    // How many earlier requests this route saw for this file.
    let earlier = |key: &str| {
        let mut hits = state.hits.lock().unwrap();
        let n = hits.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    let number = |text: &str| text.parse::<u64>().unwrap_or(0);
    match segments.as_slice() {
        ["files", name] => match file(name) {
            Some(body) => serve_file(&request, body),
            None => respond(404, "no such file\n"),
        },
        ["norange", name] => match file(name) {
            Some(body) => serve_whole(body),
            None => respond(404, "no such file\n"),
        },
        // The first n requests get 503 (with Retry-After when asked), then the file.
        ["flaky", n, name] => {
            let (name, query) = name.split_once('?').unwrap_or((name, ""));
            if earlier(&format!("flaky/{name}")) < number(n) as usize {
                let mut response = respond(503, "busy\n");
                if let Some(seconds) = query.strip_prefix("retry_after=") {
                    response
                        .headers_mut()
                        .insert("retry-after", seconds.parse().unwrap());
                }
                return response;
            }
            match file(name) {
                Some(body) => serve_file(&request, body),
                None => respond(404, "no such file\n"),
            }
        }
        // A server that copes with n requests at a time: more get 503 at once; each
        // accepted one takes 100 ms.
        ["limited", n, name] => {
            if state.in_flight.fetch_add(1, Ordering::SeqCst) >= number(n) as usize {
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
                return respond(503, "overloaded\n");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            match file(name) {
                Some(body) => serve_file(&request, body),
                None => respond(404, "no such file\n"),
            }
        }
        // The first request is cut after n bytes; later ones are served (honouring Range).
        ["cutonce", n, name] => match file(name) {
            Some(body) if earlier(&format!("cutonce/{name}")) == 0 => cut(body, number(n)),
            Some(body) => serve_file(&request, body),
            None => respond(404, "no such file\n"),
        },
        // The same, but later requests ignore Range.
        ["cutonce-norange", n, name] => match file(name) {
            Some(body) if earlier(&format!("cutonce-norange/{name}")) == 0 => cut(body, number(n)),
            Some(body) => serve_whole(body),
            None => respond(404, "no such file\n"),
        },
        ["status", code] => {
            let (code, query) = code.split_once('?').unwrap_or((code, ""));
            let mut response = respond(number(code) as u16, format!("status {code}\n"));
            if let Some(seconds) = query.strip_prefix("retry_after=") {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.parse().unwrap());
            }
            response
        }
        [redirect] if redirect.starts_with("redirect?to=") => {
            let target = percent_decode(&redirect["redirect?to=".len()..]);
            Response::builder()
                .status(302)
                .header("location", target)
                .body(full("moved\n"))
                .unwrap()
        }
        ["delay", ms, name] => {
            tokio::time::sleep(Duration::from_millis(number(ms))).await;
            match file(name) {
                Some(body) => serve_file(&request, body),
                None => respond(404, "no such file\n"),
            }
        }
        ["cut", n, name] => match file(name) {
            Some(body) => cut(body, number(n)),
            None => respond(404, "no such file\n"),
        },
        ["gzip", name] => match file(name) {
            Some(body) => {
                let mut response = serve_file(&request, body);
                let headers = response.headers_mut();
                headers.insert("content-encoding", "gzip".parse().unwrap());
                headers.insert("content-type", "application/gzip".parse().unwrap());
                response
            }
            None => respond(404, "no such file\n"),
        },
        ["trickle", rate, name] => match file(name) {
            Some(body) => {
                // Ten sends a second, rate/10 bytes each (at least one byte).
                let step = ((number(rate) / 10).max(1)) as usize;
                streamed(Some(body.len()), move |mut tx| async move {
                    let mut at = 0;
                    while at < body.len() {
                        let end = (at + step).min(body.len());
                        if tx.send_data(body.slice(at..end)).await.is_err() {
                            return;
                        }
                        at = end;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            }
            None => respond(404, "no such file\n"),
        },
        ["endless"] => streamed(None, |mut tx| async move {
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            while tx.send_data(chunk.clone()).await.is_ok() {}
        }),
        ["headers"] => {
            let text: String = request
                .headers()
                .iter()
                .map(|(n, v)| format!("{}: {}\n", n, v.to_str().unwrap_or("")))
                .collect();
            respond(200, text)
        }
        _ => respond(404, "unknown route\n"),
    }
}

/// Headers with the full Content-Length, then only the first `keep` bytes, then the
/// connection is torn down.
fn cut(body: Bytes, keep: u64) -> Response<Body> {
    let keep = (keep as usize).min(body.len());
    let mut response = streamed(Some(body.len()), move |mut tx| async move {
        let _ = tx.send_data(body.slice(..keep)).await;
        // Give the bytes time to leave before the connection is torn down.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.abort(std::io::Error::other("cut"));
    });
    response
        .headers_mut()
        .insert("etag", "\"stable\"".parse().unwrap());
    response
}

/// A stable validator for a body: its length and a cheap sum of its bytes.
pub fn etag_of(body: &[u8]) -> String {
    let sum = body.iter().fold(0u64, |acc, &b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    format!("\"{}-{sum:x}\"", body.len())
}

const LAST_MODIFIED: &str = "Sat, 01 Jan 2022 00:00:00 GMT";

/// 200 with the whole body, ignoring Range and conditionals.
fn serve_whole(body: Bytes) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-length", body.len())
        .header("content-type", "application/octet-stream")
        .header("etag", etag_of(&body))
        .header("last-modified", LAST_MODIFIED)
        .body(full(body))
        .unwrap()
}

/// A file as a careful server serves it: If-None-Match → 304, Range → 206 or 416.
fn serve_file(request: &Request<Incoming>, body: Bytes) -> Response<Body> {
    let etag = etag_of(&body);
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if header("if-none-match").is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag)) {
        return Response::builder()
            .status(304)
            .header("etag", &etag)
            .header("last-modified", LAST_MODIFIED)
            .body(full(Bytes::new()))
            .unwrap();
    }
    let if_range_ok = header("if-range").is_none_or(|v| v == etag || v == LAST_MODIFIED);
    let range = header("range").filter(|_| if_range_ok);
    let Some(spec) = range.as_deref().and_then(|r| r.strip_prefix("bytes=")) else {
        return serve_whole(body);
    };
    let len = body.len() as u64;
    let (start, end) = spec.split_once('-').unwrap_or((spec, ""));
    let start: u64 = start.parse().unwrap_or(u64::MAX);
    let end: u64 = if end.is_empty() {
        len.saturating_sub(1)
    } else {
        end.parse::<u64>().unwrap_or(0).min(len.saturating_sub(1))
    };
    if start >= len || start > end {
        return Response::builder()
            .status(416)
            .header("content-range", format!("bytes */{len}"))
            .body(full(Bytes::new()))
            .unwrap();
    }
    let slice = body.slice(start as usize..=end as usize);
    Response::builder()
        .status(206)
        .header("content-length", slice.len())
        .header("content-range", format!("bytes {start}-{end}/{len}"))
        .header("etag", etag)
        .header("last-modified", LAST_MODIFIED)
        .body(full(slice))
        .unwrap()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
