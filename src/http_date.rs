//! HTTP dates (RFC 9110's IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`): the server's
//! `Last-Modified` turned into a file's mtime, and a file's mtime turned into the `If-Range`
//! validator of a partial that another program left. A leaf: libcurl parses (it knows every
//! obsolete form servers still send); formatting is a few lines of calendar arithmetic.

use std::ffi::CString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The instant an HTTP date names, if it is one (any form libcurl accepts).
pub fn parse(text: &str) -> Option<SystemTime> {
    let text = CString::new(text).ok()?;
    // SAFETY: a NUL-terminated string; the second argument is unused and may be NULL.
    let seconds = unsafe { curl_sys::curl_getdate(text.as_ptr(), std::ptr::null()) };
    // -1 is "not a date"; dates before 1970 are no file's mtime we would set.
    (seconds >= 0).then(|| UNIX_EPOCH + Duration::from_secs(seconds as u64))
}

/// `time` as an IMF-fixdate (whole seconds, UTC).
pub fn format(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// (year, month 1–12, day 1–31) of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_back() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(format(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        // The obsolete forms servers still send.
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), Some(t));
        assert_eq!(parse("not a date"), None);
        // A leap day, and the day after a century's Feb 28 (2100 is no leap year).
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(format(leap), "Thu, 29 Feb 2024 00:00:00 GMT");
        let century = UNIX_EPOCH + Duration::from_secs(4_107_542_400);
        assert_eq!(format(century), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(parse(&format(leap)), Some(leap));
    }
}
