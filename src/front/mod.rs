//! Fronts: the protocols spoken over the one engine. A front turns its input into typed
//! requests ([`crate::api::Request`]) and the engine's events into its output, and decides
//! the exit status; the engine never imports a front. Adding a protocol (apt's method
//! protocol, urlgrabber's, a human command line) is a new file here and a line in `main.rs`.

pub mod apt;
pub mod get;
pub mod jsonl;
pub mod urlgrabber;

use std::time::Instant;

use crate::api::{About, Event, Request, Summary, Ticket};

pub use crate::io::stdin::Line;

/// What a front may do when the engine calls it: write to stdout, and submit requests
/// (carried out by the engine as soon as the call returns, in order).
pub struct Io<'a> {
    out: &'a mut Vec<u8>,
    submitted: &'a mut Vec<(Ticket, Request)>,
}

impl<'a> Io<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>, submitted: &'a mut Vec<(Ticket, Request)>) -> Io<'a> {
        Io { out, submitted }
    }

    /// Bytes for stdout; the engine hands them to the writer thread once per loop turn.
    pub fn stdout(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Ask the engine for `request`; a refusal comes back as [`Event::Refused`] with
    /// `ticket`.
    pub fn submit(&mut self, ticket: Ticket, request: Request) {
        self.submitted.push((ticket, request));
    }
}

/// One protocol over the engine. The engine calls `start` once, then `input` for every
/// line of stdin (when [`Front::reads_stdin`]) and `event` for everything that happens,
/// `tick` once per loop turn, and `finish` once at the end.
pub trait Front {
    /// Whether the requests come on stdin, one unit per line. A front that says no submits
    /// everything from `start` and `event`; the run ends when nothing is left to do.
    fn reads_stdin(&self) -> bool {
        true
    }

    /// The engine is ready.
    fn start(&mut self, about: &About<'_>, io: &mut Io<'_>);

    /// One line of stdin.
    fn input(&mut self, line: Line<'_>, io: &mut Io<'_>);

    /// Something happened to a download or a submission.
    fn event(&mut self, event: &Event<'_>, io: &mut Io<'_>);

    /// A line for the person or log on stderr from the engine (a signal caught). A front that
    /// draws on the terminal prints it above its drawing, which a plain write would break.
    fn notice(&mut self, text: &str) {
        eprintln!("{text}");
    }

    /// Once per loop turn, for fronts that draw; returns when the front wants to be called
    /// again at the latest (the loop wakes up for it).
    fn tick(&mut self, _now: Instant, _io: &mut Io<'_>) -> Option<Instant> {
        None
    }

    /// The run is over: last words, and the process's exit status.
    fn finish(&mut self, summary: &Summary, io: &mut Io<'_>) -> i32;
}
