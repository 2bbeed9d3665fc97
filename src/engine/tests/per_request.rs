//! What a request asks of its own transfer beyond the body: continuing bytes another program
//! left at `dest`, the server's mtime, and per-request transport settings (the fronts for
//! apt and urlgrabber carry these per request).

use std::time::{Duration, Instant, UNIX_EPOCH};

use super::server::{TestServer, LAST_MODIFIED};
use super::*;
use crate::api::{LowSpeed, Transport};

/// 2022-01-01T00:00:00Z, the test server's `Last-Modified`.
const SERVER_MTIME: u64 = 1_640_995_200;

fn mtime_of(path: &Path) -> u64 {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    modified.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn request_of(request: Request) -> Box<Download> {
    match request {
        Request::Download(download) => download,
        _ => unreachable!(),
    }
}

/// apt leaves the start of a package in `partial/` and names that file as the destination:
/// the bytes are kept and the rest is asked for with `Range` and `If-Range` (the file's
/// mtime); a prefix whose mtime is not the server's date is replaced by a whole body.
#[test]
fn continue_dest_keeps_the_prefix_another_program_left() {
    let server = TestServer::start();
    let bytes = body(21, 300_000);
    server.add_file("p", bytes.clone());
    server.add_file("q", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let (fresh, stale) = (dir.path().join("p"), dir.path().join("q"));
    for dest in [&fresh, &stale] {
        std::fs::write(dest, &bytes[..100_000]).unwrap();
    }
    let server_date = UNIX_EPOCH + Duration::from_secs(SERVER_MTIME);
    std::fs::File::options()
        .write(true)
        .open(&fresh)
        .unwrap()
        .set_modified(server_date)
        .unwrap();
    let requests = [("p", &fresh), ("q", &stale)].map(|(id, dest)| {
        let mut request = request_of(download(
            id,
            &[server.url(&format!("/files/{id}"))],
            dest,
            &bytes,
        ));
        request.continue_dest = true;
        request.server_mtime = true;
        Request::Download(request)
    });
    let (seen, received) = Harness::new(&[], Vec::from(requests)).finish();

    let done: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Done { .. }))
        .collect();
    assert_eq!(done.len(), 2, "{seen:?}");
    for dest in [&fresh, &stale] {
        assert_eq!(std::fs::read(dest).unwrap(), bytes);
        assert_eq!(mtime_of(dest), SERVER_MTIME, "server_mtime stamps {dest:?}");
    }
    assert_eq!(entries(dir.path()), ["p", "q"], "no partial or record left");
    let asked: Vec<_> = server
        .requests()
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.header("range").map(str::to_owned),
                r.header("if-range").map(str::to_owned),
            )
        })
        .collect();
    let stale_date =
        crate::http_date::format(std::fs::metadata(&stale).unwrap().modified().unwrap());
    assert!(
        asked.contains(&(
            "/files/p".into(),
            Some("bytes=100000-".into()),
            Some(LAST_MODIFIED.into())
        )),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|(path, range, if_range)| path == "/files/q"
                && range.is_some()
                && if_range.as_deref() != Some(LAST_MODIFIED)),
        "{asked:?} {stale_date}"
    );
    // p came as its last 200,000 bytes; q whole, as If-Range did not match.
    assert_eq!(received, 200_000 + 300_000);
}

/// A prefix that is not the start of the body is caught by the digests, not placed.
#[test]
fn a_continued_prefix_that_does_not_match_fails_the_checksum() {
    let server = TestServer::start();
    let bytes = body(22, 50_000);
    server.add_file("w", bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w");
    std::fs::write(&dest, vec![0u8; 10_000]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&dest)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(SERVER_MTIME))
        .unwrap();
    let mut request = request_of(download("w", &[server.url("/files/w")], &dest, &bytes));
    request.continue_dest = true;
    let (seen, _) = Harness::new(&["--retries", "0"], vec![Request::Download(request)]).finish();
    assert!(
        matches!(
            seen.last(),
            Some(Seen::Failed {
                kind: ErrorKind::ChecksumMismatch,
                ..
            })
        ),
        "{seen:?}"
    );
    assert!(!dest.exists(), "unverified bytes never sit at dest");
}

/// A request's own proxy, low-speed guard and speed limit apply to it alone: the proxy (a
/// dead one: kind `proxy`), timeouts and speed limits are set or cleared on every request,
/// so the handles are reused (the plain download after the throttled one reuses its handle,
/// at full speed; every request after the proxied one goes direct).
#[test]
fn a_request_with_its_own_transport() {
    let server = TestServer::start();
    let bytes = body(23, 300_000);
    server.add_file("s", bytes.clone());
    let big = body(24, 4_000_000);
    server.add_file("big", big.clone());
    let dir = tempfile::tempdir().unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let with = |id: &str, path: &str, transport: Transport| {
        let mut request = request_of(download(
            id,
            &[server.url(path)],
            &dir.path().join(id),
            &bytes,
        ));
        request.transport = Some(Box::new(transport));
        Request::Download(request)
    };
    let proxied = with(
        "proxied",
        "/files/s",
        Transport {
            proxy: Some(format!("http://127.0.0.1:{dead_port}")),
            ..Transport::default()
        },
    );
    let guarded = with(
        "guarded",
        "/stall/1000/s",
        Transport {
            low_speed: Some(LowSpeed {
                bytes_per_second: 1000,
                time: Duration::from_secs(1),
            }),
            ..Transport::default()
        },
    );
    let throttled = with(
        "throttled",
        "/files/s",
        Transport {
            max_speed: Some(200_000),
            ..Transport::default()
        },
    );
    let plain = download(
        "plain",
        &[server.url("/files/big")],
        &dir.path().join("plain"),
        &big,
    );
    let started = Instant::now();
    let (seen, _) = Harness::new(
        &["--retries", "0", "--max-parallel", "1"],
        vec![proxied, guarded, throttled, plain],
    )
    .finish();
    let elapsed = started.elapsed();

    let outcome = |id: &str| {
        seen.iter()
            .rev()
            .find(|s| matches!(s, Seen::Done { id: i, .. } | Seen::Failed { id: i, .. } if i == id))
            .cloned()
    };
    assert!(
        matches!(
            outcome("proxied"),
            Some(Seen::Failed {
                kind: ErrorKind::Proxy,
                ..
            })
        ),
        "{seen:?}"
    );
    assert!(
        matches!(
            outcome("guarded"),
            Some(Seen::Failed {
                kind: ErrorKind::TooSlow,
                ..
            })
        ),
        "{seen:?}"
    );
    assert!(
        matches!(outcome("throttled"), Some(Seen::Done { .. })),
        "{seen:?}"
    );
    assert!(
        matches!(outcome("plain"), Some(Seen::Done { .. })),
        "{seen:?}"
    );
    assert_eq!(std::fs::read(dir.path().join("plain")).unwrap(), big);
    // 300,000 bytes at 200,000 B/s: at least ~1.5 s (curl averages over the transfer).
    assert!(
        elapsed >= Duration::from_millis(1_300),
        "{elapsed:?}: the speed limit did nothing"
    );
    // The plain 4 MB would take 20 s more at the throttled one's limit.
    assert!(
        elapsed < Duration::from_secs(10),
        "{elapsed:?}: the speed limit rode into the next request"
    );
}
