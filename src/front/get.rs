//! `fetchmux get`: the front for people. It downloads the URLs of its command line and of an
//! -i list (worked out whole before the first byte, `plan`), shows progress and a verdict per
//! file on stderr (`display`), ends with a summary of the failures, and exits like curl: 0
//! when every file is in place, 1 when any failed (docs/get.md). It reads no stdin (except
//! a list given as `-i -`, read by `plan` before the engine starts) and writes no stdout.

mod display;
mod list;
mod name;
mod plan;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::api::{About, Event, MirrorSet, Outcome, Request, Stop, Summary};
use crate::body::digest::Algorithm;
use crate::config::get::GetArgs;
use crate::error::{ErrorKind, FetchError};
use crate::front::{Front, Io, Line};
use crate::net::url::redacted_string;
use display::{size, Display};

/// How often the terminal's lines are redrawn without an event: indicatif drops a redraw
/// that comes within 100 ms of the previous one, so the last change before a quiet spell
/// (a transfer stalls, the final file ends) would stay undrawn until the next event.
const REFRESH: Duration = Duration::from_millis(250);

/// Failures listed one by one in the summary; beyond, a count.
const LISTED_FAILURES: usize = 50;

/// One file of the run, as the display knows it.
struct File {
    name: String,
    /// The bytes of the running attempt, and the size when known.
    received: u64,
    total: Option<u64>,
    expected_digest: bool,
    running: bool,
}

pub struct Get {
    mirrors: Vec<MirrorSet>,
    downloads: Vec<crate::api::Download>,
    files: Vec<File>,
    index: HashMap<String, usize>,
    display: Display,
    started: Instant,
    /// Counts for the total line and the summary.
    done: usize,
    cached: usize,
    running: usize,
    aborted: usize,
    /// Bytes of finished files plus those of running attempts.
    bytes: u64,
    /// Files whose size is not known yet (then the total line has no ETA).
    sizes_unknown: usize,
    failures: Vec<(usize, String)>,
}

impl Get {
    /// The front for `args`, or every problem with them (the run then stops with status 2
    /// before anything is downloaded).
    pub fn new(args: &GetArgs) -> Result<Get, Vec<String>> {
        let plan = plan::plan(args)?;
        let files: Vec<File> = plan
            .downloads
            .iter()
            .map(|d| File {
                name: d.dest.file_name().map_or_else(
                    || d.dest.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                ),
                received: 0,
                total: d.size,
                expected_digest: !d.hashes.is_empty(),
                running: false,
            })
            .collect();
        let index = plan
            .downloads
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        Ok(Get {
            sizes_unknown: files.iter().filter(|f| f.total.is_none()).count(),
            display: Display::for_stderr(files.len()),
            mirrors: plan.mirrors,
            downloads: plan.downloads,
            files,
            index,
            started: Instant::now(),
            done: 0,
            cached: 0,
            running: 0,
            aborted: 0,
            bytes: 0,
            failures: Vec::new(),
        })
    }

    /// A download is no longer running: its attempt's bytes leave `bytes` and its line goes.
    fn ended(&mut self, index: usize) {
        let file = &mut self.files[index];
        if !std::mem::take(&mut file.running) {
            return;
        }
        self.bytes -= file.received;
        file.received = 0;
        self.running = self.running.saturating_sub(1);
        if let Display::Terminal(t) = &mut self.display {
            t.ended(index);
        }
    }

    /// Entry `index` is finished with `size` bytes in place (0 when it failed): the total
    /// line counts them, and no longer waits for its size.
    fn settle(&mut self, index: usize, size: u64) {
        let file = &mut self.files[index];
        if file.total.replace(size).is_none() {
            self.sizes_unknown -= 1;
        }
        self.bytes += size;
    }

    fn failed(&mut self, index: usize, error: &FetchError, attempts: usize) {
        self.settle(index, 0);
        if error.kind() == ErrorKind::Aborted {
            // Stopped by a signal: counted, not listed one by one.
            self.aborted += 1;
            return;
        }
        let tries = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        // Messages may quote a URL: never with its password (as the other fronts).
        let why = redacted_string(format!("{}: {error}{tries}", error.kind()));
        self.display
            .line(&format!("✗ {}  {why}", self.files[index].name));
        self.failures.push((index, why));
    }

    fn redraw_total(&mut self) {
        let Display::Terminal(t) = &mut self.display else {
            return;
        };
        let finished = self.done + self.failures.len() + self.aborted;
        let mut message = format!("{finished}/{} files", self.files.len());
        if !self.failures.is_empty() {
            message += &format!(", {} failed", self.failures.len());
        }
        let hidden = t.hidden_running(self.running);
        if hidden > 0 {
            message += &format!(", {hidden} more running");
        }
        let length = (self.sizes_unknown == 0)
            .then(|| self.files.iter().filter_map(|f| f.total).sum::<u64>());
        t.total(self.bytes, length, message);
    }
}

impl Front for Get {
    fn reads_stdin(&self) -> bool {
        false
    }

    fn start(&mut self, _about: &About<'_>, io: &mut Io<'_>) {
        self.started = Instant::now();
        for (ticket, set) in self.mirrors.drain(..).enumerate() {
            io.submit(ticket as u64, Request::Mirrors(set));
        }
        for (ticket, download) in self.downloads.drain(..).enumerate() {
            io.submit(ticket as u64, Request::from(download));
        }
        self.redraw_total();
    }

    fn input(&mut self, _line: Line<'_>, _io: &mut Io<'_>) {}

    fn tick(&mut self, now: Instant, _io: &mut Io<'_>) -> Option<Instant> {
        let Display::Terminal(t) = &mut self.display else {
            return None;
        };
        t.refresh();
        Some(now + REFRESH)
    }

    fn notice(&mut self, text: &str) {
        self.display.line(text);
    }

    fn event(&mut self, event: &Event<'_>, _io: &mut Io<'_>) {
        match *event {
            // The engine's notice has told the person already.
            Event::MirrorAside { .. } | Event::MirrorBack { .. } => {}
            Event::Started { id, .. } => {
                let Some(&index) = self.index.get(id) else {
                    return;
                };
                let file = &mut self.files[index];
                self.bytes -= file.received;
                file.received = 0;
                if !std::mem::replace(&mut file.running, true) {
                    self.running += 1;
                }
                if let Display::Terminal(t) = &mut self.display {
                    t.started(index, &file.name, file.total);
                }
            }
            Event::Progress { id, bytes, total } => {
                let Some(&index) = self.index.get(id) else {
                    return;
                };
                let file = &mut self.files[index];
                self.bytes = self.bytes - file.received + bytes;
                file.received = bytes;
                if file.total.is_none() && total.is_some() {
                    file.total = total;
                    self.sizes_unknown -= 1;
                }
                if let Display::Terminal(t) = &mut self.display {
                    t.progress(index, bytes, file.total);
                }
            }
            Event::Done {
                id, ref outcome, ..
            } => {
                let Some(&index) = self.index.get(id) else {
                    return;
                };
                self.ended(index);
                let expected = self.files[index].expected_digest;
                let verdict = match *outcome {
                    Outcome::Fetched {
                        size: n, hashes, ..
                    } => {
                        self.settle(index, n);
                        format!("{}{}", size(n), self.digest(hashes, expected))
                    }
                    Outcome::Cached { size: n, hashes } => {
                        self.settle(index, n);
                        self.cached += 1;
                        let digest = self.digest(hashes, expected);
                        format!("{}{digest}  (already here, not fetched)", size(n))
                    }
                    Outcome::NotModified { .. } => {
                        self.settle(index, 0);
                        "not modified".to_string()
                    }
                };
                self.done += 1;
                self.display
                    .line(&format!("✓ {}  {verdict}", self.files[index].name));
            }
            Event::Failed {
                id,
                error,
                attempts,
            } => {
                let Some(&index) = self.index.get(id) else {
                    return;
                };
                self.ended(index);
                self.failed(index, error, attempts.len());
            }
            Event::Refused { id, error, .. } => {
                // The plan validated everything; the engine may still refuse what only it can
                // see (a `dest` that is a directory).
                if let Some(&index) = id.and_then(|id| self.index.get(id)) {
                    self.failed(index, error, 0);
                }
            }
        }
        self.redraw_total();
    }

    fn finish(&mut self, summary: &Summary, _io: &mut Io<'_>) -> i32 {
        if let Display::Terminal(t) = &mut self.display {
            t.clear();
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = summary.bytes as f64 / elapsed.max(0.001);
        let mut line = format!("{} files: {} done", self.files.len(), self.done);
        if self.cached > 0 {
            line += &format!(" ({} already here)", self.cached);
        }
        if !self.failures.is_empty() {
            line += &format!(", {} failed", self.failures.len());
        }
        if self.aborted > 0 {
            line += &format!(", {} not finished", self.aborted);
        }
        line += &format!(
            "; {} received in {elapsed:.1} s ({}/s)",
            size(summary.bytes),
            size(rate as u64)
        );
        eprintln!("{line}");
        if !self.failures.is_empty() {
            eprintln!("failed:");
            for (index, why) in self.failures.iter().take(LISTED_FAILURES) {
                eprintln!("  {}: {why}", self.files[*index].name);
            }
            if self.failures.len() > LISTED_FAILURES {
                eprintln!("  … and {} more", self.failures.len() - LISTED_FAILURES);
            }
        }
        match summary.stop {
            Some(Stop::Signal(signal)) => {
                eprintln!("stopped by signal {signal}");
                128 + signal
            }
            Some(Stop::OutputClosed) => 1,
            None if !self.failures.is_empty() || self.done < self.files.len() => 1,
            None => 0,
        }
    }
}

impl Get {
    /// The sha256 of a verdict: whole in plain lines (for logs and scripts), cut on a
    /// terminal; "as expected" when the user gave a digest that it matched.
    fn digest(&self, hashes: &[(Algorithm, String)], expected: bool) -> String {
        let Some((_, hex)) = hashes.iter().find(|(a, _)| *a == Algorithm::Sha256) else {
            return String::new();
        };
        let shown = if self.display.is_terminal() {
            &hex[..16.min(hex.len())]
        } else {
            hex.as_str()
        };
        let ellipsis = if shown.len() < hex.len() { "…" } else { "" };
        let checked = if expected { " (as expected)" } else { "" };
        format!("  sha256:{shown}{ellipsis}{checked}")
    }
}
