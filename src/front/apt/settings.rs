//! apt's configuration as the `601 Configuration` message hands it over, and what it
//! means for one request: transfer settings ([`crate::api::Transport`]) and extra headers.
//!
//! Only a few `Acquire::http::*` items are honoured (docs/fronts.md lists them); the rest
//! of the tree is kept but unused. Lookups follow the stock methods: host-specific first
//! (`Acquire::<scheme>::<name>::<host>` as for `Proxy`, or `Acquire::<scheme>::<host>::<name>`
//! as for the TLS items), then `Acquire::<scheme>::<name>`; for https the same under `http`
//! next, so `Acquire::https::…` overrides `Acquire::http::…`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::{LowSpeed, Tls, Transport};
use crate::front::apt::message::{is_true, Message};

/// apt's configuration items, by lowercased name (apt's names are case-insensitive).
#[derive(Default)]
pub(crate) struct Settings {
    items: HashMap<String, String>,
}

/// What the configuration says for one request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ForRequest {
    pub transport: Option<Transport>,
    pub headers: Vec<(String, String)>,
}

impl Settings {
    /// Take in a `601 Configuration`: `Config-Item: Name=Value`, both quoted (`%xx`).
    pub fn configure(&mut self, message: &Message) {
        for item in message.fields("Config-Item") {
            if let Some((name, value)) = item.split_once('=') {
                self.items
                    .insert(dequote(name).to_ascii_lowercase(), dequote(value));
            }
        }
    }

    /// `APT::Sandbox::User`: whom the method is to run as (see `sandbox.rs`).
    pub fn sandbox_user(&self) -> Option<&str> {
        self.items.get("apt::sandbox::user").map(String::as_str)
    }

    /// The settings for a request to `uri`; `proxy` is the `600`'s own `Proxy` field, which
    /// apt sends when `Acquire::<scheme>::Proxy::<host>` is set.
    pub fn for_request(&self, uri: &str, proxy: Option<&str>) -> ForRequest {
        let find = |name: &str| self.find(uri, name);
        let mut transport = Transport::default();
        if let Some(seconds) = find("Timeout").and_then(|v| v.trim().parse::<u64>().ok()) {
            // The stock method's Timeout bounds both the connect and any silence in the
            // transfer; a guard of 1 byte/s over that time is the closest curl has.
            let time = Duration::from_secs(seconds.max(1));
            transport.connect_timeout = Some(time);
            // ... and the wait for the response (the engine's, as curl has none for HTTP).
            transport.response_timeout = Some(time);
            transport.low_speed = Some(LowSpeed {
                bytes_per_second: 1,
                time,
            });
        }
        if let Some(proxy) = proxy.or_else(|| find("Proxy")).map(str::trim) {
            transport.proxy = proxy_setting(proxy);
        }
        if let Some(kib) = find("Dl-Limit").and_then(|v| v.trim().parse::<u64>().ok()) {
            transport.max_speed = (kib > 0).then_some(kib * 1024);
        }
        transport.tls = self.tls(uri);
        let mut headers = Vec::new();
        if let Some(agent) = find("User-Agent").filter(|a| !a.trim().is_empty()) {
            headers.push(("User-Agent".to_string(), agent.trim().to_string()));
        }
        if find("No-Cache").is_some_and(is_true) {
            headers.push(("Cache-Control".to_string(), "no-cache".to_string()));
            headers.push(("Pragma".to_string(), "no-cache".to_string()));
        }
        ForRequest {
            transport: (transport != Transport::default()).then_some(transport),
            headers,
        }
    }

    /// The stock https method's TLS items (`Acquire::https::CaInfo`, `Verify-Peer`,
    /// `Verify-Host`, `SslCert`, `SslKey`); unset ones keep the engine's defaults (verify
    /// everything against the system's authorities).
    fn tls(&self, uri: &str) -> Tls {
        let find = |name: &str| {
            self.find(uri, name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let defaults = Tls::default();
        Tls {
            ca_file: find("CaInfo").map(PathBuf::from),
            cert: find("SslCert").map(PathBuf::from),
            key: find("SslKey").map(PathBuf::from),
            verify_peer: find("Verify-Peer").map_or(defaults.verify_peer, is_true),
            verify_host: find("Verify-Host").map_or(defaults.verify_host, is_true),
            ..defaults
        }
    }

    /// `name` for `uri`: host-specific first, then the scheme's, then http's.
    fn find(&self, uri: &str, name: &str) -> Option<&str> {
        let (scheme, host) = scheme_and_host(uri);
        let mut keys = Vec::with_capacity(6);
        for scheme in [scheme.as_str(), "http"] {
            if !host.is_empty() {
                // apt spells both: `Proxy::<host>`, and `<host>::Verify-Peer` for TLS.
                keys.push(format!("acquire::{scheme}::{name}::{host}"));
                keys.push(format!("acquire::{scheme}::{host}::{name}"));
            }
            keys.push(format!("acquire::{scheme}::{name}"));
        }
        keys.iter()
            .find_map(|key| self.items.get(&key.to_ascii_lowercase()))
            .map(String::as_str)
    }
}

/// apt's proxy value as curl's: `DIRECT` means none at all (not even from the
/// environment), which the API spells `""`; an empty value leaves curl's default.
fn proxy_setting(value: &str) -> Option<String> {
    if value.eq_ignore_ascii_case("DIRECT") {
        Some(String::new())
    } else if value.is_empty() {
        None
    } else {
        Some(value.to_string())
    }
}

/// The lowercased scheme and host (no user info, no port) of `uri`.
fn scheme_and_host(uri: &str) -> (String, String) {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return (String::new(), String::new());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    (scheme.to_ascii_lowercase(), host.to_ascii_lowercase())
}

/// apt's `DeQuoteString`: `%xx` is the byte `xx`.
pub(crate) fn dequote(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
