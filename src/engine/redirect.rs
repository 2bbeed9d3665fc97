//! Redirects the engine follows itself: an attempt that carries headers or credentials
//! (`net::handle::follows_itself`) and ends on a redirect continues at the target, in the
//! same slot and as the same attempt, with its headers and credentials only where the target
//! has the attempt's first origin (`net::redirect` has the rules, `net::handle::redirect`
//! the setting of each hop). Which credentials an attempt has is decided here too.

use crate::api::{Credentials, Download, Source};
use crate::engine::downloads::State;
use crate::engine::Engine;
use crate::error::FetchError;
use crate::net::handle;
use crate::net::redirect;
use crate::policy::mirrors::Mirrors;

/// The credentials of an attempt of `request`: its own `auth`, else its mirror set's.
pub(super) fn credentials<'a>(
    request: &'a Download,
    mirrors: &'a Mirrors,
) -> Option<&'a Credentials> {
    match (&request.auth, &request.source) {
        (Some(auth), _) => Some(auth),
        (None, Source::Mirror { set, .. }) => mirrors.auth(set),
        (None, Source::Urls(_)) => None,
    }
}

impl Engine {
    /// If the attempt of `key` (curl says `result`, with HTTP `status`) ended on a redirect
    /// that the engine follows, continue it at the target and say so. A target it may not
    /// follow becomes the attempt's failure instead (`false`: the attempt ends).
    pub(super) fn follow_redirect(
        &mut self,
        key: usize,
        result: &Result<(), curl::Error>,
        status: u32,
    ) -> bool {
        let download = &mut self.downloads[key];
        let State::Active(handle) = &mut download.state else {
            return false;
        };
        let manual = handle.get_ref().hops.manual;
        if result.is_err() || !manual || !redirect::is_redirect(status) {
            return false;
        }
        let Some(target) = redirect::target(handle.raw()) else {
            // A redirect without a Location: an answer we cannot use (`http_status`).
            return false;
        };
        let job = &download.job;
        let transfer = handle.get_mut();
        let from = transfer.hops.at.as_deref().unwrap_or(&job.url);
        let max = self.options.max_redirects;
        let same_origin =
            match redirect::check(&job.url, from, &target, transfer.hops.followed, max) {
                Ok(same_origin) => same_origin,
                Err(error) => {
                    transfer.failure.get_or_insert(error);
                    return false;
                }
            };
        transfer.hops.followed += 1;
        let State::Active(handle) = std::mem::replace(&mut download.state, State::Queued) else {
            unreachable!("checked above");
        };
        let removed = self.multi.remove2(handle);
        self.curl_io.apply(self.poll.registry());
        let mut easy = removed.unwrap_or_else(|err| panic!("curl lost a transfer: {err}"));
        let auth = credentials(job.request(), &self.mirrors);
        let configured = handle::redirect(&mut easy, job.request(), auth, &target, same_origin);
        easy.get_mut().hops.at = Some(target);
        // Back into curl even when a setting failed: the attempt then ends as a setup error
        // through the usual path, which takes it out again before curl runs it.
        let added = self.multi.add2(easy);
        self.curl_io.apply(self.poll.registry());
        let mut handle = added.unwrap_or_else(|err| panic!("curl refused a transfer: {err}"));
        handle.set_token(key).expect("setting a curl token");
        if let Err(err) = configured {
            handle
                .get_mut()
                .failure
                .get_or_insert(FetchError::InvalidRequest(format!(
                    "cannot set up the redirected transfer: {err}"
                )));
            self.downloads[key].state = State::Active(handle);
            return false;
        }
        self.downloads[key].state = State::Active(handle);
        true
    }
}
