//! Progress: a `progress` event for each transfer that asked for them and received bytes
//! since its last one, at most every [`PROGRESS_EVERY`]. Only watched transfers are walked
//! (at most `--max-parallel`), four times a second, and only while one is watched.

use std::time::{Duration, Instant};

use crate::api::Event;
use crate::engine::downloads::State;
use crate::engine::Engine;

/// Minimum time between two `progress` events of one transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

impl Engine {
    pub(super) fn report_progress(&mut self) {
        let now = Instant::now();
        if self.progress.next.is_none_or(|next| now < next) {
            return;
        }
        self.progress.next = Some(now + PROGRESS_EVERY);
        for &key in &self.progress.wanted {
            let download = &mut self.downloads[key];
            let State::Active(handle) = &mut download.state else {
                continue;
            };
            let transfer = handle.get_mut();
            let received = transfer.received();
            if received == transfer.reported {
                continue;
            }
            let request = download.job.request();
            self.report.emit(&Event::Progress {
                id: &request.id,
                bytes: received,
                total: request.size.or(transfer.head.content_length),
            });
            transfer.reported = received;
        }
    }
}
