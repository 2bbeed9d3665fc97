//! What the header callback learns of a response: status, length, range, validators,
//! Retry-After, and whether it came over a multiplexing protocol.

/// `Content-Range: bytes 100-199/1000` or `bytes */1000`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub total: Option<u64>,
}

/// What the header callback learned about the final response.
#[derive(Default, Debug)]
pub(crate) struct ResponseHead {
    /// Status of the latest status line seen (0 before any, and for file://).
    pub status: u32,
    pub content_length: Option<u64>,
    pub content_range: Option<ContentRange>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub retry_after: Option<String>,
    /// The response came over HTTP/2 or later: its connection multiplexes.
    pub multiplexed: bool,
}

impl ResponseHead {
    /// Take in one header line. A status line starts the record afresh: every response
    /// passes through (redirects, 100 Continue, 401, proxy CONNECT).
    pub fn take(&mut self, line: &[u8]) {
        if let Some(status) = parse_status_line(line) {
            *self = ResponseHead {
                status,
                multiplexed: !line.starts_with(b"HTTP/1"),
                ..ResponseHead::default()
            };
            return;
        }
        let Some((name, value)) = split_header(line) else {
            return;
        };
        if name.eq_ignore_ascii_case("content-length") {
            self.content_length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("content-range") {
            self.content_range = parse_content_range(value);
        } else if name.eq_ignore_ascii_case("etag") {
            self.etag = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("last-modified") {
            self.last_modified = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("retry-after") {
            self.retry_after = Some(value.to_string());
        }
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let mut parts = rest.split(|&b| b == b' ');
    parts.next()?;
    let code = parts.next()?;
    let code = std::str::from_utf8(code).ok()?.trim();
    code.parse().ok()
}

/// `Name: value\r\n` → (`Name`, `value`).
fn split_header(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let (name, value) = line.split_once(':')?;
    Some((name.trim(), value.trim()))
}

/// `bytes 100-199/1000`, `bytes 100-199/*`, `bytes */1000`.
fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    if span.trim() == "*" {
        return Some(ContentRange {
            start: None,
            end: None,
            total,
        });
    }
    let (start, end) = span.split_once('-')?;
    Some(ContentRange {
        start: Some(start.trim().parse().ok()?),
        end: Some(end.trim().parse().ok()?),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/2 404 \r\n"), Some(404));
        assert_eq!(parse_status_line(b"HTTP/2 304\r\n"), Some(304));
        assert_eq!(parse_status_line(b"Content-Length: 3\r\n"), None);
    }

    #[test]
    fn headers_and_ranges() {
        assert_eq!(
            split_header(b"Content-LENGTH:  42 \r\n"),
            Some(("Content-LENGTH", "42"))
        );
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(ContentRange {
                start: Some(100),
                end: Some(199),
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some(ContentRange {
                start: None,
                end: None,
                total: Some(1000)
            })
        );
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
