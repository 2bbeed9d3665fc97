//! What fetchmux needs to know of a URL without parsing it fully: its scheme, and the key
//! that groups URLs by server (scheme, host and port) for the per-host limits, and how a URL
//! is shown to anyone but the server: without its password ([`redacted`]).

use std::borrow::Cow;

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

/// Does `url` carry userinfo (`user@` or `user:password@` before its host)?
pub fn has_userinfo(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

/// The permission bits of the local file a `file://` URL names, which a copy of it must not
/// exceed; `None` for other schemes. A file that cannot be looked at any more (removed since
/// it was read) gives 0600: the copy is then its owner's alone.
pub fn file_source_mode(url: &str) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    if scheme_of(url)? != "file" {
        return None;
    }
    let path = file_path(url)?;
    Some(
        std::fs::metadata(path)
            .map(|meta| meta.permissions().mode() & 0o777)
            .unwrap_or(0o600),
    )
}

/// The local path of a `file://` URL as libcurl reads it: after `file://` and an optional
/// `localhost`, up to `?` or `#`, percent-decoded.
fn file_path(url: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let rest = &url[url.find("://")? + 3..];
    let rest = rest
        .get(..9)
        .filter(|host| host.eq_ignore_ascii_case("localhost"))
        .map_or(rest, |_| &rest[9..]);
    let path = rest.split(['?', '#']).next()?;
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    Some(std::ffi::OsString::from_vec(decoded).into())
}

/// What stands in for a password wherever a URL leaves the process.
pub const PASSWORD_MASK: &str = "***";

/// `url` as it may be shown (events, messages, stderr): the password of its userinfo
/// replaced by `***`, the user name kept (`http://user:***@host/`). Borrowed, with no
/// allocation, when there is no password. Only libcurl ever gets the URL as given.
pub fn redacted(url: &str) -> Cow<'_, str> {
    redact(url, |b| matches!(b, b'/' | b'?' | b'#'))
}

/// `text` (an error message, a line for stderr) with the password of every URL in it
/// replaced by `***`. A URL's authority ends at `/`, `?`, `#`, white space, a quote, `<`,
/// `>` or a backslash, so a URL quoted in a message is masked too. Borrowed when there is
/// nothing to mask.
pub fn redacted_text(text: &str) -> Cow<'_, str> {
    redact(text, |b| {
        matches!(
            b,
            b'/' | b'?' | b'#' | b'"' | b'\'' | b'`' | b'<' | b'>' | b'\\'
        ) || b.is_ascii_whitespace()
            || b.is_ascii_control()
    })
}

/// [`redacted_text`], keeping the `String` when nothing is masked.
pub fn redacted_string(text: String) -> String {
    match redacted_text(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(masked) => masked,
    }
}

/// Mask the password (from the userinfo's first `:` to the authority's last `@`) after every
/// `://` in `text`; `ends` says which byte ends an authority.
fn redact(text: &str, ends: impl Fn(u8) -> bool) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        let end = bytes[start..]
            .iter()
            .position(|&b| ends(b))
            .map_or(bytes.len(), |n| start + n);
        from = end;
        let authority = &text[start..end];
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        let Some(colon) = authority[..at].find(':') else {
            continue;
        };
        let (password_start, password_end) = (start + colon + 1, start + at);
        if &text[password_start..password_end] == PASSWORD_MASK {
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..password_start]);
        out.push_str(PASSWORD_MASK);
        copied = password_end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_name_local_paths_percent_decoded() {
        assert_eq!(
            file_path("file:///a%20b/c").unwrap(),
            std::path::Path::new("/a b/c")
        );
        assert_eq!(
            file_path("FILE://localhost/x?y").unwrap(),
            std::path::Path::new("/x")
        );
        assert_eq!(file_source_mode("http://h/x"), None);
        assert_eq!(file_source_mode("file:///no/such/file"), Some(0o600));
    }

    #[test]
    fn passwords_are_masked() {
        let masked = |url| redacted(url).into_owned();
        assert_eq!(masked("http://u:secret@h:8/a"), "http://u:***@h:8/a");
        assert_eq!(
            masked("https://u:p@ss@h/?q=a:b@c"),
            "https://u:***@h/?q=a:b@c"
        );
        assert_eq!(masked("ftp://:pw@h"), "ftp://:***@h");
        assert_eq!(masked("http://u:@h/"), "http://u:***@h/");
        for plain in [
            "http://h/a:b@c",
            "http://user@h/",
            "file:///x",
            "not a url",
            "",
        ] {
            assert!(matches!(redacted(plain), Cow::Borrowed(_)), "{plain}");
        }
        assert!(matches!(redacted("http://u:***@h/"), Cow::Borrowed(_)));
        let text = "mirror http://u:hunter2@a/ and \"https://v:x@b\" (ftp://w:z@c) failed";
        assert_eq!(
            redacted_text(text),
            "mirror http://u:***@a/ and \"https://v:***@b\" (ftp://w:***@c) failed"
        );
        assert_eq!(redacted_string("no URL".into()), "no URL");
        // In a URL alone only `/`, `?` and `#` end the authority.
        assert_eq!(masked("http://u:p w@h/"), "http://u:***@h/");
    }

    #[test]
    fn host_keys() {
        assert_eq!(
            host_key("http://User@Example.COM:8080/a?b").as_deref(),
            Some("http://example.com:8080")
        );
        assert_eq!(host_key("https://h").as_deref(), Some("https://h"));
        assert_eq!(host_key("http:///x"), None);
        assert_eq!(host_key("file:///etc/passwd").as_deref(), Some("file://"));
        assert!(has_userinfo("http://u:p@h/") && has_userinfo("ftp://u@h"));
        assert!(!has_userinfo("http://h/a@b") && !has_userinfo("file:///x@y"));
    }

    #[test]
    fn schemes() {
        assert_eq!(scheme_of("HTTPS://h/").as_deref(), Some("https"));
        assert_eq!(scheme_of("/etc/passwd"), None);
        assert!(is_http("http://h/") && !is_http("file:///x"));
    }
}
