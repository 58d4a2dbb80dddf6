//! A minimal, allocation-free JSON scanner for the hot path: find a field in an event's JSON data
//! (filters) and split a JSON array into its elements (batched publish). It never builds a tree;
//! it only finds byte ranges. Input comes from `JSON.stringify` or from untrusted guests, so every
//! step is bounds-checked and malformed input yields `None`, never a panic.

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// `i` is at an opening quote; returns the index just past the closing quote. Skips to the next
/// quote or backslash with `memchr2` (word at a time) rather than byte by byte: strings are
/// most of the bytes of typical event data.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        match b[j] {
            b'\\' => j += 2,
            _ => return Some(j + 1),
        }
    }
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

/// The top-level members of a JSON object, found in one pass: a filter chain with several field
/// predicates scans the event once instead of once per predicate.
pub struct ObjectIndex<'a> {
    doc: &'a [u8],
    /// (key contents range, value range); `len` entries are valid.
    members: [(u32, u32, u32, u32); 32],
    len: usize,
    /// More members than fit: lookups fall back to scanning.
    overflow: bool,
}

impl<'a> ObjectIndex<'a> {
    pub fn build(doc: &'a [u8]) -> Option<ObjectIndex<'a>> {
        if doc.len() > u32::MAX as usize {
            return None;
        }
        let mut idx = ObjectIndex { doc, members: [(0, 0, 0, 0); 32], len: 0, overflow: false };
        let mut i = skip_ws(doc, 0);
        if *doc.get(i)? != b'{' {
            return None;
        }
        i = skip_ws(doc, i + 1);
        if doc.get(i) == Some(&b'}') {
            return Some(idx);
        }
        loop {
            if *doc.get(i)? != b'"' {
                return None;
            }
            let key_end = string_end(doc, i)?;
            let (ks, ke) = (i, key_end);
            i = skip_ws(doc, key_end);
            if *doc.get(i)? != b':' {
                return None;
            }
            let vs = skip_ws(doc, i + 1);
            let ve = value_end(doc, vs)?;
            if idx.len < idx.members.len() {
                idx.members[idx.len] = (ks as u32, ke as u32, vs as u32, ve as u32);
                idx.len += 1;
            } else {
                idx.overflow = true;
                return Some(idx);
            }
            i = skip_ws(doc, ve);
            match *doc.get(i)? {
                b',' => i = skip_ws(doc, i + 1),
                b'}' => return Some(idx),
                _ => return None,
            }
        }
    }

    /// The raw value at `path`, like [`lookup`] on the whole document.
    pub fn get(&self, path: &[impl AsRef<str>]) -> Option<&'a [u8]> {
        let (first, rest) = path.split_first()?;
        if self.overflow {
            return lookup(self.doc, path);
        }
        let key = first.as_ref();
        let value = self.members[..self.len].iter().find_map(|&(ks, ke, vs, ve)| {
            key_matches(&self.doc[ks as usize..ke as usize], key)
                .filter(|m| *m)
                .map(|_| &self.doc[vs as usize..ve as usize])
        })?;
        if rest.is_empty() {
            Some(value)
        } else {
            lookup(value, rest)
        }
    }
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
    fn object_index_agrees_with_lookup() {
        let doc = br#" {"a": 1, "s": "x\"y", "o": {"b": [1, {"c": 2}], "d": "deep"}, "n": null, "e\u0041": 5} "#;
        let idx = ObjectIndex::build(doc).unwrap();
        for path in [&["a"][..], &["s"], &["o", "d"], &["o", "b"], &["n"], &["missing"], &["a", "b"], &["eA"]] {
            assert_eq!(idx.get(path), lookup(doc, path), "{path:?}");
        }
        let many: String = format!("{{{}}}", (0..40).map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>().join(","));
        let idx = ObjectIndex::build(many.as_bytes()).unwrap();
        assert_eq!(idx.get(&["k39"]), Some(&b"39"[..]));
        assert!(ObjectIndex::build(b"[1]").is_none());
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
