//! The response timeout (`--response-timeout`): an HTTP attempt whose request has gone out
//! (the connection made, TLS included) and that hears nothing back, no status line and no
//! body byte, within the limit fails as `timeout`, even with the low-speed guard off.
//!
//! libcurl has no such timeout for HTTP (`CURLOPT_SERVER_RESPONSE_TIMEOUT` is for FTP, IMAP,
//! POP3, SMTP and SSH), and its callbacks only run while curl is driven, which a silent
//! socket never does: so the deadline is on the loop's timer. One check per running
//! attempt (`policy::checks`), looked at when due: an attempt that has been answered is forgotten then; one
//! that is still connecting, or was answered later (a redirect's head), is looked at again
//! at its new deadline. Entries of attempts that ended are dropped when they come due (the
//! attempt's serial tells them apart from a later attempt on the same curl token).

use std::time::{Duration, Instant};

use crate::engine::downloads::State;
use crate::engine::Engine;
use crate::error::FetchError;

impl Engine {
    /// Fail the attempts that have waited out the response timeout; look again later at
    /// those that may still be within it.
    pub(super) fn check_response_timeouts(&mut self) {
        let now = Instant::now();
        while let Some((key, serial)) = self.response_checks.pop_due(now) {
            let Some(State::Active(handle)) = self.downloads.get(key).map(|d| &d.state) else {
                continue;
            };
            let transfer = handle.get_ref();
            if transfer.serial != serial || transfer.body_started() {
                continue;
            }
            let limit = transfer.response_timeout;
            // The later of "request sent" and "last header line heard" (None < Some).
            let sent = request_sent_after(handle.raw()).map(|t| transfer.started_at + t);
            let Some(since) = sent.max(transfer.heard_at) else {
                // Still connecting: --connect-timeout is curl's to enforce.
                self.response_checks.add(now + limit, key, serial);
                continue;
            };
            if since + limit > now {
                self.response_checks.add(since + limit, key, serial);
                continue;
            }
            let (sink, head) = self.detach(key);
            let error = FetchError::Timeout(format!(
                "no response within {:.1} s of sending the request (--response-timeout, or \
                 the front's own timeout setting)",
                limit.as_secs_f64()
            ));
            self.attempt_failed(key, error, sink, Some(&head));
        }
    }
}

/// How long after the attempt started its request went out (curl's pre-transfer time), or
/// `None` while it is still connecting.
fn request_sent_after(easy: *mut curl_sys::CURL) -> Option<Duration> {
    let mut seconds: f64 = 0.0;
    // SAFETY: a valid handle of a running transfer; the info is a double.
    let code = unsafe {
        curl_sys::curl_easy_getinfo(easy, curl_sys::CURLINFO_PRETRANSFER_TIME, &mut seconds)
    };
    (code == curl_sys::CURLE_OK && seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}
