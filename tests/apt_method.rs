//! fetchmux as apt's http method, driven by the real apt-get (apt 2.6) against a real
//! nginx serving a Debian repository built for the test (tests/support/debrepo.py).
//!
//! Each test gets throw-away apt roots: one whose `http`/`https` methods are symlinks to
//! fetchmux, and, where results are compared, one with the stock methods as the reference.
//! Nothing of the system's apt state is read or written. Every tool is required: a missing
//! one fails the test with what to install.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use support::nginx::Nginx;

const STOCK_METHODS: &str = "/usr/lib/apt/methods";

/// Fail, saying what to install, when `tool` is not on PATH.
fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "the apt tests need `{tool}` (Debian package {package}): run `make deps`"
    );
}

fn require_all() {
    require("apt-get", "apt");
    require("dpkg-deb", "dpkg");
    require("python3", "python3");
    require("nginx", "nginx-light");
    assert!(
        Path::new(STOCK_METHODS).join("http").exists(),
        "the apt tests compare with apt's own http method, {STOCK_METHODS}/http (package apt)"
    );
}

/// A flat repository of test packages, served by nginx.
struct Repo {
    dir: tempfile::TempDir,
    /// Package names and their .deb file names, in order.
    packages: Vec<(String, String)>,
    nginx: Nginx,
}

impl Repo {
    /// `count` packages whose sizes cycle through `sizes` (debrepo.py's notation).
    fn new(count: usize, sizes: &str) -> Repo {
        require_all();
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/debrepo.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .args(["--count", &count.to_string(), "--sizes", sizes])
            .output()
            .expect("running debrepo.py");
        assert!(
            out.status.success(),
            "debrepo.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let packages = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let name = line.split(' ').next().unwrap().to_string();
                let file = format!("{name}_1.0_all.deb");
                (name, file)
            })
            .collect::<Vec<_>>();
        assert_eq!(packages.len(), count);
        let nginx = Nginx::start(dir.path());
        Repo {
            dir,
            packages,
            nginx,
        }
    }

    fn names(&self) -> Vec<&str> {
        self.packages.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn file(&self, deb: &str) -> PathBuf {
        self.dir.path().join(deb)
    }

    fn sources_line(&self) -> String {
        format!(
            "deb [trusted=yes] http://127.0.0.1:{}/ ./\n",
            self.nginx.http_port
        )
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Fetchmux,
    Stock,
}

/// A throw-away apt root: its configuration file, state, cache and methods directory.
struct AptRoot {
    dir: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    text: String,
}

impl AptRoot {
    fn new(repo: &Repo, method: Method) -> AptRoot {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for sub in [
            "root/etc/apt/apt.conf.d",
            "root/etc/apt/preferences.d",
            "root/etc/apt/sources.list.d",
            "root/var/lib/apt/lists/partial",
            "root/var/cache/apt/archives/partial",
            "root/var/lib/dpkg",
            "root/var/log/apt",
            "methods",
            "out",
        ] {
            fs::create_dir_all(t.join(sub)).unwrap();
        }
        // An empty dpkg status: the test packages have no dependencies, so all are
        // installable against it.
        fs::write(t.join("root/var/lib/dpkg/status"), "").unwrap();
        fs::write(t.join("root/etc/apt/sources.list"), repo.sources_line()).unwrap();
        link_methods(&t.join("methods"), method);
        // APT::Sandbox::User root: the stock method would drop to _apt, which cannot enter
        // this private temporary directory; fetchmux never drops privileges, so both run
        // as the test does.
        let conf = format!(
            "Dir \"{t}/root/\";\n\
             Dir::State::status \"{t}/root/var/lib/dpkg/status\";\n\
             Dir::Etc::Parts \"{t}/root/etc/apt/apt.conf.d/\";\n\
             Dir::Cache \"{t}/root/var/cache/apt/\";\n\
             Dir::Log \"{t}/root/var/log/apt/\";\n\
             Dir::Bin::Methods \"{t}/methods/\";\n\
             Acquire::Languages \"none\";\n\
             APT::Sandbox::User \"root\";\n\
             Debug::NoLocking \"true\";\n",
            t = t.display()
        );
        fs::write(t.join("apt.conf"), conf).unwrap();
        AptRoot { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `apt-get ARGS` in this root, from its `out` directory (where `download` puts files).
    fn apt_get(&self, args: &[&str]) -> Run {
        let out: Output = Command::new("apt-get")
            .args(args)
            .current_dir(self.path("out"))
            .env("APT_CONFIG", self.path("apt.conf"))
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            // Only ever 127.0.0.1, whatever the environment says.
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .stdin(Stdio::null())
            .output()
            .expect("running apt-get");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Shown for a failing test, or with `--nocapture`.
        println!("$ apt-get {}\n{text}", args.join(" "));
        Run {
            code: out.status.code(),
            text,
        }
    }

    fn apt_get_ok(&self, args: &[&str]) -> String {
        let run = self.apt_get(args);
        assert_eq!(run.code, Some(0), "apt-get {args:?}:\n{}", run.text);
        run.text
    }

    /// The list files apt keeps (`lists/` without its lock and directories): name → bytes
    /// and mtime.
    fn lists(&self) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
        let mut lists = BTreeMap::new();
        for entry in fs::read_dir(self.path("root/var/lib/apt/lists")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_file() && name != "lock" {
                let mtime = entry.metadata().unwrap().modified().unwrap();
                lists.insert(name, (fs::read(entry.path()).unwrap(), mtime));
            }
        }
        lists
    }
}

/// Every stock method, as a symlink; for fetchmux, `http` and `https` point at it instead.
fn link_methods(dir: &Path, method: Method) {
    for entry in fs::read_dir(STOCK_METHODS).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let ours = method == Method::Fetchmux && (name == "http" || name == "https");
        let target = if ours {
            PathBuf::from(env!("CARGO_BIN_EXE_fetchmux"))
        } else {
            entry.path()
        };
        std::os::unix::fs::symlink(target, dir.join(&name)).unwrap();
    }
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (fs::read(a), fs::read(b));
    assert!(
        x.is_ok() && y.is_ok(),
        "{} or {} is missing",
        a.display(),
        b.display()
    );
    assert!(
        x.unwrap() == y.unwrap(),
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

/// apt's progress lines starting with `prefix` ("Get:", "Hit:", "Err:").
fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn update_matches_the_stock_method_and_the_next_one_is_an_ims_hit() {
    let repo = Repo::new(8, "1K,100K");
    let ours = AptRoot::new(&repo, Method::Fetchmux);
    let stock = AptRoot::new(&repo, Method::Stock);
    let text = ours.apt_get_ok(&["update"]);
    stock.apt_get_ok(&["update"]);
    assert!(
        !text.contains("fetchmux:"),
        "nothing of ours on apt's terminal:\n{text}"
    );
    let (mine, theirs) = (ours.lists(), stock.lists());
    assert!(
        mine.keys().any(|name| name.ends_with("_Packages")),
        "{:?}",
        mine.keys()
    );
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, (bytes, mtime)) in &mine {
        assert!(
            *bytes == theirs[name].0,
            "{name} differs from the stock method's"
        );
        // apt dates list files by the server's Last-Modified (the next update's
        // If-Modified-Since), which the method must have stamped.
        assert_eq!(*mtime, theirs[name].1, "mtime of {name}");
    }

    let second = ours.apt_get_ok(&["update"]);
    assert!(
        lines(&second, "Hit:")
            .iter()
            .any(|l| l.ends_with(" Release")),
        "{second}"
    );
    assert!(lines(&second, "Get:").is_empty(), "{second}");
    // The log has both roots' first updates (the stock method asks for `/./Release`), then
    // our second: Release answered 304, and no index fetched again.
    let log = repo.nginx.requests();
    let last_release = log.iter().rfind(|r| r.uri.ends_with("/Release")).unwrap();
    assert_eq!(last_release.status, 304, "{log:?}");
    assert!(last_release.if_modified_since.is_some(), "{log:?}");
    let indices = log.iter().filter(|r| r.uri.ends_with("/Packages.xz"));
    assert_eq!(indices.count(), 2, "{log:?}");
}

#[test]
fn every_package_downloads_byte_identical_to_the_stock_methods() {
    let repo = Repo::new(30, "1K,16K,100K,400K,1M,3M");
    let ours = AptRoot::new(&repo, Method::Fetchmux);
    let stock = AptRoot::new(&repo, Method::Stock);
    let mut args = vec!["download"];
    args.extend(repo.names());
    for root in [&ours, &stock] {
        root.apt_get_ok(&["update"]);
    }
    let debs_by_connection = |log: &[(u64, String, u16, String)]| -> HashSet<u64> {
        log.iter()
            .filter(|(_, _, _, uri)| uri.ends_with(".deb"))
            .map(|(connection, ..)| *connection)
            .collect()
    };
    let text = ours.apt_get_ok(&args);
    let seen = repo.nginx.access_log().len();
    let our_connections = debs_by_connection(&repo.nginx.access_log());
    stock.apt_get_ok(&args);
    let stock_connections = debs_by_connection(&repo.nginx.access_log()[seen..]);
    assert_eq!(lines(&text, "Get:").len(), repo.packages.len(), "{text}");
    // apt hands a method 10 items at a time: the stock method pipelines them on one
    // connection, fetchmux runs them at once, on several.
    assert_eq!(stock_connections.len(), 1, "{stock_connections:?}");
    assert!(our_connections.len() > 1, "{our_connections:?}");
    for (_, deb) in &repo.packages {
        let mine = ours.path("out").join(deb);
        same_file(&mine, &stock.path("out").join(deb));
        same_file(&mine, &repo.file(deb));
    }
}

#[test]
fn install_download_only_continues_a_partial_and_keeps_a_whole_one() {
    let repo = Repo::new(6, "1K,16K,100K,400K,1M,3M");
    let ours = AptRoot::new(&repo, Method::Fetchmux);
    ours.apt_get_ok(&["update"]);
    let (prefixed, whole) = (&repo.packages[5].1, &repo.packages[4].1);
    let partial = ours.path("root/var/cache/apt/archives/partial");
    // A download the stock method left half done: it dates such a partial with the
    // server's Last-Modified (its If-Range), so this one is dated likewise.
    let server_copy = fs::read(repo.file(prefixed)).unwrap();
    let half = server_copy.len() / 2;
    fs::write(partial.join(prefixed), &server_copy[..half]).unwrap();
    let server_mtime = fs::metadata(repo.file(prefixed))
        .unwrap()
        .modified()
        .unwrap();
    fs::File::options()
        .write(true)
        .open(partial.join(prefixed))
        .unwrap()
        .set_modified(server_mtime)
        .unwrap();
    fs::copy(repo.file(whole), partial.join(whole)).unwrap();

    let mut args = vec!["install", "-y", "--download-only"];
    args.extend(repo.names());
    ours.apt_get_ok(&args);
    let archives = ours.path("root/var/cache/apt/archives");
    for (_, deb) in &repo.packages {
        same_file(&archives.join(deb), &repo.file(deb));
    }
    let log = repo.nginx.requests();
    let asked = |deb: &str| {
        log.iter()
            .filter(|r| r.uri.ends_with(&format!("/{deb}")))
            .cloned()
            .collect::<Vec<_>>()
    };
    let continued = asked(prefixed);
    assert_eq!(continued.len(), 1, "{log:?}");
    assert_eq!(
        continued[0].range.as_deref(),
        Some(format!("bytes={half}-").as_str()),
        "{log:?}"
    );
    assert_eq!(continued[0].status, 206, "{log:?}");
    assert!(
        asked(whole).is_empty(),
        "a whole partial needs no request: {log:?}"
    );
}

#[test]
fn a_package_changed_on_the_server_is_a_hash_sum_mismatch() {
    let repo = Repo::new(6, "1K,100K");
    let ours = AptRoot::new(&repo, Method::Fetchmux);
    ours.apt_get_ok(&["update"]);
    // Same size, one byte different: only the digests can tell.
    let changed = &repo.packages[3].1;
    let mut bytes = fs::read(repo.file(changed)).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    fs::write(repo.file(changed), bytes).unwrap();
    let mut args = vec!["download"];
    args.extend(repo.names());
    let run = ours.apt_get(&args);
    assert_eq!(run.code, Some(100), "{}", run.text);
    assert!(run.text.contains("Hash Sum mismatch"), "{}", run.text);
    // What was received is listed beside what was expected.
    let received = run
        .text
        .split("Hashes of received file:")
        .nth(1)
        .unwrap_or("");
    assert!(received.contains("- SHA256:"), "{}", run.text);
    assert!(!ours.path("out").join(changed).exists());
    for (_, deb) in repo.packages.iter().filter(|(_, deb)| deb != changed) {
        same_file(&ours.path("out").join(deb), &repo.file(deb));
    }
}

#[test]
fn a_package_gone_from_the_server_fails_as_404_and_the_rest_arrive() {
    let repo = Repo::new(8, "1K,100K,400K");
    let ours = AptRoot::new(&repo, Method::Fetchmux);
    ours.apt_get_ok(&["update"]);
    let gone = &repo.packages[2].1;
    fs::remove_file(repo.file(gone)).unwrap();
    let mut args = vec!["download"];
    args.extend(repo.names());
    let run = ours.apt_get(&args);
    assert_eq!(run.code, Some(100), "{}", run.text);
    let errors = lines(&run.text, "Err:");
    assert_eq!(errors.len(), 1, "{}", run.text);
    assert!(errors[0].contains(&repo.packages[2].0), "{}", run.text);
    assert!(run.text.contains("404"), "{}", run.text);
    assert!(!ours.path("out").join(gone).exists());
    for (_, deb) in repo.packages.iter().filter(|(_, deb)| deb != gone) {
        same_file(&ours.path("out").join(deb), &repo.file(deb));
    }
}

/// The binary under the name apt runs it by.
fn method_binary(dir: &Path) -> PathBuf {
    let http = dir.join("http");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fetchmux"), &http).unwrap();
    http
}

#[test]
fn the_capability_probe_ends_cleanly_at_eof_and_at_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let http = method_binary(dir.path());
    let eof = Command::new(&http)
        .stdin(Stdio::null())
        .output()
        .expect("running the method");
    assert_eq!(eof.status.code(), Some(0));
    let text = String::from_utf8(eof.stdout).unwrap();
    assert!(text.starts_with("100 Capabilities\n"), "{text:?}");
    assert!(text.ends_with("\n\n"), "{text:?}");
    assert!(
        eof.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&eof.stderr)
    );

    // As apt does after reading the capabilities: SIGINT, stdin still open.
    let mut child = Command::new(&http)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"100 Capabilities");
    // SAFETY: a signal to our own child, which has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The uid of `user`, from the password database.
fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Started as root, the method becomes `APT::Sandbox::User` once apt's configuration
/// arrives, as the stock method does: its files belong to that user, and a directory only
/// root may write is refused to it.
#[test]
fn the_method_gives_up_root_for_the_sandbox_user() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (apt's sandbox is dropping root); CI runs as root"
    );
    let sandbox =
        uid_of("_apt").expect("apt's sandbox user _apt exists (the apt package makes it)");
    let repo = Repo::new(1, "1K");
    let (_, deb) = &repo.packages[0];
    let uri = format!("http://127.0.0.1:{}/{deb}", repo.nginx.http_port);
    let dir = tempfile::tempdir().unwrap();
    let mode = |path: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    };
    mode(dir.path(), 0o755);
    let (open, closed) = (dir.path().join("open"), dir.path().join("closed"));
    fs::create_dir(&open).unwrap();
    fs::create_dir(&closed).unwrap();
    mode(&open, 0o777);
    mode(&closed, 0o700);
    let messages = format!(
        "601 Configuration\nConfig-Item: APT::Sandbox::User=_apt\n\n\
         600 URI Acquire\nURI: {uri}\nFilename: {}\n\n\
         600 URI Acquire\nURI: {uri}?again\nFilename: {}\n\n",
        open.join(deb).display(),
        closed.join(deb).display()
    );
    let mut child = Command::new(method_binary(dir.path()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), messages.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("201 URI Done\n"), "{text}");
    let placed = fs::metadata(open.join(deb)).expect("the file in the open directory");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(placed.uid(), sandbox, "written by the sandbox user");
    same_file(&open.join(deb), &repo.file(deb));
    let refusal = text
        .split("\n\n")
        .find(|m| m.starts_with("400 URI Failure") && m.contains("?again"))
        .unwrap_or_else(|| panic!("no failure for the closed directory: {text}"));
    assert!(refusal.contains("Permission denied"), "{refusal}");
    assert!(!closed.join(deb).exists());
}
