//! Dates without a date crate: ISO 8601 to and from seconds since the Unix epoch, and the
//! host's clock ([`now`]).

/// The host's clock: milliseconds since the Unix epoch, UTC (`clock.now`). Wall-clock time,
/// not monotonic; for an incremental window's upper bound use
/// [`crate::SyncRequest::started_at`], which is the same for the whole run.
pub fn now() -> u64 {
    crate::bindings::sluice::connector::clock::now()
}

/// Seconds since the Unix epoch of an ISO 8601 date or date-time: `2024-05-01`,
/// `2024-05-01T10:00:00Z`, `2024-05-01T10:00:00.123+02:00`, `2024-05-01 10:00` (UTC when no
/// offset is given). Fractions of a second are dropped.
pub fn parse_iso(text: &str) -> Option<i64> {
    let s = text.trim();
    if !s.is_ascii() {
        return None;
    }
    let date = s.get(..10)?;
    let (y, m, d) = (num(&date[..4])?, num(&date[5..7])?, num(&date[8..10])?);
    if &date[4..5] != "-" || &date[7..8] != "-" || !(1..=12).contains(&m) || !(1..=31).contains(&d)
    {
        return None;
    }
    let days = days_from_civil(y, m, d);
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(days * 86_400);
    }
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (h, mi) = (num(rest.get(..2)?)?, num(rest.get(3..5)?)?);
    if rest.get(2..3)? != ":" || h > 23 || mi > 59 {
        return None;
    }
    let mut rest = &rest[5..];
    let mut sec = 0;
    if let Some(r) = rest.strip_prefix(':') {
        sec = num(r.get(..2)?)?;
        if sec > 60 {
            return None;
        }
        rest = &r[2..];
    }
    if let Some(r) = rest.strip_prefix(['.', ',']) {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = &rest[1..];
            let (oh, om) = match r.len() {
                5 if &r[2..3] == ":" => (num(&r[..2])?, num(&r[3..])?),
                4 => (num(&r[..2])?, num(&r[2..])?),
                2 => (num(r)?, 0),
                _ => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) for seconds since the Unix epoch: GitHub's own format, so
/// such strings compare in time order.
pub fn format_iso(epoch: i64) -> String {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A non-empty run of ASCII digits as a number.
pub fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month (1–12) and day (1–31) of `z` days since 1970-01-01 in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`, http://howardhinnant.github.io/date_algorithms.html).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `cursor` (seconds since the Unix epoch), or the host's clock now when `cursor` is later.
///
/// An incremental cursor taken from upstream data (the newest `updated_at` seen) must not pass
/// the present: one record dated in the future (a broken clock, a hostile answer) would move
/// the cursor past every record written until then, and each later run would skip them while
/// succeeding. Held at now, the future record is only read again (a `since` filter is
/// inclusive; the primary key deduplicates). Logs a warning naming `subject` when it clamps.
pub fn clamp_to_now(cursor: i64, subject: &str) -> i64 {
    let now = i64::try_from(now() / 1000).unwrap_or(i64::MAX);
    if cursor <= now {
        return cursor;
    }
    crate::log::warn(
        "a cursor value from the upstream is in the future; held at the host's clock",
        &[("subject", subject), ("value", &format_iso(cursor))],
    );
    now
}

/// [`clamp_to_now`] for an ISO 8601 cursor (the newest `updated_at` seen): `value` itself, or
/// now as `YYYY-MM-DDTHH:MM:SSZ` when it is later; a value that does not parse stays as it is.
pub fn clamp_iso_to_now(value: &str, subject: &str) -> String {
    match parse_iso(value) {
        Some(at) => match clamp_to_now(at, subject) {
            held if held < at => format_iso(held),
            _ => value.to_string(),
        },
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse_iso("1970-01-01"), Some(0));
        assert_eq!(parse_iso("2024-02-29T12:30:05Z"), Some(1_709_209_805));
        assert_eq!(format_iso(1_709_209_805), "2024-02-29T12:30:05Z");
        assert_eq!(
            parse_iso("2024-02-29T14:30:05.250+02:00"),
            Some(1_709_209_805)
        );
        assert_eq!(parse_iso("2024-02-29 12:30"), Some(1_709_209_800));
        assert_eq!(parse_iso("2024-13-01"), None);
        assert_eq!(parse_iso("yesterday"), None);
        assert_eq!(parse_iso("2024-01-01T10:00:00 junk"), None);
    }
}
