//! Stopping early: SIGINT, SIGTERM or a closed stdout fail everything unfinished as
//! `aborted`. Verified bodies being placed are waited for (moments) and reported as they
//! end; temporary files are removed, resumable partials kept.

use crate::api::Stop;
use crate::engine::downloads::State;
use crate::engine::requests::keep_if_resumable;
use crate::engine::Engine;
use crate::error::FetchError;

impl Engine {
    pub(super) fn on_signals(&mut self) {
        let signal = self.signals.pending().next();
        if let Some(signal) = signal {
            // apt stops every method with SIGINT, its idle ones too (the capability probe at
            // once): a line on apt's terminal is only worth it when transfers are cut.
            if !self.downloads.is_empty() {
                let notice = format!("fetchmux: caught signal {signal}, aborting transfers");
                self.report.notice(&notice);
            }
            self.stop = Some(Stop::Signal(signal));
            self.abort_all();
        }
    }

    /// Fail everything unfinished as `aborted`.
    pub(super) fn abort_all(&mut self) {
        // A file that reaches `dest` is reported `done`, never `aborted`.
        while self.placing > 0 {
            match self.placer_answers.recv() {
                Ok(answer) => self.on_placed(answer),
                Err(_) => break,
            }
        }
        for key in self.downloads.keys() {
            match &self.downloads[key].state {
                State::Active(_) => {
                    let (sink, _) = self.detach(key);
                    keep_if_resumable(sink);
                    self.stop_attempt(key, FetchError::Aborted);
                }
                State::Hashing(_) => self.stop_attempt(key, FetchError::Aborted),
                State::Queued | State::Placing(_) => self.fail(key, Some(FetchError::Aborted)),
            }
        }
        self.hashing_held = 0;
        self.hashing = 0;
    }
}
