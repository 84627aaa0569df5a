//! HubSpot's instants: ISO 8601 with milliseconds in JSON (`2024-05-01T10:00:00.123Z`), epoch
//! milliseconds in search filters, and the HTTP `Date` header (seconds).

use sluice_sdk::time::{format_iso, parse_iso};

/// Epoch milliseconds of an ISO 8601 date-time, keeping up to three fraction digits
/// (`2024-05-01T10:00:00.123Z` → 1714557600123). `None` if it does not parse.
pub fn parse_ms(text: &str) -> Option<i64> {
    let secs = parse_iso(text)?;
    // The first three fraction digits, padded with zeros (`.1` is 100 ms).
    let fraction = text.split_once(['.', ',']).map_or("", |(_, rest)| rest);
    let mut millis = 0;
    let mut digits = fraction.bytes().take_while(u8::is_ascii_digit);
    for _ in 0..3 {
        millis = millis * 10 + digits.next().map_or(0, |d| i64::from(d - b'0'));
    }
    Some(secs * 1000 + millis)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for epoch milliseconds: HubSpot's own format.
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let iso = format_iso(secs);
    format!("{}.{:03}Z", &iso[..iso.len() - 1], ms.rem_euclid(1000))
}

/// `YYYY-MM-DD` for epoch milliseconds.
pub fn format_date(ms: i64) -> String {
    format_ms(ms)[..10].to_string()
}

/// Epoch milliseconds of an HTTP `Date` (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's
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
    Some(parse_iso(&format!("{year}-{month:02}-{day}T{clock}Z"))? * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip() {
        assert_eq!(
            parse_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_ms("2023-11-14T22:13:20.1Z"), Some(1_700_000_000_100));
        assert_eq!(parse_ms("2023-11-14T22:13:20.12Z"), Some(1_700_000_000_120));
        assert_eq!(
            parse_ms("2023-11-14T22:13:20.009Z"),
            Some(1_700_000_000_009)
        );
        assert_eq!(parse_ms("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(
            parse_ms("2023-11-14T22:13:20.123456Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_ms("nope"), None);
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_ms(1_700_000_000_005), "2023-11-14T22:13:20.005Z");
        assert_eq!(format_date(1_700_000_000_123), "2023-11-14");
        assert_eq!(
            parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 22:13:20 CET"), None);
    }
}
