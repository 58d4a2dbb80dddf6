//! The data of a published batch, as it crosses into the core in one piece: either one JSON
//! array (each element an event's data) or byte arrays packed end to end with their end offsets
//! (binary events). One buffer per batch, however many events: the binding copies it once and
//! the core cuts it into events.

use crate::error::{Error, ErrorKind, Result};
use crate::event::Encoding;
use std::ops::Range;

#[derive(Clone, Copy, Debug)]
pub enum BatchData<'a> {
    /// UTF-8 JSON text of an array; each element becomes a JSON event.
    Json(&'a [u8]),
    /// Binary events: event `i` is `bytes[ends[i - 1]..ends[i]]` (the first starts at 0).
    /// `ends` never decreases and its last entry is `bytes.len()`: no byte is left unowned.
    Packed { bytes: &'a [u8], ends: &'a [u32] },
}

impl<'a> BatchData<'a> {
    /// The whole buffer the parts index into.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            BatchData::Json(doc) => doc,
            BatchData::Packed { bytes, .. } => bytes,
        }
    }

    /// Each event's byte range in `bytes()` and the events' encoding; an encode error if the
    /// JSON is not an array or the offsets do not describe the buffer exactly.
    pub fn parts(&self) -> Result<(Vec<Range<usize>>, Encoding)> {
        match *self {
            BatchData::Json(doc) => crate::json::split_array(doc)
                .map(|parts| (parts, Encoding::Json))
                .ok_or_else(|| Error::new(ErrorKind::Encode, "batch data is not a JSON array")),
            BatchData::Packed { bytes, ends } => Ok((packed_ranges(bytes.len(), ends)?, Encoding::Binary)),
        }
    }
}

fn packed_ranges(len: usize, ends: &[u32]) -> Result<Vec<Range<usize>>> {
    let bad = |why: String| Error::new(ErrorKind::Encode, format!("packed batch: {why}"));
    let mut ranges = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for (i, &end) in ends.iter().enumerate() {
        let end = end as usize;
        if end < start || end > len {
            return Err(bad(format!("end offset {end} of event {i} is outside {start}..={len}")));
        }
        ranges.push(start..end);
        start = end;
    }
    if start != len {
        return Err(bad(format!("the events end at byte {start} of {len}")));
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(bytes: &[u8], ends: &[u32]) -> Result<Vec<Vec<u8>>> {
        let data = BatchData::Packed { bytes, ends };
        let (parts, encoding) = data.parts()?;
        assert_eq!(encoding, Encoding::Binary);
        Ok(parts.into_iter().map(|r| bytes[r].to_vec()).collect())
    }

    #[test]
    fn packed_offsets_cut_the_buffer_into_events() {
        assert_eq!(packed(b"abcde", &[2, 2, 5]).unwrap(), vec![b"ab".to_vec(), vec![], b"cde".to_vec()]);
        assert!(packed(b"", &[]).unwrap().is_empty());
        assert_eq!(packed(b"", &[0, 0]).unwrap(), vec![Vec::<u8>::new(), vec![]]);
    }

    #[test]
    fn packed_offsets_that_do_not_describe_the_buffer_are_refused() {
        for (bytes, ends) in [(&b"abc"[..], &[4u32][..]), (b"abc", &[2, 1, 3]), (b"abc", &[2]), (b"abc", &[]), (b"", &[1])] {
            let err = packed(bytes, ends).unwrap_err();
            assert_eq!(err.code(), "ERR_ENCODE", "{ends:?}");
        }
    }

    #[test]
    fn json_batches_are_split_into_elements() {
        let doc = br#"[1, {"a":2}]"#;
        let (parts, encoding) = BatchData::Json(doc).parts().unwrap();
        assert_eq!(encoding, Encoding::Json);
        assert_eq!(parts.into_iter().map(|r| &doc[r]).collect::<Vec<_>>(), vec![&b"1"[..], br#"{"a":2}"#]);
        assert_eq!(BatchData::Json(b"{}").parts().unwrap_err().code(), "ERR_ENCODE");
    }
}
