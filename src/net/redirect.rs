//! Redirects the engine follows itself, hop by hop, so that a request's `headers` and
//! credentials go to its own origin only.
//!
//! libcurl, following a redirect itself, keeps sending every custom header to the new host
//! (it drops only `Authorization` and `Cookie`: CVE-2018-1000007, CVE-2022-27776; and its
//! own credentials: CVE-2022-27774, each judged by scheme, host and port since 7.83), and it
//! offers no hook between the hops. So an attempt that carries headers or credentials runs
//! with curl's following off; when it ends on a redirect, the engine checks the target here
//! (the `--max-redirects` count, http and https only, never https to http) and continues the
//! same attempt at it, with the headers and credentials only where the target has the
//! attempt's first origin: the same scheme, host and port, as curl decides for its own
//! `Authorization`.

use std::ffi::{c_char, CStr};

use crate::error::FetchError;
use crate::net::url::{redacted, scheme_of};

/// Where an attempt that follows its redirects itself has got to.
#[derive(Debug, Default)]
pub(crate) struct Hops {
    /// The engine, not curl, follows this attempt's redirects.
    pub manual: bool,
    /// Redirects followed so far.
    pub followed: u32,
    /// The URL of the current hop, once a redirect was followed.
    pub at: Option<String>,
    /// A resume's `If-Range` validator, sent on every hop.
    pub validator: Option<String>,
}

/// The statuses whose `Location` is followed (a 300 or 304 is an answer of its own).
pub(crate) fn is_redirect(status: u32) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Scheme, host (lowercased) and port (the scheme's default when not written) of a URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Origin<'a> {
    scheme: String,
    host: std::borrow::Cow<'a, str>,
    port: Option<u16>,
}

/// The origin of `url`, if it has a host.
pub(crate) fn origin(url: &str) -> Option<Origin<'_>> {
    let scheme = scheme_of(url)?;
    let rest = &url[scheme.len() + 3..];
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    // `[v6]:port`, or `host:port`; a port that does not parse is no origin at all.
    let (host, port) = match host_port.rfind(':') {
        Some(colon) if !host_port[colon..].contains(']') => {
            let port = &host_port[colon + 1..];
            let port = if port.is_empty() {
                None
            } else {
                Some(port.parse::<u16>().ok()?)
            };
            (&host_port[..colon], port)
        }
        _ => (host_port, None),
    };
    if host.is_empty() {
        return None;
    }
    let default = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        "ftp" => Some(21),
        _ => None,
    };
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    };
    Some(Origin {
        scheme,
        host,
        port: port.or(default),
    })
}

/// Do `a` and `b` have one origin (scheme, host and port)?
pub(crate) fn same_origin(a: &str, b: &str) -> bool {
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x == y)
}

/// May an attempt that started at `first` and is now at `from`, having followed `followed`
/// redirects, go on to `target` under `--max-redirects max`? `Ok(true)` when `target` has
/// `first`'s origin (headers and credentials go along), `Ok(false)` when it has another.
pub(crate) fn check(
    first: &str,
    from: &str,
    target: &str,
    followed: u32,
    max: u32,
) -> Result<bool, FetchError> {
    if followed >= max {
        return Err(FetchError::TooManyRedirects(format!(
            "more than {max} redirects (--max-redirects)"
        )));
    }
    let shown = redacted(target);
    match scheme_of(target).as_deref() {
        Some("https") => {}
        Some("http") if scheme_of(from).as_deref() == Some("https") => {
            return Err(FetchError::UnsupportedScheme(format!(
                "a redirect from https to http ({shown}) is not followed: the request would go in the clear"
            )))
        }
        Some("http") => {}
        _ => {
            return Err(FetchError::UnsupportedScheme(format!(
                "a redirect to {shown} is not followed: only http and https are"
            )))
        }
    }
    Ok(same_origin(first, target))
}

/// Where the response that just ended would redirect to (`CURLINFO_REDIRECT_URL`: the
/// `Location` made absolute), if anywhere.
pub(crate) fn target(raw: *mut curl_sys::CURL) -> Option<String> {
    let mut value: *const c_char = std::ptr::null();
    // SAFETY: a valid easy handle; libcurl points `value` at a string it owns (or NULL),
    // valid until the handle is used again, and we copy it at once.
    let code =
        unsafe { curl_sys::curl_easy_getinfo(raw, curl_sys::CURLINFO_REDIRECT_URL, &mut value) };
    if code != curl_sys::CURLE_OK || value.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated, as above.
    let text = unsafe { CStr::from_ptr(value) };
    text.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert!(same_origin("http://h/a", "http://H:80/b?c"));
        assert!(same_origin("https://u:p@h:443/", "https://h/x"));
        assert!(same_origin("http://[::1]:8080/a", "http://[::1]:8080/b"));
        for (a, b) in [
            ("http://h/", "https://h/"),
            ("http://h:8080/", "http://h:8081/"),
            ("http://h/", "http://h.example/"),
            ("http://[::1]:80/", "http://[::2]:80/"),
            ("http://h/", "file:///h/"),
            ("http://h:x/", "http://h:x/"),
        ] {
            assert!(!same_origin(a, b), "{a} {b}");
        }
    }

    #[test]
    fn hops_keep_the_schemes_and_the_count() {
        assert_eq!(
            check("http://a/", "http://a/", "http://a:80/x", 0, 10).ok(),
            Some(true)
        );
        assert_eq!(
            check("http://a/", "http://a/", "https://a/x", 0, 10).ok(),
            Some(false)
        );
        // Back at the first origin after a hop elsewhere: as curl, the credentials return.
        assert_eq!(
            check("http://a/", "http://b/", "http://a/y", 1, 10).ok(),
            Some(true)
        );
        let kind = |r: Result<bool, FetchError>| r.unwrap_err().kind();
        assert_eq!(
            kind(check("http://a/", "http://a/", "http://a/", 2, 2)),
            ErrorKind::TooManyRedirects
        );
        assert_eq!(
            kind(check("https://a/", "https://a/", "http://a/", 0, 9)),
            ErrorKind::UnsupportedScheme
        );
        assert_eq!(
            kind(check("http://a/", "http://a/", "file:///etc/passwd", 0, 9)),
            ErrorKind::UnsupportedScheme
        );
        assert_eq!(
            kind(check("http://a/", "http://a/", "ftp://a/", 0, 9)),
            ErrorKind::UnsupportedScheme
        );
        let masked = check("http://a/", "https://a/", "http://u:pw@b/", 0, 9).unwrap_err();
        assert!(!masked.to_string().contains("pw"), "{masked}");
    }
}
