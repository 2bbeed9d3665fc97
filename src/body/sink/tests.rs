//! The sink's behaviour seen from outside: what ends up on disk, and what comes back.

use super::*;
use crate::test_support::entries;

const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

#[test]
fn verified_bytes_are_renamed_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[Algorithm::Sha256], None);
    sink.write(b"ab").unwrap();
    sink.write(b"c").unwrap();
    let (placed, placement) = sink
        .place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
        .unwrap();
    assert_eq!(placed.size, 3);
    assert!(placement.is_none(), "written here, not handed over");
    assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
    assert_eq!(entries(dir.path()), vec!["f"]);
}

#[test]
fn a_small_body_is_verified_in_memory_and_handed_back_for_placing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[], None);
    sink.buffer_small_bodies(Vec::new());
    sink.expect_len(Some(3));
    sink.write(b"ab").unwrap();
    sink.write(b"c").unwrap();
    assert!(
        entries(dir.path()).is_empty(),
        "nothing on disk while receiving"
    );
    let (placed, placement) = sink
        .place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
        .unwrap();
    let placement = placement.expect("handed back, not written");
    assert_eq!((placed.size, placement.bytes.as_slice()), (3, &b"abc"[..]));
    assert_eq!(placement.dest, dest);
    assert!(entries(dir.path()).is_empty());

    // Wrong bytes are refused before anything is handed back.
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[], None);
    sink.buffer_small_bodies(Vec::new());
    sink.expect_len(Some(3));
    sink.write(b"abd").unwrap();
    let err = sink
        .place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
        .unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::ChecksumMismatch);
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn a_mismatch_leaves_dest_untouched_and_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    std::fs::write(&dest, b"old").unwrap();
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[], None);
    sink.write(b"abd").unwrap();
    let err = sink
        .place(None, &[(Algorithm::Sha256, ABC_SHA256.into())])
        .unwrap_err();
    assert_eq!(err.kind(), crate::error::ErrorKind::ChecksumMismatch);
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    assert_eq!(entries(dir.path()), vec!["f"]);
}

#[test]
fn the_cap_stops_the_body_and_drop_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[], Some(4));
    sink.write(b"abc").unwrap();
    assert!(matches!(
        sink.write(b"de"),
        Err(FetchError::TooLarge { limit: 4 })
    ));
    drop(sink);
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn a_window_keeps_only_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[], None);
    sink.set_window(1, 3);
    assert_eq!(sink.write(b"xa").unwrap(), Flow::More);
    assert_eq!(
        sink.write(b"bcdef").unwrap(),
        Flow::Complete,
        "complete after the range"
    );
    sink.place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
}

#[test]
fn a_kept_partial_is_continued_and_a_tampered_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let id = Identity {
        size: Some(3),
        sha256: Some(ABC_SHA256.into()),
    };
    let (mut sink, from) =
        Sink::resumable(&Root::unconfined(), &dest, &[], None, id.clone(), false);
    assert!(from.is_none());
    sink.write(b"ab").unwrap();
    sink.set_validators(Some("\"v1\"".into()), None);
    sink.keep_partial();
    drop(sink);
    assert_eq!(
        entries(dir.path()),
        vec![".f.fetchmux-partial", ".f.fetchmux-partial.meta"]
    );
    let (mut sink, from) =
        Sink::resumable(&Root::unconfined(), &dest, &[], None, id.clone(), false);
    let from = from.expect("our sound partial is continued");
    assert_eq!(from.offset, 2);
    assert_eq!(from.etag.as_deref(), Some("\"v1\""));
    sink.write(b"c").unwrap();
    sink.place(Some(3), &[(Algorithm::Sha256, ABC_SHA256.into())])
        .unwrap();
    assert_eq!(entries(dir.path()), vec!["f"]);

    // Someone else's bytes at the partial name (record intact) are not trusted.
    std::fs::remove_file(&dest).unwrap();
    let (mut sink, _) = Sink::resumable(&Root::unconfined(), &dest, &[], None, id.clone(), false);
    sink.write(b"ab").unwrap();
    sink.keep_partial();
    drop(sink);
    std::fs::write(dir.path().join(".f.fetchmux-partial"), b"xy").unwrap();
    let (_sink, from) = Sink::resumable(&Root::unconfined(), &dest, &[], None, id.clone(), false);
    assert!(from.is_none());
    // A record for another download is not trusted either.
    let other = Identity {
        size: Some(4),
        sha256: None,
    };
    let (mut sink, _) = Sink::resumable(&Root::unconfined(), &dest, &[], None, id, false);
    sink.write(b"ab").unwrap();
    sink.keep_partial();
    drop(sink);
    assert!(
        Sink::resumable(&Root::unconfined(), &dest, &[], None, other, false)
            .1
            .is_none()
    );
}

#[test]
fn cached_needs_a_digest_and_a_match() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    std::fs::write(&dest, b"abc").unwrap();
    assert!(cached(&Root::unconfined(), &dest, Some(3), &[]).is_none());
    assert!(cached(
        &Root::unconfined(),
        &dest,
        Some(4),
        &[(Algorithm::Sha256, ABC_SHA256.into())]
    )
    .is_none());
    assert!(cached(
        &Root::unconfined(),
        &dest,
        Some(3),
        &[(Algorithm::Sha256, ABC_SHA256.into())]
    )
    .is_some());
}

/// The hex SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    let mut digests = Digests::new([Algorithm::Sha256]);
    digests.update(bytes);
    let hashes = digests.finish();
    hashes[0].1.clone()
}

#[test]
fn a_body_above_named_file_above_goes_through_a_named_temporary_file_in_coalesced_writes() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let body: Vec<u8> = (0..NAMED_FILE_ABOVE as usize + 1)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[], None);
    sink.expect_len(Some(body.len() as u64));
    for piece in body.chunks(16 * 1024) {
        assert_eq!(sink.write(piece).unwrap(), Flow::More);
    }
    let names = entries(dir.path());
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with(".f.") && names[0].ends_with(crate::body::fs::TEMP_SUFFIX));
    let on_disk = std::fs::metadata(dir.path().join(&names[0])).unwrap().len();
    assert_eq!(
        on_disk, NAMED_FILE_ABOVE,
        "the last byte waits to be coalesced"
    );
    sink.place(
        Some(body.len() as u64),
        &[(Algorithm::Sha256, sha256(&body))],
    )
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(entries(dir.path()), vec!["f"]);

    // Dropped half-way, it leaves nothing.
    let mut sink = Sink::new(&Root::unconfined(), &dir.path().join("g"), &[], None);
    sink.expect_len(Some(body.len() as u64));
    sink.write(&body[..300_000]).unwrap();
    assert_eq!(entries(dir.path()).len(), 2);
    drop(sink);
    assert_eq!(entries(dir.path()), vec!["f"]);
}

#[test]
fn a_body_on_a_worker_is_answered_by_token_and_lane_then_placed_or_dropped() {
    use crate::body::hasher::Answer;
    let dir = tempfile::tempdir().unwrap();
    let poll = mio::Poll::new().unwrap();
    let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (hasher, answers) = Hasher::new(waker);
    let body: Vec<u8> = (0..WORKER_FROM as usize).map(|i| (i % 251) as u8).collect();

    let dest = dir.path().join("f");
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[Algorithm::Sha256], None);
    sink.hash_on_worker(&hasher, 7);
    sink.buffer_small_bodies(Vec::new());
    sink.expect_len(Some(body.len() as u64));
    for piece in body.chunks(16 * 1024) {
        assert_eq!(sink.write(piece).unwrap(), Flow::More);
    }
    assert!(sink.hashing_elsewhere(), "not small: a worker's");
    let (lane, _held) = sink.finish_hashing();
    assert!(!sink.hashing_elsewhere());
    let result = loop {
        match answers
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap()
        {
            Answer::Hashed {
                token,
                lane: got,
                result,
            } => {
                assert_eq!((token, got), (7, lane));
                break result;
            }
            Answer::Unpause(_) => continue,
        }
    };
    sink.hashed(result.unwrap());
    let (verified, placement) = sink
        .place(
            Some(body.len() as u64),
            &[(Algorithm::Sha256, sha256(&body))],
        )
        .unwrap();
    assert!(placement.is_none());
    assert_eq!(verified.size, body.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(entries(dir.path()), vec!["f"]);

    // A named temporary file on a worker, dropped half-way: nothing is left.
    let big = vec![1u8; 2 << 20];
    let mut sink = Sink::new(&Root::unconfined(), &dir.path().join("g"), &[], None);
    sink.hash_on_worker(&hasher, 8);
    sink.expect_len(Some(big.len() as u64));
    for piece in big[..big.len() / 2].chunks(64 * 1024) {
        assert_eq!(sink.write(piece).unwrap(), Flow::More);
    }
    assert!(sink.hashing_elsewhere());
    assert_eq!(entries(dir.path()).len(), 2, "f and the temporary file");
    drop(sink);
    assert_eq!(entries(dir.path()), vec!["f"]);
}

#[test]
fn a_named_temporary_file_that_cannot_be_placed_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should go: the rename fails.
    let dest = dir.path().join("d");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("x"), b"x").unwrap();
    let body = vec![0u8; NAMED_FILE_ABOVE as usize + 1];
    let mut sink = Sink::new(&Root::unconfined(), &dest, &[], None);
    sink.expect_len(Some(body.len() as u64));
    sink.write(&body).unwrap();
    assert_eq!(entries(dir.path()).len(), 2);
    let err = sink.place(None, &[]).unwrap_err();
    assert!(err.to_string().contains("placing"), "{err}");
    assert_eq!(entries(dir.path()), vec!["d"]);
}
