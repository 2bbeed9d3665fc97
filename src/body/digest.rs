//! Streaming digests: the algorithms a request may name, and the state fed while bytes arrive.
//!
//! SHA-256 is always computed (it is reported in every `done`); the other algorithms run only
//! when a request asks for them. All go through the `digest` crate's traits, so adding an
//! algorithm is one line in [`Algorithm`] and one in [`Algorithm::hasher`].

use digest::{Digest, DynDigest};
use sha2::Sha256;

/// A digest algorithm a request may name in `hashes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
    Sha384,
    Sha224,
    Sha1,
    Md5,
}

impl Algorithm {
    /// Every supported algorithm, in the order `done.hashes` reports them.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Sha256,
        Algorithm::Sha512,
        Algorithm::Sha384,
        Algorithm::Sha224,
        Algorithm::Sha1,
        Algorithm::Md5,
    ];

    /// Parse the lowercase name used on the wire.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha224 => "sha224",
            Algorithm::Sha1 => "sha1",
            Algorithm::Md5 => "md5",
        }
    }

    /// Length of the digest in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
            Algorithm::Sha384 => 48,
            Algorithm::Sha224 => 28,
            Algorithm::Sha1 => 20,
            Algorithm::Md5 => 16,
        }
    }

    fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            Algorithm::Sha256 => Box::new(Sha256::new()),
            Algorithm::Sha512 => Box::new(sha2::Sha512::new()),
            Algorithm::Sha384 => Box::new(sha2::Sha384::new()),
            Algorithm::Sha224 => Box::new(sha2::Sha224::new()),
            Algorithm::Sha1 => Box::new(sha1::Sha1::new()),
            Algorithm::Md5 => Box::new(md5::Md5::new()),
        }
    }
}

/// The digest state of one body: SHA-256 always, plus whatever else the request asked for.
///
/// Built once per attempt (the only allocations); `update` is on the per-chunk hot path and
/// allocates nothing.
pub struct Digests {
    sha256: Sha256,
    extra: Vec<(Algorithm, Box<dyn DynDigest + Send>)>,
}

impl Digests {
    /// Digest state for SHA-256 plus every algorithm in `wanted` (SHA-256 is not repeated).
    pub fn new(wanted: impl IntoIterator<Item = Algorithm>) -> Digests {
        let extra = wanted
            .into_iter()
            .filter(|&a| a != Algorithm::Sha256)
            .map(|a| (a, a.hasher()))
            .collect();
        Digests {
            sha256: Sha256::new(),
            extra,
        }
    }

    /// Feed the next bytes of the body.
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        Digest::update(&mut self.sha256, bytes);
        for (_, hasher) in &mut self.extra {
            hasher.update(bytes);
        }
    }

    /// SHA-256 of the bytes so far, without ending the stream (for resumable partials).
    pub fn sha256_so_far(&self) -> String {
        to_hex(&Digest::finalize(self.sha256.clone()))
    }

    /// The lowercase hex digests, SHA-256 first.
    pub fn finish(self) -> Vec<(Algorithm, String)> {
        let mut out = Vec::with_capacity(1 + self.extra.len());
        out.push((Algorithm::Sha256, to_hex(&Digest::finalize(self.sha256))));
        for (algorithm, hasher) in self.extra {
            out.push((algorithm, to_hex(&hasher.finalize())));
        }
        out
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The length and the `wanted` digests of what `file` holds from where it is read.
pub fn digest_reader(
    mut file: impl std::io::Read,
    wanted: impl IntoIterator<Item = Algorithm>,
) -> std::io::Result<(u64, Vec<(Algorithm, String)>)> {
    let mut digests = Digests::new(wanted);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        digests.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, digests.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_for_abc() {
        let mut d = Digests::new(Algorithm::ALL);
        d.update(b"a");
        d.update(b"bc");
        let out = d.finish();
        let get = |a| out.iter().find(|(x, _)| *x == a).unwrap().1.clone();
        assert_eq!(
            get(Algorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            get(Algorithm::Sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(get(Algorithm::Md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            get(Algorithm::Sha224),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
        assert_eq!(out.len(), 6, "sha256 must not be computed twice");
        for (a, hex) in &out {
            assert_eq!(hex.len(), a.output_len() * 2);
        }
    }

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
        }
        assert_eq!(Algorithm::from_name("SHA256"), None);
        assert_eq!(Algorithm::from_name("crc32"), None);
    }
}
