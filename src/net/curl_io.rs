//! The glue between libcurl's socket-action API and `mio`.
//!
//! libcurl tells us which sockets to watch (socket callback) and when to call it back
//! (timer callback). Both callbacks fire *inside* `action()`, `timeout()` and `add2()`,
//! while the multi handle is busy, so they only record what changed; [`CurlIo::apply`]
//! carries the changes out on the registry after the call returns.
//!
//! mio is edge-triggered and libcurl does not promise to drain a socket on each action, so
//! after acting on a socket we re-arm it ([`CurlIo::rearm`]): re-registering makes epoll
//! report the socket again if it is still ready, and no transfer stalls waiting for an edge
//! that already passed. File descriptors are reused by the kernel as soon as curl closes
//! them, so registry errors on stale descriptors are expected and tolerated.
//!
//! Registry calls are syscalls, and with thousands of small files they add up, so two are
//! saved: a socket curl stops watching stays registered (an idle pooled connection is
//! usually wanted again moments later; a stray event for it is handed to curl, which ignores
//! sockets it does not watch, and the kernel drops a closed fd from epoll by itself), and a
//! socket just re-registered by `apply` is not re-armed a second time.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use curl::multi::{Events, Multi, SocketEvents};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// Tokens below this are the engine's own (stdin, waker, signals); a curl socket `fd` is
/// `Token(SOCKET_TOKEN_BASE + fd)`.
pub const SOCKET_TOKEN_BASE: usize = 16;

/// What the callbacks recorded since the last `apply`.
#[derive(Default)]
struct Recorded {
    /// `(fd, interest)`; `None` interest means "stop watching".
    sockets: Vec<(RawFd, Option<Interest>)>,
    /// The latest timer request: `Some(None)` cancels, `Some(Some(t))` sets a deadline.
    timer: Option<Option<Instant>>,
}

/// A socket registered with mio for curl.
#[derive(Clone, Copy)]
struct Watch {
    interest: Interest,
    /// Does curl want events on it now? (An unwanted socket stays registered.)
    wanted: bool,
}

/// The engine's side of the glue: what mio watches for curl, and curl's next deadline.
pub struct CurlIo {
    recorded: Arc<Mutex<Recorded>>,
    watched: HashMap<RawFd, Watch>,
    /// Sockets (re-)registered by the last `apply`: already armed.
    just_armed: Vec<RawFd>,
    deadline: Option<Instant>,
}

impl CurlIo {
    /// Install the socket and timer callbacks on `multi`.
    pub fn install(multi: &mut Multi) -> Result<CurlIo, curl::MultiError> {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let sockets = Arc::clone(&recorded);
        multi.socket_function(move |fd, what: SocketEvents, _| {
            let interest = if what.remove() {
                None
            } else if what.input_and_output() {
                Some(Interest::READABLE | Interest::WRITABLE)
            } else if what.output() {
                Some(Interest::WRITABLE)
            } else {
                Some(Interest::READABLE)
            };
            sockets.lock().unwrap().sockets.push((fd, interest));
        })?;
        let timer = Arc::clone(&recorded);
        multi.timer_function(move |after: Option<Duration>| {
            timer.lock().unwrap().timer = Some(after.map(|d| Instant::now() + d));
            true
        })?;
        Ok(CurlIo {
            recorded,
            watched: HashMap::new(),
            just_armed: Vec::new(),
            deadline: None,
        })
    }

    /// Carry out what the callbacks recorded. Call after every multi call that may have
    /// fired them.
    pub fn apply(&mut self, registry: &Registry) {
        let recorded = std::mem::take(&mut *self.recorded.lock().unwrap());
        self.just_armed.clear();
        if let Some(timer) = recorded.timer {
            self.deadline = timer;
        }
        for (fd, interest) in recorded.sockets {
            match interest {
                Some(interest) => {
                    self.watch(registry, fd, interest);
                    self.just_armed.push(fd);
                }
                None => {
                    if let Some(watch) = self.watched.get_mut(&fd) {
                        watch.wanted = false;
                    }
                }
            }
        }
    }

    fn watch(&mut self, registry: &Registry, fd: RawFd, interest: Interest) {
        let token = Token(SOCKET_TOKEN_BASE + fd as usize);
        let source = &mut SourceFd(&fd);
        let result = if self.watched.contains_key(&fd) {
            // MOD also re-arms: epoll reports the socket again if it is ready now.
            // A stale entry (fd closed and reused behind our back) makes MOD fail: ADD it.
            registry
                .reregister(source, token, interest)
                .or_else(|_| registry.register(source, token, interest))
        } else {
            registry
                .register(source, token, interest)
                .or_else(|_| registry.reregister(source, token, interest))
        };
        match result {
            Ok(()) => {
                self.watched.insert(
                    fd,
                    Watch {
                        interest,
                        wanted: true,
                    },
                );
            }
            Err(err) => {
                eprintln!("fetchmux: cannot watch socket {fd}: {err}");
                self.watched.remove(&fd);
            }
        }
    }

    /// After acting on `fd`: if curl still wants it, re-register so that a socket left
    /// readable (or writable) is reported again by the edge-triggered poll.
    pub fn rearm(&mut self, registry: &Registry, fd: RawFd) {
        if self.just_armed.contains(&fd) {
            return;
        }
        if let Some(&Watch {
            interest,
            wanted: true,
        }) = self.watched.get(&fd)
        {
            self.watch(registry, fd, interest);
        }
    }

    /// The fd of a socket token, if it is one.
    pub fn fd_of(token: Token) -> Option<RawFd> {
        token.0.checked_sub(SOCKET_TOKEN_BASE).map(|fd| fd as RawFd)
    }

    /// curl's events for a mio readiness event.
    pub fn events_for(event: &mio::event::Event) -> Events {
        let mut events = Events::new();
        events.input(event.is_readable() || event.is_read_closed());
        events.output(event.is_writable() || event.is_write_closed());
        events.error(event.is_error());
        events
    }

    /// When curl wants `timeout()` called next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The deadline was served by a `timeout()` call; curl re-arms it through the callback,
    /// or, if it did not, `refresh` asks it directly.
    pub fn clear_deadline(&mut self) {
        self.deadline = None;
    }

    /// Ask curl for its current timeout (used when no callback re-armed the timer).
    pub fn refresh(&mut self, multi: &Multi) {
        if self.deadline.is_none() {
            if let Ok(Some(after)) = multi.get_timeout() {
                self.deadline = Some(Instant::now() + after);
            }
        }
    }
}
