//! Bodies of 128 KiB and more are hashed and written on worker threads, so that one event
//! loop can receive several big files at the speed of the machine rather than of one core.
//!
//! SHA-256 runs at about 1.3–1.7 GB/s on one core here; receiving over loopback, hashing and
//! writing on the loop's thread topped out near 0.7 GB/s (`make bench`, scenario C), and
//! hashing 1,000 × 256 KiB on it cost more than the peers needed for the whole job (B). So
//! the sink of a whole body of 128 KiB or more (`sink::WORKER_FROM`) copies curl's pieces into owned buffers (1 MiB,
//! or the whole body if smaller) and hands each full buffer to a worker, which feeds it to the digests and writes it to the temporary
//! file, in order, then gives the buffer back. The bytes are still hashed as they stream
//! in, exactly once, and never read back from the file.
//!
//! Memory is bounded: a body has at most [`BUFFERS`] buffers. When all are with the worker,
//! the write callback pauses the transfer (curl keeps the piece and offers it again); the
//! worker, on giving a buffer back to a paused body, asks the engine to unpause it
//! ([`Answer::Unpause`]). When curl reports the body complete, the sink hands over its last
//! buffer and asks for the digests; the worker answers when everything is written
//! ([`Answer::Hashed`], with the transfer's token and the lane's id), waking the loop through its `Waker`, and the engine then verifies and
//! places the file as for any other body. The loop never waits for a worker.
//!
//! The workers (one per core, at most [`MAX_WORKERS`]) start when the first body for them
//! arrives; a helper that never sees one never starts them. A body's buffers all go to one
//! worker, so they are hashed and written in order.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use mio::Waker;

use crate::body::digest::Digests;
use crate::body::fs::write_in_pieces;
use crate::body::CURL_RECEIVE_BUFFER;

/// Most worker threads, whatever the number of cores.
const MAX_WORKERS: usize = 4;
/// A buffer is handed over once it holds this many bytes (or the whole body, if smaller).
const CHUNK: usize = 1 << 20;
/// Buffers per body: what one body on a worker may hold in memory.
const BUFFERS: usize = 4;
/// Room beyond a chunk so that one of curl's pieces (at most its receive buffer) fits whole.
const SLACK: usize = CURL_RECEIVE_BUFFER;

/// What the workers tell the engine.
pub enum Answer {
    /// The digests of a finished body (or why its bytes could not be written), for the
    /// transfer with curl token `token`, whose sink's lane had the id `lane` (what
    /// [`Lane::finish`] returned: a token is reused, a lane id is not).
    Hashed {
        token: usize,
        lane: u64,
        /// On failure, the OS error the worker's write got: the engine names the file
        /// (see `Sink::write_failed`), which the worker does not know.
        result: Result<Digests, std::io::Error>,
    },
    /// A buffer came back to the paused transfer with this curl token: unpause it.
    Unpause(usize),
}

enum Work {
    Start {
        id: u64,
        file: File,
        digests: Box<Digests>,
        shared: Arc<LaneShared>,
    },
    Bytes {
        id: u64,
        buf: Vec<u8>,
    },
    Finish {
        id: u64,
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
    answers: Sender<Answer>,
    waker: Arc<Waker>,
    next_id: AtomicU64,
}

/// What a body's sink and its worker share.
struct LaneShared {
    /// Buffers the worker is done with.
    free: Mutex<Vec<Vec<u8>>>,
    /// The transfer is paused for want of a buffer.
    paused: AtomicBool,
    /// The worker could not write: stop the transfer (the error comes with `Hashed`, or
    /// from [`Lane::take_error`] if the transfer stops first).
    failed: AtomicBool,
    /// Why the worker could not write, until someone takes it.
    error: Mutex<Option<std::io::Error>>,
    /// The transfer's curl token, for [`Answer::Unpause`].
    token: usize,
}

/// What became of a piece offered to [`Lane::accept`].
pub enum Accepted {
    Taken,
    /// No buffer free: pause the transfer and get the piece again later.
    Pause,
    /// The worker failed to write the file: stop the transfer.
    Failed,
}

/// One body's connection to its worker, held by the sink.
pub struct Lane {
    id: u64,
    worker: Sender<Work>,
    shared: Arc<LaneShared>,
    filling: Option<Vec<u8>>,
    allocated: usize,
    chunk: usize,
    /// `finish` was called: the worker must not be told to forget the body.
    finished: bool,
}

impl Hasher {
    /// Workers answer on the returned receiver, and wake the loop through `waker`.
    pub fn new(waker: Arc<Waker>) -> (Hasher, Receiver<Answer>) {
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

    /// Give a worker `digests` (the state so far) and a descriptor of the file of a body of
    /// `len` bytes, for the transfer with curl token `token`. When no worker can take it the
    /// digests come back: the caller then hashes and writes itself.
    pub fn lane(
        &self,
        file: &File,
        digests: Box<Digests>,
        token: usize,
        len: u64,
    ) -> Result<Lane, Box<Digests>> {
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
        let lane_shared = Arc::new(LaneShared {
            free: Mutex::new(Vec::new()),
            paused: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            token,
        });
        let start = Work::Start {
            id,
            file,
            digests,
            shared: Arc::clone(&lane_shared),
        };
        match worker.send(start) {
            Ok(()) => Ok(Lane {
                id,
                worker,
                shared: lane_shared,
                filling: None,
                allocated: 0,
                chunk: len.clamp(SLACK as u64, CHUNK as u64) as usize,
                finished: false,
            }),
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
    /// Take a piece of the body (all of it, or none).
    pub fn accept(&mut self, bytes: &[u8]) -> Accepted {
        if self.shared.failed.load(Ordering::Acquire) {
            return Accepted::Failed;
        }
        let Some(buf) = self.buffer() else {
            return Accepted::Pause;
        };
        buf.extend_from_slice(bytes);
        if buf.len() >= self.chunk {
            self.hand_over();
        }
        Accepted::Taken
    }

    /// The buffer being filled: the current one, a free one, a new one while fewer than
    /// [`BUFFERS`] exist; `None` when all are with the worker (the transfer is then marked
    /// paused, and the worker will ask for it to be unpaused).
    fn buffer(&mut self) -> Option<&mut Vec<u8>> {
        if self.filling.is_none() {
            self.filling = self.take_free().or_else(|| {
                (self.allocated < BUFFERS).then(|| {
                    self.allocated += 1;
                    Vec::with_capacity(self.buffer_capacity())
                })
            });
        }
        if self.filling.is_none() {
            // Say "paused" before looking once more, so that a buffer coming back in
            // between is either seen here or answered with an unpause.
            self.shared.paused.store(true, Ordering::SeqCst);
            self.filling = self.take_free();
            if self.filling.is_some() {
                self.shared.paused.store(false, Ordering::SeqCst);
            }
        }
        self.filling.as_mut()
    }

    /// Why the worker could not write (after [`Accepted::Failed`]): the OS error itself,
    /// for a message that names the file and the error. Only called on failure.
    pub fn take_error(&self) -> std::io::Error {
        let error = self.shared.error.lock().ok().and_then(|mut e| e.take());
        error.unwrap_or_else(|| std::io::Error::other("the hashing worker could not write"))
    }

    fn take_free(&self) -> Option<Vec<u8>> {
        self.shared.free.lock().ok()?.pop()
    }

    fn hand_over(&mut self) {
        if let Some(buf) = self.filling.take().filter(|b| !b.is_empty()) {
            let _ = self.worker.send(Work::Bytes { id: self.id, buf });
        }
    }

    /// The body is complete: the digests come back as [`Answer::Hashed`] under the
    /// returned id once every byte is written. Also says how many bytes of buffers the body
    /// holds until then.
    pub fn finish(mut self) -> (u64, usize) {
        self.hand_over();
        let id = self.id;
        let _ = self.worker.send(Work::Finish { id });
        self.finished = true;
        (id, self.allocated * self.buffer_capacity())
    }

    /// What each of this body's buffers holds: a chunk, and room for one more of curl's pieces.
    fn buffer_capacity(&self) -> usize {
        self.chunk + SLACK
    }
}

impl Drop for Lane {
    /// A body abandoned before it finished: the worker drops its state.
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.worker.send(Work::Forget { id: self.id });
        }
    }
}

/// One body as a worker sees it.
struct Body {
    file: File,
    digests: Box<Digests>,
    shared: Arc<LaneShared>,
    failed: bool,
}

/// A worker's life: hash and write the bodies it is given until the engine is gone.
fn work(inbox: Receiver<Work>, answers: Sender<Answer>, waker: Arc<Waker>) {
    let mut bodies: HashMap<u64, Body> = HashMap::new();
    for work in inbox {
        match work {
            Work::Start {
                id,
                file,
                digests,
                shared,
            } => {
                let body = Body {
                    file,
                    digests,
                    shared,
                    failed: false,
                };
                bodies.insert(id, body);
            }
            Work::Bytes { id, mut buf } => {
                let Some(body) = bodies.get_mut(&id) else {
                    continue;
                };
                if !body.failed {
                    body.digests.update(&buf);
                    if let Err(e) = write_in_pieces(&mut body.file, &buf) {
                        body.failed = true;
                        if let Ok(mut error) = body.shared.error.lock() {
                            *error = Some(e);
                        }
                        body.shared.failed.store(true, Ordering::Release);
                    }
                }
                buf.clear();
                if let Ok(mut free) = body.shared.free.lock() {
                    free.push(buf);
                }
                if body.shared.paused.swap(false, Ordering::SeqCst) {
                    let _ = answers.send(Answer::Unpause(body.shared.token));
                    let _ = waker.wake();
                }
            }
            Work::Finish { id } => {
                let Some(body) = bodies.remove(&id) else {
                    continue;
                };
                let error = body.shared.error.lock().ok().and_then(|mut e| e.take());
                let answer = match (body.failed, error) {
                    (false, _) => Ok(*body.digests),
                    (true, Some(error)) => Err(error),
                    (true, None) => {
                        Err(std::io::Error::other("the hashing worker could not write"))
                    }
                };
                let answer = Answer::Hashed {
                    token: body.shared.token,
                    lane: id,
                    result: answer,
                };
                if answers.send(answer).is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::digest::Algorithm;
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::time::Duration;

    /// A worker that cannot write (`/dev/full`: ENOSPC) hands back the OS error itself,
    /// both to the sink (the transfer stops) and in its `Hashed` answer, never a vague text.
    #[test]
    fn a_failed_write_comes_back_as_the_os_error() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (hasher, answers) = Hasher::new(waker);
        let full = File::options().write(true).open("/dev/full").unwrap();
        let enospc = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOSPC);
        // Two bodies: one whose sink sees the failure, one whose end is asked for anyway.
        let piece = vec![7u8; CHUNK];
        let mut lane = hasher
            .lane(&full, Box::new(Digests::new([])), 1, 4 * CHUNK as u64)
            .ok()
            .unwrap();
        let failed = (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            matches!(lane.accept(&piece), Accepted::Failed)
        });
        assert!(failed, "the sink is told the worker failed");
        let error = lane.take_error();
        assert!(enospc(&error), "{error}");
        drop(lane);
        let mut lane = hasher
            .lane(&full, Box::new(Digests::new([])), 2, CHUNK as u64)
            .ok()
            .unwrap();
        assert!(matches!(lane.accept(&piece), Accepted::Taken));
        let (id, _) = lane.finish();
        loop {
            match answers.recv_timeout(Duration::from_secs(30)).unwrap() {
                Answer::Hashed {
                    token,
                    lane,
                    result,
                } if lane == id => {
                    assert_eq!(token, 2);
                    let error = result.err().expect("the write failed");
                    assert!(enospc(&error), "{error}");
                    break;
                }
                _ => continue,
            }
        }
    }

    /// The body's "file" is a pipe nobody reads until the lane has paused, so the worker
    /// is stuck writing and the producer must run out of buffers: the lane pauses, the
    /// worker unpauses it once the pipe drains, and what comes out is the whole body with
    /// the right digests, through at most `BUFFERS` buffers.
    #[test]
    fn a_body_faster_than_its_worker_pauses_resumes_and_comes_out_whole() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (hasher, answers) = Hasher::new(waker);
        let mut fds = [0; 2];
        // SAFETY: a two-element array for pipe(2); each fd is owned by one File below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        const PIECES: usize = 256;
        let piece: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        let digests = Box::new(Digests::new([Algorithm::Md5]));
        let mut lane = hasher
            .lane(&writer, digests, 7, (PIECES * piece.len()) as u64)
            .ok()
            .unwrap();
        drop(writer); // the worker's copy is the last: closing it ends the pipe

        let mut drain = None;
        let mut pauses = 0;
        for _ in 0..PIECES {
            loop {
                match lane.accept(&piece) {
                    Accepted::Taken => break,
                    Accepted::Pause => {
                        pauses += 1;
                        let reader = reader.try_clone().unwrap();
                        drain.get_or_insert_with(|| {
                            std::thread::spawn(move || {
                                let mut all = Vec::new();
                                let mut reader = reader;
                                reader.read_to_end(&mut all).unwrap();
                                all
                            })
                        });
                        match answers.recv_timeout(Duration::from_secs(30)).unwrap() {
                            Answer::Unpause(token) => assert_eq!(token, 7),
                            Answer::Hashed { .. } => panic!("no body finished yet"),
                        }
                    }
                    Accepted::Failed => panic!("the worker failed to write"),
                }
            }
            assert!(lane.allocated <= BUFFERS);
        }
        assert!(
            pauses > 0,
            "the worker was stuck: the lane must have paused"
        );
        let shared = Arc::clone(&lane.shared);
        let allocated = lane.allocated;
        let (id, held) = lane.finish();
        assert_eq!(
            held,
            allocated * (CHUNK + SLACK),
            "what the body holds until hashed"
        );
        let digests = loop {
            match answers.recv_timeout(Duration::from_secs(30)).unwrap() {
                Answer::Hashed {
                    token,
                    lane,
                    result,
                } => {
                    assert_eq!((token, lane), (7, id));
                    break result.unwrap();
                }
                Answer::Unpause(_) => continue,
            }
        };
        let body = piece.repeat(PIECES);
        let mut expected = Digests::new([Algorithm::Md5]);
        expected.update(&body);
        assert_eq!(digests.finish(), expected.finish());
        let written = drain.expect("paused at least once").join().unwrap();
        assert!(written == body, "the file holds the body, in order");
        // Neither side keeps the body's buffers once it is finished.
        for _ in 0..100 {
            if Arc::strong_count(&shared) == 1 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the finished body's buffers are still referenced");
    }
}
