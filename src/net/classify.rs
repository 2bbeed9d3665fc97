//! libcurl's errors, classified into the error kinds clients branch on (docs/design.md has
//! the table): resolve → `dns`, connect → `connect`, TLS → `tls`, a proxy's failure →
//! `proxy`, and so on.

use crate::error::FetchError;

/// What libcurl knows of the proxy an attempt went through.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProxyFacts {
    /// The attempt was to go through a proxy (HTTP or SOCKS).
    pub used: bool,
    /// The proxy's answer to CONNECT (0: none).
    pub connect_code: u32,
}

impl ProxyFacts {
    /// The facts of a finished attempt on `easy`.
    pub fn of(easy: *mut curl_sys::CURL) -> ProxyFacts {
        // Not in curl-sys: CURLINFO_USED_PROXY (libcurl 8.7).
        const CURLINFO_USED_PROXY: curl_sys::CURLINFO = curl_sys::CURLINFO_LONG + 66;
        let long = |info| {
            let mut value: std::ffi::c_long = 0;
            // SAFETY: a valid handle and a long-typed info.
            let code = unsafe { curl_sys::curl_easy_getinfo(easy, info, &mut value) };
            if code == curl_sys::CURLE_OK {
                value.max(0) as u32
            } else {
                0
            }
        };
        ProxyFacts {
            used: long(CURLINFO_USED_PROXY) != 0,
            connect_code: long(curl_sys::CURLINFO_HTTP_CONNECTCODE),
        }
    }
}

/// The user's part in a proxy's refusal of its credentials.
const PROXY_AUTH_HINT: &str =
    "give the proxy's credentials with --proxy-user USER:PASSWORD, or as USER:PASSWORD@ \
     before the host in the proxy URL";

/// The proxy refused the request's credentials, or wanted some (`status`: its answer).
pub(crate) fn proxy_denied(status: u32) -> FetchError {
    FetchError::ProxyDenied(format!(
        "the proxy answered {status} (authentication required or refused): {PROXY_AUTH_HINT}"
    ))
}

/// Classify a libcurl error. `status` is the last HTTP status seen (0 if none).
pub(crate) fn classify(err: &curl::Error, status: u32, proxy: ProxyFacts) -> FetchError {
    // Not in curl-sys: CURLE_PROXY (libcurl 7.73), a SOCKS or CONNECT handshake failure.
    const CURLE_PROXY: curl_sys::CURLcode = 97;
    let text = match err.extra_description() {
        Some(extra) => format!("{} ({})", err.description(), extra),
        None => err.description().to_string(),
    };
    if proxy.used && matches!(proxy.connect_code, 401 | 407) {
        // The tunnel's answer is the proxy's own. (tinyproxy answers a wrong password with
        // 401, not 407.)
        proxy_denied(proxy.connect_code)
    } else if proxy.used && err.is_http_returned_error() && status == 407 {
        proxy_denied(407)
    } else if proxy.used && (500..600).contains(&proxy.connect_code) {
        // The proxy is there; the server behind it is not.
        FetchError::Connect(format!(
            "the proxy could not reach the server (it answered CONNECT with {}): {text}",
            proxy.connect_code
        ))
    } else if err.is_couldnt_resolve_proxy()
        || err.code() == CURLE_PROXY
        || (proxy.used && proxy.connect_code >= 300)
        || (proxy.used && err.is_couldnt_connect())
    {
        // For a plain request or a tunnel through an HTTP proxy, and for SOCKS, a refused
        // connection is the proxy's: the server's own is reported by the proxy (above, or
        // CURLE_PROXY).
        FetchError::Proxy(format!(
            "{text}; check --proxy, the mirror set's `proxy`, or http_proxy/https_proxy/all_proxy"
        ))
    } else if err.is_http_returned_error() && status >= 400 {
        FetchError::HttpStatus { status }
    } else if err.is_couldnt_resolve_host() {
        FetchError::Dns(text)
    } else if err.is_couldnt_connect() {
        FetchError::Connect(text)
    } else if err.code() == curl_sys::CURLE_BAD_FUNCTION_ARGUMENT
        && (text.contains("private key") || text.contains("certificate"))
    {
        // OpenSSL would not load the client certificate or key: a wrong passphrase, a key
        // that is not the certificate's, an unreadable file.
        FetchError::Tls(format!(
            "{text}; check --cert, --key and --key-password-file (or the mirror set's `tls`)"
        ))
    } else if (err.code() == curl_sys::CURLE_RECV_ERROR || err.code() == curl_sys::CURLE_SEND_ERROR)
        && text.contains(" alert ")
        && (text.contains("certificate") || text.contains("unknown ca"))
    {
        // In TLS 1.3 a server checks the client's certificate after the handshake, so its
        // refusal (`alert certificate required`, `bad certificate`, `unknown ca`) arrives
        // as a failed read; it is the TLS setup's problem, not the network's.
        FetchError::Tls(format!(
            "{text}; the server requires a client certificate or refused this one: check \
             --cert and --key (or the mirror set's `tls`)"
        ))
    } else if err.is_ssl_connect_error()
        || err.is_peer_failed_verification()
        || err.is_ssl_certproblem()
        || err.is_ssl_cipher()
        || err.is_ssl_cacert_badfile()
        || err.is_ssl_crl_badfile()
        || err.is_ssl_shutdown_failed()
        || err.is_ssl_engine_notfound()
        || err.is_ssl_engine_setfailed()
        || err.is_ssl_engine_initfailed()
        || err.is_ssl_issuer_error()
    {
        FetchError::Tls(text)
    } else if err.is_operation_timedout() {
        // libcurl reports the low-speed guard and the timeouts with one code.
        if text.contains("too slow") {
            FetchError::TooSlow(text)
        } else {
            FetchError::Timeout(text)
        }
    } else if err.is_too_many_redirects() {
        FetchError::TooManyRedirects(text)
    } else if err.is_unsupported_protocol() {
        // Mostly a redirect's target: say which ones are followed.
        FetchError::UnsupportedScheme(format!(
            "{text} (redirects are followed to http and https only, and never from https to http)"
        ))
    } else if err.code() == curl_sys::CURLE_RECV_ERROR
        && text.contains("Too large response headers")
    {
        // The server's answer, not the network: asking it again gets the same headers.
        FetchError::HeadersTooLarge(text)
    } else if err.is_partial_file() {
        FetchError::Truncated(text)
    } else if err.is_range_error() {
        FetchError::RangeNotSatisfied(text)
    } else if err.is_file_couldnt_read_file() || err.code() == curl_sys::CURLE_REMOTE_FILE_NOT_FOUND
    {
        // file:// and ftp:// have no HTTP status to report.
        FetchError::NotFound(text)
    } else if err.is_read_error() {
        // We never upload, so this is a file:// source that could be opened but not read
        // as a file: a directory (libcurl lists none here), or a read error. Final for that
        // source, like a missing file; not a network failure to retry.
        FetchError::NotFound(format!("not a readable file: {text}"))
    } else {
        FetchError::Network(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// libcurl's words for a failed transfer of `url`, as a message would carry them.
    fn message(url: &str, max_redirects: u32) -> String {
        let mut easy = curl::easy::Easy::new();
        easy.url(url).unwrap();
        easy.follow_location(true).unwrap();
        easy.max_redirections(max_redirects).unwrap();
        let err = easy.perform().expect_err("the transfer fails");
        classify(&err, 0, ProxyFacts::default()).to_string()
    }

    /// A server answering every connection with a redirect to `to`.
    fn redirecting(to: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                );
            }
        });
        format!("http://u:pw-of-u@127.0.0.1:{port}/")
    }

    #[test]
    fn curls_words_carry_no_password() {
        // The fronts mask URLs in messages anyway; libcurl's own text has none to mask.
        let cases = [
            message("http://u:pw-of-u@127.0.0.1:1/x", 5),
            message("http://u:pw-of-u@[::1/x", 5),
            message(&redirecting("dict://v:pw-of-v@127.0.0.1:1/"), 5),
            message(&redirecting("http://v:pw-of-v@127.0.0.1:1/"), 5),
            message(&redirecting("/again"), 0),
        ];
        for text in cases {
            assert!(!text.contains("pw-of"), "{text}");
        }
    }
}
