//! Where a body's bytes go: digests, the receiving end of an attempt and its stores, the
//! workers that hash and place bodies off the loop, and what the destination directories
//! already hold.

pub mod digest;
pub mod fs;
pub mod hasher;
pub mod known_files;
pub mod partial;
pub mod placer;
pub mod root;
pub mod sink;
pub mod store;

/// The most bytes curl hands the write callback at once: the attempt sets it as
/// `CURLOPT_BUFFERSIZE`, and a hashing worker's buffer keeps this much room beyond a chunk
/// so that one of curl's pieces always fits whole.
pub const CURL_RECEIVE_BUFFER: usize = 64 * 1024;
