//! Emitting records and checkpoints.
//!
//! The host wants batches (hundreds to thousands of records per `emit`), and a checkpoint covers
//! every record emitted before it. [`Batcher`] does both right: it buffers records per stream,
//! emits a batch every `size` records, and flushes a stream before checkpointing it.
//!
//! ```ignore
//! let mut out = Batcher::new(1000);
//! for item in page {
//!     out.push("items", &item)?;
//! }
//! out.checkpoint("items", &json!({"cursor": last}))?;
//! ```

use serde::Serialize;

use crate::bindings::sluice::connector::records as raw;
use crate::error::{ConnectorError, Result};

pub use raw::EmitError;

/// Emits one batch of serialized JSON objects to `stream` (prefer [`Batcher`]). A refused
/// batch's error names the stream and the refused record by its `id` field when it has one
/// (`stream issues: invalid-record: #3 (id 42): …`): the run fails, and the error is what the
/// user reads to find the record upstream.
pub fn emit(stream: &str, records: &[String]) -> Result<()> {
    raw::emit(stream, records).map_err(|e| {
        let mut error = ConnectorError::from(e.clone());
        if let EmitError::InvalidRecord((index, why)) = &e {
            let id = records
                .get(*index as usize)
                .and_then(|r| record_id(r))
                .map(|id| format!(" (id {id})"))
                .unwrap_or_default();
            error.message = format!("stream {stream}: invalid-record: #{index}{id}: {why}");
        }
        error
    })
}

/// The `id` field of a record as JSON text, when it is a short string or a number.
fn record_id(record: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: Option<&'a serde_json::value::RawValue>,
    }
    if !record.trim_start().starts_with('{') {
        return None; // serde would read `[2]` as the struct's fields in order
    }
    let id = serde_json::from_str::<Id<'_>>(record).ok()?.id?.get();
    (id.len() <= 64 && !id.starts_with(['{', '[', 'n'])).then(|| id.to_string())
}

/// Records the state `stream` has reached; it covers every record emitted before (prefer
/// [`Batcher::checkpoint`], which flushes first).
pub fn checkpoint<T: Serialize + ?Sized>(stream: &str, state: &T) -> Result<()> {
    let state = serde_json::to_string(state)?;
    raw::checkpoint(stream, &state).map_err(ConnectorError::from)
}

/// Buffers records per stream and emits them in batches.
///
/// Call [`flush`](Self::flush) (or [`checkpoint`](Self::checkpoint)) at the end of a sync; a
/// batcher dropped with records pending still emits them. An error it cannot return there is
/// not lost: a batch the host refuses fails the run (`records_refused`) whether or not the
/// connector saw the error.
#[derive(Debug)]
pub struct Batcher {
    size: usize,
    pending: Vec<(String, Vec<String>)>,
    emitted: u64,
}

impl Default for Batcher {
    fn default() -> Self {
        Self::new(Self::DEFAULT_SIZE)
    }
}

impl Batcher {
    /// The batch size of [`Batcher::default`].
    pub const DEFAULT_SIZE: usize = 1000;

    /// A batcher that emits a stream's records every `size` records (at least 1).
    pub fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            pending: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds a record (it must serialize to a JSON object); emits the stream's batch when full.
    pub fn push<T: Serialize + ?Sized>(&mut self, stream: &str, record: &T) -> Result<()> {
        let json = serde_json::to_string(record)?;
        self.push_json(stream, json)
    }

    /// Adds an already serialized JSON object; emits the stream's batch when full.
    pub fn push_json(&mut self, stream: &str, record: String) -> Result<()> {
        let size = self.size;
        let buffer = self.buffer(stream);
        buffer.push(record);
        if buffer.len() >= size {
            self.flush_stream(stream)?;
        }
        Ok(())
    }

    /// Emits the pending records of `stream`.
    pub fn flush_stream(&mut self, stream: &str) -> Result<()> {
        if let Some((_, buffer)) = self.pending.iter_mut().find(|(s, _)| s == stream)
            && !buffer.is_empty()
        {
            let result = emit(stream, buffer);
            if result.is_ok() {
                self.emitted += buffer.len() as u64;
            }
            buffer.clear();
            return result;
        }
        Ok(())
    }

    /// Emits the pending records of every stream.
    pub fn flush(&mut self) -> Result<()> {
        let streams: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(s, _)| s.clone())
            .collect();
        for stream in streams {
            self.flush_stream(&stream)?;
        }
        Ok(())
    }

    /// Flushes `stream`, then checkpoints `state` for it: the state never precedes the records
    /// it covers.
    pub fn checkpoint<T: Serialize + ?Sized>(&mut self, stream: &str, state: &T) -> Result<()> {
        self.flush_stream(stream)?;
        checkpoint(stream, state)
    }

    /// Records of `stream` buffered and not yet emitted.
    pub fn pending(&self, stream: &str) -> usize {
        self.pending
            .iter()
            .find(|(s, _)| s == stream)
            .map_or(0, |(_, b)| b.len())
    }

    /// Records emitted so far, all streams together.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    fn buffer(&mut self, stream: &str) -> &mut Vec<String> {
        let index = match self.pending.iter().position(|(s, _)| s == stream) {
            Some(i) => i,
            None => {
                self.pending
                    .push((stream.to_string(), Vec::with_capacity(self.size.min(4096))));
                self.pending.len() - 1
            }
        };
        &mut self.pending[index].1
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::record_id;

    #[test]
    fn a_refused_record_is_named_by_a_short_id() {
        assert_eq!(
            record_id(r#"{"id":42,"t":"\ud800"}"#).as_deref(),
            Some("42")
        );
        assert_eq!(
            record_id(r#"{"t":1,"id":"abc"}"#).as_deref(),
            Some(r#""abc""#)
        );
        for none in [
            r#"{"id":null}"#,
            r#"{"x":1}"#,
            "[2]",
            r#"{"id":{"a":1}}"#,
            "{",
        ] {
            assert_eq!(record_id(none), None, "{none}");
        }
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(100));
        assert_eq!(record_id(&long), None);
    }
}
