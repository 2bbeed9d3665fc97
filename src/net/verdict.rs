//! The verdict on a finished attempt: curl's result and the response head turned into
//! success or one [`FetchError`], before the bytes are verified.

use crate::error::FetchError;
use crate::net::classify::{classify, proxy_denied, ProxyFacts};
use crate::net::transfer::{BodyMode, Transfer};

/// The verdict on a finished attempt, before the bytes are verified.
pub(crate) enum Verdict {
    /// A body to verify and place.
    Body,
    /// 304 to a conditional request: `dest` stays as it is.
    NotModified,
    /// 416 to a resume whose partial already holds the whole file: verify the partial.
    PartialComplete,
    /// 416 to a resume whose partial does not fit the file: drop it and start over.
    PartialStale,
    Failed(FetchError),
}

/// Judge curl's `result` for an attempt that received `transfer`'s response.
pub(crate) fn judge(
    transfer: &mut Transfer,
    result: Result<(), curl::Error>,
    status: u32,
    proxy: ProxyFacts,
) -> Verdict {
    let (conditional, size) = (transfer.conditional, transfer.size);
    let error = match (transfer.failure.take(), result) {
        (Some(failure), _) => failure,
        (None, Err(_)) if transfer.complete_early => return Verdict::Body,
        (None, Err(err)) => match transfer.socket_error.take() {
            Some(error) if err.is_couldnt_connect() => {
                FetchError::Connect(format!("cannot open a socket: {error}"))
            }
            _ => classify(&err, status, proxy),
        },
        (None, Ok(())) if !transfer.http => return Verdict::Body,
        (None, Ok(())) if status == 304 && conditional => return Verdict::NotModified,
        (None, Ok(())) if status == 206 && transfer.mode == BodyMode::Whole => {
            FetchError::HttpStatus { status }
        }
        (None, Ok(())) if (200..300).contains(&status) => return Verdict::Body,
        // libcurl does not fail a 407 when it had proxy credentials to offer.
        (None, Ok(())) if status == 407 && proxy.used => proxy_denied(407),
        (None, Ok(())) => FetchError::HttpStatus { status },
    };
    if let (BodyMode::Resume { offset }, Some(416)) = (transfer.mode, error.status()) {
        let total = transfer.head.content_range.and_then(|r| r.total);
        let expected = size.or(total);
        return if expected == Some(offset) {
            Verdict::PartialComplete
        } else {
            Verdict::PartialStale
        };
    }
    if let (BodyMode::Range(range), Some(416)) = (transfer.mode, error.status()) {
        return Verdict::Failed(FetchError::RangeNotSatisfied(format!(
            "the server answered 416 to bytes {}-{}",
            range.start, range.end
        )));
    }
    Verdict::Failed(error)
}
