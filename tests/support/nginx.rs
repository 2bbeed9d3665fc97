//! A real nginx (Debian's) for interop tests: plain HTTP/1.1 and TLS with HTTP/2, on
//! ephemeral loopback ports, with a self-signed certificate made for the test and an access
//! log that records, per request, the connection it came on and the protocol spoken; a
//! second log records the conditional and range headers of each request, a third the
//! credentials and `X-Api-Key` each request carried. `/private/` asks for HTTP Basic
//! authentication ([`USER`], [`PASSWORD`], in an htpasswd file made at start with
//! `openssl passwd -apr1`).
//! `agents.log` has each request's protocol and User-Agent.

use super::{free_port, is_root};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user `/private/` accepts, and its password.
pub const USER: &str = "pm-user";
pub const PASSWORD: &str = "pm-Secret-7";

pub struct Nginx {
    child: Child,
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("nginx is not installed: run `make deps` (or `make test`, which runs it first)");
}

impl Nginx {
    /// Start nginx serving the files of `root`.
    pub fn start(root: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "making a test certificate");
        let hashed = Command::new("openssl")
            .args(["passwd", "-apr1", PASSWORD])
            .stderr(Stdio::inherit())
            .output()
            .expect("openssl runs");
        assert!(hashed.status.success(), "hashing the test password");
        let hashed = String::from_utf8(hashed.stdout).unwrap();
        std::fs::write(d.join("htpasswd"), format!("{USER}:{}\n", hashed.trim())).unwrap();
        let (http_port, https_port) = (free_port(), free_port());
        let head = conf_head(&d.display().to_string(), "warn", 1024);
        let temp_paths = conf_temp_paths(&d.display().to_string());
        let conf = format!(
            r#"{head}
http {{
    log_format fm '$connection $server_protocol $status $request_uri';
    access_log {d}/access.log fm;
    log_format headers '$status|$request_uri|$http_range|$http_if_range|$http_if_modified_since';
    access_log {d}/headers.log headers;
    log_format auth '$status|$request_uri|$remote_user|$http_authorization|$http_x_api_key';
    access_log {d}/auth.log auth;
    log_format agents '$server_protocol|$http_user_agent';
    access_log {d}/agents.log agents;
    {temp_paths}
    sendfile on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl http2;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        root {root};
        # /to-http/NAME: a redirect to NAME over plain http (from either port).
        location /to-http/ {{
            rewrite ^/to-http/(.*)$ http://127.0.0.1:{http_port}/$1 redirect;
        }}
        location /to-https/ {{
            rewrite ^/to-https/(.*)$ https://127.0.0.1:{https_port}/$1 redirect;
        }}
        # /private/NAME: NAME, for USER with PASSWORD only (HTTP Basic).
        location /private/ {{
            auth_basic "fetchmux test";
            auth_basic_user_file {d}/htpasswd;
            alias {root}/;
        }}
        # /to-private/NAME: a redirect to /private/NAME on the same origin.
        location /to-private/ {{
            rewrite ^/to-private/(.*)$ /private/$1 redirect;
        }}
        # /away/HOST:PORT/PATH: a redirect to http://HOST:PORT/PATH (another origin).
        location /away/ {{
            rewrite ^/away/([^/]+)/(.*)$ http://$1/$2 redirect;
        }}
    }}
}}
"#,
            d = d.display(),
            root = root.display(),
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx");
        let nginx = Nginx {
            child,
            dir,
            http_port,
            https_port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", https_port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `(connection, protocol, status, uri)` of every logged request. nginx writes the log
    /// line when a request ends; callers read it after the client has finished.
    pub fn access_log(&self) -> Vec<(u64, String, u16, String)> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut f = line.split(' ');
                Some((
                    f.next()?.parse().ok()?,
                    f.next()?.to_string(),
                    f.next()?.parse().ok()?,
                    f.next()?.to_string(),
                ))
            })
            .collect()
    }
}

/// One request as `headers.log` has it (nginx writes `-` for a header not sent).
#[derive(Debug, Clone)]
pub struct Logged {
    pub status: u16,
    pub uri: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_modified_since: Option<String>,
}

impl Nginx {
    /// Every logged request with its range and conditional headers, in order.
    pub fn requests(&self) -> Vec<Logged> {
        let text = std::fs::read_to_string(self.dir.path().join("headers.log")).unwrap_or_default();
        let header = |v: &str| (v != "-").then(|| v.to_string());
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('|').collect();
                let [status, uri, range, if_range, ims] = f[..] else {
                    return None;
                };
                Some(Logged {
                    status: status.parse().ok()?,
                    uri: uri.to_string(),
                    range: header(range),
                    if_range: header(if_range),
                    if_modified_since: header(ims),
                })
            })
            .collect()
    }
}

/// One request as `auth.log` has it: what credentials and `X-Api-Key` it carried.
#[derive(Debug, Clone)]
pub struct Credentialed {
    pub status: u16,
    pub uri: String,
    /// The Basic user nginx read from `Authorization`, if any.
    pub user: Option<String>,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
}

impl Nginx {
    /// Every logged request with the credentials it carried, in order.
    pub fn credentials_log(&self) -> Vec<Credentialed> {
        let text = std::fs::read_to_string(self.dir.path().join("auth.log")).unwrap_or_default();
        let header = |v: &str| (v != "-" && !v.is_empty()).then(|| v.to_string());
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('|').collect();
                let [status, uri, user, authorization, api_key] = f[..] else {
                    return None;
                };
                Some(Credentialed {
                    status: status.parse().ok()?,
                    uri: uri.to_string(),
                    user: header(user),
                    authorization: header(authorization),
                    api_key: header(api_key),
                })
            })
            .collect()
    }
}

impl Nginx {
    /// `(protocol, User-Agent)` of every logged request, in order (`-`: none sent).
    pub fn agents(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir.path().join("agents.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (protocol, agent) = line.split_once('|')?;
                Some((protocol.to_string(), agent.to_string()))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The start of an nginx configuration for a test: one process (no master, so killing it
/// leaves no orphaned worker), in the foreground, its pid and error log in `d`; run as root
/// (CI) it keeps the current user, which can read the tests' private temporary directories.
pub fn conf_head(d: &str, error_level: &str, worker_connections: u32) -> String {
    let user = if is_root() { "user root;" } else { "" };
    format!(
        "{user}\nworker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log {error_level};\nevents {{ worker_connections {worker_connections}; }}"
    )
}

/// Every temporary path nginx may want, inside `d` (the defaults are not writable here).
pub fn conf_temp_paths(d: &str) -> String {
    [
        ("client_body", "body"),
        ("proxy", "proxy"),
        ("fastcgi", "fastcgi"),
        ("uwsgi", "uwsgi"),
        ("scgi", "scgi"),
    ]
    .map(|(what, dir)| format!("{what}_temp_path {d}/{dir};"))
    .join("\n    ")
}
