//! Where a body's bytes go: digests, the receiving end of an attempt, the workers that hash
//! and place bodies off the loop, and what the destination directories already hold.

pub mod digest;
pub mod hasher;
pub mod known_files;
pub mod placer;
pub mod sink;

/// The most bytes curl hands the write callback at once: the attempt sets it as curl's
/// receive buffer (CURLOPT_BUFFERSIZE), and a hashing worker's buffer has this much room
/// beyond its chunk so that one of curl's pieces always fits whole.
pub const CURL_RECEIVE_BUFFER: usize = 64 * 1024;
