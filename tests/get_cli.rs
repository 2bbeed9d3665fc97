//! `fetchmux get`, the front for people, run as people run it: in a real terminal (tmux,
//! reading the screen while it runs and after), with stderr to a pipe, with lists, and
//! installed by `make install`. The test server's `/trickle/` route makes transfers slow
//! enough to be seen running.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::client::{binary, bytes, sha256_hex};
use support::server::TestServer;

/// Longest wait for anything to show on the screen or a run to end.
const PATIENCE: Duration = Duration::from_secs(120);

/// A tmux server of this test alone (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A detached 120×30 terminal running a plain bash in `dir`.
    fn start(name: &str, dir: &Path) -> Tmux {
        Tmux::start_sized(name, dir, 30)
    }

    /// The same with `rows` rows.
    fn start_sized(name: &str, dir: &Path, rows: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("fetchmux-test-{}-{name}", std::process::id()),
        };
        let rows = rows.to_string();
        let status = tmux
            .command()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                &rows,
            ])
            .arg("-c")
            .arg(dir)
            .args([
                "env",
                "PS1=$ ",
                "TERM=xterm-256color",
                "bash",
                "--norc",
                "--noprofile",
            ])
            .status()
            .expect("tmux runs (scripts/deps.sh installs it)");
        assert!(status.success(), "tmux new-session failed: {status}");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    /// Type `line` and Enter.
    fn type_line(&self, line: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", "0", "-l", line])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self
            .command()
            .args(["send-keys", "-t", "0", "Enter"])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn keys(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", "0", keys])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// What the terminal shows now, one string per row.
    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first screen for which `ready` holds, within PATIENCE.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The socket file outlives the server: remove it too.
        let socket = self
            .command()
            .args(["display-message", "-p", "#{socket_path}"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
        let _ = self.command().arg("kill-server").status();
        if let Ok(socket) = socket.as_deref() {
            if socket.contains(&self.socket) {
                let _ = std::fs::remove_file(socket);
            }
        }
    }
}

/// The status the shell echoed after the run (`exit=N` on a line of its own).
fn exit_status(screen: &str) -> Option<&str> {
    screen.lines().find_map(|l| l.strip_prefix("exit="))
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// A run of `fetchmux ARGS` with stderr to a pipe; stdin as given.
fn get(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(binary());
    command
        .current_dir(dir)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fetchmux {args:?} did not end within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_terminal_shows_each_transfer_and_a_total_then_verdicts_and_a_summary() {
    let server = TestServer::start();
    // 64 KB at 12 KB/s: over five seconds each, long enough to read the screen mid-way.
    let slow = [bytes(1, 64_000), bytes(2, 64_000)];
    server.add_file("slow-one.bin", slow[0].clone());
    server.add_file("slow-two.bin", slow[1].clone());
    let quick = bytes(3, 5_000);
    server.add_file("quick.txt", quick.clone());
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::start("progress", dir.path());
    tmux.type_line(&format!(
        "{} get -o out {} {} {} {}; echo \"exit=$?\"",
        quote(&binary()),
        server.url("/trickle/12000/slow-one.bin"),
        server.url("/trickle/12000/slow-two.bin"),
        server.url("/files/quick.txt"),
        server.url("/files/missing.rpm"),
    ));

    // While it runs: a line per slow transfer (name, bytes, rate, ETA), the total line, and
    // the files already finished above them with their verdicts.
    let running = tmux.wait_for("both transfers running, with bytes", |screen| {
        let line = |name: &str| {
            screen
                .lines()
                .find(|l| l.starts_with(name))
                .map(str::to_string)
        };
        let moving = |l: &str| l.contains("KiB/s") && l.contains("ETA") && l.contains("/62.50 KiB");
        line("slow-one.bin").is_some_and(|l| moving(&l))
            && line("slow-two.bin").is_some_and(|l| moving(&l))
            && screen.lines().any(|l| {
                // indicatif redraws a line at most 10 times a second: wait for the total
                // line to have caught up with the finished files.
                l.starts_with("total") && l.contains("KiB/s") && l.contains("/4 files, 1 failed")
            })
            && screen.contains("✓ quick.txt")
            && screen.contains("✗ missing.rpm")
    });
    assert!(
        running.contains("✗ missing.rpm  http_status: server answered HTTP 404"),
        "{running}"
    );
    let total = running
        .lines()
        .find(|l| l.trim_start().starts_with("total"))
        .unwrap();
    assert!(
        total.contains("/4 files") && total.contains("1 failed"),
        "{total}"
    );
    assert!(exit_status(&running).is_none(), "{running}");

    // After: every verdict, the summary, the failures, the status; the progress lines gone.
    let end = tmux.wait_for("the exit status", |s| exit_status(s).is_some());
    for verdict in [
        format!(
            "✓ slow-one.bin  62.50 KiB  sha256:{}…",
            &sha256_hex(&slow[0])[..16]
        ),
        format!(
            "✓ slow-two.bin  62.50 KiB  sha256:{}…",
            &sha256_hex(&slow[1])[..16]
        ),
        format!(
            "✓ quick.txt  4.88 KiB  sha256:{}…",
            &sha256_hex(&quick)[..16]
        ),
        "✗ missing.rpm  http_status: server answered HTTP 404".to_string(),
    ] {
        assert!(end.contains(&verdict), "no `{verdict}` in:\n{end}");
    }
    assert!(end.contains("4 files: 3 done, 1 failed; "), "{end}");
    assert!(
        end.contains("failed:\n  missing.rpm: http_status: server answered HTTP 404"),
        "{end}"
    );
    assert_eq!(exit_status(&end), Some("1"), "{end}");
    assert!(!end.contains("ETA") && !end.contains("KiB/s "), "{end}");
    assert_eq!(
        std::fs::read(dir.path().join("out/slow-one.bin")).unwrap(),
        slow[0]
    );
    assert_eq!(
        std::fs::read(dir.path().join("out/slow-two.bin")).unwrap(),
        slow[1]
    );
    assert_eq!(
        std::fs::read(dir.path().join("out/quick.txt")).unwrap(),
        quick
    );
    assert!(!dir.path().join("out/missing.rpm").exists());
}

#[test]
fn a_small_terminal_gets_the_lines_that_fit_and_the_total_counts_the_rest() {
    let server = TestServer::start();
    let mut urls = Vec::new();
    for i in 0..8 {
        server.add_file(&format!("part-{i}.bin"), bytes(20 + i, 50_000));
        urls.push(server.url(&format!("/trickle/10000/part-{i}.bin")));
    }
    let dir = tempfile::tempdir().unwrap();
    // 8 rows: 5 transfer lines, the total line, and room for the prompt.
    let tmux = Tmux::start_sized("small", dir.path(), 8);
    tmux.type_line(&format!(
        "clear; {} get -j 8 {}; echo \"exit=$?\"",
        quote(&binary()),
        urls.join(" ")
    ));
    let screen = tmux.wait_for("5 lines and 3 more counted", |screen| {
        let drawn = screen
            .lines()
            .filter(|l| l.starts_with("part-") && l.contains("ETA"))
            .count();
        drawn == 5
            && screen
                .lines()
                .any(|l| l.starts_with("total") && l.contains("0/8 files, 3 more running"))
    });
    assert!(screen.lines().count() <= 8, "{screen}");
    let end = tmux.wait_for("the exit status", |s| exit_status(s).is_some());
    assert_eq!(exit_status(&end), Some("0"), "{end}");
    for i in 0..8 {
        let body = std::fs::read(dir.path().join(format!("part-{i}.bin"))).unwrap();
        assert_eq!(body, bytes(20 + i, 50_000));
    }
}

#[test]
fn ctrl_c_in_a_terminal_stops_with_130_and_leaves_no_file() {
    let server = TestServer::start();
    server.add_file("big.iso", bytes(4, 400_000));
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::start("interrupt", dir.path());
    tmux.type_line(&format!(
        "{} get {}; echo \"exit=$?\"",
        quote(&binary()),
        server.url("/trickle/20000/big.iso"),
    ));
    tmux.wait_for("the transfer running", |screen| {
        screen
            .lines()
            .any(|l| l.starts_with("big.iso") && l.contains("KiB/s"))
    });
    tmux.keys("C-c");
    let end = tmux.wait_for("the exit status", |s| exit_status(s).is_some());
    // The engine's notice is printed above the drawing (not into it), and the total line is
    // gone. (The terminal's echo of ^C moves the cursor a line down behind indicatif's back,
    // so the first transfer line may stay above the notice: docs/get.md.)
    assert!(
        end.contains("fetchmux: caught signal 2, aborting transfers\n1 files"),
        "{end}"
    );
    assert!(!end.lines().any(|l| l.starts_with("total")), "{end}");
    assert!(end.contains("1 files: 0 done, 1 not finished"), "{end}");
    assert!(end.contains("stopped by signal 2"), "{end}");
    assert_eq!(exit_status(&end), Some("130"), "{end}");
    assert_eq!(support::client::entries(dir.path()), Vec::<String>::new());
}

#[test]
fn without_a_terminal_one_plain_line_per_file() {
    let server = TestServer::start();
    let (a, b) = (bytes(5, 200_000), bytes(6, 10));
    server.add_file("a.rpm", a.clone());
    server.add_file("b%20c.rpm", b.clone());
    let dir = tempfile::tempdir().unwrap();
    let out = get(
        dir.path(),
        &[
            "get",
            "-j",
            "2",
            &server.url("/trickle/400000/a.rpm"),
            &server.url("/files/b%20c.rpm"),
            &server.url("/status/503"),
            "--retries",
            "1",
            "--max-retry-wait",
            "1",
        ],
        None,
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !text.contains('\x1b') && !text.contains('\r'),
        "escape codes in {text:?}"
    );
    let mut lines: Vec<&str> = text.lines().collect();
    let verdicts: Vec<&str> = lines.drain(..3).collect();
    let mut sorted = verdicts.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            format!("✓ a.rpm  195.31 KiB  sha256:{}", sha256_hex(&a)),
            format!("✓ b c.rpm  10 B  sha256:{}", sha256_hex(&b)),
            "✗ 503  http_status: server answered HTTP 503 (after 2 attempts)".to_string(),
        ],
        "{text}"
    );
    assert!(
        lines[0].starts_with("3 files: 2 done, 1 failed; "),
        "{text}"
    );
    assert_eq!(
        &lines[1..],
        [
            "failed:",
            "  503: http_status: server answered HTTP 503 (after 2 attempts)"
        ],
        "{text}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(dir.path().join("a.rpm")).unwrap(), a);
    assert_eq!(std::fs::read(dir.path().join("b c.rpm")).unwrap(), b);
}

#[test]
fn all_in_place_is_status_0_and_a_cached_file_is_not_fetched_again() {
    let server = TestServer::start();
    let body = bytes(7, 3000);
    server.add_file("x.deb", body.clone());
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("/files/x.deb");
    let digest = sha256_hex(&body);
    let args = ["get", "-O", "renamed.deb", "--sha256", &digest, &url];
    let first = get(dir.path(), &args, None);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(stderr(&first).contains(&format!(
        "✓ renamed.deb  2.93 KiB  sha256:{digest} (as expected)"
    )));
    assert_eq!(std::fs::read(dir.path().join("renamed.deb")).unwrap(), body);
    let again = get(dir.path(), &args, None);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("(already here, not fetched)"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("1 files: 1 done (1 already here)"),
        "{}",
        stderr(&again)
    );
    assert_eq!(server.requests().len(), 1);

    // A wrong digest: nothing is put in place, status 1.
    let wrong = "0".repeat(64);
    let out = get(
        dir.path(),
        &[
            "get",
            "-O",
            "other.deb",
            "--sha256",
            &wrong,
            &url,
            "--retries",
            "0",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("✗ other.deb  checksum_mismatch"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("other.deb").exists());
}

#[test]
fn lists_plain_with_aria2_options_or_json_lines() {
    let server = TestServer::start();
    let (a, b, c) = (bytes(8, 1000), bytes(9, 2000), bytes(10, 3000));
    server.add_file("a", a.clone());
    server.add_file("b", b.clone());
    server.add_file("c", c.clone());
    let dir = tempfile::tempdir().unwrap();
    let list = format!(
        "# a list\n{}\n  out=first.bin\n  checksum=sha-256={}\n\n{}\t{}\n{}\n  checksum=sha-256={}\n",
        server.url("/files/a"),
        sha256_hex(&a),
        server.url("/files/gone"),
        server.url("/files/b"),
        server.url("/files/c"),
        "1".repeat(64),
    );
    std::fs::write(dir.path().join("list.txt"), &list).unwrap();
    // One retry: the tab-separated URLs are tried in turn within a download's attempts.
    let out = get(
        dir.path(),
        &["get", "-i", "list.txt", "-o", "d", "--retries", "1"],
        None,
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(std::fs::read(dir.path().join("d/first.bin")).unwrap(), a);
    // Tab-separated URLs are one file's sources: the second served it.
    assert_eq!(std::fs::read(dir.path().join("d/gone")).unwrap(), b);
    assert!(text.contains("✗ c  checksum_mismatch"), "{text}");
    assert!(!dir.path().join("d/c").exists());

    // JSON Lines requests, read from stdin; relative `dest` under -o.
    let requests = format!(
        "{{\"op\":\"download\",\"id\":\"x\",\"url\":\"{}\",\"dest\":\"sub/x.bin\",\"hashes\":{{\"sha256\":\"{}\"}}}}\n\
         {{\"op\":\"mirrors\",\"set\":\"m\",\"urls\":[\"{}\"]}}\n\
         {{\"op\":\"download\",\"id\":\"y\",\"mirror\":\"m\",\"path\":\"b\",\"dest\":\"y.bin\"}}\n",
        server.url("/files/c"),
        sha256_hex(&c),
        server.url("/files/"),
    );
    let out = get(dir.path(), &["get", "-i", "-", "-o", "j"], Some(&requests));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.path().join("j/sub/x.bin")).unwrap(), c);
    assert_eq!(std::fs::read(dir.path().join("j/y.bin")).unwrap(), b);
}

#[test]
fn bad_names_and_lists_stop_everything_before_the_first_byte() {
    let server = TestServer::start();
    server.add_file("ok", b"ok".to_vec());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l"), "http://x/a\n  referer=y\n").unwrap();
    let ok = server.url("/files/ok");
    let dirlike = server.url("/files/");
    let escaping = server.url("/files/..%2F..%2Fetc%2Fpasswd");
    let cases: [(&[&str], &str); 5] = [
        (
            &["get", &ok, &dirlike],
            "its path ends in `/` (no file name)",
        ),
        (&["get", &ok, &escaping], "decodes to something with `/`"),
        (&["get", &ok, &ok], "would be written by two entries"),
        (&["get", "-O", "x", &ok, &ok], "-O NAME names one file"),
        (&["get", &ok, "-i", "l"], "l:2: unknown option `referer`"),
    ];
    for (args, message) in cases {
        let out = get(dir.path(), args, None);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(message), "{args:?}: {text}");
        assert!(text.contains("nothing was downloaded"), "{text}");
    }
    assert_eq!(server.requests().len(), 0);
    assert_eq!(support::client::entries(dir.path()), ["l"]);
}

#[test]
fn a_url_without_get_is_refused_with_the_way_to_download_it() {
    let out = Command::new(binary())
        .arg("http://127.0.0.1:1/x.rpm")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("fetchmux get URL..."), "{stderr}");
}

#[test]
fn help_says_what_it_is_and_where_to_read_more() {
    let out = Command::new(binary()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "package manager",
        "reads download requests on stdin",
        "writes events on stdout",
        "JSON Lines",
        "docs/protocol.md",
        "fetchmux get URL...",
    ] {
        assert!(help.contains(needle), "no `{needle}` in --help:\n{help}");
    }
    let out = Command::new(binary())
        .args(["get", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--output-dir",
        "--input-file",
        "--sha256",
        "--max-parallel",
        "Exit status: 0",
    ] {
        assert!(
            help.contains(needle),
            "no `{needle}` in get --help:\n{help}"
        );
    }
}

#[test]
fn version_names_libcurl_and_its_features() {
    let out = Command::new(binary()).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(concat!("fetchmux ", env!("CARGO_PKG_VERSION"), "\n")),
        "{text}"
    );
    assert!(text.contains("\nlibcurl 8."), "{text}");
    assert!(text.contains("OpenSSL/"), "{text}");
    let features = text
        .lines()
        .find(|l| l.starts_with("features: "))
        .expect(&text);
    assert!(
        features.contains("http2") && features.contains("ssl"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("protocols: ") && l.contains("https")),
        "{text}"
    );
}

#[test]
fn make_install_puts_binary_man_pages_and_completions_under_destdir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new("make")
        .current_dir(root)
        .args(["-s", "install-files", "PREFIX=/usr"])
        .arg(format!("DESTDIR={}", dest.path().display()))
        .arg(format!("BIN={}", binary().display()))
        .output()
        .expect("make runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = |path: &str| -> PathBuf { dest.path().join(path) };
    let read =
        |path: &str| std::fs::read_to_string(at(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let installed = Command::new(at("usr/bin/fetchmux"))
        .arg("-V")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&installed.stdout).starts_with("fetchmux "));
    let man = read("usr/share/man/man1/fetchmux.1");
    assert!(
        man.contains(".TH fetchmux 1") && man.contains("docs/protocol.md"),
        "{man}"
    );
    let man_get = read("usr/share/man/man1/fetchmux-get.1");
    assert!(
        man_get.contains("\\-\\-input\\-file") && man_get.contains("Exit status"),
        "{man_get}"
    );
    for (path, needle) in [
        (
            "usr/share/bash-completion/completions/fetchmux",
            "--max-parallel",
        ),
        (
            "usr/share/zsh/site-functions/_fetchmux",
            "#compdef fetchmux",
        ),
        (
            "usr/share/fish/vendor_completions.d/fetchmux.fish",
            "complete -c fetchmux",
        ),
        ("usr/share/doc/fetchmux/protocol.md", "# "),
        ("usr/share/doc/fetchmux/get.md", "fetchmux get"),
    ] {
        assert!(read(path).contains(needle), "no `{needle}` in {path}");
    }
    // The completions know `get` and its options.
    assert!(read("usr/share/bash-completion/completions/fetchmux").contains("--input-file"));
}
