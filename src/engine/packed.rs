//! A request as it waits in the queue, packed: the common request of a package manager (one
//! URL, `dest`, `size`, digests, priority and flags, nothing else) in three allocations
//! instead of eight, digests as bytes rather than hex. It is unpacked into the front's
//! `api::Download` when the download is admitted, and never packed again (docs/design.md,
//! "What a queued download costs").

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::api::{Download, Source};
use crate::body::digest::{to_hex, Algorithm};

pub(crate) struct Packed {
    /// The id, the URL and `dest`, one after another.
    text: Box<[u8]>,
    id_len: u32,
    url_len: u32,
    size: Option<u64>,
    /// Each expected digest: the algorithm's index in `Algorithm::ALL`, then its bytes.
    digests: Box<[u8]>,
    priority: i64,
    flags: u8,
}

const PROGRESS: u8 = 1;
const RESUME: u8 = 2;
const CONTINUE_DEST: u8 = 4;
const SERVER_MTIME: u8 = 8;
const NOT_MODIFIED_NEEDS_DEST: u8 = 16;

impl Packed {
    /// The packed form of a validated request; `None` when it uses anything beyond the
    /// common fields (several URLs, a mirror set, headers, conditions, a range, `max_size`,
    /// transport settings).
    pub fn pack(d: &Download) -> Option<Packed> {
        let Source::Urls(urls) = &d.source else {
            return None;
        };
        let plain = urls.len() == 1
            && d.max_size.is_none()
            && d.headers.is_empty()
            && !d.headers_follow_redirects
            && d.auth.is_none()
            && d.range.is_none()
            && d.if_none_match.is_none()
            && d.if_modified_since.is_none()
            && d.transport.is_none();
        if !plain {
            return None;
        }
        let id_len = u32::try_from(d.id.len()).ok()?;
        let url_len = u32::try_from(urls[0].len()).ok()?;
        let digests = pack_digests(&d.hashes)?;
        let dest = d.dest.as_os_str().as_bytes();
        let mut text = Vec::with_capacity(d.id.len() + urls[0].len() + dest.len());
        text.extend_from_slice(d.id.as_bytes());
        text.extend_from_slice(urls[0].as_bytes());
        text.extend_from_slice(dest);
        let flags = [
            (d.progress, PROGRESS),
            (d.resume, RESUME),
            (d.continue_dest, CONTINUE_DEST),
            (d.server_mtime, SERVER_MTIME),
            (d.not_modified_needs_dest, NOT_MODIFIED_NEEDS_DEST),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |flags, (_, bit)| flags | bit);
        Some(Packed {
            text: text.into_boxed_slice(),
            id_len,
            url_len,
            size: d.size,
            digests,
            priority: d.priority,
            flags,
        })
    }

    pub fn id(&self) -> &str {
        std::str::from_utf8(&self.text[..self.id_len as usize]).expect("packed from a String")
    }

    pub fn url(&self) -> &str {
        let start = self.id_len as usize;
        std::str::from_utf8(&self.text[start..start + self.url_len as usize])
            .expect("packed from a String")
    }

    pub fn priority(&self) -> i64 {
        self.priority
    }

    /// The request as the front made it.
    pub fn unpack(&self) -> Box<Download> {
        let dest = &self.text[(self.id_len + self.url_len) as usize..];
        let mut d = Download::new(
            self.id(),
            Source::Urls(vec![self.url().to_owned()]),
            PathBuf::from(OsStr::from_bytes(dest)),
        );
        d.size = self.size;
        d.hashes = unpack_digests(&self.digests);
        d.priority = self.priority;
        d.progress = self.flags & PROGRESS != 0;
        d.resume = self.flags & RESUME != 0;
        d.continue_dest = self.flags & CONTINUE_DEST != 0;
        d.server_mtime = self.flags & SERVER_MTIME != 0;
        d.not_modified_needs_dest = self.flags & NOT_MODIFIED_NEEDS_DEST != 0;
        Box::new(d)
    }
}

/// Validated hex digests as bytes; `None` if one is not (never, after validation).
fn pack_digests(hashes: &[(Algorithm, String)]) -> Option<Box<[u8]>> {
    let mut packed = Vec::with_capacity(hashes.iter().map(|(a, _)| 1 + a.output_len()).sum());
    for (algorithm, hex) in hashes {
        let index = Algorithm::ALL.iter().position(|a| a == algorithm)?;
        packed.push(index as u8);
        let digits = hex.as_bytes();
        if digits.len() != algorithm.output_len() * 2 {
            return None;
        }
        for pair in digits.chunks(2) {
            let byte = std::str::from_utf8(pair).ok()?;
            packed.push(u8::from_str_radix(byte, 16).ok()?);
        }
    }
    Some(packed.into_boxed_slice())
}

fn unpack_digests(mut packed: &[u8]) -> Vec<(Algorithm, String)> {
    let mut hashes = Vec::new();
    while let Some((&index, rest)) = packed.split_first() {
        let algorithm = Algorithm::ALL[usize::from(index)];
        let (bytes, rest) = rest.split_at(algorithm.output_len());
        hashes.push((algorithm, to_hex(bytes)));
        packed = rest;
    }
    hashes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ByteRange, Request};

    fn validated(d: Download) -> Box<Download> {
        let mut request = Request::from(d);
        request.validate().unwrap();
        let Request::Download(d) = request else {
            unreachable!()
        };
        d
    }

    #[test]
    fn a_common_request_unpacks_to_what_was_packed() {
        let mut d = Download::new(
            "pkg-1",
            Source::Urls(vec!["http://h:8/p/a.rpm".into()]),
            PathBuf::from(OsStr::from_bytes(b"/cache/\xffa.rpm")),
        );
        d.size = Some(4096);
        d.hashes = vec![
            (Algorithm::Sha256, "AB".repeat(32)),
            (Algorithm::Md5, "0f".repeat(16)),
        ];
        (d.priority, d.progress, d.server_mtime) = (-3, true, true);
        let d = validated(d);
        let expected = format!("{d:?}");
        let packed = Packed::pack(&d).expect("packed");
        assert_eq!((packed.id(), packed.url()), ("pkg-1", "http://h:8/p/a.rpm"));
        assert_eq!(format!("{:?}", packed.unpack()), expected);
        assert_eq!(packed.digests.len(), 1 + 32 + 1 + 16);
    }

    #[test]
    fn anything_beyond_the_common_fields_stays_unpacked() {
        let base = || Download::new("a", Source::Urls(vec!["http://h/x".into()]), "/t/x");
        let mut cases = vec![Download::new(
            "a",
            Source::Urls(vec!["http://h/x".into(), "http://g/x".into()]),
            "/t/x",
        )];
        let mut d = base();
        d.range = Some(ByteRange { start: 0, end: 1 });
        cases.push(d);
        let mut d = base();
        d.headers = vec![("X-A".into(), "1".into())];
        cases.push(d);
        let mut d = base();
        d.if_modified_since = Some("Fri, 31 Dec 1999 23:59:59 GMT".into());
        cases.push(d);
        let mut d = base();
        d.max_size = Some(5);
        cases.push(d);
        let mut d = base();
        d.headers_follow_redirects = true;
        cases.push(d);
        let mut d = base();
        d.auth = Some(Box::new(crate::api::Credentials {
            user: "u".into(),
            password: "p".into(),
        }));
        cases.push(d);
        for d in cases {
            let shown = format!("{d:?}");
            assert!(Packed::pack(&validated(d)).is_none(), "{shown}");
        }
    }
}
