//! HTTP dates (RFC 9110 §5.6.7), for a `Retry-After` given as a date rather than in seconds.
//!
//! ```
//! use ulm_handoff::httpdate::{format, parse};
//! assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
//! // The two obsolete forms a recipient must still accept.
//! assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
//! assert_eq!(parse("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
//! assert_eq!(format(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
//! ```
//!
//! No time-zone database is needed: HTTP dates are always GMT.

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Seconds since the Unix epoch of an HTTP date in IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) or asctime (`Sun Nov  6 08:49:37 1994`) form;
/// `None` if it is none of them, or names an impossible date or one before 1970. The weekday is
/// not checked against the date (a server that gets it wrong still means the date).
pub fn parse(s: &str) -> Option<u64> {
    let s = s.trim();
    let (weekday, rest) = s.split_once([',', ' '])?;
    if !weekday.chars().all(|c| c.is_ascii_alphabetic()) || weekday.len() < 3 {
        return None;
    }
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let (year, month, day, time) = if s.as_bytes()[weekday.len()] == b',' {
        match parts.as_slice() {
            // IMF-fixdate: DD Mon YYYY HH:MM:SS GMT
            [d, m, y, t, "GMT"] if weekday.len() == 3 && d.len() == 2 && y.len() == 4 => (y.parse().ok()?, month(m)?, d.parse().ok()?, *t),
            // RFC 850: DD-Mon-YY HH:MM:SS GMT; a two-digit year is taken as 19YY or 20YY, whichever
            // is not more than 50 years ahead (RFC 9110 §5.6.7).
            [dmy, t, "GMT"] => {
                let mut it = dmy.split('-');
                let (d, m, y) = (it.next()?, it.next()?, it.next()?);
                if it.next().is_some() || d.len() != 2 || y.len() != 2 {
                    return None;
                }
                let yy: u64 = y.parse().ok()?;
                let year = if yy + 2000 > current_year() + 50 { 1900 + yy } else { 2000 + yy };
                (year, month(m)?, d.parse().ok()?, *t)
            }
            _ => return None,
        }
    } else {
        // asctime: Mon DD HH:MM:SS YYYY (the day padded with a space)
        match parts.as_slice() {
            [m, d, t, y] if weekday.len() == 3 && y.len() == 4 => (y.parse().ok()?, month(m)?, d.parse().ok()?, *t),
            _ => return None,
        }
    };
    let mut hms = time.split(':');
    let (h, mi, se) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || [h, mi, se].iter().any(|x| x.len() != 2) {
        return None;
    }
    let (h, mi, se): (u64, u64, u64) = (h.parse().ok()?, mi.parse().ok()?, se.parse().ok()?);
    // 60 allows a leap second.
    if h > 23 || mi > 59 || se > 60 || year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3_600 + mi * 60 + se)
}

/// `secs` since the Unix epoch as an IMF-fixdate.
pub fn format(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[((days + 3) % 7) as usize];
    format!("{weekday}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT", MONTHS[(m - 1) as usize], rem / 3_600, rem % 3_600 / 60, rem % 60)
}

fn month(name: &str) -> Option<u64> {
    MONTHS.iter().position(|m| *m == name).map(|i| i as u64 + 1)
}

fn is_leap(y: u64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm), year >= 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn current_year() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    civil_from_days(now / 86_400).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_dates() {
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(1_445_412_480));
        assert_eq!(parse("Tue, 29 Feb 2028 12:00:00 GMT"), Some(1_835_438_400));
        assert_eq!(parse("  Wed, 21 Oct 2015 07:28:00 GMT "), Some(1_445_412_480), "surrounding space");
        // Every day over several leap cycles survives format → parse.
        for days in (0..40_000u64).step_by(13) {
            let secs = days * 86_400 + (days * 7_919) % 86_400;
            assert_eq!(parse(&format(secs)), Some(secs), "{}", format(secs));
        }
        assert_eq!(format(1_445_412_480), "Wed, 21 Oct 2015 07:28:00 GMT");
    }

    #[test]
    fn rejects_what_is_not_an_http_date() {
        for bad in [
            "",
            "2",
            "120",
            "Wed, 21 Oct 2015 07:28:00 UTC",  // only GMT
            "Wed, 21 Oct 2015 07:28 GMT",     // no seconds
            "Wed, 21 Okt 2015 07:28:00 GMT",  // not a month
            "Wed, 31 Nov 2015 07:28:00 GMT",  // no such day
            "Mon, 29 Feb 2027 07:28:00 GMT",  // not a leap year
            "Wed, 21 Oct 2015 24:00:00 GMT",  // no hour 24
            "Wed, 1 Oct 2015 07:28:00 GMT",   // IMF-fixdate pads the day
            "Wed, 21 Oct 1969 07:28:00 GMT",  // before the epoch
            "2015-10-21T07:28:00Z",           // ISO 8601 is not an HTTP date
            "Wed, 21-Oct-2015 07:28:00 GMT",  // RFC 850 has a two-digit year
            "Wed Oct 21 07:28:00 15",         // asctime has a four-digit year
            "Wed, 21 Oct 2015 07:28:00 GMT x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc850_two_digit_years_pick_the_nearer_century() {
        assert_eq!(parse("Wednesday, 21-Oct-15 07:28:00 GMT"), Some(1_445_412_480));
        // "70" is not more than 50 years ahead of now, so it is 2070; "99" would be, so it is 1999.
        assert_eq!(parse("Tuesday, 01-Jan-70 00:00:00 GMT"), Some(days_from_civil(2070, 1, 1) * 86_400));
        assert_eq!(parse("Friday, 31-Dec-99 23:59:59 GMT"), Some(946_684_799));
    }
}
