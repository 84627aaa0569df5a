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
    }
}
