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
//!
//! A record built from fields the connector holds as JSON text (an upstream item's, read with
//! [`crate::fields`]) is cheaper pushed field by field ([`Batcher::push_fields`]): its JSON text
//! is then never written, nor read again by the host to find its fields.

use serde::Serialize;

use crate::bindings::sluice::connector::records as raw;
use crate::error::{ConnectorError, Result};
use crate::fields::FieldWriter;

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

/// Emits a batch given field by field (what [`Batcher::push_fields`] fills), with the same
/// errors as [`emit`].
fn emit_fields(stream: &str, batch: &raw::FieldBatch) -> Result<()> {
    raw::emit_fields(stream, batch).map_err(|e| {
        let mut error = ConnectorError::from(e.clone());
        if let EmitError::InvalidRecord((index, why)) = &e {
            let id = fields_id(batch, *index as usize)
                .map(|id| format!(" (id {id})"))
                .unwrap_or_default();
            error.message = format!("stream {stream}: invalid-record: #{index}{id}: {why}");
        }
        error
    })
}

/// The `id` field of record `index` of a field batch, as [`record_id`] finds it in the
/// record's text.
fn fields_id(batch: &raw::FieldBatch, index: usize) -> Option<String> {
    let first: usize = batch.fields.get(..index)?.iter().map(|n| *n as usize).sum();
    let n = *batch.fields.get(index)? as usize;
    let spans = batch.spans.get(4 * first..4 * (first + n))?;
    let mut record = String::from("{");
    for (i, piece) in spans.chunks_exact(2).enumerate() {
        record.push_str(match i {
            0 => "",
            _ if i % 2 == 1 => ":",
            _ => ",",
        });
        record.push_str(batch.text.get(piece[0] as usize..piece[1] as usize)?);
    }
    record.push('}');
    record_id(&record)
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
    pending: Vec<(String, Pending)>,
    emitted: u64,
}

/// A stream's records not yet emitted: JSON texts ([`Batcher::push`]) or a batch of fields
/// ([`Batcher::push_fields`]), one kind at a time (the other is emitted first, so records go
/// out in the order they were pushed).
#[derive(Debug)]
struct Pending {
    records: Vec<String>,
    batch: raw::FieldBatch,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            batch: raw::FieldBatch {
                text: String::new(),
                spans: Vec::new(),
                fields: Vec::new(),
            },
        }
    }
}

impl Pending {
    fn count(&self) -> usize {
        self.records.len() + self.batch.fields.len()
    }
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
        if !self.buffer(stream).batch.fields.is_empty() {
            self.flush_stream(stream)?;
        }
        let buffer = self.buffer(stream);
        buffer.records.push(record);
        self.flush_if_full(stream)
    }

    /// Adds a record written field by field by `write` (keys and values as
    /// [`RecordWriter`](crate::fields::RecordWriter) takes them); emits the stream's batch
    /// when full. Cheaper than a record's JSON text for the guest and the host alike (the
    /// batch goes out as `records.emit-fields`: no text per record, and the host takes each
    /// field as given instead of reading the record again to find them).
    ///
    /// ```ignore
    /// out.push_fields("issues", |r| {
    ///     r.raw("id", "42");
    ///     r.str("title", Some("a title"));
    /// })?;
    /// ```
    pub fn push_fields(
        &mut self,
        stream: &str,
        write: impl FnOnce(&mut FieldWriter<'_>),
    ) -> Result<()> {
        if !self.buffer(stream).records.is_empty() {
            self.flush_stream(stream)?;
        }
        let batch = &mut self.buffer(stream).batch;
        let mut writer = FieldWriter::new(&mut batch.text, &mut batch.spans);
        write(&mut writer);
        let fields = writer.fields();
        batch.fields.push(fields);
        self.flush_if_full(stream)
    }

    fn flush_if_full(&mut self, stream: &str) -> Result<()> {
        if self.buffer(stream).count() >= self.size {
            self.flush_stream(stream)?;
        }
        Ok(())
    }

    /// Emits the pending records of `stream`.
    pub fn flush_stream(&mut self, stream: &str) -> Result<()> {
        let Some((_, pending)) = self.pending.iter_mut().find(|(s, _)| s == stream) else {
            return Ok(());
        };
        let n = pending.count() as u64;
        let result = if !pending.records.is_empty() {
            let result = emit(stream, &pending.records);
            pending.records.clear();
            result
        } else if !pending.batch.fields.is_empty() {
            let result = emit_fields(stream, &pending.batch);
            pending.batch.text.clear();
            pending.batch.spans.clear();
            pending.batch.fields.clear();
            result
        } else {
            return Ok(());
        };
        if result.is_ok() {
            self.emitted += n;
        }
        result
    }

    /// Emits the pending records of every stream.
    pub fn flush(&mut self) -> Result<()> {
        let streams: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, b)| b.count() > 0)
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
            .map_or(0, |(_, b)| b.count())
    }

    /// Records emitted so far, all streams together.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    fn buffer(&mut self, stream: &str) -> &mut Pending {
        let index = match self.pending.iter().position(|(s, _)| s == stream) {
            Some(i) => i,
            None => {
                self.pending.push((stream.to_string(), Pending::default()));
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
    use super::{fields_id, record_id};
    use crate::fields::{FieldWriter, record_text};

    #[test]
    fn a_refused_record_of_a_field_batch_is_named_by_its_id() {
        let mut batch = super::Pending::default().batch;
        for (i, id) in ["1", r#""b""#, "null"].iter().enumerate() {
            let mut w = FieldWriter::new(&mut batch.text, &mut batch.spans);
            w.raw("n", &i.to_string());
            w.raw("id", id);
            batch.fields.push(w.fields());
        }
        batch.fields.push(0);
        assert_eq!(fields_id(&batch, 0).as_deref(), Some("1"));
        assert_eq!(fields_id(&batch, 1).as_deref(), Some(r#""b""#));
        assert_eq!(fields_id(&batch, 2), None);
        assert_eq!(fields_id(&batch, 3), None);
        assert_eq!(fields_id(&batch, 4), None);
        let text = record_text(|w| {
            w.raw("id", "7");
            w.str("q\"k", Some("v\n"));
            w.str("none", None);
        });
        assert_eq!(text, r#"{"id":7,"q\"k":"v\n","none":null}"#);
    }

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
