//! Writing event lines to stdout without ever blocking the loop on a slow client.
//!
//! The loop appends events to a buffer of its own and, once per turn, hands the batch to a
//! writer thread (swapping buffers, so a steady state allocates nothing). The writer does the
//! blocking `write`s. A client that reads slowly therefore costs memory, never progress, and
//! a client that writes all its requests before reading anything cannot deadlock us.
//! stdout is never switched to non-blocking mode: it is often shared with the parent (a
//! terminal, a CI log pipe), and that flag would leak to it.
//!
//! When the parent closes stdout the writer records it and wakes the loop, which then aborts.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use mio::Waker;

use crate::io::is_pipe_or_socket;

#[derive(Default)]
struct Shared {
    batch: Vec<u8>,
    closing: bool,
}

/// The loop's handle on stdout.
pub(crate) struct Output {
    pending: Vec<u8>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    broken: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl Output {
    /// Start the writer thread; it wakes `waker` if stdout breaks.
    pub fn start(waker: Arc<Waker>) -> Output {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let broken = Arc::new(AtomicBool::new(false));
        let writer = {
            let shared = Arc::clone(&shared);
            let broken = Arc::clone(&broken);
            std::thread::Builder::new()
                .name("stdout".into())
                .spawn(move || write_batches(&shared, &broken, &waker))
                .expect("spawning the stdout writer")
        };
        Output {
            pending: Vec::with_capacity(64 * 1024),
            shared,
            broken,
            writer: Some(writer),
        }
    }

    /// Bytes queued for the next [`Output::flush`]: the front writes its lines here.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Hand everything queued to the writer.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let (lock, ready) = &*self.shared;
        let mut shared = lock.lock().unwrap();
        if shared.batch.is_empty() {
            std::mem::swap(&mut shared.batch, &mut self.pending);
        } else {
            shared.batch.extend_from_slice(&self.pending);
            self.pending.clear();
        }
        ready.notify_one();
    }

    /// Ask the loop to tell us when the parent closes stdout, so that the helper stops at
    /// once rather than at its next event. Only pipes and sockets can be watched (and need
    /// to be); the registration asks for writability, which epoll reports with the error.
    pub fn watch_for_close(&self, registry: &mio::Registry, token: mio::Token) {
        let fd = 1;
        if is_pipe_or_socket(fd) {
            let source = &mut mio::unix::SourceFd(&fd);
            let _ = registry.register(source, token, mio::Interest::WRITABLE);
        }
    }

    /// A readiness event on stdout: an error or hang-up means the parent is gone.
    pub fn on_event(&self, event: &mio::event::Event) {
        if event.is_error() || event.is_write_closed() {
            self.broken.store(true, Ordering::Relaxed);
        }
    }

    /// Has the parent closed stdout?
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Write out everything and stop the writer.
    pub fn close(&mut self) {
        self.flush();
        let (lock, ready) = &*self.shared;
        lock.lock().unwrap().closing = true;
        ready.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_batches(shared: &(Mutex<Shared>, Condvar), broken: &AtomicBool, waker: &mio::Waker) {
    // SAFETY: fd 1 is open for the life of the process; ManuallyDrop keeps us from closing it.
    let mut stdout = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    let mut batch = Vec::new();
    loop {
        {
            let (lock, ready) = shared;
            let mut state = lock.lock().unwrap();
            while state.batch.is_empty() && !state.closing {
                state = ready.wait(state).unwrap();
            }
            if state.batch.is_empty() {
                return;
            }
            std::mem::swap(&mut state.batch, &mut batch);
        }
        if broken.load(Ordering::Relaxed) {
            batch.clear();
            continue;
        }
        if let Err(err) = stdout.write_all(&batch) {
            if err.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("fetchmux: writing stdout failed: {err}");
            }
            broken.store(true, Ordering::Relaxed);
            let _ = waker.wake();
        }
        batch.clear();
    }
}
