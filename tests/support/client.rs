//! Drives the real `fetchmux` binary the way a package manager would: requests in on stdin,
//! events out on stdout. Every event line is checked against docs/protocol.schema.json.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How long any test waits for the helper before calling it hung.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The compiled schema, shared by every run in the test binary.
fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.schema.json");
        let text = std::fs::read_to_string(&path).expect("docs/protocol.schema.json exists");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
    })
}

/// Panic unless `event` validates against the protocol schema.
pub fn assert_schema(event: &Value) {
    let errors: Vec<String> = schema()
        .iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "event {event} breaks the schema: {errors:?}"
    );
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A `download` request.
pub fn download(id: &str, url: &str, dest: &Path) -> Value {
    json!({"op": "download", "id": id, "url": url, "dest": dest})
}

/// Names of the entries of `dir` (sorted), to catch stray temporary files.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A running helper.
pub struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    seen: Vec<Value>,
}

/// The whole conversation of a finished helper.
pub struct Run {
    pub events: Vec<Value>,
    pub status: i32,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fetchmux"))
}

impl Helper {
    /// Start `fetchmux ARGS` with stdin a pipe.
    pub fn spawn(args: &[&str]) -> Helper {
        Helper::spawn_with(args, Stdio::piped())
    }

    /// Start `fetchmux ARGS` with the given stdin.
    pub fn spawn_with(args: &[&str], stdin: Stdio) -> Helper {
        Helper::spawn_env(args, stdin, &[])
    }

    /// Start `fetchmux ARGS` with the given stdin and these environment variables added.
    pub fn spawn_env(args: &[&str], stdin: Stdio, env: &[(&str, &Path)]) -> Helper {
        let mut command = Command::new(binary());
        command.args(args).envs(env.iter().copied()).stdin(stdin);
        Helper::spawn_command(command)
    }

    /// Start `fetchmux ARGS` as process 1 of a fresh PID namespace, under
    /// `unshare --pid --fork --kill-child` (root only): killing [`Helper::pid`], the `unshare`,
    /// SIGKILLs the helper. `None` where namespaces cannot be made here.
    pub fn spawn_in_pid_namespace(args: &[&str]) -> Option<Helper> {
        let works = Command::new("unshare")
            .args(["--pid", "--fork", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !works {
            return None;
        }
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--fork", "--kill-child"])
            .arg(binary())
            .args(args)
            .stdin(Stdio::piped());
        Some(Helper::spawn_command(command))
    }

    /// Start `fetchmux ARGS` with stdin a pipe, under file-descriptor limits `soft` and
    /// `hard` (RLIMIT_NOFILE, set in the child before exec), its stderr written to `stderr`,
    /// with these environment variables added.
    pub fn spawn_with_fd_limit(
        args: &[&str],
        soft: u64,
        hard: u64,
        stderr: &Path,
        env: &[(&str, &str)],
    ) -> Helper {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(binary());
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let stderr = std::fs::File::create(stderr).expect("creating the stderr file");
        command.stderr(stderr);
        Helper::spawn_command(command)
    }

    fn spawn_command(mut command: Command) -> Helper {
        // stderr: inherited unless the caller set it.
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning fetchmux");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Helper {
            child,
            stdin,
            events: rx,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Write one request line.
    pub fn send(&mut self, request: &Value) {
        self.send_raw(&format!("{request}\n"));
    }

    /// Write raw text (may hold several lines, or a bad one).
    pub fn send_raw(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(text.as_bytes())
            .expect("writing to fetchmux");
        stdin.flush().unwrap();
    }

    /// Close stdin: "no more requests".
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => {
                assert_schema(&event);
                self.seen.push(event.clone());
                Some(event)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Wait for the first event satisfying `pred` (every event read is kept for `finish`).
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left) {
                Some(event) if pred(&event) => return event,
                Some(_) => {}
                None => panic!("no {what} event; seen: {:?}", self.seen),
            }
        }
    }

    /// Close stdin, read every remaining event, and wait for the exit status.
    pub fn finish(mut self) -> Run {
        self.close_stdin();
        self.collect()
    }

    /// Read every remaining event and wait for exit (stdin left as it is).
    pub fn collect(mut self) -> Run {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = self.child.kill();
                panic!("fetchmux did not finish in time; seen: {:?}", self.seen);
            }
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    assert_schema(&event);
                    self.seen.push(event);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = self.child.wait().expect("waiting for fetchmux");
        let status = status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        });
        Run {
            events: std::mem::take(&mut self.seen),
            status,
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the helper over `requests` (written at once, stdin closed after them) and return
/// everything it wrote: the events (each checked against the schema) and stderr.
pub fn run_capturing(args: &[&str], requests: &[Value]) -> (Run, String) {
    let text: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fetchmux");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let events: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    events.iter().for_each(assert_schema);
    let status = output.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (Run { events, status }, stderr)
}

/// Run the helper over `requests` (stdin closed after them) and collect everything.
pub fn run(args: &[&str], requests: &[Value]) -> Run {
    run_env(args, &[], requests)
}

/// [`run`] with these environment variables added.
pub fn run_env(args: &[&str], env: &[(&str, &Path)], requests: &[Value]) -> Run {
    let mut helper = Helper::spawn_env(args, Stdio::piped(), env);
    let mut text = String::new();
    for request in requests {
        text.push_str(&request.to_string());
        text.push('\n');
    }
    helper.send_raw(&text);
    helper.finish()
}

/// The proxy variables libcurl reads, in both cases: removed for runs that must not depend
/// on the machine's environment.
pub const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// [`run`] without any proxy variable in the environment except those of `env`, with the
/// helper's stderr captured (and echoed, for the test's log).
pub fn run_logged(args: &[&str], env: &[(&str, &str)], requests: &[Value]) -> (Run, String) {
    let mut command = Command::new(binary());
    command
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    for name in PROXY_VARS {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let mut helper = Helper::spawn_command(command);
    let mut stderr = helper.child.stderr.take().expect("stderr is a pipe");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut text = String::new();
    for request in requests {
        text.push_str(&request.to_string());
        text.push('\n');
    }
    helper.send_raw(&text);
    let run = helper.finish();
    let stderr = reader.join().expect("reading stderr");
    eprint!("{stderr}");
    (run, stderr)
}

impl Run {
    /// Events of one type.
    pub fn of(&self, event: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == event).collect()
    }

    /// The terminal event (`done` or `failed`) of download `id`; panics unless exactly one.
    pub fn outcome(&self, id: &str) -> &Value {
        let found: Vec<&Value> = self
            .events
            .iter()
            .filter(|e| e["id"] == id && (e["event"] == "done" || e["event"] == "failed"))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "want one outcome for {id}: {:?}",
            self.events
        );
        found[0]
    }

    /// The `done` event of `id`; panics if it failed.
    pub fn done(&self, id: &str) -> &Value {
        let event = self.outcome(id);
        assert_eq!(event["event"], "done", "{id} did not succeed: {event}");
        event
    }

    /// The error kind `id` failed with; panics if it succeeded.
    pub fn failed_kind(&self, id: &str) -> String {
        let event = self.outcome(id);
        assert_eq!(event["event"], "failed", "{id} did not fail: {event}");
        event["error"]["kind"].as_str().unwrap().to_string()
    }

    /// The protocol's framing: `hello` first, `bye` last, once each.
    pub fn assert_framing(&self) {
        assert_eq!(
            self.events.first().map(|e| &e["event"]),
            Some(&json!("hello"))
        );
        assert_eq!(self.events.last().map(|e| &e["event"]), Some(&json!("bye")));
        assert_eq!(self.of("hello").len(), 1);
        assert_eq!(self.of("bye").len(), 1);
    }

    pub fn bye(&self) -> &Value {
        self.of("bye")[0]
    }
}
