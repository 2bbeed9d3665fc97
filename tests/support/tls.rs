//! Certificates made at test time with the openssl CLI, and a real nginx (Debian's) serving
//! them: two private CAs, each with a server and a client certificate, an expired server
//! certificate and one for another host name. nginx logs, per request, the port it came to
//! and the client certificate's subject, so a test can see which certificate rode where.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The passphrase of `client-a-encrypted.key` (also in the file `key-password`).
pub const KEY_PASSWORD: &str = "correct horse battery";

/// A directory of test certificates: `ca-a.pem`, `server-a.pem`/`.key` (127.0.0.1 and
/// localhost), `client-a.pem`/`.key` (CN=client-a), `client-a-encrypted.key`,
/// `expired.pem`/`.key`, `wrong-host.pem`/`.key` (wrong.example only), all signed by CA a;
/// and `ca-b.pem`, `server-b.pem`/`.key`, `client-b.pem`/`.key` (CN=client-b) by CA b.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

/// Run openssl; a failure stops the test with openssl's words.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl CLI runs (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn make() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["a", "b"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "3",
                    "-subj",
                    &format!("/CN=fetchmux test CA {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                    &format!("ca-{ca}.key"),
                    "-out",
                    &format!("ca-{ca}.pem"),
                ],
            );
        }
        let server = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
        let client = "extendedKeyUsage=clientAuth\n";
        let leaves = [
            ("server-a", "a", "127.0.0.1", server, "3"),
            ("server-b", "b", "127.0.0.1", server, "3"),
            ("client-a", "a", "client-a", client, "3"),
            ("client-b", "b", "client-b", client, "3"),
            // Ended yesterday.
            ("expired", "a", "127.0.0.1", server, "-1"),
            (
                "wrong-host",
                "a",
                "wrong.example",
                "subjectAltName=DNS:wrong.example\nextendedKeyUsage=serverAuth\n",
                "3",
            ),
        ];
        for (serial, (name, ca, cn, ext, days)) in leaves.into_iter().enumerate() {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("ca-{ca}.pem"),
                    "-CAkey",
                    &format!("ca-{ca}.key"),
                    "-set_serial",
                    &format!("{}", 1000 + serial),
                    "-days",
                    days,
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        std::fs::write(d.join("key-password"), format!("{KEY_PASSWORD}\n")).unwrap();
        openssl(
            d,
            &[
                "pkey",
                "-in",
                "client-a.key",
                "-aes256",
                "-passout",
                "file:key-password",
                "-out",
                "client-a-encrypted.key",
            ],
        );
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path(name)` as text, for a command line.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// A directory holding `ca-NAME.pem` under its OpenSSL hash name (`openssl rehash`).
    pub fn hashed_dir(&self, ca: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("hashed-{ca}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.path(&format!("ca-{ca}.pem")), dir.join("ca.pem")).unwrap();
        openssl(&dir, &["rehash", "."]);
        let hashed = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".0"));
        assert!(
            hashed,
            "openssl rehash made no hash link in {}",
            dir.display()
        );
        dir
    }
}

/// One request as the TLS nginx logged it.
#[derive(Debug, Clone)]
pub struct TlsLogged {
    pub port: u16,
    /// The client certificate's subject (`CN=client-a`), or `None` if none was sent.
    pub client: Option<String>,
    pub status: u16,
    pub uri: String,
    pub protocol: String,
}

/// nginx with the [`Pki`]'s certificates: `a` (server-a; client certificates of CA a
/// checked, and required under `/private/`), `b` (the same with CA b), `expired`,
/// `wrong_host`, and `http` (plain, for proxies).
pub struct TlsNginx {
    child: Child,
    pub dir: tempfile::TempDir,
    pub a: u16,
    pub b: u16,
    pub expired: u16,
    pub wrong_host: u16,
    pub http: u16,
}

impl TlsNginx {
    pub fn start(root: &Path, pki: &Pki) -> TlsNginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let p = pki.dir.path().display().to_string();
        let (a, b, expired, wrong_host, http) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let head = super::nginx::conf_head(&d, "info", 256);
        let temp_paths = super::nginx::conf_temp_paths(&d);
        let private = r#"location /private/ {
            if ($ssl_client_verify != SUCCESS) { return 403; }
        }"#;
        let conf = format!(
            r#"{head}
http {{
    log_format tls '$server_port|$ssl_client_s_dn|$status|$request_uri|$server_protocol';
    access_log {d}/access.log tls;
    {temp_paths}
    default_type application/octet-stream;
    root {root};
    server {{
        listen 127.0.0.1:{a} ssl http2;
        ssl_certificate {p}/server-a.pem;
        ssl_certificate_key {p}/server-a.key;
        ssl_client_certificate {p}/ca-a.pem;
        ssl_verify_client optional;
        {private}
    }}
    server {{
        listen 127.0.0.1:{b} ssl http2;
        ssl_certificate {p}/server-b.pem;
        ssl_certificate_key {p}/server-b.key;
        ssl_client_certificate {p}/ca-b.pem;
        ssl_verify_client optional;
        {private}
    }}
    server {{
        listen 127.0.0.1:{expired} ssl;
        ssl_certificate {p}/expired.pem;
        ssl_certificate_key {p}/expired.key;
    }}
    server {{
        listen 127.0.0.1:{wrong_host} ssl;
        ssl_certificate {p}/wrong-host.pem;
        ssl_certificate_key {p}/wrong-host.key;
    }}
    server {{
        listen 127.0.0.1:{http};
    }}
}}
"#,
            root = root.display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|c| Path::new(c).exists())
            .expect("nginx is not installed: run `make deps` (or `make test`)");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx");
        let mut nginx = TlsNginx {
            child,
            dir,
            a,
            b,
            expired,
            wrong_host,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [a, b, expired, wrong_host, http] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    let log = std::fs::read_to_string(nginx.dir.path().join("error.log"))
                        .unwrap_or_default();
                    panic!("nginx exited ({status}) before listening on {port}: {log}");
                }
                assert!(Instant::now() < deadline, "nginx did not listen on {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        nginx
    }

    /// Every logged request (nginx writes the line when a request ends: read after the
    /// helper has finished).
    pub fn log(&self) -> Vec<TlsLogged> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('|').collect();
                let [port, dn, status, uri, protocol] = f[..] else {
                    return None;
                };
                Some(TlsLogged {
                    port: port.parse().ok()?,
                    client: (!dn.is_empty() && dn != "-").then(|| dn.to_string()),
                    status: status.parse().ok()?,
                    uri: uri.to_string(),
                    protocol: protocol.to_string(),
                })
            })
            .collect()
    }
}

impl Drop for TlsNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_server -www` with server-a's certificate, *requiring* a client certificate of
/// CA a during the handshake (`-Verify 1`), as nginx does not: it answers a request with an
/// HTML page describing the session.
pub struct SServer {
    child: Child,
    pub port: u16,
}

impl SServer {
    pub fn start(pki: &Pki) -> SServer {
        let port = free_port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-www", "-Verify", "1", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(pki.path("server-a.pem"))
            .arg("-key")
            .arg(pki.path("server-a.key"))
            .arg("-CAfile")
            .arg(pki.path("ca-a.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting openssl s_server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("openssl s_server exited ({status}) before listening on {port}");
            }
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        SServer { child, port }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
