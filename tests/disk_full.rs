//! A full disk, for real: a 1 MiB tmpfs mounted by the test (the machine must be root and
//! allow `mount`; the test fails saying so otherwise), almost filled, then downloads into it
//! along each way a body reaches the disk. Every `failed` must be `io`, name the path being
//! written and the OS error, and leave no temporary file behind.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::client::{self, bytes, download, entries};
use support::server::TestServer;

/// A tmpfs mounted on a fresh directory, unmounted when dropped (also on panic).
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("full");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("running mount(8)");
        assert!(
            out.status.success(),
            "this test needs a real full disk: `mount -t tmpfs -o size={size} tmpfs {}` failed \
             ({}; {}). Run it as root on a machine that allows mounting tmpfs.",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            dir,
            _parent: parent,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Fill the file system of `dir` up, then give back `room` bytes.
fn fill_leaving(dir: &Path, room: u64) {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    let mut len = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => len += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    file.set_len(len.saturating_sub(room)).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn disk_full_io_messages_name_the_path_and_the_os_error_and_leave_nothing() {
    let fs = Tmpfs::mount("1m");
    let cache = fs.dir.join("cache");
    std::fs::create_dir(&cache).unwrap();
    fill_leaving(&fs.dir, 64 * 1024);

    let server = TestServer::start();
    // Under 128 KiB: received into memory, written by the placer thread.
    server.add_file("small.rpm", bytes(1, 100 * 1024));
    // 128 KiB .. 1 MiB: an anonymous temporary file written by a hashing worker.
    server.add_file("large.rpm", bytes(2, 512 * 1024));
    // Over 1 MiB: a named temporary file (written by a hashing worker).
    server.add_file("huge.rpm", bytes(3, 3 * 1024 * 1024));
    let names = ["small.rpm", "large.rpm", "huge.rpm"];
    let requests: Vec<_> = names
        .iter()
        .map(|name| {
            download(
                name,
                &server.url(&format!("/files/{name}")),
                &cache.join(name),
            )
        })
        .collect();
    let run = client::run(&[], &requests);
    run.assert_framing();

    let dir = cache.display().to_string();
    for name in names {
        let event = run.outcome(name);
        assert_eq!(event["event"], "failed", "{name} must fail: {event}");
        assert_eq!(event["error"]["kind"], "io", "{name}: {event}");
        let message = event["error"]["message"].as_str().unwrap();
        eprintln!("{name}: {message}");
        assert!(
            message.contains(&dir),
            "{name}: the message must name the path in {dir}: {message:?}"
        );
        assert!(
            message.contains("No space left on device (os error 28)"),
            "{name}: the message must give the OS error: {message:?}"
        );
    }
    assert_eq!(
        entries(&cache),
        Vec::<String>::new(),
        "no temporary (or any) file is left in the full directory"
    );
    assert_eq!(entries(&fs.dir), vec!["cache", "filler"]);
}
