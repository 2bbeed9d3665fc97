//! Digests of large bodies, computed on worker threads so that one event loop can receive
//! several large files at the speed of the machine rather than of one core.
//!
//! SHA-256 runs at about 1.3 GB/s on one core here, slower than loopback delivers bytes
//! and writes them to the page cache; on the loop's thread it was the bound of a large
//! download (`make bench`, scenario C). So a large body's [`Sink`](crate::sink::Sink) only
//! writes, and hands its digest state to a worker that follows the file as it grows: after
//! each coalesced write the sink says how far the file is written ([`Lane::written`]), and
//! the worker reads that much back (`pread` on its own descriptor, from the page cache) into
//! the digests. The worker never holds more than one read buffer, so however far it lags,
//! memory stays flat: the lag lives in the file itself. When the transfer ends the sink asks
//! for the digests back ([`Lane::finish`]); the worker finishes reading and answers through a
//! channel, waking the loop, and the engine then verifies and places the file as for any
//! other body.
//!
//! The workers (one per core, at most [`MAX_WORKERS`]) start when the first large body
//! arrives; a helper that never sees one never starts them. A body's work stays on one worker, so its bytes are hashed in order.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};

use mio::Waker;

use crate::digest::Digests;
use crate::error::FetchError;

/// Most worker threads, whatever the number of cores.
const MAX_WORKERS: usize = 4;
/// Bytes read back per `pread`.
const READ_CHUNK: usize = 1 << 20;

/// What a worker answers when asked for a body's digests.
pub type Hashed = (u64, Result<Digests, FetchError>);

enum Work {
    Start {
        id: u64,
        file: File,
        digests: Box<Digests>,
    },
    Written {
        id: u64,
        len: u64,
    },
    Finish {
        id: u64,
        len: u64,
    },
    Forget {
        id: u64,
    },
}

/// The workers, shared by every sink that may need them (cloning is cheap).
#[derive(Clone)]
pub struct Hasher {
    shared: Arc<Shared>,
}

struct Shared {
    workers: OnceLock<Vec<Sender<Work>>>,
    answers: Sender<Hashed>,
    waker: Arc<Waker>,
    next_id: AtomicU64,
}

/// One body's connection to its worker, held by the sink.
pub struct Lane {
    id: u64,
    worker: Sender<Work>,
}

impl Hasher {
    /// Workers wake the loop through `waker` when they answer on the returned receiver.
    pub fn new(waker: Arc<Waker>) -> (Hasher, Receiver<Hashed>) {
        let (answers, answered) = channel();
        let shared = Shared {
            workers: OnceLock::new(),
            answers,
            waker,
            next_id: AtomicU64::new(0),
        };
        let hasher = Hasher {
            shared: Arc::new(shared),
        };
        (hasher, answered)
    }

    /// Hand `digests` (the state so far) and a descriptor of the body's file to a worker.
    /// When no worker can take it the digests come back: the caller then hashes itself.
    pub fn lane(&self, file: &File, digests: Box<Digests>) -> Result<Lane, Box<Digests>> {
        let shared = &*self.shared;
        let workers = shared.workers.get_or_init(|| spawn_workers(shared));
        if workers.is_empty() {
            return Err(digests);
        }
        let Ok(file) = file.try_clone() else {
            return Err(digests);
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = workers[(id % workers.len() as u64) as usize].clone();
        match worker.send(Work::Start { id, file, digests }) {
            Ok(()) => Ok(Lane { id, worker }),
            Err(std::sync::mpsc::SendError(Work::Start { digests, .. })) => Err(digests),
            Err(_) => unreachable!("a Start message comes back as sent"),
        }
    }
}

fn spawn_workers(shared: &Shared) -> Vec<Sender<Work>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = Vec::new();
    for n in 0..cores.clamp(1, MAX_WORKERS) {
        let (tx, rx) = channel();
        let answers = shared.answers.clone();
        let waker = Arc::clone(&shared.waker);
        let spawned = std::thread::Builder::new()
            .name(format!("fetchmux-hash-{n}"))
            .spawn(move || work(rx, answers, waker));
        match spawned {
            Ok(_) => workers.push(tx),
            Err(err) => {
                eprintln!("fetchmux: cannot start a hashing thread ({err}); hashing inline");
                break;
            }
        }
    }
    workers
}

impl Lane {
    /// The body's file now holds `len` bytes.
    pub fn written(&self, len: u64) {
        let _ = self.worker.send(Work::Written { id: self.id, len });
    }

    /// The body is complete at `len` bytes: the digests come back on the receiver of
    /// [`Hasher::new`] under the returned id.
    pub fn finish(self, len: u64) -> u64 {
        let id = self.id;
        let _ = self.worker.send(Work::Finish { id, len });
        std::mem::forget(self);
        id
    }
}

impl Drop for Lane {
    /// A body abandoned before it finished: the worker drops its state.
    fn drop(&mut self) {
        let _ = self.worker.send(Work::Forget { id: self.id });
    }
}

/// One body as a worker sees it.
struct Following {
    file: File,
    digests: Box<Digests>,
    hashed: u64,
    failed: Option<FetchError>,
}

impl Following {
    fn catch_up(&mut self, len: u64, buf: &mut [u8]) {
        while self.failed.is_none() && self.hashed < len {
            let want = (len - self.hashed).min(buf.len() as u64) as usize;
            match self.file.read_at(&mut buf[..want], self.hashed) {
                Ok(0) => {
                    self.failed = Some(FetchError::io(
                        "reading back a body to hash it",
                        &std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                    ))
                }
                Ok(n) => {
                    self.digests.update(&buf[..n]);
                    self.hashed += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => self.failed = Some(FetchError::io("reading back a body to hash it", &e)),
            }
        }
    }
}

/// A worker's life: follow the bodies it is given until the engine (every sender) is gone.
fn work(inbox: Receiver<Work>, answers: Sender<Hashed>, waker: Arc<Waker>) {
    let mut bodies: HashMap<u64, Following> = HashMap::new();
    let mut buf = vec![0u8; READ_CHUNK];
    for work in inbox {
        match work {
            Work::Start { id, file, digests } => {
                let body = Following {
                    file,
                    digests,
                    hashed: 0,
                    failed: None,
                };
                bodies.insert(id, body);
            }
            Work::Written { id, len } => {
                if let Some(body) = bodies.get_mut(&id) {
                    body.catch_up(len, &mut buf);
                }
            }
            Work::Finish { id, len } => {
                let Some(mut body) = bodies.remove(&id) else {
                    continue;
                };
                body.catch_up(len, &mut buf);
                let answer = match body.failed {
                    Some(error) => Err(error),
                    None => Ok(*body.digests),
                };
                if answers.send((id, answer)).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
            Work::Forget { id } => {
                bodies.remove(&id);
            }
        }
    }
}
