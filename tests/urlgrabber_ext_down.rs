//! fetchmux as yum's `urlgrabber-ext-down`, against the real parent: PyPI urlgrabber with
//! pycurl in a venv this test makes (scripts/urlgrabber-venv.sh, cached under the target
//! directory), driving a few hundred downloads through a MirrorGroup whose first mirror is
//! dead and second is Debian's nginx. The same plan runs with the stock helper and with
//! fetchmux; what the parent saw and what is on disk must agree, apart from the documented
//! difference (docs/fronts.md): fetchmux leaves no empty file for a failed download.
//!
//! The protocol itself, without Python: numbering, bad lines, exit on EOF and SIGINT.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::nginx::Nginx;

/// The venv with urlgrabber and pycurl, made once per target directory.
fn venv() -> PathBuf {
    static MADE: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("urlgrabber-venv");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/urlgrabber-venv.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("running scripts/urlgrabber-venv.sh");
    assert!(
        output.status.success(),
        "could not make the urlgrabber venv at {} (python3 -m venv and PyPI access needed):\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// A directory holding a symlink named `urlgrabber-ext-down` to the fetchmux binary: the
/// parent runs `$URLGRABBER_EXT_DOWN` with no arguments, fetchmux picks the front by name.
fn fetchmux_as_helper(dir: &Path) -> PathBuf {
    let link = dir.join("urlgrabber-ext-down");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fetchmux"), &link).unwrap();
    link
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Deterministic bytes for file `n`.
fn body(n: usize, len: usize) -> Vec<u8> {
    let mut x = (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A port on 127.0.0.1 that nothing listens on: the dead mirror.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// What each kind of file in the plan is.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Ok,
    Missing,
    BadChecksum,
}

struct Fixture {
    root: tempfile::TempDir,
    plan: Value,
    kinds: BTreeMap<String, Kind>,
    /// Bytes written into `dest` before the run, for the reget cases, and the mtime to give
    /// them (the server's, for the prefix that is to be continued).
    prefixes: Vec<(String, Vec<u8>, Option<SystemTime>)>,
    throttled: String,
}

/// The server's files and the plan: mostly small files, a few over 1 MiB, an empty one,
/// 404s, checksum failures, progress on every third, two ranges, two regets (one whose
/// prefix carries the server's mtime, so it is continued, one that is not), a throttled
/// file (progress lines), and a name that needs every escape `_dumps` makes.
fn fixture(mirrors: [String; 2]) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let pkgs = root.path().join("pkgs");
    std::fs::create_dir(&pkgs).unwrap();
    let mut files = Vec::new();
    let mut kinds = BTreeMap::new();
    let mut prefixes = Vec::new();
    let mut add =
        |name: String, path: String, served: Option<&[u8]>, wanted: &[u8], extra: Value| {
            let kind = match (served, extra.get("bad")) {
                (None, _) => Kind::Missing,
                (Some(_), Some(_)) => Kind::BadChecksum,
                (Some(_), None) => Kind::Ok,
            };
            kinds.insert(name.clone(), kind);
            let mut entry = json!({"name": name, "path": path, "sha256": sha256_hex(wanted),
                               "progress": files.len() % 3 == 0});
            for (k, v) in extra.as_object().unwrap() {
                entry[k] = v.clone();
            }
            files.push(entry);
        };
    for n in 0..300 {
        let len = match n {
            0 => 0,
            7 | 150 => 1_300_000 + n * 1000,
            _ => (n * 7919) % 200_000 + 1,
        };
        let bytes = body(n, len);
        let name = format!("p{n:03}.rpm");
        let file = pkgs.join(&name);
        let path = format!("pkgs/{name}");
        if n % 29 == 5 {
            add(name, path, None, &bytes, json!({}));
        } else if n % 31 == 6 {
            std::fs::write(&file, &bytes).unwrap();
            add(
                name,
                path,
                Some(&bytes),
                b"not these bytes",
                json!({"bad": true}),
            );
        } else {
            std::fs::write(&file, &bytes).unwrap();
            add(name, path, Some(&bytes), &bytes, json!({"size": len}));
        }
    }
    let bytes = body(1000, 5000);
    std::fs::write(pkgs.join("ranged.bin"), &bytes).unwrap();
    add(
        "r1.bin".into(),
        "pkgs/ranged.bin".into(),
        Some(&bytes),
        &bytes[10..50],
        json!({"range": [10, 50]}),
    );
    add(
        "r2.bin".into(),
        "pkgs/ranged.bin".into(),
        Some(&bytes),
        &bytes[4000..],
        json!({"range": [4000, null]}),
    );
    for (name, continued) in [("reget-kept.bin", true), ("reget-stale.bin", false)] {
        let bytes = body(name.len() + usize::from(continued), 400_000);
        let file = pkgs.join(name);
        std::fs::write(&file, &bytes).unwrap();
        add(
            name.into(),
            format!("pkgs/{name}"),
            Some(&bytes),
            &bytes,
            json!({"reget": true}),
        );
        // A prefix with the server's mtime is continued (If-Range matches); one with
        // another mtime is fetched whole again (fetchmux), appended to (stock): same bytes.
        let stamp = continued.then(|| mtime(&file));
        prefixes.push((name.to_string(), bytes[..150_000].to_vec(), stamp));
    }
    let throttled = "throttled.bin".to_string();
    let bytes = body(2000, 1_500_000);
    std::fs::write(pkgs.join(&throttled), &bytes).unwrap();
    add(
        throttled.clone(),
        format!("pkgs/{throttled}"),
        Some(&bytes),
        &bytes,
        json!({"throttle": 2_000_000, "progress": true}),
    );
    let bytes = body(3000, 1234);
    std::fs::write(pkgs.join("sp ace,[x].txt"), &bytes).unwrap();
    add(
        "sp ace,[x].txt".into(),
        "pkgs/sp%20ace%2C%5Bx%5D.txt".into(),
        Some(&bytes),
        &bytes,
        json!({"progress": true}),
    );
    Fixture {
        root,
        plan: json!({"mirrors": mirrors, "files": files}),
        kinds,
        prefixes,
        throttled,
    }
}

/// One run of the parent with `helper` as `$URLGRABBER_EXT_DOWN`: the parent's report, and
/// how long it took.
fn run_parent(venv: &Path, fixture: &Fixture, helper: &Path, out: &Path) -> (Value, Duration) {
    std::fs::create_dir_all(out).unwrap();
    for (name, prefix, stamp) in &fixture.prefixes {
        let file = std::fs::File::create(out.join(name)).unwrap();
        (&file).write_all(prefix).unwrap();
        if let Some(stamp) = stamp {
            file.set_modified(*stamp).unwrap();
        }
    }
    let plan = out.with_extension("plan.json");
    std::fs::write(&plan, fixture.plan.to_string()).unwrap();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/ug_drive.py");
    let started = Instant::now();
    let output = Command::new(venv.join("bin/python"))
        .arg(driver)
        .arg(&plan)
        .arg(out)
        .env("URLGRABBER_EXT_DOWN", helper)
        .output()
        .expect("running the urlgrabber driver");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "the driver failed with {}:\n{}",
        helper.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "driver output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (report, took)
}

/// Names in `dir` with their bytes and mtimes.
fn contents(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, (std::fs::read(&path).unwrap(), mtime(&path)))
        })
        .collect()
}

/// The report without what legitimately differs: whether a fast transfer produced progress
/// lines (the stock helper writes one at its first byte, fetchmux only after 0.25 s).
fn comparable(report: &Value) -> Value {
    let mut report = report.clone();
    for file in report["files"].as_object_mut().unwrap().values_mut() {
        file.as_object_mut().unwrap().remove("progress_lines");
    }
    report
}

#[test]
fn the_real_parent_sees_what_the_stock_helper_gives() {
    let venv = venv();
    let www = tempfile::tempdir().unwrap();
    let nginx_root = www.path().join("root");
    std::fs::create_dir(&nginx_root).unwrap();
    let nginx = Nginx::start(&nginx_root);
    let mirrors = [
        format!("http://127.0.0.1:{}/", closed_port()),
        format!("http://127.0.0.1:{}/", nginx.http_port),
    ];
    let fixture = fixture(mirrors);
    std::fs::remove_dir(&nginx_root).unwrap();
    std::os::unix::fs::symlink(fixture.root.path(), &nginx_root).unwrap();
    let work = tempfile::tempdir().unwrap();
    let fetchmux = fetchmux_as_helper(work.path());

    let stock_out = work.path().join("stock");
    let (stock, stock_took) = run_parent(
        &venv,
        &fixture,
        &venv.join("bin/urlgrabber-ext-down-stock"),
        &stock_out,
    );
    let log_before = nginx.access_log().len();
    let ours_out = work.path().join("fetchmux");
    let (ours, ours_took) = run_parent(&venv, &fixture, &fetchmux, &ours_out);
    eprintln!("stock helper: {stock_took:?}, fetchmux: {ours_took:?}");

    // What the parent saw: every callback outcome, errno and code, the live mirror's failure
    // messages, and the dead mirror's errno/code.
    let (ours_c, stock_c) = (comparable(&ours), comparable(&stock));
    for (name, file) in stock_c["files"].as_object().unwrap() {
        assert_eq!(
            &ours_c["files"][name], file,
            "{name}: fetchmux, then the stock helper"
        );
    }
    assert_eq!(ours_c, stock_c);
    let files = ours["files"].as_object().unwrap();
    assert_eq!(
        files.len(),
        fixture.kinds.len(),
        "every file got a callback"
    );
    for (name, kind) in &fixture.kinds {
        let file = &files[name];
        let expected = match kind {
            Kind::Ok => json!({"outcome": "ok"}),
            // Both mirrors fail: "No more mirrors to try".
            Kind::Missing | Kind::BadChecksum => {
                json!({"outcome": "failfunc", "errno": 256, "code": 0})
            }
        };
        assert_eq!(file["outcome"], expected["outcome"], "{name}: {file}");
        let live = file["live_failures"].as_array().unwrap();
        match kind {
            Kind::Ok => assert!(live.is_empty(), "{name}: {file}"),
            Kind::Missing => assert_eq!(
                live,
                &[json!([14, 404, "HTTP Error 404 - Not Found"])],
                "{name}"
            ),
            Kind::BadChecksum => assert_eq!(live, &[json!([-1, 0, ""])], "{name}"),
        }
        assert_eq!(file["progress_monotonic"], true, "{name}");
    }
    assert_eq!(
        ours["dead_mirror"],
        json!([[14, 7]]),
        "connection refused: curl#7"
    );
    for report in [&ours, &stock] {
        assert_eq!(report["files"][&fixture.throttled]["progress_lines"], true);
    }

    // On disk: the same files with the same bytes and the server's mtimes, except where a
    // failed attempt touched `filename`: the stock helper opens it for writing before the
    // transfer, so a download that failed everywhere leaves an empty file, and a dead-mirror
    // attempt after a checksum failure empties the file the live mirror gave; fetchmux
    // never touches `filename` for a failed attempt.
    let (theirs, mine) = (contents(&stock_out), contents(&ours_out));
    let names = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<Vec<_>>();
    let mut expected_names = names(&mine);
    for (name, kind) in &fixture.kinds {
        let served = || std::fs::read(fixture.root.path().join("pkgs").join(name)).unwrap();
        let their_len = theirs.get(name).map(|(b, _)| b.len());
        match kind {
            Kind::Ok => {
                let (bytes, stamp) = &mine[name];
                let (their_bytes, their_stamp) = &theirs[name];
                assert!(
                    bytes == their_bytes,
                    "{name}: {} bytes, stock {}",
                    bytes.len(),
                    their_bytes.len()
                );
                assert_eq!(stamp, their_stamp, "{name}: mtime");
            }
            Kind::Missing => {
                assert_eq!(their_len, Some(0), "stock leaves an empty {name}");
                assert!(!mine.contains_key(name), "fetchmux leaves no {name}");
                expected_names.push(name.clone());
            }
            Kind::BadChecksum => {
                assert!(
                    mine[name].0 == served(),
                    "{name}: the bytes the parent rejected"
                );
                assert!(
                    their_len == Some(0) || theirs[name].0 == served(),
                    "{name}: stock has {their_len:?} bytes"
                );
            }
        }
    }
    expected_names.sort();
    assert_eq!(
        expected_names,
        names(&theirs),
        "the same names, plus stock's empty files"
    );
    for name in fixture
        .kinds
        .iter()
        .filter(|(_, k)| **k == Kind::Ok)
        .map(|(n, _)| n)
    {
        let served = match name.as_str() {
            "r1.bin" | "r2.bin" => "ranged.bin",
            other => other,
        };
        // Last-Modified has whole seconds.
        let server = mtime(&fixture.root.path().join("pkgs").join(served));
        assert_eq!(
            secs(mine[name].1),
            secs(server),
            "{name}: the server's mtime"
        );
    }
    // The reget whose prefix matched was continued: nginx answered 206 for it.
    let ours_log = &nginx.access_log()[log_before..];
    assert!(
        ours_log
            .iter()
            .any(|(_, _, status, uri)| *status == 206 && uri == "/pkgs/reget-kept.bin"),
        "{ours_log:?}"
    );
}

/// The protocol without the parent: answers numbered in request order (a line that cannot
/// be read gets its failure at once), exit status 0 and nothing on stderr when stdin ends.
#[test]
fn answers_each_line_by_its_number_and_exits_on_eof() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.bin"), body(1, 100_000)).unwrap();
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let line = |name: &str| {
        format!(
            "url='http://127.0.0.1:{}/{name}' filename='{}' timeout=20.5 size=0\n",
            nginx.http_port,
            out.path().join(name).display()
        )
    };
    let input = format!("{}garbage\n{}", line("a.bin"), line("missing.bin"));
    let output = run_helper(
        Command::new(env!("CARGO_BIN_EXE_fetchmux")).arg("urlgrabber-ext-down"),
        &input,
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines: Vec<_> = text.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{text}");
    let first: Vec<_> = lines[0].split(' ').collect();
    assert_eq!(
        (first[0], first[1], first[2], first[4]),
        ("1", "100000", "100000", "OK"),
        "{text}"
    );
    assert_eq!(
        lines[1],
        "2 0 0 0.000 1 0 Bad request: `garbage` is not key=value"
    );
    assert_eq!(lines[2], "3 0 0 0.000 14 404 HTTP Error 404 - Not Found");
    assert_eq!(
        std::fs::read(out.path().join("a.bin")).unwrap(),
        body(1, 100_000)
    );
    assert!(!out.path().join("missing.bin").exists());
}

/// SIGINT in the middle of a transfer: exit status 0, progress lines before it, and no
/// file left behind.
#[test]
fn exits_quietly_on_sigint() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("big.bin"), body(2, 2_000_000)).unwrap();
    let nginx = Nginx::start(root.path());
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(fetchmux_as_helper(work.path()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // 100 kB/s: 20 s for the whole file, far longer than the test waits.
    writeln!(
        stdin,
        "url='http://127.0.0.1:{}/big.bin' filename='{}' throttle=100000 size=2000000 progress_obj=True",
        nginx.http_port,
        dest.display()
    )
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let progress: Vec<_> = first.split_whitespace().collect();
    assert_eq!(progress.len(), 2, "a progress line first: {first:?}");
    assert_eq!(progress[0], "1");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!dest.exists(), "nothing left at {dest:?}");
    drop(stdin);
}

fn run_helper(command: &mut Command, input: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
