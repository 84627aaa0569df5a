//! JSON's grammar (RFC 8259), checked without building anything: where a value or a string
//! that starts at a given byte ends, or the byte at which the text stops being JSON.
//!
//! It accepts exactly what serde_json accepts for a value it skips (`serde_json::value::RawValue`,
//! `IgnoredAny`): numbers by their grammar only (`1e400` is JSON), `\u` escapes by their four hex
//! digits only (lone surrogates are [`crate::record::lone_surrogate`]'s concern), any depth
//! of nesting (serde_json skips values without recursion). The input is `&str`, so UTF-8 needs
//! no check. Strings are crossed eight bytes at a time, as serde_json does.
//! `tests::agrees_with_serde_json` holds the two to the same answers.

/// Where the string starting at `b[i]` (a `"`) ends (the index after its closing quote), or
/// the index of the byte that makes it invalid (`b.len()` when it does not end).
pub(crate) fn string_end(b: &[u8], i: usize) -> Result<usize, usize> {
    string_end_escaped(b, i).map(|(end, _)| end)
}

/// [`string_end`], and whether the string holds an escape (a backslash).
pub(crate) fn string_end_escaped(b: &[u8], i: usize) -> Result<(usize, bool), usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    if b.get(i) != Some(&b'"') {
        return Err(i);
    }
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        while let Some(chunk) = b.get(j..j + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let w = u64::from_le_bytes(w);
            let quote = w ^ (LO * u64::from(b'"'));
            let backslash = w ^ (LO * u64::from(b'\\'));
            // The lowest set bit marks the first byte that is `"`, `\` or below 0x20 exactly
            // (borrows only disturb the bytes after it; bytes >= 0x80 never match).
            let hit = ((quote.wrapping_sub(LO) & !quote)
                | (backslash.wrapping_sub(LO) & !backslash)
                | (w.wrapping_sub(LO * 0x20) & !w))
                & HI;
            if hit != 0 {
                j += (hit.trailing_zeros() / 8) as usize;
                break;
            }
            j += 8;
        }
        match b.get(j) {
            Some(b'"') => return Ok((j + 1, escaped)),
            Some(b'\\') => match b.get(j + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                    escaped = true;
                    j += 2;
                }
                Some(b'u') => {
                    escaped = true;
                    for k in j + 2..j + 6 {
                        if !b.get(k).is_some_and(u8::is_ascii_hexdigit) {
                            return Err(k.min(b.len()));
                        }
                    }
                    j += 6;
                }
                _ => return Err((j + 1).min(b.len())),
            },
            Some(c) if *c < 0x20 => return Err(j),
            Some(_) => j += 1,
            None => return Err(b.len()),
        }
    }
}

/// Past JSON whitespace from `i`.
pub(crate) fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// Where the number starting at `b[i]` ends: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Result<usize, usize> {
    let digits = |mut i: usize| -> Result<usize, usize> {
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(i.min(b.len()));
        }
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        Ok(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i) {
        Some(b'0') => i + 1,
        _ => digits(i)?,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Ok(i)
}

/// Past `"key"` whitespace `:` whitespace, from the key's quote.
fn member_start(b: &[u8], i: usize) -> Result<usize, usize> {
    let i = ws(b, string_end(b, i)?);
    if b.get(i) != Some(&b':') {
        return Err(i.min(b.len()));
    }
    Ok(ws(b, i + 1))
}

/// Where the JSON value starting exactly at `b[i]` (no whitespace before it) ends, or the
/// index of the byte that makes it invalid (`b.len()` when the text ends early). `stack` is
/// scratch space for the open arrays and objects (its content on entry does not matter).
pub(crate) fn value_end(b: &[u8], mut i: usize, stack: &mut Vec<u8>) -> Result<usize, usize> {
    stack.clear();
    loop {
        // A value starts at `i`.
        i = match b.get(i) {
            Some(b'"') => string_end(b, i)?,
            Some(b'{') => {
                i = ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i + 1
                } else {
                    stack.push(b'{');
                    i = member_start(b, i)?;
                    continue;
                }
            }
            Some(b'[') => {
                i = ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i + 1
                } else {
                    stack.push(b'[');
                    continue;
                }
            }
            Some(b't') => literal(b, i, b"true")?,
            Some(b'f') => literal(b, i, b"false")?,
            Some(b'n') => literal(b, i, b"null")?,
            Some(b'-' | b'0'..=b'9') => number_end(b, i)?,
            Some(_) => return Err(i),
            None => return Err(b.len()),
        };
        // A value ended at `i`: close what it ends, or go on to the next one.
        loop {
            let Some(&open) = stack.last() else {
                return Ok(i);
            };
            i = ws(b, i);
            match (b.get(i), open) {
                (Some(b','), b'{') => {
                    i = member_start(b, ws(b, i + 1))?;
                    break;
                }
                (Some(b','), _) => {
                    i = ws(b, i + 1);
                    break;
                }
                (Some(b'}'), b'{') | (Some(b']'), b'[') => {
                    stack.pop();
                    i += 1;
                }
                _ => return Err(i.min(b.len())),
            }
        }
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, usize> {
    for (k, w) in word.iter().enumerate() {
        if b.get(i + k) != Some(w) {
            return Err((i + k).min(b.len()));
        }
    }
    Ok(i + word.len())
}

/// Whether `text` is exactly one JSON value, without whitespace around it.
#[cfg(test)]
pub(crate) fn is_value(text: &str) -> bool {
    value_end(text.as_bytes(), 0, &mut Vec::new()) == Ok(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_says(text: &str) -> bool {
        serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok_and(|r| r.get() == text)
    }

    /// A string's end found a chunk at a time is where a byte-by-byte reading finds it, with
    /// the byte that ends it (a quote, an escape, a control character) at every offset of
    /// the first few 8-byte chunks, after fillers at the edges of the comparisons (0x20, 0x7f,
    /// 0x80, 0xff).
    #[test]
    fn strings_end_where_a_byte_by_byte_reading_ends_them() {
        fn by_bytes(b: &[u8]) -> Result<usize, usize> {
            let mut j = 1;
            loop {
                match b.get(j) {
                    Some(b'"') => return Ok(j + 1),
                    Some(b'\\') if b.get(j + 1) == Some(&b'n') => j += 2,
                    Some(b'\\') => return Err((j + 1).min(b.len())),
                    Some(c) if *c < 0x20 => return Err(j),
                    Some(_) => j += 1,
                    None => return Err(b.len()),
                }
            }
        }
        for filler in [0x20u8, b'a', 0x7f, 0x80, 0xff] {
            for len in 0..40 {
                for (at, stop) in (0..=len).flat_map(|at| {
                    [
                        &b"\""[..],
                        &b"\\n"[..],
                        &b"\\x"[..],
                        &b"\x01"[..],
                        &b"\x1f"[..],
                    ]
                    .map(move |stop| (at, stop))
                }) {
                    let mut b = vec![b'"'];
                    b.extend(std::iter::repeat_n(filler, at));
                    b.extend_from_slice(stop);
                    b.extend(std::iter::repeat_n(filler, len - at));
                    b.push(b'"');
                    let want = by_bytes(&b);
                    assert_eq!(string_end(&b, 0), want, "{b:?}");
                }
            }
        }
    }

    #[test]
    fn values_and_not_values() {
        for ok in [
            "0",
            "-0",
            "-12.5e+3",
            "1E400",
            "1e-0",
            "true",
            "null",
            r#""""#,
            r#""a\"\\\/\b\f\n\r\t\u00e9\uD800z""#,
            "[]",
            "{}",
            "[ 1 , [ ] , { } ]",
            r#"{ "a" : { "b" : [ null , "x" ] } , "c" : 1 }"#,
            "\"é ☃ 😀 long enough to cross eight bytes more than once\"",
        ] {
            assert!(is_value(ok), "{ok}");
            assert!(serde_says(ok), "{ok}");
        }
        for bad in [
            "",
            " 1",
            "1 ",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nul",
            "True",
            r#""a"#,
            r#""\x""#,
            r#""\u12G4""#,
            "\"a\tb\"",
            "\"0123456789\u{1}abcdef\"",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\"}",
            "[1}",
            "{\"a\":1]",
            "[1] [2]",
            "[[[",
            "NaN",
        ] {
            assert!(!is_value(bad), "{bad:?}");
            assert!(!serde_says(bad), "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(is_value(&deep) && serde_says(&deep), "any depth");
    }

    /// Random texts made of JSON's own pieces, some valid, most broken: both checks agree on
    /// every one.
    #[test]
    fn agrees_with_serde_json() {
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"",
            "\"k\"",
            "\"v\\n\"",
            "\\",
            "\\u00",
            "\\u0041",
            "0",
            "1",
            "-",
            ".",
            "e",
            "+",
            "12",
            "true",
            "false",
            "null",
            "nul",
            "a",
            "é",
            "\u{1}",
            "\"x y z w v u t s\"",
            "{\"a\":",
            "[1,",
            "]]",
            "}}",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut valid, mut stack) = (0, Vec::new());
        for _ in 0..200_000 {
            let n = (next() % 12) as usize + 1;
            let text: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let ours = value_end(text.as_bytes(), 0, &mut stack) == Ok(text.len());
            assert_eq!(ours, serde_says(&text), "{text:?}");
            valid += usize::from(ours);
        }
        assert!(valid > 1_000, "the corpus holds valid texts too: {valid}");
    }
}
