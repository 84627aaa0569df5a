//! Slack timestamps (`"1700000000.000200"`); ISO dates come from `sluice_sdk::time`.

use sluice_sdk::time::num;
pub use sluice_sdk::time::{format_iso, parse_iso};

/// A Slack timestamp (`"1700000000.000200"`: seconds, then a per-channel sequence) as a
/// comparable pair; `None` if it is not one.
pub fn ts_key(ts: &str) -> Option<(i64, u64)> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    Some((num(secs)?, u64::try_from(num(frac)?).ok()?))
}

/// Whether Slack timestamp `a` is later than `b` (an unparsable one is never later).
pub fn ts_after(a: &str, b: &str) -> bool {
    matches!((ts_key(a), ts_key(b)), (Some(a), Some(b)) if a > b)
}

/// Seconds since the epoch of an HTTP `Date` (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's
/// IMF-fixdate); `None` for anything else.
pub fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, clock, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = MONTHS.iter().position(|m| m == month)? + 1;
    if day.len() != 2 || year.len() != 4 || clock.len() != 8 {
        return None;
    }
    parse_iso(&format!("{year}-{month:02}-{day}T{clock}Z"))
}

/// The Slack timestamp `"SECONDS.000000"` for seconds since the epoch.
pub fn ts_of(epoch: i64) -> String {
    format!("{epoch}.000000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_timestamps() {
        assert!(ts_after("1700000000.000200", "1700000000.000100"));
        assert!(ts_after("1700000001.000000", "1700000000.999999"));
        assert!(!ts_after("1700000000.000100", "1700000000.000100"));
        assert!(!ts_after("junk", "1700000000.000100"));
        assert_eq!(ts_key("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(ts_of(5), "5.000000");
        assert_eq!(
            parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 22:13:20 CET"), None);
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
