//! Every field a filter chain reads, found in one pass over an event's JSON data.
//!
//! A chain's field paths are merged into a trie once, when the chain is parsed. Per event, one
//! scan walks the top-level object member by member; a key that names a wanted field records
//! the value's byte range, a key with wanted fields below it is descended into, every other
//! value is skipped without being decoded; the scan stops as soon as every wanted key at a level
//! has been seen. So a chain of ten predicates over six fields reads the data once, not six
//! times, and allocates nothing (up to [`INLINE_SLOTS`] trie nodes).
//!
//! Each path's result is exactly what [`super::lookup`] returns for it, on any input: the scan
//! takes the same steps as `lookup` (first occurrence of a duplicate key wins, an object member
//! that does not parse ends the search at that level, a value is a field only if it parses
//! with `value_end`), it merely takes them once for all paths. Property tests hold it to that.

use super::{string_contents, skip_ws, string_end_escaped, value_end};

/// Paths with more segments than this are not put in the trie (the caller looks them up one by
/// one with the iterative [`super::lookup`]), which bounds the recursion of the scan whatever
/// the filter spec holds.
pub const MAX_PATH_SEGMENTS: usize = 32;

/// Tries up to this many nodes (the root included) keep their results on the stack.
const INLINE_SLOTS: usize = 16;

#[derive(Clone, Debug)]
struct Node {
    key: Box<str>,
    /// The keys of the children, as signatures, beside their node ids: one pass over this short
    /// array per member of the object, no pointer chasing.
    children: Vec<(KeySig, u32)>,
}

/// A key's length and its first 8 bytes (zero-padded) in one word: two integer compares rule a
/// key in or out, and settle keys of up to 8 bytes (most keys) without looking further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeySig {
    len: usize,
    head: u64,
}

impl KeySig {
    fn of(key: &[u8]) -> KeySig {
        let mut head = [0u8; 8];
        let n = key.len().min(8);
        head[..n].copy_from_slice(&key[..n]);
        KeySig { len: key.len(), head: u64::from_le_bytes(head) }
    }

    /// The signature of `doc[start..start + len]`, with one 8-byte load where the document
    /// has 8 bytes there (always, but for a key in the last bytes of a malformed document).
    #[inline(always)]
    fn at(doc: &[u8], start: usize, len: usize) -> KeySig {
        match doc.get(start..start + 8) {
            Some(w) => {
                let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
                let head = if len >= 8 { w } else { w & ((1u64 << (8 * len)) - 1) };
                KeySig { len, head }
            }
            None => KeySig::of(&doc[start..start + len]),
        }
    }
}

/// A set of dot paths (object keys, outermost first), merged into a trie. Node 0 is the document.
#[derive(Clone, Debug)]
pub struct PathSet {
    nodes: Vec<Node>,
}

impl Default for PathSet {
    fn default() -> PathSet {
        PathSet { nodes: vec![Node { key: "".into(), children: Vec::new() }] }
    }
}

/// Where [`PathSet::locate`] puts the raw value found for each path, by slot. Lives on the
/// caller's stack (up to [`INLINE_SLOTS`] trie nodes): filled in place, never moved or allocated.
pub struct Located<'a> {
    inline: [Option<&'a [u8]>; INLINE_SLOTS],
    heap: Vec<Option<&'a [u8]>>,
}

impl Default for Located<'_> {
    fn default() -> Self {
        Located { inline: [None; INLINE_SLOTS], heap: Vec::new() }
    }
}

impl<'a> Located<'a> {
    /// The raw bytes of the value at the path that [`PathSet::insert`] gave `slot`.
    #[inline]
    pub fn get(&self, slot: usize) -> Option<&'a [u8]> {
        let slots = if self.heap.is_empty() { &self.inline[..] } else { &self.heap[..] };
        slots.get(slot).copied().flatten()
    }
}

impl PathSet {
    /// Adds `path` and returns the slot its value is located in; the same path always gets the
    /// same slot. `None` for an empty path or one of more than [`MAX_PATH_SEGMENTS`] segments.
    pub fn insert(&mut self, path: &[impl AsRef<str>]) -> Option<usize> {
        if path.is_empty() || path.len() > MAX_PATH_SEGMENTS {
            return None;
        }
        let mut at = 0;
        for seg in path {
            let seg = seg.as_ref();
            let existing = self.nodes[at].children.iter().map(|&(_, c)| c as usize).find(|&c| &*self.nodes[c].key == seg);
            at = match existing {
                Some(c) => c,
                None => {
                    let id = self.nodes.len();
                    self.nodes.push(Node { key: seg.into(), children: Vec::new() });
                    self.nodes[at].children.push((KeySig::of(seg.as_bytes()), id as u32));
                    id
                }
            };
        }
        Some(at)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// Finds every path of the set in `doc`, in one pass, into `out` (which must be fresh:
    /// `Located::default()`).
    pub fn locate<'a>(&self, doc: &'a [u8], out: &mut Located<'a>) {
        if self.is_empty() {
            return;
        }
        let slots: &mut [Option<&'a [u8]>] = if self.nodes.len() <= INLINE_SLOTS {
            &mut out.inline
        } else {
            out.heap = vec![None; self.nodes.len()];
            &mut out.heap
        };
        self.scan(doc, skip_ws(doc, 0), 0, slots);
    }

    /// Looks for the children of `node` in the object that starts at `start`, as `lookup` would
    /// for each of them, and descends into those that have children of their own. Recursion is
    /// at most [`MAX_PATH_SEGMENTS`] deep (the trie's depth). Work per level is linear in the
    /// bytes scanned, so a document costs at most (trie depth + 1) passes, however hostile.
    fn scan<'a>(&self, doc: &'a [u8], start: usize, node: usize, out: &mut [Option<&'a [u8]>]) {
        let children = &self.nodes[node].children;
        if doc.get(start) != Some(&b'{') {
            return;
        }
        let mut left = children.len();
        let mut i = start + 1;
        loop {
            i = skip_ws(doc, i);
            // `}` (the object ended without the rest of the keys) or malformed: nothing more here.
            if doc.get(i) != Some(&b'"') {
                return;
            }
            let Some((key_end, escaped)) = string_end_escaped(doc, i) else { return };
            let hit = if escaped {
                // Rare: decoded (and compared) only here. `lookup` gives up on a key that does
                // not decode, and so does this.
                let Some(key) = string_contents(&doc[i..key_end]) else { return };
                children.iter().map(|&(_, c)| c as usize).find(|&c| *self.nodes[c].key == *key)
            } else {
                self.child_named(children, doc, i + 1, key_end - 1)
            };
            // A key seen before in this object: the first of duplicate keys wins, as in `lookup`.
            let hit = hit.filter(|&c| out[c].is_none());
            i = skip_ws(doc, key_end);
            if doc.get(i) != Some(&b':') {
                return;
            }
            let value_start = skip_ws(doc, i + 1);
            if let Some(c) = hit {
                // Below first: `lookup` finds `a.b` in `{"a":{"b":1,` even though `a` itself
                // never ends.
                if !self.nodes[c].children.is_empty() {
                    self.scan(doc, value_start, c, out);
                }
            }
            let Some(end) = skip_value(doc, value_start) else { return };
            if let Some(c) = hit {
                out[c] = Some(&doc[value_start..end]);
                left -= 1;
                if left == 0 {
                    return;
                }
            }
            i = skip_ws(doc, end);
            if doc.get(i) != Some(&b',') {
                return;
            }
            i += 1;
        }
    }

    /// The child whose key is `doc[start..end]` (an unescaped key's bytes).
    #[inline(always)]
    fn child_named(&self, children: &[(KeySig, u32)], doc: &[u8], start: usize, end: usize) -> Option<usize> {
        let sig = KeySig::at(doc, start, end - start);
        let (_, c) = children.iter().find(|(s, c)| {
            *s == sig && (sig.len <= 8 || self.nodes[*c as usize].key.as_bytes()[8..] == doc[start + 8..end])
        })?;
        Some(*c as usize)
    }
}

/// [`value_end`] for a value at `i` (no whitespace before it), with strings, most of the values
/// skipped, found inline.
#[inline(always)]
fn skip_value(doc: &[u8], i: usize) -> Option<usize> {
    match doc.get(i)? {
        b'"' => string_end_escaped(doc, i).map(|(end, _)| end),
        b'{' | b'[' => value_end(doc, i),
        // A number or literal: up to the next delimiter, as `value_end` reads it.
        _ => {
            let mut j = i;
            while j < doc.len() && !matches!(doc[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lookup;
    use super::*;
    use proptest::prelude::*;

    /// Keys the generated documents and paths share, so paths hit often; some need escapes, one
    /// holds a dot (no path can name it), several share their first 8 bytes.
    const KEYS: &[&str] = &["a", "b", "c", "amount", "currency", "currency2", "k\"q", "b\\s", "é", "a.b", "", "longer_key_1", "longer_key_2"];

    fn key() -> impl Strategy<Value = String> {
        proptest::sample::select(KEYS).prop_map(str::to_owned)
    }

    /// Optional whitespace, as a pretty printer or a hand-written document puts it.
    fn ws() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(&["", "", "", " ", "\n  ", "\t"][..])
    }

    fn scalar_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i32>().prop_map(|n| n.to_string()),
            (any::<i32>(), 1u32..4).prop_map(|(n, d)| format!("{}", n as f64 / 10f64.powi(d as i32))),
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
            "(\\PC|[\"\\\\\n{}\\[\\],:]){0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            key().prop_map(|k| serde_json::to_string(&k).unwrap()),
        ]
    }

    /// JSON text with duplicate keys (the key set is small), whitespace and escapes: what
    /// serde_json's `Value` cannot express.
    fn json_text() -> impl Strategy<Value = String> {
        scalar_text().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec((ws(), key(), ws(), inner.clone()), 0..6).prop_map(|members| {
                    let body: Vec<String> =
                        members.iter().map(|(w1, k, w2, v)| format!("{w1}{}{w2}:{w1}{v}{w2}", serde_json::to_string(k).unwrap())).collect();
                    format!("{{{}}}", body.join(","))
                }),
                proptest::collection::vec((ws(), inner), 0..4).prop_map(|items| {
                    let body: Vec<String> = items.iter().map(|(w, v)| format!("{w}{v}")).collect();
                    format!("[{}]", body.join(","))
                }),
            ]
        })
    }

    /// Hostile variants of a document: cut short, a byte replaced by a structural one, junk
    /// inserted.
    fn damaged(doc: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let n = doc.len();
        (0..=n, proptest::sample::select(&b"{}[]\",:\\ x0"[..]), 0..3u8).prop_map(move |(at, b, how)| {
            let mut d = doc.clone();
            match how {
                0 => d.truncate(at),
                1 if at < n => d[at] = b,
                _ => d.insert(at, b),
            }
            d
        })
    }

    fn paths() -> impl Strategy<Value = Vec<Vec<String>>> {
        proptest::collection::vec(proptest::collection::vec(key(), 1..4), 1..8)
    }

    /// The one-pass scan must give, for every path, exactly what `lookup` gives on its own.
    fn assert_agrees(doc: &[u8], paths: &[Vec<String>]) -> Result<(), TestCaseError> {
        let mut set = PathSet::default();
        let slots: Vec<Option<usize>> = paths.iter().map(|p| set.insert(p)).collect();
        let mut found = Located::default();
        set.locate(doc, &mut found);
        for (path, slot) in paths.iter().zip(slots) {
            let slot = slot.expect("short, non-empty paths get a slot");
            prop_assert_eq!(found.get(slot), lookup(doc, path), "path {:?} in {:?}", path, String::from_utf8_lossy(doc));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_lookup_on_json_text(doc in json_text(), paths in paths()) {
            assert_agrees(doc.as_bytes(), &paths)?;
        }

        #[test]
        fn agrees_with_lookup_on_damaged_json(doc in json_text().prop_flat_map(|d| damaged(d.into_bytes())), paths in paths()) {
            assert_agrees(&doc, &paths)?;
        }

        #[test]
        fn agrees_with_lookup_on_any_bytes(doc in proptest::collection::vec(proptest::sample::select(&b"{}[]\":,\\ abc1"[..]), 0..48), paths in paths()) {
            assert_agrees(&doc, &paths)?;
        }

        // Against an independent reference: on a document serde_json parses into a tree with
        // unique keys, every path's raw value is that tree's value there, or absent exactly
        // when the tree has none.
        #[test]
        fn agrees_with_serde_json(doc in json_text(), paths in paths()) {
            let Ok(tree) = serde_json::from_str::<serde_json::Value>(&doc) else { return Ok(()) };
            // Duplicate keys: serde keeps the last, the scanner (like `lookup`) the first.
            if has_duplicate_keys(&doc) {
                return Ok(());
            }
            let mut set = PathSet::default();
            let slots: Vec<usize> = paths.iter().map(|p| set.insert(p).unwrap()).collect();
            let mut found = Located::default();
            set.locate(doc.as_bytes(), &mut found);
            for (path, slot) in paths.iter().zip(slots) {
                let want = path.iter().try_fold(&tree, |v, k| v.as_object()?.get(k));
                let got = found.get(slot).map(|raw| serde_json::from_slice::<serde_json::Value>(raw).expect("a located value is whole JSON"));
                prop_assert_eq!(got.as_ref(), want, "path {:?} in {}", path, doc);
            }
        }
    }

    /// Whether any object in the (valid) document repeats a key.
    fn has_duplicate_keys(doc: &str) -> bool {
        struct Check;
        impl<'de> serde::de::Visitor<'de> for Check {
            type Value = bool;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<bool, A::Error> {
                let (mut seen, mut dup) = (std::collections::HashSet::new(), false);
                while let Some(k) = m.next_key::<String>()? {
                    dup |= !seen.insert(k);
                    dup |= m.next_value::<Dup>()?.0;
                }
                Ok(dup)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<bool, A::Error> {
                let mut dup = false;
                while let Some(d) = s.next_element::<Dup>()? {
                    dup |= d.0;
                }
                Ok(dup)
            }
            fn visit_bool<E>(self, _: bool) -> Result<bool, E> { Ok(false) }
            fn visit_i64<E>(self, _: i64) -> Result<bool, E> { Ok(false) }
            fn visit_u64<E>(self, _: u64) -> Result<bool, E> { Ok(false) }
            fn visit_f64<E>(self, _: f64) -> Result<bool, E> { Ok(false) }
            fn visit_str<E>(self, _: &str) -> Result<bool, E> { Ok(false) }
            fn visit_unit<E>(self) -> Result<bool, E> { Ok(false) }
        }
        struct Dup(bool);
        impl<'de> serde::Deserialize<'de> for Dup {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dup, D::Error> {
                d.deserialize_any(Check).map(Dup)
            }
        }
        serde_json::from_str::<Dup>(doc).map(|d| d.0).unwrap_or(true)
    }

    #[test]
    fn finds_every_path_in_one_pass() {
        let doc = br#" {"id": "x", "o": {"b": [1, {"c": 2}], "d": "deep"}, "a": 1, "a": 2, "k\"q": true, "o2": {"x": 1,"#;
        let mut set = PathSet::default();
        let a = set.insert(&["a"]).unwrap();
        let ob = set.insert(&["o", "b"]).unwrap();
        let od = set.insert(&["o", "d"]).unwrap();
        let o = set.insert(&["o"]).unwrap();
        let kq = set.insert(&["k\"q"]).unwrap();
        let o2x = set.insert(&["o2", "x"]).unwrap();
        let o2 = set.insert(&["o2"]).unwrap();
        assert_eq!(set.insert(&["a"]), Some(a), "the same path, the same slot");
        let mut found = Located::default();
        set.locate(doc, &mut found);
        assert_eq!(found.get(a), Some(&b"1"[..]), "the first of duplicate keys");
        assert_eq!(found.get(ob), Some(&br#"[1, {"c": 2}]"#[..]));
        assert_eq!(found.get(od), Some(&br#""deep""#[..]));
        assert_eq!(found.get(o), Some(&br#"{"b": [1, {"c": 2}], "d": "deep"}"#[..]));
        assert_eq!(found.get(kq), Some(&b"true"[..]), "escaped keys are decoded");
        assert_eq!(found.get(o2x), Some(&b"1"[..]), "found before the document breaks off");
        assert_eq!(found.get(o2), None, "a value that never ends is no value");
    }

    #[test]
    fn long_paths_and_large_sets() {
        let mut set = PathSet::default();
        let deep: Vec<String> = (0..=MAX_PATH_SEGMENTS).map(|_| "a".to_owned()).collect();
        assert_eq!(set.insert(&deep), None, "too deep for the trie: the caller looks it up alone");
        assert_eq!(set.insert(&deep[..MAX_PATH_SEGMENTS]).map(|_| ()), Some(()));
        // More nodes than fit on the stack.
        let many: Vec<usize> = (0..40).map(|i| set.insert(&[format!("k{i}")]).unwrap()).collect();
        let doc = format!("{{{}}}", (0..40).rev().map(|i| format!("\"k{i}\":{i}")).collect::<Vec<_>>().join(","));
        let mut found = Located::default();
        set.locate(doc.as_bytes(), &mut found);
        for (i, slot) in many.into_iter().enumerate() {
            assert_eq!(found.get(slot), Some(i.to_string().as_bytes()));
        }
    }

    /// A hostile document — deep nesting, long strings full of escapes, many keys — costs a
    /// bounded number of passes: no recursion beyond the paths' depth, nothing quadratic.
    #[test]
    fn hostile_documents_stay_linear() {
        let mut set = PathSet::default();
        let path: Vec<String> = (0..MAX_PATH_SEGMENTS).map(|_| "a".to_owned()).collect();
        for n in 1..=MAX_PATH_SEGMENTS {
            set.insert(&path[..n]).unwrap();
        }
        let nest = 200_000;
        let doc = format!("{}1{}", "{\"a\":".repeat(nest), "}".repeat(nest));
        let mut found = Located::default();
        let t = std::time::Instant::now();
        set.locate(doc.as_bytes(), &mut found);
        assert_eq!(found.get(1), lookup(doc.as_bytes(), &path[..1]));
        let escapes = format!("{{\"s\":\"{}\",\"a\":1}}", "\\\"".repeat(500_000));
        set.locate(escapes.as_bytes(), &mut Located::default());
        // Generous: a few ms of work; a quadratic scan of these ~1 MB would take minutes.
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
    }
}
