//! One JSON value into one typed column: the rules by which a declared column takes a value.
//!
//! A value that does not fit is never changed to make it fit (no rounding, no truthiness): the
//! caller stores NULL in the column and keeps the value's JSON text in `_sluice_errors`.

use std::borrow::Cow;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// How a column stores its values; from the column's DuckDB/Parquet type name
/// ([`crate::Column::duck_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// BIGINT: integer literals, or strings of one, in canonical form (no leading zero, no
    /// `-0`), within `i64`.
    Integer,
    /// DOUBLE: number literals that are finite as `f64`, or strings of a number.
    Number,
    /// BOOLEAN: `true`/`false`, or the strings `"true"`/`"false"`.
    Boolean,
    /// VARCHAR: a string's text; any other value's JSON text.
    Text,
    /// TIMESTAMPTZ (µs, UTC): an RFC 3339 string; without an offset it is read as UTC; a
    /// date alone is its midnight UTC. Digits past the microsecond are truncated.
    Timestamp,
    /// DATE: a `YYYY-MM-DD` string (a 4-digit year, no sign).
    Date,
    /// JSON: the value's text, byte for byte.
    Json,
}

impl Kind {
    /// The kind of a column type name; unknown names store JSON text.
    pub fn of(duck_type: &str) -> Self {
        match duck_type {
            "BIGINT" => Self::Integer,
            "DOUBLE" => Self::Number,
            "BOOLEAN" => Self::Boolean,
            "VARCHAR" => Self::Text,
            "TIMESTAMPTZ" => Self::Timestamp,
            "DATE" => Self::Date,
            _ => Self::Json,
        }
    }
}

/// A value ready for its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed<'a> {
    Null,
    Integer(i64),
    Number(f64),
    Boolean(bool),
    /// Text for a VARCHAR column, or the JSON text of a JSON column.
    Text(Cow<'a, str>),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Micros(i64),
    /// Days since 1970-01-01.
    Days(i32),
    /// The value does not fit the column.
    Misfit,
}

impl Typed<'_> {
    /// The same value, owning its text.
    pub fn into_static(self) -> Typed<'static> {
        match self {
            Typed::Text(t) => Typed::Text(Cow::Owned(t.into_owned())),
            Typed::Null => Typed::Null,
            Typed::Integer(v) => Typed::Integer(v),
            Typed::Number(v) => Typed::Number(v),
            Typed::Boolean(v) => Typed::Boolean(v),
            Typed::Micros(v) => Typed::Micros(v),
            Typed::Days(v) => Typed::Days(v),
            Typed::Misfit => Typed::Misfit,
        }
    }
}

/// Types `raw`, the text of one JSON value (as the record carried it), for a column of `kind`.
pub fn typed(raw: &str, kind: Kind) -> Typed<'_> {
    // Values split from a record never have surrounding whitespace: trimmed only when needed.
    let b = raw.as_bytes();
    let raw = match (b.first(), b.last()) {
        (Some(f), Some(l)) if !f.is_ascii_whitespace() && !l.is_ascii_whitespace() => raw,
        _ => raw.trim(),
    };
    if raw == "null" {
        return Typed::Null;
    }
    match kind {
        Kind::Json => Typed::Text(Cow::Borrowed(raw)),
        Kind::Text => match string(raw) {
            Some(Ok(text)) => Typed::Text(text),
            Some(Err(())) => Typed::Misfit,
            None => Typed::Text(Cow::Borrowed(raw)),
        },
        Kind::Integer => match string(raw) {
            Some(Ok(s)) => integer(&s),
            Some(Err(())) => Typed::Misfit,
            None => integer(raw),
        },
        Kind::Number => match string(raw) {
            Some(Ok(s)) => number(s.trim()),
            Some(Err(())) => Typed::Misfit,
            None => number(raw),
        },
        Kind::Boolean => match raw {
            "true" | "\"true\"" => Typed::Boolean(true),
            "false" | "\"false\"" => Typed::Boolean(false),
            _ => Typed::Misfit,
        },
        Kind::Timestamp => string(raw)
            .and_then(Result::ok)
            .and_then(|s| timestamp_micros(&s))
            .map_or(Typed::Misfit, Typed::Micros),
        Kind::Date => string(raw)
            .and_then(Result::ok)
            .and_then(|s| date_days(&s))
            .map_or(Typed::Misfit, Typed::Days),
    }
}

/// The text of a JSON string literal, unescaped; `None` when `raw` is not a string,
/// `Some(Err(()))` when it is one that does not decode (a lone surrogate escape).
fn string(raw: &str) -> Option<Result<Cow<'_, str>, ()>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Ok(Cow::Borrowed(inner)));
    }
    Some(
        serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .map_err(|_| ()),
    )
}

/// A finite number in JSON's number syntax (RFC 8259 §6: no `NaN`, `inf`, `+1` or `.5`, and
/// nothing that overflows `f64`, like `1e400`).
fn number(text: &str) -> Typed<'static> {
    let json_syntax = text
        .strip_prefix('-')
        .unwrap_or(text)
        .starts_with(|c: char| c.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b".-+eE".contains(&b));
    match text.parse::<f64>() {
        Ok(f) if json_syntax && f.is_finite() => Typed::Number(f),
        _ => Typed::Misfit,
    }
}

/// `-?[0-9]+` within `i64`.
///
/// Canonical decimal only (no leading zero, no `-0`): `"007"` is an identifier, and storing it
/// as 7 would change it.
fn integer(text: &str) -> Typed<'static> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !((digits.len() > 1 && digits.starts_with('0')) || text == "-0");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !canonical {
        return Typed::Misfit;
    }
    text.parse().map_or(Typed::Misfit, Typed::Integer)
}

/// Microseconds since the epoch of an RFC 3339 date-time (RFC 3339 §5.6; the `time` crate's
/// parser: any date/time separator, `Z` in either case), of the same without an offset (read as
/// UTC), or of a full date alone (its midnight UTC). A leap second (`23:59:60`, RFC 3339 §5.7)
/// is `None`: Parquet and DuckDB timestamps have no 61st second, and the `time` crate would read
/// it as `23:59:59.999999999`, a value the record did not hold (it stays in `_sluice_errors`).
pub fn timestamp_micros(s: &str) -> Option<i64> {
    if let Some(micros) = utc_seconds_micros(s) {
        return Some(micros);
    }
    if s.get(16..19) == Some(":60") {
        return None;
    }
    let at = match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => t,
        Err(_) => local_date_time(s)
            .or_else(|| Some(date(s)?.midnight()))?
            .assume_utc(),
    };
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1000)).ok()
}

/// The common case of [`timestamp_micros`] read without a parser: exactly
/// `YYYY-MM-DDTHH:MM:SSZ` (what GitHub, and most APIs, send), every field in range (the day
/// within its month, no leap second). Anything else is `None`, and the caller reads it with
/// the general parser, which decides.
fn utc_seconds_micros(s: &str) -> Option<i64> {
    let b: &[u8; 20] = s.as_bytes().try_into().ok()?;
    if b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000)
}

/// `YYYY-MM-DD[T| ]HH:MM:SS[.fraction]`.
fn local_date_time(s: &str) -> Option<PrimitiveDateTime> {
    if !four_digit_year(s) {
        return None;
    }
    let format = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    match s.as_bytes().get(10) {
        Some(b'T') => PrimitiveDateTime::parse(s, format).ok(),
        Some(b't' | b' ') => {
            let mut t = s.to_string();
            t.replace_range(10..11, "T");
            PrimitiveDateTime::parse(&t, format).ok()
        }
        _ => None,
    }
}

/// Whether `s` starts `YYYY-` (RFC 3339's `date-fullyear` is 4 digits: no sign, no more digits,
/// which the `time` crate's `[year]` would take).
fn four_digit_year(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 4 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

fn date(s: &str) -> Option<Date> {
    if !four_digit_year(s) {
        return None;
    }
    Date::parse(s, format_description!("[year]-[month]-[day]")).ok()
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn date_days(s: &str) -> Option<i32> {
    let epoch = Date::from_calendar_date(1970, time::Month::January, 1).ok()?;
    i32::try_from((date(s)? - epoch).whole_days()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_fit_only_when_exact() {
        assert_eq!(typed("42", Kind::Integer), Typed::Integer(42));
        assert_eq!(typed(" -7 ", Kind::Integer), Typed::Integer(-7));
        assert_eq!(typed("\"12\"", Kind::Integer), Typed::Integer(12));
        for bad in [
            "1.5",
            "1e3",
            "true",
            "\"x\"",
            "18446744073709551616",
            "-9223372036854775809",
            "[1]",
            "\"\"",
            "\"-\"",
        ] {
            assert_eq!(typed(bad, Kind::Integer), Typed::Misfit, "{bad}");
        }
        assert_eq!(typed("null", Kind::Integer), Typed::Null);
        for changed in ["\"007\"", "\"-0\"", "\"00\"", "-0", "\"+1\""] {
            assert_eq!(typed(changed, Kind::Integer), Typed::Misfit, "{changed}");
        }
        assert_eq!(typed("\"0\"", Kind::Integer), Typed::Integer(0));
        assert_eq!(typed("\"-10\"", Kind::Integer), Typed::Integer(-10));
    }

    #[test]
    fn numbers_booleans_and_text() {
        assert_eq!(typed("2.5", Kind::Number), Typed::Number(2.5));
        assert_eq!(
            typed("18446744073709551616", Kind::Number),
            Typed::Number(18446744073709551616.0)
        );
        assert_eq!(typed("\" 2.5 \"", Kind::Number), Typed::Number(2.5));
        assert_eq!(typed("1e400", Kind::Number), Typed::Misfit);
        assert_eq!(typed("\"lots\"", Kind::Number), Typed::Misfit);
        for not_finite in [
            "\"NaN\"",
            "\"inf\"",
            "\"-infinity\"",
            "\"1e400\"",
            "\"\\u0031e400\"",
            "\"+1\"",
            "\".5\"",
        ] {
            assert_eq!(
                typed(not_finite, Kind::Number),
                Typed::Misfit,
                "{not_finite}"
            );
        }
        assert_eq!(typed("\"\\u0031.5\"", Kind::Number), Typed::Number(1.5));
        assert_eq!(
            typed("\"\\ud800\"", Kind::Text),
            Typed::Misfit,
            "a lone surrogate is not text"
        );
        assert_eq!(typed("true", Kind::Number), Typed::Misfit);
        assert_eq!(typed("true", Kind::Boolean), Typed::Boolean(true));
        assert_eq!(typed("\"false\"", Kind::Boolean), Typed::Boolean(false));
        assert_eq!(typed("1", Kind::Boolean), Typed::Misfit);
        assert_eq!(typed("\"yes\"", Kind::Boolean), Typed::Misfit);
        assert_eq!(typed("7", Kind::Text), Typed::Text("7".into()));
        assert_eq!(
            typed("{\"o\":1}", Kind::Text),
            Typed::Text("{\"o\":1}".into())
        );
        assert_eq!(
            typed("\"a\\nb\\u00e9\"", Kind::Text),
            Typed::Text("a\nbé".into())
        );
        assert_eq!(
            typed("[1.50, 1e400]", Kind::Json),
            Typed::Text("[1.50, 1e400]".into())
        );
    }

    #[test]
    fn the_quick_utc_form_reads_as_the_parser_does() {
        // Every day of four years (leap and not, a century that is not a leap year, one that
        // is), invalid days and months, and times at their bounds: the quick reading agrees
        // with the time crate's RFC 3339 parser, or declines (and the parser decides).
        let mut seen = 0;
        for year in [1600, 1900, 1969, 1970, 2000, 2023, 2024, 2100, 9999, 0] {
            for month in 0..=13 {
                for day in 0..=32 {
                    for (h, m, sec) in [
                        (0, 0, 0),
                        (23, 59, 59),
                        (12, 5, 9),
                        (24, 0, 0),
                        (0, 60, 0),
                        (0, 0, 60),
                    ] {
                        let s = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}Z");
                        let parsed = OffsetDateTime::parse(&s, &Rfc3339)
                            .ok()
                            .filter(|_| sec != 60)
                            .map(|t| (t.unix_timestamp_nanos() / 1000) as i64);
                        let quick = utc_seconds_micros(&s);
                        assert!(
                            quick.is_none() || quick == parsed,
                            "{s}: {quick:?} vs {parsed:?}"
                        );
                        if parsed.is_some() {
                            assert_eq!(quick, parsed, "{s}: the common form is read quickly");
                            seen += 1;
                        }
                        assert_eq!(timestamp_micros(&s), parsed, "{s}");
                    }
                }
            }
        }
        assert!(seen > 10_000, "{seen}");
        for other in [
            "2024-01-01t00:00:00Z",
            "2024-01-01T00:00:00z",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01T00:00:0AZ",
            "+024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.5Z",
        ] {
            assert_eq!(utc_seconds_micros(other), None, "{other}");
        }
    }

    #[test]
    fn timestamps_and_dates() {
        let t = |s: &str| {
            typed(&format!("\"{s}\""), Kind::Timestamp)
                .clone()
                .into_static()
        };
        assert_eq!(t("1970-01-01T00:00:01Z"), Typed::Micros(1_000_000));
        assert_eq!(t("1970-01-01t00:00:01z"), Typed::Micros(1_000_000));
        assert_eq!(t("1970-01-01T01:00:00+01:00"), Typed::Micros(0));
        assert_eq!(t("1970-01-01 00:00:00.000001999Z"), Typed::Micros(1));
        assert_eq!(t("1970-01-01T00:00:02"), Typed::Micros(2_000_000));
        assert_eq!(t("1970-01-01 00:00:02.5"), Typed::Micros(2_500_000));
        assert_eq!(t("1970-01-02"), Typed::Micros(86_400_000_000));
        assert_eq!(t("1969-12-31T23:59:59.9999995Z"), Typed::Micros(-1));
        assert_eq!(t("not a time"), Typed::Misfit);
        // A leap second is valid RFC 3339 but no timestamp: kept as it was, not moved.
        assert_eq!(t("2016-12-31T23:59:60Z"), Typed::Misfit);
        assert_eq!(t("2016-12-31T23:59:60.5+00:00"), Typed::Misfit);
        assert_eq!(t("2016-12-31 23:59:60"), Typed::Misfit);
        assert_eq!(
            t("2016-12-31T23:59:59Z"),
            Typed::Micros(1_483_228_799_000_000)
        );
        assert_eq!(typed("12", Kind::Timestamp), Typed::Misfit);
        assert_eq!(typed("\"1970-01-11\"", Kind::Date), Typed::Days(10));
        assert_eq!(typed("\"1969-12-31\"", Kind::Date), Typed::Days(-1));
        assert_eq!(typed("\"2024-02-30\"", Kind::Date), Typed::Misfit);
        for signed in [
            "+2020-01-01",
            "-2020-01-01",
            "+2020-01-01T00:00:00",
            "12020-01-01",
        ] {
            assert_eq!(
                typed(&format!("\"{signed}\""), Kind::Date),
                Typed::Misfit,
                "{signed}"
            );
            assert_eq!(
                typed(&format!("\"{signed}\""), Kind::Timestamp),
                Typed::Misfit,
                "{signed}"
            );
        }
    }
}
