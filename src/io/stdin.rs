//! Reading request lines from stdin without ever blocking the loop.
//!
//! A pipe or socket is made non-blocking and polled by the loop like any other source. epoll
//! refuses regular files and character devices such as /dev/null (EPERM), and putting a
//! terminal into non-blocking mode would leak that mode to the shell that shares it, so
//! everything else is read by a small thread that hands chunks over a bounded channel and
//! wakes the loop. Either way the loop splits lines itself, so both paths behave alike.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token, Waker};

use crate::io::is_pipe_or_socket;

/// Longest line accepted, in bytes. A longer line is consumed and reported as
/// [`Line::TooLong`]; it is never held in memory whole.
pub const MAX_LINE: usize = 1024 * 1024;

const CHUNK: usize = 64 * 1024;

/// One line of stdin, as the line splitter hands it to a front.
pub enum Line<'a> {
    /// A complete line (newline and a trailing CR removed), with its 1-based number.
    Text(u64, &'a [u8]),
    /// A line longer than [`MAX_LINE`]; its bytes were dropped as they came.
    TooLong(u64),
}

/// The lines of one [`Input::read`], copied out of the reader so that the engine can hand
/// each to the front in turn. Reused from read to read.
#[derive(Default)]
pub(crate) struct LineBatch {
    bytes: Vec<u8>,
    /// Line number, and the span of its bytes (`None`: the line was too long).
    lines: Vec<(u64, Option<(usize, usize)>)>,
}

impl LineBatch {
    pub fn push(&mut self, line: Line<'_>) {
        match line {
            Line::Text(no, text) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(text);
                self.lines.push((no, Some((start, self.bytes.len()))));
            }
            Line::TooLong(no) => self.lines.push((no, None)),
        }
    }

    pub fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.lines.iter().map(|&(no, span)| match span {
            Some((start, end)) => Line::Text(no, &self.bytes[start..end]),
            None => Line::TooLong(no),
        })
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.lines.clear();
    }
}

/// Whether more input may be waiting after a call to [`Input::read`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// Nothing more until the next readiness event or wake-up.
    Drained,
    /// The budget ran out with input still waiting: call again soon.
    More,
    /// stdin is closed; every line has been handed out.
    Eof,
}

enum Source {
    Polled {
        fd: RawFd,
        old_flags: i32,
    },
    Thread {
        chunks: Receiver<io::Result<Vec<u8>>>,
    },
}

/// stdin as a stream of lines.
pub(crate) struct Input {
    source: Source,
    buf: Vec<u8>,
    scratch: Box<[u8]>,
    line_no: u64,
    /// Dropping the rest of an over-long line.
    skipping: bool,
    eof: bool,
}

impl Input {
    /// Watch stdin with `registry` under `token`, or start the reader thread that wakes
    /// `waker`.
    pub fn open(registry: &Registry, token: Token, waker: Arc<Waker>) -> Input {
        let fd = io::stdin().as_raw_fd();
        let source = match try_poll(registry, token, fd) {
            Some(old_flags) => Source::Polled { fd, old_flags },
            None => Source::Thread {
                chunks: spawn_reader(waker),
            },
        };
        Input {
            source,
            buf: Vec::with_capacity(CHUNK),
            scratch: vec![0; CHUNK].into_boxed_slice(),
            line_no: 0,
            skipping: false,
            eof: false,
        }
    }

    /// Has stdin reached its end (and every line been handed out)?
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Read what is available, up to about `budget` bytes, passing each line to `on_line`.
    pub fn read(&mut self, budget: usize, mut on_line: impl FnMut(Line<'_>)) -> ReadState {
        if self.eof {
            return ReadState::Eof;
        }
        let mut taken = 0;
        while taken < budget {
            let chunk = match &mut self.source {
                Source::Polled { fd, .. } => {
                    let mut file = std::mem::ManuallyDrop::new(unsafe_file(*fd));
                    match file.read(&mut self.scratch) {
                        Ok(n) => Ok(Some(n)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return ReadState::Drained
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    }
                }
                Source::Thread { chunks } => match chunks.try_recv() {
                    Ok(Ok(data)) => {
                        let n = data.len();
                        self.split(&data, &mut on_line);
                        taken += n;
                        continue;
                    }
                    Ok(Err(e)) => Err(e),
                    Err(TryRecvError::Empty) => return ReadState::Drained,
                    Err(TryRecvError::Disconnected) => Ok(Some(0)),
                },
            };
            match chunk {
                Ok(Some(0)) => {
                    self.finish(&mut on_line);
                    return ReadState::Eof;
                }
                Ok(Some(n)) => {
                    let data = std::mem::take(&mut self.scratch);
                    self.split(&data[..n], &mut on_line);
                    self.scratch = data;
                    taken += n;
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("fetchmux: reading stdin failed ({e}); treating it as closed");
                    self.finish(&mut on_line);
                    return ReadState::Eof;
                }
            }
        }
        ReadState::More
    }

    fn split(&mut self, mut data: &[u8], on_line: &mut impl FnMut(Line<'_>)) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            let (head, rest) = data.split_at(pos);
            data = &rest[1..];
            self.line_no += 1;
            if self.skipping || self.buf.len() + head.len() > MAX_LINE {
                self.skipping = false;
                self.buf.clear();
                on_line(Line::TooLong(self.line_no));
            } else if self.buf.is_empty() {
                emit(self.line_no, head, on_line);
            } else {
                self.buf.extend_from_slice(head);
                emit(self.line_no, &self.buf, on_line);
                self.buf.clear();
            }
        }
        if self.skipping {
            return;
        }
        if self.buf.len() + data.len() > MAX_LINE {
            self.buf.clear();
            self.buf.shrink_to(CHUNK);
            self.skipping = true;
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn finish(&mut self, on_line: &mut impl FnMut(Line<'_>)) {
        self.eof = true;
        if self.skipping {
            self.line_no += 1;
            on_line(Line::TooLong(self.line_no));
        } else if !self.buf.is_empty() {
            self.line_no += 1;
            let last = std::mem::take(&mut self.buf);
            emit(self.line_no, &last, on_line);
        }
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        if let Source::Polled { fd, old_flags } = self.source {
            // Leave the descriptor as we found it for whoever shares it.
            unsafe { libc::fcntl(fd, libc::F_SETFL, old_flags) };
        }
    }
}

fn emit(line_no: u64, line: &[u8], on_line: &mut impl FnMut(Line<'_>)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    on_line(Line::Text(line_no, line));
}

/// A `File` view of `fd` that must never be dropped (it does not own the descriptor).
fn unsafe_file(fd: RawFd) -> std::fs::File {
    use std::os::fd::FromRawFd;
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// Make a pipe or socket stdin non-blocking and register it; `None` for anything else.
fn try_poll(registry: &Registry, token: Token, fd: RawFd) -> Option<i32> {
    if !is_pipe_or_socket(fd) {
        return None;
    }
    let old_flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if old_flags < 0 {
        return None;
    }
    unsafe { libc::fcntl(fd, libc::F_SETFL, old_flags | libc::O_NONBLOCK) };
    match registry.register(&mut SourceFd(&fd), token, Interest::READABLE) {
        Ok(()) => Some(old_flags),
        Err(_) => {
            unsafe { libc::fcntl(fd, libc::F_SETFL, old_flags) };
            None
        }
    }
}

/// The fallback: a thread that blocks on stdin and hands chunks to the loop. The channel
/// is bounded, so a fast writer cannot make the helper hold more than a few MiB of input.
fn spawn_reader(waker: Arc<Waker>) -> Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::sync_channel(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut stdin = stdin.lock();
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let result = match stdin.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        chunk.truncate(n);
                        Ok(chunk)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = result.is_err();
                if tx.send(result).is_err() || failed {
                    break;
                }
                let _ = waker.wake();
            }
            drop(tx);
            let _ = waker.wake();
        })
        .expect("spawning the stdin reader");
    rx
}
