//! `--root DIR` and `--file-urls` (issue 13, item 8): names from a package manager's
//! metadata must not make the helper write outside its cache, nor copy any local file it can
//! read into it. Real symbolic links, a real nginx for plain downloads, the test server only
//! where a body must be slow or late. Every test asserts what is (not) on disk outside the
//! root, and the events.

mod support;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::client::{self, bytes, download, entries, sha256_hex, Helper};
use support::nginx::Nginx;
use support::server::TestServer;

/// A root and a directory beside it that must stay untouched.
struct Dirs {
    _base: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("cache");
        let outside = base.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        Dirs {
            root,
            outside,
            _base: base,
        }
    }

    fn root_arg(&self) -> &str {
        self.root.to_str().unwrap()
    }
}

/// A download of `url` into `dest` (as written: relative or absolute) with its sha256.
fn verified(id: &str, url: &str, dest: impl AsRef<Path>, body: &[u8]) -> Value {
    let mut request = download(id, url, dest.as_ref());
    request["hashes"] = json!({"sha256": sha256_hex(body)});
    request
}

/// The message of `id`'s `invalid` event.
fn invalid_message(run: &client::Run, id: &str) -> String {
    let invalid: Vec<&Value> = run
        .of("invalid")
        .into_iter()
        .filter(|e| e["id"] == id)
        .collect();
    assert_eq!(invalid.len(), 1, "one invalid for {id}: {:?}", run.events);
    invalid[0]["error"]["message"].as_str().unwrap().to_string()
}

#[test]
fn dotdot_absolute_and_symlinked_escapes_are_invalid_and_nothing_is_written_outside() {
    let files = tempfile::tempdir().unwrap();
    let body = bytes(81, 5000);
    std::fs::write(files.path().join("p.rpm"), &body).unwrap();
    let nginx = Nginx::start(files.path());
    let url = format!("http://127.0.0.1:{}/p.rpm", nginx.http_port);
    let dirs = Dirs::new();
    let (root, outside) = (&dirs.root, &dirs.outside);
    // A directory of the cache that is a link out of it, and one that stays inside.
    symlink(outside, root.join("out")).unwrap();
    std::fs::create_dir(root.join("real")).unwrap();
    symlink("real", root.join("alias")).unwrap();

    let run = client::run(
        &["--root", dirs.root_arg()],
        &[
            verified("dotdot", &url, "../outside/a.rpm", &body),
            verified(
                "dotdot-abs",
                &url,
                root.join("x/../../outside/b.rpm"),
                &body,
            ),
            verified("absolute", &url, outside.join("c.rpm"), &body),
            verified("link", &url, root.join("out/d.rpm"), &body),
            verified("link-rel", &url, "out/sub/e.rpm", &body),
            verified("is-root", &url, root, &body),
            // Inside: relative to the root, absolute below it, through a link that stays in.
            verified("relative", &url, "pkgs/f.rpm", &body),
            verified("abs-inside", &url, root.join("g.rpm"), &body),
            verified("alias", &url, "alias/h.rpm", &body),
        ],
    );
    run.assert_framing();
    assert_eq!(run.status, 1, "invalid lines make the status 1");
    for (id, says) in [
        ("dotdot", "`..`"),
        ("dotdot-abs", "`..`"),
        ("absolute", "is outside --root"),
        ("link", "leads out of --root"),
        ("link-rel", "leads out of --root"),
        ("is-root", "`dest`"),
    ] {
        let message = invalid_message(&run, id);
        assert!(message.starts_with("`dest`"), "{id}: {message}");
        assert!(message.contains(says), "{id}: {message}");
        assert!(message.contains("--root"), "{id}: {message}");
    }
    for id in ["relative", "abs-inside", "alias"] {
        assert_eq!(run.done(id)["cached"], false);
    }
    // `path` is dest as the request gave it; the bytes are below the root.
    assert_eq!(run.done("relative")["path"], "pkgs/f.rpm");
    for placed in ["pkgs/f.rpm", "g.rpm", "real/h.rpm"] {
        assert_eq!(std::fs::read(root.join(placed)).unwrap(), body, "{placed}");
    }
    assert!(entries(outside).is_empty(), "{:?}", entries(outside));
    assert_eq!(
        nginx.access_log().len(),
        3,
        "only the three good downloads were fetched"
    );
}

#[test]
fn a_dest_that_is_a_link_out_is_not_cached_nor_resumed_and_is_replaced_not_followed() {
    let files = tempfile::tempdir().unwrap();
    let body = bytes(82, 7000);
    std::fs::write(files.path().join("p.rpm"), &body).unwrap();
    let nginx = Nginx::start(files.path());
    let url = format!("http://127.0.0.1:{}/p.rpm", nginx.http_port);
    let dirs = Dirs::new();
    let (root, outside) = (&dirs.root, &dirs.outside);
    // The target outside holds exactly the right bytes: following the link, the helper
    // would call it cached.
    let victim = outside.join("p.rpm");
    std::fs::write(&victim, &body).unwrap();
    symlink(&victim, root.join("p.rpm")).unwrap();
    // A "partial" that is a link to a file outside, with a record that would fit it.
    let victim2 = outside.join("q.rpm");
    std::fs::write(&victim2, &body[..3000]).unwrap();
    symlink(&victim2, root.join(".q.rpm.fetchmux-partial")).unwrap();
    let record = json!({
        "fetchmux_partial": 1, "dest": "q.rpm",
        "identity": {"size": body.len(), "sha256": sha256_hex(&body)},
        "length": 3000, "sha256_prefix": sha256_hex(&body[..3000]),
        "etag": null, "last_modified": null,
    });
    let meta = root.join(".q.rpm.fetchmux-partial.meta");
    std::fs::write(meta, record.to_string()).unwrap();
    let mut resumable = verified("q", &url, "q.rpm", &body);
    resumable["resume"] = json!(true);
    resumable["size"] = json!(body.len());

    let run = client::run(
        &["--root", dirs.root_arg()],
        &[verified("p", &url, "p.rpm", &body), resumable],
    );
    run.assert_framing();
    assert_eq!(run.status, 0);
    assert_eq!(run.done("p")["cached"], false, "a link is never cached");
    run.done("q");
    for name in ["p.rpm", "q.rpm"] {
        let meta = std::fs::symlink_metadata(root.join(name)).unwrap();
        assert!(meta.is_file(), "{name}: the link was replaced by the file");
        assert_eq!(std::fs::read(root.join(name)).unwrap(), body);
    }
    assert_eq!(std::fs::read(&victim).unwrap(), body);
    assert_eq!(
        std::fs::read(&victim2).unwrap(),
        &body[..3000],
        "not appended to"
    );
    assert_eq!(entries(outside), ["p.rpm", "q.rpm"]);
    let log = nginx.requests();
    assert_eq!(log.len(), 2, "both fetched: {log:?}");
    assert!(
        log.iter().all(|r| r.range.is_none()),
        "the linked partial was not continued: {log:?}"
    );
}

/// A directory that does not exist when the line is read cannot be checked then; if a link
/// out of the root appears there before the first byte, the download fails as `io`, naming
/// the root, and nothing is written through it.
#[test]
fn a_link_out_that_appears_after_the_request_fails_as_io_when_the_body_comes() {
    let server = TestServer::start();
    let body = bytes(83, 4000);
    server.add_file("late", body.clone());
    let dirs = Dirs::new();
    let mut helper = Helper::spawn(&["--root", dirs.root_arg()]);
    helper.send(&verified(
        "late",
        &server.url("/delay/1500/late"),
        "later/late.rpm",
        &body,
    ));
    helper.wait_for("start", |e| e["event"] == "start");
    symlink(&dirs.outside, dirs.root.join("later")).unwrap();
    let run = helper.finish();
    run.assert_framing();
    assert_eq!(run.failed_kind("late"), "io");
    let failed = run.outcome("late");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("leads out of --root"), "{message}");
    assert!(message.contains(dirs.root_arg()), "{message}");
    assert_eq!(
        failed["attempts"].as_array().unwrap().len(),
        1,
        "io is final"
    );
    assert!(
        entries(&dirs.outside).is_empty(),
        "{:?}",
        entries(&dirs.outside)
    );
}

/// The race: while bodies are in flight, the directory they go to is renamed away and a link
/// out of the root put in its place. A body whose file was already made in the directory (the
/// large one, streaming for about 3 s) is placed in that directory (wherever it now is in the
/// root), never through the link; a body held in memory until it is verified (the small one,
/// whose response starts 4 s after it is asked for) finds the link when it is placed and
/// fails as `io`. Nothing lands outside either way.
#[test]
fn a_directory_swapped_for_a_link_out_mid_body_lands_nothing_outside() {
    let server = TestServer::start();
    let small = bytes(84, 20 * 1024);
    let large = bytes(85, 300 * 1024);
    server.add_file("small", small.clone());
    server.add_file("large", large.clone());
    let dirs = Dirs::new();
    let sub = dirs.root.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mut helper = Helper::spawn(&["--root", dirs.root_arg()]);
    let request = |id: &str, route: &str, body: &[u8]| {
        let mut request = verified(id, &server.url(route), format!("sub/{id}.rpm"), body);
        request["progress"] = json!(true);
        request
    };
    // The large body's file exists once bytes have been stored.
    helper.send(&request("large", "/trickle/102400/large", &large));
    helper.wait_for("progress", |e| {
        e["event"] == "progress" && e["id"] == "large" && e["bytes"].as_u64() > Some(0)
    });
    // The small one is accepted into the real directory, then waits for its response.
    helper.send(&request("small", "/delay/4000/small", &small));
    let asked = Instant::now();
    helper.wait_for("start", |e| e["event"] == "start" && e["id"] == "small");
    std::fs::rename(&sub, dirs.root.join("sub.old")).unwrap();
    symlink(&dirs.outside, &sub).unwrap();
    let swapped_in_time = asked.elapsed() < Duration::from_millis(3500);
    let run = helper.finish();
    run.assert_framing();
    assert!(
        entries(&dirs.outside).is_empty(),
        "{:?}",
        entries(&dirs.outside)
    );
    // The large body's file was made in the directory before the swap: placed there.
    run.done("large");
    assert_eq!(
        std::fs::read(dirs.root.join("sub.old/large.rpm")).unwrap(),
        large
    );
    if !swapped_in_time {
        // This thread was starved past the small body's arrival: only the above is shown.
        eprintln!("the swap came too late to race the small body; not checking it");
        return;
    }
    // The small body went to memory; placing it met the link.
    assert_eq!(run.failed_kind("small"), "io");
    let message = run.outcome("small")["error"]["message"].as_str().unwrap();
    assert!(message.contains("leads out of --root"), "{message}");
    assert_eq!(entries(&dirs.root.join("sub.old")), ["large.rpm"]);
}

/// The umask the helper inherits (it is this process's).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}

#[test]
fn file_urls_are_refused_unless_allowed_and_a_copy_keeps_at_most_the_source_bits() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let out = dir.path().join("out");
    // Sizes for each way a body reaches the disk: memory and the placing worker, a hashing
    // worker's anonymous file, a named temporary file.
    let cases = [
        ("small", 3000, 0o600),
        ("lane", 300 * 1024, 0o640),
        ("named", 2 << 20, 0o600),
        ("open", 3000, 0o644),
    ];
    let mut requests = Vec::new();
    let mut sources = Vec::new();
    for (i, (name, len, mode)) in cases.iter().enumerate() {
        let body = bytes(90 + i as u64, *len);
        let path = src.join(name);
        std::fs::write(&path, &body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
        let url = format!("file://{}", path.display());
        requests.push(verified(name, &url, out.join(name), &body));
        sources.push((name, body, *mode));
    }
    let secret = format!("file://{}", src.join("small").display());

    // Off by default: the line is refused, naming the flag; a mirror set too.
    let refused = client::run(
        &[],
        &[
            requests[0].clone(),
            json!({"op":"download","id":"two","urls":["http://127.0.0.1:9/x", secret],"dest": out.join("two")}),
            json!({"op":"mirrors","set":"local","urls":[format!("file://{}/", src.display())]}),
        ],
    );
    refused.assert_framing();
    assert_eq!(refused.of("invalid").len(), 3, "{:?}", refused.events);
    for invalid in refused.of("invalid") {
        assert_eq!(invalid["error"]["kind"], "unsupported_scheme", "{invalid}");
        let message = invalid["error"]["message"].as_str().unwrap();
        assert!(message.contains("--file-urls"), "{message}");
        assert!(message.starts_with("`url"), "{message}");
    }
    assert!(!out.exists(), "nothing was written");

    let run = client::run(&["--file-urls"], &requests);
    run.assert_framing();
    assert_eq!(run.status, 0);
    let default = 0o666 & !umask();
    for (name, body, mode) in sources {
        run.done(name);
        let placed = out.join(name);
        assert_eq!(std::fs::read(&placed).unwrap(), body, "{name}");
        let bits = std::fs::metadata(&placed).unwrap().permissions().mode() & 0o777;
        assert_eq!(bits, default & mode, "{name}: {bits:o}");
    }
}
