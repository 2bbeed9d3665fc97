//! What fetchmux needs to know of a URL without parsing it fully: its scheme, and the key
//! that groups URLs by server (scheme, host and port) for the per-host limits.

/// Schemes a request may name. Redirects are narrower: http and https only.
pub const REQUEST_SCHEMES: [&str; 4] = ["http", "https", "ftp", "file"];

/// The scheme of `url`, lowercased, if it has the `scheme://` form.
pub fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme.as_bytes()[0].is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    valid.then(|| scheme.to_ascii_lowercase())
}

/// Does this URL speak HTTP (so that statuses and ranges are ours to check)?
pub fn is_http(url: &str) -> bool {
    scheme_of(url).is_some_and(|s| s == "http" || s == "https")
}

/// The scheduling key of a URL: `scheme://host:port` as written (lowercased), without user
/// info or path. `None` when there is no host. file:// URLs share one key.
pub fn host_key(url: &str) -> Option<String> {
    let scheme = scheme_of(url)?;
    let rest = &url[scheme.len() + 3..];
    if scheme == "file" {
        return Some("file://".to_string());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    if host_port.is_empty() || host_port.starts_with(':') {
        return None;
    }
    Some(format!("{scheme}://{}", host_port.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys() {
        assert_eq!(
            host_key("http://User@Example.COM:8080/a?b").as_deref(),
            Some("http://example.com:8080")
        );
        assert_eq!(host_key("https://h").as_deref(), Some("https://h"));
        assert_eq!(host_key("http:///x"), None);
        assert_eq!(host_key("file:///etc/passwd").as_deref(), Some("file://"));
    }

    #[test]
    fn schemes() {
        assert_eq!(scheme_of("HTTPS://h/").as_deref(), Some("https"));
        assert_eq!(scheme_of("/etc/passwd"), None);
        assert!(is_http("http://h/") && !is_http("file:///x"));
    }
}
