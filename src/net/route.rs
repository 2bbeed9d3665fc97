//! The route of one request: which proxy it goes through and which TLS trust and client
//! identity it uses, chosen from the request's own settings, then its mirror set's, then the
//! helper-wide ones (the command line), and set *or cleared* on the handle for every request.
//!
//! Handles are recycled across hosts and mirror sets, so nothing of one request's route may
//! stay on the handle for the next: a client certificate meant for one host must never be
//! presented to another, nor a proxy's credentials sent to a proxy they are not for. Every
//! option this module owns is therefore written on every request, to a value or to NULL
//! (libcurl's "not set"). libcurl keeps the rest safe: a pooled connection is reused only by
//! a request with the same TLS settings and proxy.

use std::ffi::{c_char, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use curl::easy::Easy2;

use crate::api::{Route, Tls, Transport};
use crate::config::Options;
use crate::net::transfer::Transfer;

/// Set every proxy and TLS option of the handle for a request with `transport` (its own
/// settings, if any), from the mirror set `set` (if it has its own).
pub(crate) fn apply(
    easy: &mut Easy2<Transfer>,
    transport: Option<&Transport>,
    set: Option<&Route>,
    options: &Options,
) -> Result<(), curl::Error> {
    apply_proxy(easy, transport, set, options)?;
    // A request's TLS settings count when they differ from the defaults (a front fills the
    // whole struct); a set's when it gave a `tls` object.
    let own = transport
        .map(|t| &t.tls)
        .filter(|tls| **tls != Tls::default())
        .or_else(|| set.and_then(|r| r.tls.as_deref()));
    let view = match own {
        Some(tls) => TlsView::of(tls),
        None => TlsView::helper_wide(options),
    };
    apply_tls(easy, &view)
}

/// The proxy: the request's, the set's, `--proxy`, or none set (libcurl then reads
/// `http_proxy`, `https_proxy`, `all_proxy` and `no_proxy`). `--proxy-user` is for the
/// helper-wide proxy only: a request's or a set's proxy carries its credentials in its URL.
fn apply_proxy(
    easy: &mut Easy2<Transfer>,
    transport: Option<&Transport>,
    set: Option<&Route>,
    options: &Options,
) -> Result<(), curl::Error> {
    let own = transport
        .and_then(|t| t.proxy.as_deref())
        .or_else(|| set.and_then(|r| r.proxy.as_deref()));
    let proxy = own.or(options.proxy.as_deref());
    set_text(easy, curl_sys::CURLOPT_PROXY, proxy.map(str::as_bytes))?;
    let user = match own {
        None => options.proxy_user.as_ref().map(|u| u.expose().as_bytes()),
        Some(_) => None,
    };
    set_text(easy, curl_sys::CURLOPT_PROXYUSERPWD, user)?;
    set_text(
        easy,
        curl_sys::CURLOPT_NOPROXY,
        options.noproxy.as_deref().map(str::as_bytes),
    )
}

/// One request's TLS settings, borrowed from wherever they come from.
struct TlsView<'a> {
    ca_file: Option<&'a Path>,
    ca_path: Option<&'a Path>,
    cert: Option<&'a Path>,
    cert_type: Option<&'a str>,
    key: Option<&'a Path>,
    key_type: Option<&'a str>,
    key_password: Option<&'a str>,
    verify: (bool, bool),
}

impl<'a> TlsView<'a> {
    fn of(tls: &'a Tls) -> TlsView<'a> {
        TlsView {
            ca_file: tls.ca_file.as_deref(),
            ca_path: tls.ca_path.as_deref(),
            cert: tls.cert.as_deref(),
            cert_type: tls.cert_type.as_deref(),
            key: tls.key.as_deref(),
            key_type: tls.key_type.as_deref(),
            key_password: tls.key_password.as_deref(),
            verify: (tls.verify_peer, tls.verify_host),
        }
    }

    fn helper_wide(options: &'a Options) -> TlsView<'a> {
        TlsView {
            ca_file: options.ca_file.as_deref(),
            ca_path: options.ca_path.as_deref(),
            cert: options.cert.as_deref(),
            cert_type: None,
            key: options.key.as_deref(),
            key_type: None,
            key_password: options.key_password_file.as_ref().map(|s| s.expose()),
            verify: (!options.insecure, !options.insecure),
        }
    }
}

fn apply_tls(easy: &mut Easy2<Transfer>, tls: &TlsView<'_>) -> Result<(), curl::Error> {
    let (ca_file, ca_path) = match (tls.ca_file, tls.ca_path) {
        (None, None) => default_trust(),
        given => given,
    };
    set_text(easy, curl_sys::CURLOPT_CAINFO, path(ca_file))?;
    set_text(easy, curl_sys::CURLOPT_CAPATH, path(ca_path))?;
    set_text(easy, curl_sys::CURLOPT_SSLCERT, path(tls.cert))?;
    set_text(
        easy,
        curl_sys::CURLOPT_SSLCERTTYPE,
        tls.cert_type.map(str::as_bytes),
    )?;
    set_text(easy, curl_sys::CURLOPT_SSLKEY, path(tls.key))?;
    set_text(
        easy,
        curl_sys::CURLOPT_SSLKEYTYPE,
        tls.key_type.map(str::as_bytes),
    )?;
    set_text(
        easy,
        curl_sys::CURLOPT_KEYPASSWD,
        tls.key_password.map(str::as_bytes),
    )?;
    easy.ssl_verify_peer(tls.verify.0)?;
    easy.ssl_verify_host(tls.verify.1)
}

/// Which certificate authorities https trusts when nothing names any: the system's bundle
/// file alone. The curl crate gives every new handle the bundle file *and* the certificate
/// directory it finds (`openssl-probe`); with a directory set, libcurl neither caches the
/// trust store nor shares it between connections, so every TLS connection parsed the whole
/// bundle again (scenario L2 of `make bench` with the system's 144 certificates: 2.2 s of
/// CPU instead of 0.4). The directory stays where the system has no bundle file, or where
/// `SSL_CERT_DIR` names it (an explicit choice, honoured at the old price).
fn default_trust() -> (Option<&'static Path>, Option<&'static Path>) {
    static TRUST: std::sync::OnceLock<(Option<std::path::PathBuf>, Option<std::path::PathBuf>)> =
        std::sync::OnceLock::new();
    let (file, dir) = TRUST.get_or_init(|| {
        let probed = openssl_probe::probe();
        let keep_dir = probed.cert_file.is_none() || std::env::var_os("SSL_CERT_DIR").is_some();
        let dir = if keep_dir { probed.cert_dir } else { None };
        (probed.cert_file, dir)
    });
    (file.as_deref(), dir.as_deref())
}

fn path(p: Option<&Path>) -> Option<&[u8]> {
    p.map(|p| p.as_os_str().as_bytes())
}

/// Set a string option, or clear it (NULL) when `value` is `None`.
fn set_text(
    easy: &mut Easy2<Transfer>,
    option: curl_sys::CURLoption,
    value: Option<&[u8]>,
) -> Result<(), curl::Error> {
    let owned = match value {
        Some(bytes) => Some(CString::new(bytes).map_err(|_| {
            // A NUL inside a path or password: libcurl would cut it short.
            curl::Error::new(curl_sys::CURLE_BAD_FUNCTION_ARGUMENT)
        })?),
        None => None,
    };
    let pointer = owned
        .as_ref()
        .map_or(std::ptr::null::<c_char>(), |c| c.as_ptr());
    // SAFETY: a valid easy handle; libcurl copies the string (or clears the option on NULL).
    let code = unsafe { curl_sys::curl_easy_setopt(easy.raw(), option, pointer) };
    if code != curl_sys::CURLE_OK {
        return Err(curl::Error::new(code));
    }
    Ok(())
}
