//! Telling the front: events as they happen, and stdout; which transfers want progress.
//!
//! The front writes into the stdout buffer and may submit requests from any call; the
//! engine carries submissions out at set points of the loop (never in the middle of a
//! download's change of state).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use mio::{Registry, Token, Waker};

use crate::api::{About, Event, Request, Summary, Ticket};
use crate::front::{Front, Io, Line};
use crate::io::stdout::Output;

/// The front, stdout, and what the front has submitted but the engine not yet carried out.
pub(crate) struct Report {
    front: Box<dyn Front>,
    output: Output,
    submitted: Vec<(Ticket, Request)>,
}

impl Report {
    pub fn new(
        front: Box<dyn Front>,
        waker: Arc<Waker>,
        registry: &Registry,
        token: Token,
    ) -> Report {
        let output = Output::start(waker);
        output.watch_for_close(registry, token);
        Report {
            front,
            output,
            submitted: Vec::new(),
        }
    }

    pub fn start(&mut self, about: &About<'_>) {
        let mut io = Io::new(self.output.buffer(), &mut self.submitted);
        self.front.start(about, &mut io);
    }

    pub fn input(&mut self, line: Line<'_>) {
        let mut io = Io::new(self.output.buffer(), &mut self.submitted);
        self.front.input(line, &mut io);
    }

    pub fn emit(&mut self, event: &Event<'_>) {
        let mut io = Io::new(self.output.buffer(), &mut self.submitted);
        self.front.event(event, &mut io);
    }

    pub fn notice(&mut self, text: &str) {
        self.front.notice(text);
    }

    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        let mut io = Io::new(self.output.buffer(), &mut self.submitted);
        self.front.tick(now, &mut io)
    }

    /// The front's last words; everything written out; the exit status.
    pub fn finish(&mut self, summary: &Summary) -> i32 {
        let mut io = Io::new(self.output.buffer(), &mut self.submitted);
        let status = self.front.finish(summary, &mut io);
        self.output.close();
        status
    }

    pub fn has_submissions(&self) -> bool {
        !self.submitted.is_empty()
    }

    pub fn take_submissions(&mut self) -> Vec<(Ticket, Request)> {
        std::mem::take(&mut self.submitted)
    }

    pub fn flush(&mut self) {
        self.output.flush();
    }

    pub fn close(&mut self) {
        self.output.close();
    }

    pub fn on_stdout_event(&self, event: &mio::event::Event) {
        self.output.on_event(event);
    }

    pub fn output_closed(&self) -> bool {
        self.output.is_broken()
    }
}

/// Active downloads that asked for progress events, and when to next report them.
#[derive(Default)]
pub(crate) struct Progress {
    pub wanted: BTreeSet<usize>,
    pub next: Option<Instant>,
}

impl Progress {
    pub fn watch(&mut self, key: usize) {
        self.wanted.insert(key);
        self.next.get_or_insert_with(Instant::now);
    }

    pub fn forget(&mut self, key: usize) {
        self.wanted.remove(&key);
        if self.wanted.is_empty() {
            self.next = None;
        }
    }

    /// When the next report is due, while some transfer wants one.
    pub fn next_due(&self) -> Option<Instant> {
        self.next
    }
}
