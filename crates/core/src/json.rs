//! A minimal, allocation-free JSON scanner for the hot path: find a field in an event's JSON data
//! (filters) and split a JSON array into its elements (batched publish). It never builds a tree;
//! it only finds byte ranges. Several fields at once, in one pass, are found with [`PathSet`]
//! (`paths.rs`). Input comes from `JSON.stringify` or from untrusted guests, so every
//! step is bounds-checked and malformed input yields `None`, never a panic.

mod paths;
pub use paths::{Located, PathSet, MAX_PATH_SEGMENTS};

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// `i` is at an opening quote; returns the index just past the closing quote.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    string_end_escaped(b, i).map(|(end, _)| end)
}

/// [`string_end`], also telling whether the string holds a backslash escape (then its contents
/// differ from its bytes and must be decoded before comparing).
#[inline(always)]
fn string_end_escaped(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        j = quote_or_backslash(b, j)?;
        match b[j] {
            b'\\' => {
                escaped = true;
                j += 2;
            }
            _ => return Some((j + 1, escaped)),
        }
    }
}

/// The index of the next `"` or `\` at or after `j`. Event strings are mostly short (keys, codes,
/// ids), where a call into `memchr2` costs more than the search (~50 instructions of dispatch and
/// setup per call): the first 16 bytes are searched 8 at a time in a register, longer strings go
/// to `memchr2` (vectorised).
#[inline(always)]
fn quote_or_backslash(b: &[u8], mut j: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A high bit in each byte of `w` equal to `c`; bits above the first match may be spurious
    // (borrows), so only the lowest set bit is used.
    let eq = |w: u64, c: u8| {
        let x = w ^ (ONES * c as u64);
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    for _ in 0..2 {
        let Some(chunk) = b.get(j..j + 8) else { break };
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let hits = eq(w, b'"') | eq(w, b'\\');
        if hits != 0 {
            return Some(j + (hits.trailing_zeros() / 8) as usize);
        }
        j += 8;
    }
    Some(j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?)
}

/// Index just past the value that starts at or after `i` (after whitespace).
pub fn value_end(b: &[u8], i: usize) -> Option<usize> {
    let mut i = skip_ws(b, i);
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let start = i;
            while let Some(c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// The bytes between the quotes of a string token that holds no escapes; `None` for any other
/// token (escaped strings need [`string_contents`]).
#[inline]
pub fn plain_string(token: &[u8]) -> Option<&[u8]> {
    let inner = token.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    (!inner.contains(&b'\\')).then_some(inner)
}

/// The raw bytes of a JSON string token's contents, decoded only if it holds escapes.
pub fn string_contents(token: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    if token.len() < 2 || token[0] != b'"' || token[token.len() - 1] != b'"' {
        return None;
    }
    let inner = &token[1..token.len() - 1];
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner).ok().map(std::borrow::Cow::Borrowed);
    }
    serde_json::from_slice::<String>(token).ok().map(std::borrow::Cow::Owned)
}

/// The number a raw token holds, as `str::parse::<f64>` reads it (so also `+1`, `1e5`, `inf`).
/// Plain decimals of at most 15 digits, nearly every number in event data, skip `parse`
/// (~200 instructions): their digits as an integer and the power of ten are both exact in an
/// f64, so one division gives the correctly rounded value, which is what `parse` returns.
pub fn number(raw: &[u8]) -> Option<f64> {
    short_decimal(raw).or_else(|| std::str::from_utf8(raw).ok()?.parse().ok())
}

fn short_decimal(raw: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let (negative, digits) = match raw.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, raw),
    };
    // At most 15 digits and a dot: the digits fit a u64 while they are read.
    if digits.len() > 16 {
        return None;
    }
    let mut m = 0u64;
    let mut i = 0;
    while let Some(d) = digits.get(i).and_then(|c| c.checked_sub(b'0')).filter(|d| *d <= 9) {
        m = m * 10 + d as u64;
        i += 1;
    }
    let whole = i;
    let mut fraction = 0;
    if i < digits.len() {
        if whole == 0 || digits[i] != b'.' {
            return None;
        }
        i += 1;
        while let Some(d) = digits.get(i).and_then(|c| c.checked_sub(b'0')).filter(|d| *d <= 9) {
            m = m * 10 + d as u64;
            i += 1;
        }
        fraction = i - whole - 1;
        if fraction == 0 || i < digits.len() {
            return None;
        }
    }
    if whole == 0 || whole + fraction > 15 {
        return None;
    }
    let v = m as f64 / POW10[fraction];
    Some(if negative { -v } else { v })
}

/// Compares an object key token with `key`. Keys without escapes (nearly all) compare as bytes,
/// with no UTF-8 validation or allocation; only escaped keys are decoded.
#[inline]
fn key_matches(token: &[u8], key: &str) -> Option<bool> {
    let inner = token.get(1..token.len().checked_sub(1)?)?;
    if !inner.contains(&b'\\') {
        return Some(inner == key.as_bytes());
    }
    Some(string_contents(token)? == key)
}

/// Finds the value at `path` (object keys, outermost first) and returns its raw bytes.
pub fn lookup<'a>(doc: &'a [u8], path: &[impl AsRef<str>]) -> Option<&'a [u8]> {
    let mut start = skip_ws(doc, 0);
    for key in path {
        let key = key.as_ref();
        if *doc.get(start)? != b'{' {
            return None;
        }
        let mut i = start + 1;
        let found = loop {
            i = skip_ws(doc, i);
            match *doc.get(i)? {
                b'}' => return None,
                b'"' => {}
                _ => return None,
            }
            let key_end = string_end(doc, i)?;
            let matched = key_matches(&doc[i..key_end], key)?;
            i = skip_ws(doc, key_end);
            if *doc.get(i)? != b':' {
                return None;
            }
            let value_start = skip_ws(doc, i + 1);
            if matched {
                break value_start;
            }
            i = skip_ws(doc, value_end(doc, value_start)?);
            match *doc.get(i)? {
                b',' => i += 1,
                _ => return None,
            }
        };
        start = found;
    }
    let end = value_end(doc, start)?;
    Some(&doc[start..end])
}

/// Splits a JSON array into the byte ranges of its elements.
pub fn split_array(doc: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut i = skip_ws(doc, 0);
    if *doc.get(i)? != b'[' {
        return None;
    }
    i = skip_ws(doc, i + 1);
    let mut out = Vec::new();
    if doc.get(i) == Some(&b']') {
        return (skip_ws(doc, i + 1) == doc.len()).then_some(out);
    }
    loop {
        let start = skip_ws(doc, i);
        let end = value_end(doc, start)?;
        out.push(start..end);
        i = skip_ws(doc, end);
        match *doc.get(i)? {
            b',' => i += 1,
            b']' => return (skip_ws(doc, i + 1) == doc.len()).then_some(out),
            _ => return None,
        }
    }
}

/// Appends `n` in decimal: the hot paths (event ids, times, tags) write several numbers per
/// event, and `write!` goes through `core::fmt` (a few hundred instructions each).
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// `write_u64` for a signed number.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends `s` as a JSON string literal.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[last..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
        }
        last = i + 1;
    }
    out.extend_from_slice(&bytes[last..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn numbers_are_written_like_display(n in any::<u64>(), m in any::<i64>()) {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            out.push(b' ');
            write_i64(&mut out, m);
            prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{n} {m}"));
        }
    }

    proptest! {
        // `number` reads every token exactly as `str::parse::<f64>` does (the fast path for
        // short decimals included): same value to the bit, same refusals.
        #[test]
        fn numbers_read_like_parse(tok in "-?[0-9]{0,18}(\\.[0-9]{0,18})?([eE][+-]?[0-9]{1,3})?|[+-]?(inf|NaN|infinity)|[0-9.+eE-]{0,8}", x in any::<f64>()) {
            for t in [tok, x.to_string(), format!("{x:e}")] {
                let want = t.parse::<f64>().ok().map(f64::to_bits);
                prop_assert_eq!(number(t.as_bytes()).map(f64::to_bits), want, "{}", t);
            }
        }

        // Around the fast path's limit: 14 to 17 significant digits (past 2^53 the digits are
        // no longer exact in an f64 and a division would round twice), the dot anywhere.
        #[test]
        fn long_decimals_read_like_parse(m in 10_000_000_000_000u64..100_000_000_000_000_000, dot in 0usize..18, neg in any::<bool>()) {
            let digits = m.to_string();
            let dot = dot.min(digits.len() - 1);
            let t = format!("{}{}.{}", if neg { "-" } else { "" }, &digits[..=dot], &digits[dot + 1..]);
            prop_assert_eq!(number(t.as_bytes()).map(f64::to_bits), t.parse::<f64>().ok().map(f64::to_bits), "{}", t);
        }
    }

    #[test]
    fn number_edges() {
        for (n, s) in [(0u64, "0"), (9, "9"), (10, "10"), (u64::MAX, "18446744073709551615")] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, s.as_bytes());
        }
        let mut out = Vec::new();
        write_i64(&mut out, i64::MIN);
        assert_eq!(out, i64::MIN.to_string().as_bytes());
        for (t, want) in [("129.95", Some(129.95)), ("-0", Some(-0.0)), ("007", Some(7.0)), ("1.", Some(1.0)), (".5", Some(0.5)), ("-", None), ("1.2.3", None), ("", None), ("999999999999999", Some(999999999999999.0)), ("0.1", Some(0.1))] {
            assert_eq!(number(t.as_bytes()), want, "{t}");
        }
        assert!(number(b"-0").unwrap().is_sign_negative());
    }

    #[test]
    fn finds_nested_fields() {
        let doc = br#" {"a": 1, "s": "x\"y", "o": {"b": [1, {"c": 2}], "d": "deep"}, "n": null} "#;
        assert_eq!(lookup(doc, &["a"]), Some(&b"1"[..]));
        assert_eq!(lookup(doc, &["o", "d"]), Some(&br#""deep""#[..]));
        assert_eq!(lookup(doc, &["o", "b"]), Some(&b"[1, {\"c\": 2}]"[..]));
        assert_eq!(lookup(doc, &["n"]), Some(&b"null"[..]));
        assert_eq!(string_contents(lookup(doc, &["s"]).unwrap()).unwrap(), "x\"y");
        assert_eq!(lookup(doc, &["missing"]), None);
        assert_eq!(lookup(doc, &["a", "b"]), None);
        assert_eq!(lookup(b"[1]", &["a"]), None);
    }

    #[test]
    fn splits_arrays() {
        let doc = br#"[1, "a,b", {"x":[2,3]}, null]"#;
        let parts: Vec<&[u8]> = split_array(doc).unwrap().into_iter().map(|r| &doc[r]).collect();
        assert_eq!(parts, vec![&b"1"[..], br#""a,b""#, br#"{"x":[2,3]}"#, b"null"]);
        assert_eq!(split_array(b"[]").unwrap().len(), 0);
        assert!(split_array(b"[1,").is_none());
        assert!(split_array(b"{}").is_none());
        assert!(split_array(b"[1] x").is_none());
    }

    #[test]
    fn escapes_strings() {
        let mut out = Vec::new();
        write_string(&mut out, "a\"b\\c\nd\u{1}é");
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    proptest! {
        // Splitting a serialized array of strings (quotes, backslashes, escapes at every
        // position, multi-byte characters) gives back each element's own serialization.
        #[test]
        fn splits_arrays_of_strings_like_serde(items in proptest::collection::vec("(\\PC|[\"\\\\\n]){0,40}", 0..8)) {
            let doc = serde_json::to_vec(&items).unwrap();
            let parts: Vec<Vec<u8>> = split_array(&doc).unwrap().into_iter().map(|r| doc[r].to_vec()).collect();
            let want: Vec<Vec<u8>> = items.iter().map(|s| serde_json::to_vec(s).unwrap()).collect();
            prop_assert_eq!(parts, want);
        }

        // Untrusted bytes never panic the scanner.
        #[test]
        fn never_panics(doc in proptest::collection::vec(any::<u8>(), 0..64), key in "[a-c]{1,2}") {
            let _ = lookup(&doc, &[key.as_str()]);
            let _ = split_array(&doc);
            let _ = value_end(&doc, 0);
        }

        // On valid JSON, lookup agrees with serde_json.
        #[test]
        fn agrees_with_serde(a in any::<i32>(), s in ".{0,12}", b in any::<bool>()) {
            let v = serde_json::json!({"a": a, "s": s, "o": {"b": b}});
            let text = serde_json::to_vec(&v).unwrap();
            let got: serde_json::Value = serde_json::from_slice(lookup(&text, &["a"]).unwrap()).unwrap();
            prop_assert_eq!(got, v["a"].clone());
            let got: serde_json::Value = serde_json::from_slice(lookup(&text, &["s"]).unwrap()).unwrap();
            prop_assert_eq!(got, v["s"].clone());
            let got: serde_json::Value = serde_json::from_slice(lookup(&text, &["o", "b"]).unwrap()).unwrap();
            prop_assert_eq!(got, v["o"]["b"].clone());
            let mut esc = Vec::new();
            write_string(&mut esc, &s);
            prop_assert_eq!(serde_json::from_slice::<String>(&esc).unwrap(), s);
        }
    }
}
