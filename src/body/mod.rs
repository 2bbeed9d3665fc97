//! Where a body's bytes go: digests, the receiving end of an attempt, the workers that hash
//! and place bodies off the loop, and what the destination directories already hold.

pub mod digest;
pub mod hasher;
pub mod known_files;
pub mod placer;
pub mod sink;
