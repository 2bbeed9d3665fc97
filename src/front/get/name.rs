//! The file name `fetchmux get` gives a URL by default: the last segment of its path,
//! percent-decoded. A name that could escape the directory or is no name at all is refused
//! (the user then gives one), never replaced by a made-up one like wget's `index.html`: a
//! package cache must not fill with files nobody named.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::net::url::redacted;

/// The default name for `url`, or why there is none (said so the user knows what to do).
pub fn from_url(url: &str) -> Result<OsString, String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    // The path starts at the first `/` after the authority (file:// has an empty one).
    let path = after_scheme
        .find('/')
        .map_or("", |slash| &after_scheme[slash..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segment = path.rsplit('/').next().unwrap_or("");
    let name = percent_decode(segment);
    let problem = match name.as_slice() {
        [] => Some("its path ends in `/` (no file name)"),
        b"." | b".." => Some("its last path segment is `.` or `..`"),
        n if n.contains(&b'/') => Some("its file name decodes to something with `/`"),
        n if n.iter().any(|&b| b < b' ' || b == 0x7f) => {
            Some("its file name decodes to control characters")
        }
        _ => None,
    };
    match problem {
        Some(problem) => Err(format!(
            "cannot name the file of {}: {problem}",
            redacted(url)
        )),
        None => Ok(OsString::from_vec(name)),
    }
}

/// `%xx` → the byte; a `%` not followed by two hex digits stays as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(url: &str) -> Result<String, String> {
        from_url(url).map(|n| n.to_string_lossy().into_owned())
    }

    #[test]
    fn last_segment_decoded() {
        assert_eq!(name("http://h/p/a.rpm").unwrap(), "a.rpm");
        assert_eq!(name("http://h/p/a%20b%2B.deb?x=1#f").unwrap(), "a b+.deb");
        assert_eq!(name("file:///srv/x/y.txt").unwrap(), "y.txt");
        assert_eq!(name("http://h/100%").unwrap(), "100%");
        assert_eq!(name("http://h/a%zz").unwrap(), "a%zz");
    }

    #[test]
    fn no_name_or_an_escaping_one_is_refused() {
        for url in [
            "http://h",
            "http://h/",
            "http://h/dir/",
            "http://h/x/..",
            "http://h/x/%2e%2e",
            "http://h/.",
            "http://h/a%2Fb",
            "http://h/a%0Ab",
            "http://h/?q=a.rpm",
        ] {
            let err = name(url).unwrap_err();
            assert!(err.contains(url), "{err}");
        }
        let err = name("http://u:secret@h/d/").unwrap_err();
        assert!(err.contains("http://u:***@h/d/"), "{err}");
    }
}
