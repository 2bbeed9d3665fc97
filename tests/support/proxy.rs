//! Real proxies from Debian on ephemeral loopback ports, each with a log the tests read:
//! tinyproxy (an HTTP forward proxy: plain requests and CONNECT tunnels, optionally with
//! basic authentication) and microsocks (SOCKS5).

use super::{free_port, is_root};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A proxy process, killed when dropped.
pub struct Proxy {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    log: PathBuf,
}

fn binary(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run scripts/deps.sh (`make test` runs it first)")
        })
}

impl Proxy {
    /// tinyproxy, asking for `user:password` (basic authentication) when given.
    pub fn tinyproxy(auth: Option<(&str, &str)>) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\n\
             MaxClients 64\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
            log.display()
        );
        if let Some((user, password)) = auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        if is_root() {
            // tinyproxy refuses to run as root without a user to switch to.
            conf.push_str("User root\nGroup root\n");
        }
        std::fs::write(dir.path().join("tinyproxy.conf"), conf).unwrap();
        let child = Command::new(binary("tinyproxy"))
            .arg("-d")
            .arg("-c")
            .arg(dir.path().join("tinyproxy.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting tinyproxy");
        Proxy::ready(child, dir, port, log, "tinyproxy")
    }

    /// microsocks (SOCKS5, no authentication); it logs each connection on stdout.
    pub fn microsocks() -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("microsocks.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary("microsocks"))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting microsocks");
        Proxy::ready(child, dir, port, log, "microsocks")
    }

    fn ready(child: Child, dir: tempfile::TempDir, port: u16, log: PathBuf, name: &str) -> Proxy {
        let mut proxy = Proxy {
            child,
            dir,
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!(
                    "{name} exited ({status}) before listening: {}",
                    proxy.log_text()
                );
            }
            assert!(Instant::now() < deadline, "{name} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// `http://127.0.0.1:PORT` (with `user:password@` when given).
    pub fn url(&self, scheme: &str, auth: Option<&str>) -> String {
        match auth {
            Some(auth) => format!("{scheme}://{auth}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
