//! How long a download waits before a further attempt, once each of its sources was tried.
//!
//! Exponential backoff with jitter (so that many downloads failing together do not come back
//! together), never more than `--max-retry-wait`; and the parsing of `Retry-After`. The wait
//! is a timer in the event loop; nothing blocks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first backoff step; each further transient failure doubles it.
const BASE: Duration = Duration::from_millis(500);

/// The wait before the retry that follows the `failures`-th transient failure (1-based).
/// A server's `Retry-After` is not part of it: the engine keeps that as a not-before time
/// of the source that sent it (see `engine::job::Job::not_before`).
pub fn delay(failures: u32, max_wait: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let backoff = BASE.saturating_mul(1 << exponent).min(max_wait);
    // Jitter: somewhere in [backoff/2, backoff].
    backoff / 2 + backoff.mul_f64(0.5 * jitter())
}

/// `Retry-After: 120` or `Retry-After: Fri, 31 Dec 1999 23:59:59 GMT` → how long from now
/// (the engine caps it at `--max-retry-wait`).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = std::ffi::CString::new(value).ok()?;
    // SAFETY: a NUL-terminated string; curl_getdate does not keep the pointer.
    let when = unsafe { curl_sys::curl_getdate(date.as_ptr(), std::ptr::null()) };
    if when < 0 {
        return None;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs((when as u64).saturating_sub(now)))
}

/// A number in [0, 1): xorshift over the clock, good enough to spread retries.
fn jitter() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
        );
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let max = Duration::from_secs(30);
        for _ in 0..100 {
            let first = delay(1, max);
            assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
            let fourth = delay(4, max);
            assert!(fourth >= Duration::from_secs(2) && fourth <= Duration::from_secs(4));
            assert!(delay(30, max) <= max);
        }
    }

    #[test]
    fn retry_after_is_parsed_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT"),
            Some(Duration::ZERO)
        );
        let soon = SystemTime::now() + Duration::from_secs(100);
        let secs = soon.duration_since(UNIX_EPOCH).unwrap().as_secs();
        // Format an IMF-fixdate by hand: 1970-01-01 was a Thursday.
        let date = imf_fixdate(secs);
        let parsed = parse_retry_after(&date).unwrap();
        assert!(
            parsed >= Duration::from_secs(95) && parsed <= Duration::from_secs(100),
            "{date}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    fn imf_fixdate(secs: u64) -> String {
        let days = secs / 86400;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
        // Civil from days (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "{weekday}, {d:02} {} {year} {h:02}:{m:02}:{s:02} GMT",
            months[(month - 1) as usize]
        )
    }
}
