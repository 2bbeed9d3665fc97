//! The test server: real HTTP/1.1 from hyper, with routes that produce the faults the
//! suite needs (delays, bodies cut short, lying lengths, trickles, endless bodies,
//! redirects, statuses).
//!
//! It runs a current-thread tokio runtime on a background thread, listens on a loopback
//! address with an ephemeral port, and keeps its own accept loop so that it can count TCP
//! connections exactly (current, peak, total), per server and across servers sharing a
//! [`Stats`]. Every request is recorded with its headers. Dropping the server stops it:
//! the runtime is shut down, every connection is closed and the thread is joined.
//!
//! Routes (GET and HEAD; `NAME` is a file registered with [`TestServer::add_file`]):
//!
//! | route | response |
//! |---|---|
//! | `/files/NAME` | the bytes, with `ETag` ([`etag_of`]) and `Last-Modified`; honours `Range` (206/416), `If-Range` and `If-None-Match` (304) |
//! | `/norange/NAME` | the bytes, always 200 whole |
//! | `/status/CODE[?retry_after=N]` | that status, a short text body, `Retry-After: N` if asked |
//! | `/redirect?to=URL` | 302 to the percent-decoded `URL` |
//! | `/delay/MS/NAME` | waits MS milliseconds, then as `/files/NAME` |
//! | `/cut/N/NAME` | the full `Content-Length`, the first N bytes, then the connection closes |
//! | `/gzip/NAME` | as `/files/NAME`, labelled `Content-Encoding: gzip`, `Content-Type: application/gzip` |
//! | `/lying/N/NAME` | `Content-Length: N`, then the whole file (longer or shorter), then close |
//! | `/trickle/RATE/NAME` | the full `Content-Length`, then the body at RATE bytes a second |
//! | `/stall/N/NAME` | the full `Content-Length`, the first N bytes, then nothing more until the server is dropped |
//! | `/silent` | nothing: the connection is accepted and the request read, and no answer ever comes (until the server is dropped) |
//! | `/endless` | 200, chunked, zeros in 64 KiB chunks until the client goes away |
//! | `/headers` | 200, the request's headers as `name: value` lines |
//! | `/flaky/N/NAME[?retry_after=S]` | the first N requests get 503, later ones as `/files/NAME` |
//! | `/limited/N/NAME` | at most N requests at a time (100 ms each), more get 503 |
//! | `/cutonce/N/NAME` | the first request as `/cut/N/NAME`, later ones as `/files/NAME` |
//! | `/cutonce-norange/N/NAME` | the first request as `/cut/N/NAME`, later ones as `/norange/NAME` |
//! | `/bigheaders/KIB` | 200 with about KIB KiB of response headers (8 KiB lines), then a 2-byte body |
//!
//! Anything else is 404, as is a route naming an unknown file.
//!
//! Faults a real server would not produce (`/cut`, `/lying`) are written by hand: the
//! route hands the exact bytes to the connection's [`Wire`], which writes them in place of
//! hyper's response and then closes the connection. That works on any request of a
//! kept-alive connection, not only the first.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type Body = BoxBody<Bytes, io::Error>;

/// Connection and request counters; shareable between servers.
///
/// A connection counts as open from its accept until either side closes it. The server's
/// own closes are seen when its connection task ends; the client's are seen by asking every
/// connection still held whether its client has closed it (a non-blocking peek on a
/// duplicate of its socket: end-of-file or a reset means closed), both when a connection is
/// accepted (so the peak never counts a connection whose FIN the kernel already has) and
/// when [`Stats::current_connections`] is asked. Counting closes only when the serving task
/// notices them would overcount: a client that closes one connection and at once opens
/// another may be accepted before the old connection's task has run.
#[derive(Default)]
pub struct Stats {
    peak: AtomicUsize,
    total: AtomicUsize,
    requests: AtomicUsize,
    next_id: AtomicUsize,
    open: Mutex<HashMap<usize, std::net::TcpStream>>,
}

impl Stats {
    /// Fresh counters, to share between servers with [`TestServer::start_on`].
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats::default())
    }

    /// Most TCP connections open at once.
    pub fn peak_connections(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// TCP connections open now: accepted, and closed by neither side.
    pub fn current_connections(&self) -> usize {
        let mut open = self.open.lock().unwrap();
        open.retain(|_, probe| still_open(probe));
        open.len()
    }

    /// TCP connections accepted so far.
    pub fn total_connections(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// HTTP requests received so far (several may share a connection).
    pub fn total_requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Count a connection accepted; `probe` is a duplicate of its socket. Returns its id.
    fn opened(&self, probe: std::net::TcpStream) -> usize {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        open.insert(id, probe);
        open.retain(|_, probe| still_open(probe));
        self.peak.fetch_max(open.len(), Ordering::SeqCst);
        id
    }

    /// Count a connection closed by the server (dropping the probe releases the socket).
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
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl RecordedRequest {
    /// The first value of header `name` (any case), if sent.
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
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on 127.0.0.1 with its own stats.
    pub fn start() -> TestServer {
        TestServer::start_on("127.0.0.1", Stats::new())
    }

    /// A server on `ip` (any loopback address, e.g. "127.0.0.2") counting into `stats` as
    /// well as its own counters.
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
        let thread = std::thread::Builder::new()
            .name(format!("test-server-{addr}"))
            .spawn(move || {
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
                // Dropping the runtime drops every connection task, closing its socket.
            })
            .expect("starting the test server thread");
        TestServer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` + `path` (which starts with '/').
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Serve `bytes` at `/files/NAME` (and the other routes naming NAME).
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

    /// Connections accepted so far by this server alone.
    pub fn total_connections(&self) -> usize {
        self.state.own.total_connections()
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
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Counts a connection closed when its task ends, however it ends (also when the runtime
/// is shut down under it).
struct OpenConnection {
    state: Arc<State>,
    own_id: usize,
    shared_id: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.state.own.closed(self.own_id);
        self.state.shared.closed(self.shared_id);
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let std_stream = stream.into_std().expect("a tokio stream converts to std");
        let probe = |s: &std::net::TcpStream| s.try_clone().expect("duplicating a socket");
        let open = OpenConnection {
            own_id: state.own.opened(probe(&std_stream)),
            shared_id: state.shared.opened(probe(&std_stream)),
            state: Arc::clone(&state),
        };
        let stream = tokio::net::TcpStream::from_std(std_stream).unwrap();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _open = open;
            let takeover = Takeover::default();
            let wire = Wire::new(stream, takeover.clone());
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                let takeover = takeover.clone();
                async move { Ok::<_, Infallible>(route(&state, &takeover, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(wire), service)
                .await;
        });
    }
}

/// A route's way to put exact bytes on the wire instead of hyper's response.
#[derive(Clone, Default)]
struct Takeover(Arc<Mutex<Option<Bytes>>>);

impl Takeover {
    /// Write `raw` (status line, headers and whatever body) in place of the response the
    /// route returns, then close the connection.
    fn replace_response(&self, raw: Vec<u8>) -> Response<Body> {
        *self.0.lock().unwrap() = Some(Bytes::from(raw));
        // Hyper writes this (the wire throws it away) and, told to, closes afterwards.
        Response::builder()
            .status(200)
            .header("connection", "close")
            .body(full(Bytes::new()))
            .unwrap()
    }
}

enum WireMode {
    /// Hyper's bytes go to the socket.
    Hyper,
    /// Our bytes go to the socket instead; this many are written.
    Raw(Bytes, usize),
    /// Our bytes are written; hyper's are thrown away until it closes the connection.
    Done,
}

/// A connection's socket as hyper sees it: reads and writes pass through until a route
/// asks (through its [`Takeover`]) for its own bytes to be written instead.
struct Wire {
    stream: tokio::net::TcpStream,
    takeover: Takeover,
    mode: WireMode,
}

impl Wire {
    fn new(stream: tokio::net::TcpStream, takeover: Takeover) -> Wire {
        Wire {
            stream,
            takeover,
            mode: WireMode::Hyper,
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let WireMode::Hyper = this.mode {
            match this.takeover.0.lock().unwrap().take() {
                Some(raw) => this.mode = WireMode::Raw(raw, 0),
                None => return Pin::new(&mut this.stream).poll_write(cx, buf),
            }
        }
        while let WireMode::Raw(raw, written) = &mut this.mode {
            if *written == raw.len() {
                this.mode = WireMode::Done;
                break;
            }
            let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &raw[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        // Hyper's own bytes for this response are swallowed.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
        .header("content-type", "text/plain")
        .body(full(body))
        .unwrap()
}

fn not_found() -> Response<Body> {
    respond(404, "no such file\n")
}

/// A body fed by a task: `produce` gets the sender and may send, sleep, or abort. It stops
/// when a send fails: the client has gone away.
fn streamed<F, Fut>(length: Option<usize>, produce: F) -> Response<Body>
where
    F: FnOnce(http_body_util::channel::Sender<Bytes, io::Error>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, body) = http_body_util::channel::Channel::new(4);
    tokio::spawn(produce(sender));
    let mut response = Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream");
    if let Some(length) = length {
        response = response.header("content-length", length);
    }
    response.body(body.boxed()).unwrap()
}

/// The value of `key` in a query string (`a=1&b=2`), percent-decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// `Retry-After: N` on `response` when the query asks for it.
fn with_retry_after(mut response: Response<Body>, query: &str) -> Response<Body> {
    if let Some(value) = query_param(query, "retry_after").and_then(|s| s.parse().ok()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

/// `"N/NAME"` → `(N, NAME)`; a bad number reads as 0.
fn number_and_name(rest: &str) -> Option<(u64, &str)> {
    let (n, name) = rest.split_once('/')?;
    Some((n.parse().unwrap_or(0), name))
}

async fn route(state: &State, takeover: &Takeover, request: Request<Incoming>) -> Response<Body> {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state.own.requests.fetch_add(1, Ordering::SeqCst);
    state.shared.requests.fetch_add(1, Ordering::SeqCst);
    state.requests.lock().unwrap().push(RecordedRequest {
        method: request.method().to_string(),
        path: target.clone(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        at: std::time::Instant::now(),
    });
    let head = request.method() == hyper::Method::HEAD;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let file = |name: &str| state.files.lock().unwrap().get(name).cloned();
    // How many earlier requests this route saw for this file.
    let earlier = |key: String| {
        let mut hits = state.hits.lock().unwrap();
        let n = hits.entry(key).or_insert(0);
        *n += 1;
        *n - 1
    };
    // `N/NAME` → the number, the name and the file's bytes.
    let numbered_file = |rest: &str| {
        let (n, name) = number_and_name(rest)?;
        Some((n, name.to_string(), file(name)?))
    };
    let (route_name, rest) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path.trim_start_matches('/'), ""));
    match route_name {
        "files" => match file(rest) {
            Some(body) => serve_file(&request, body),
            None => not_found(),
        },
        "norange" => match file(rest) {
            Some(body) => serve_whole(body),
            None => not_found(),
        },
        "status" => {
            let code = rest.parse::<u16>().ok().filter(|c| (200..=999).contains(c));
            match code {
                Some(code) => with_retry_after(respond(code, format!("status {code}\n")), query),
                None => respond(400, "bad status code\n"),
            }
        }
        "redirect" if rest.is_empty() => match query_param(query, "to") {
            Some(target) => match Response::builder()
                .status(302)
                .header("location", target)
                .header("content-type", "text/plain")
                .body(full("moved\n"))
            {
                Ok(response) => response,
                Err(_) => respond(400, "bad redirect target\n"),
            },
            None => respond(400, "redirect needs ?to=URL\n"),
        },
        "delay" => {
            let Some((ms, name)) = number_and_name(rest) else {
                return not_found();
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            match file(name) {
                Some(body) => serve_file(&request, body),
                None => not_found(),
            }
        }
        "cut" => match numbered_file(rest) {
            Some((n, _, body)) => cut(takeover, head, body, n),
            None => not_found(),
        },
        "gzip" => match file(rest) {
            Some(body) => {
                let mut response = serve_file(&request, body);
                let headers = response.headers_mut();
                headers.insert("content-encoding", "gzip".parse().unwrap());
                headers.insert("content-type", "application/gzip".parse().unwrap());
                response
            }
            None => not_found(),
        },
        "lying" => match numbered_file(rest) {
            Some((n, _, body)) => {
                let mut raw = raw_head(n as usize, &etag_of(&body));
                if !head {
                    raw.extend_from_slice(&body);
                }
                takeover.replace_response(raw)
            }
            None => not_found(),
        },
        "trickle" => match numbered_file(rest) {
            Some((rate, _, body)) => {
                // Ten sends a second, or one byte per send below ten bytes a second.
                let rate = rate.max(1);
                let step = (rate / 10).max(1);
                let pause = Duration::from_millis(step * 1000 / rate);
                let step = step as usize;
                streamed(Some(body.len()), move |mut tx| async move {
                    let mut at = 0;
                    while at < body.len() {
                        let end = (at + step).min(body.len());
                        if tx.send_data(body.slice(at..end)).await.is_err() {
                            return;
                        }
                        at = end;
                        if at < body.len() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            }
            None => not_found(),
        },
        // A body that never finishes: the first n bytes at once, then the connection is held
        // open, silent, until the server is dropped (a client that wants to act mid-body
        // need not race the rest of it).
        "stall" => match numbered_file(rest) {
            Some((n, _, body)) => {
                let keep = (n as usize).min(body.len());
                streamed(Some(body.len()), move |mut tx| async move {
                    if tx.send_data(body.slice(..keep)).await.is_ok() {
                        std::future::pending::<()>().await;
                    }
                })
            }
            None => not_found(),
        },
        // Accepts, reads the request, and never answers: no status line, no byte.
        "silent" if rest.is_empty() => std::future::pending().await,
        "endless" if rest.is_empty() => streamed(None, |mut tx| async move {
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            while tx.send_data(chunk.clone()).await.is_ok() {}
        }),
        "headers" if rest.is_empty() => {
            let text: String = request
                .headers()
                .iter()
                .map(|(n, v)| format!("{}: {}\n", n, v.to_str().unwrap_or("")))
                .collect();
            respond(200, text)
        }
        // The first n requests get 503 (with Retry-After when asked), then the file.
        "flaky" => {
            let Some((n, name)) = number_and_name(rest) else {
                return not_found();
            };
            if earlier(format!("flaky/{name}")) < n as usize {
                return with_retry_after(respond(503, "busy\n"), query);
            }
            match file(name) {
                Some(body) => serve_file(&request, body),
                None => not_found(),
            }
        }
        // A server that copes with n requests at a time: more get 503 at once; each
        // accepted one takes 100 ms.
        "limited" => {
            let Some((n, name)) = number_and_name(rest) else {
                return not_found();
            };
            if state.in_flight.fetch_add(1, Ordering::SeqCst) >= n as usize {
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
                return respond(503, "overloaded\n");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            match file(name) {
                Some(body) => serve_file(&request, body),
                None => not_found(),
            }
        }
        // The first request is cut after n bytes; later ones are served (honouring Range).
        "cutonce" => match numbered_file(rest) {
            Some((n, name, body)) if earlier(format!("cutonce/{name}")) == 0 => {
                cut(takeover, head, body, n)
            }
            Some((_, _, body)) => serve_file(&request, body),
            None => not_found(),
        },
        // The same, but later requests ignore Range.
        "cutonce-norange" => match numbered_file(rest) {
            Some((n, name, body)) if earlier(format!("cutonce-norange/{name}")) == 0 => {
                cut(takeover, head, body, n)
            }
            Some((_, _, body)) => serve_whole(body),
            None => not_found(),
        },
        // Response headers past any client's limit, written by hand.
        "bigheaders" => match rest.parse::<usize>() {
            Ok(kib) => {
                let mut raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
                let line = "a".repeat(8 * 1024 - 16);
                for i in 0..kib.div_ceil(8) {
                    raw.extend_from_slice(format!("X-Pad-{i}: {line}\r\n").as_bytes());
                }
                raw.extend_from_slice(b"Connection: close\r\n\r\n");
                if !head {
                    raw.extend_from_slice(b"ok");
                }
                takeover.replace_response(raw)
            }
            Err(_) => not_found(),
        },
        _ => respond(404, "unknown route\n"),
    }
}

/// A 200 status line and headers claiming `length` bytes, written by hand.
fn raw_head(length: usize, etag: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
         content-length: {length}\r\netag: {etag}\r\n\r\n"
    )
    .into_bytes()
}

/// Headers with the full Content-Length, then only the first `keep` bytes, then the
/// connection is closed. The ETag is the file's own, so that a resume's `If-Range` matches
/// and the server answers 206.
fn cut(takeover: &Takeover, head: bool, body: Bytes, keep: u64) -> Response<Body> {
    let keep = (keep as usize).min(body.len());
    let mut raw = raw_head(body.len(), &etag_of(&body));
    if !head {
        raw.extend_from_slice(&body[..keep]);
    }
    takeover.replace_response(raw)
}

/// A stable validator for a body: its length and a cheap sum of its bytes.
pub fn etag_of(body: &[u8]) -> String {
    let sum = body.iter().fold(0u64, |acc, &b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    format!("\"{}-{sum:x}\"", body.len())
}

/// The `Last-Modified` of every file.
pub const LAST_MODIFIED: &str = "Sat, 01 Jan 2022 00:00:00 GMT";

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

/// A file as a careful server serves it: If-None-Match → 304, Range → 206 or 416 (one
/// range: `a-b`, `a-` or `-n`; several are answered with the whole file), If-Range.
fn serve_file(request: &Request<Incoming>, body: Bytes) -> Response<Body> {
    let etag = etag_of(&body);
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let matches = |tags: &str| {
        tags.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
        })
    };
    if header("if-none-match").is_some_and(|tags| matches(&tags)) {
        return Response::builder()
            .status(304)
            .header("etag", &etag)
            .header("last-modified", LAST_MODIFIED)
            .body(full(Bytes::new()))
            .unwrap();
    }
    let if_range_ok = header("if-range").is_none_or(|v| v == etag || v == LAST_MODIFIED);
    let range = header("range").filter(|_| if_range_ok);
    let Some(spec) = range
        .as_deref()
        .and_then(|r| r.trim().strip_prefix("bytes="))
        .map(str::trim)
        .filter(|spec| !spec.contains(','))
    else {
        return serve_whole(body);
    };
    let len = body.len() as u64;
    let (first, last) = spec.split_once('-').unwrap_or((spec, "?"));
    let (start, end) = match (first.parse::<u64>(), last.parse::<u64>()) {
        // bytes=-n: the last n bytes.
        _ if first.is_empty() => match last.parse::<u64>() {
            Ok(n) if n > 0 && len > 0 => (len.saturating_sub(n), len - 1),
            _ => (u64::MAX, 0),
        },
        // bytes=a-
        (Ok(start), _) if last.is_empty() => (start, len.saturating_sub(1)),
        // bytes=a-b
        (Ok(start), Ok(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        // Not a range we understand: ignore it, as RFC 9110 allows.
        _ => return serve_whole(body),
    };
    if start >= len || start > end {
        return Response::builder()
            .status(416)
            .header("content-range", format!("bytes */{len}"))
            .header("content-type", "text/plain")
            .body(full(Bytes::new()))
            .unwrap();
    }
    let slice = body.slice(start as usize..=end as usize);
    Response::builder()
        .status(206)
        .header("content-length", slice.len())
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("bytes {start}-{end}/{len}"))
        .header("etag", etag)
        .header("last-modified", LAST_MODIFIED)
        .body(full(slice))
        .unwrap()
}

/// `%XX` → the byte; anything else (including a malformed escape) as it stands.
pub fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
