//! Staging: the records a run emits, typed and written to Parquet as they arrive.
//!
//! Each record is parsed once, here, when the plugin emits it: declared fields go to typed
//! Arrow columns (by the rules of [`value`]), undeclared ones, byte for byte, to
//! `_sluice_extra`, and values that do not fit their column to `_sluice_errors`. A stream's
//! rows are buffered until a row group is full (rows or bytes, [`StagingConfig`]) and then
//! written, zstd-compressed, to the stream's current Parquet part under the run's staging
//! directory. When the sync ends the parts are complete: nothing is re-read or converted, and
//! memory holds at most a row group per stream whatever the size of the run.
//!
//! Parquet is written by arrow-rs's `parquet` crate; DuckDB is what reads it (the tests check
//! every part with DuckDB, and the catalog's `view_sql` is DuckDB SQL).

mod json;
mod record;
mod schema;
pub mod value;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use record::MAX_RECORD_BYTES;
pub use schema::{Column, columns_for};
use writer::{RowGroupLimits, StreamWriter};

/// Columns the host adds to every row.
pub const SEQ_COLUMN: &str = "_sluice_seq";
pub const EXTRA_COLUMN: &str = "_sluice_extra";
pub const RUN_ID_COLUMN: &str = "_sluice_run_id";
pub const EXTRACTED_AT_COLUMN: &str = "_sluice_extracted_at";
/// Values that did not fit their declared column, as `{"column": original JSON}` (or NULL).
pub const ERRORS_COLUMN: &str = "_sluice_errors";

/// Staging failures.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("staging I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream {0:?} is not part of this run")]
    UnknownStream(String),
    #[error("record {index} of stream {stream:?}: {reason}")]
    BadRecord {
        stream: String,
        index: usize,
        reason: String,
    },
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("building a row group: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("extracted_at {0:?} is not an RFC 3339 timestamp")]
    ExtractedAt(String),
    /// A batch would take staging past a disk quota; nothing of it was written.
    #[error("staging quota exceeded: {scope} allows {limit_mib} MiB of staged records")]
    Quota {
        /// `this run` (`SLUICE_STAGING_RUN_QUOTA_MIB`) or `all runs together`
        /// (`SLUICE_STAGING_TOTAL_MIB`).
        scope: &'static str,
        limit_mib: u64,
    },
}

/// Staged bytes that all runs of the process may hold together; each [`RunStage`] reserves
/// what it writes and gives it back when its staging directory is deleted.
#[derive(Debug)]
pub struct DiskBudget {
    limit: u64,
    used: AtomicU64,
}

impl DiskBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// Bytes one run holds of a [`DiskBudget`]; given back when dropped.
#[derive(Debug)]
struct Reservation {
    budget: Arc<DiskBudget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Staging settings.
#[derive(Debug, Clone)]
pub struct StagingConfig {
    /// Parent of every run's staging directory.
    pub dir: PathBuf,
    /// Target size of one Parquet part; larger streams are split.
    pub part_bytes: u64,
    /// Rows of one row group at most.
    pub row_group_rows: usize,
    /// Bytes of emitted JSON a stream buffers before they become a row group.
    pub row_group_bytes: usize,
    /// Bytes of emitted JSON one run buffers over all its streams; past it, the stream holding
    /// the most is written out.
    pub run_buffer_bytes: usize,
    /// Bytes of records (JSON, as emitted) one run may stage.
    pub run_quota_bytes: u64,
    /// The budget every run's staged records share.
    pub disk: Arc<DiskBudget>,
}

impl StagingConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            part_bytes: 128 << 20,
            row_group_rows: 16_384,
            row_group_bytes: 4 << 20,
            run_buffer_bytes: 4 << 20,
            run_quota_bytes: 4 << 30,
            disk: DiskBudget::new(8 << 30),
        }
    }
}

/// What a stream looks like to staging: its name, key and JSON Schema.
#[derive(Debug, Clone)]
pub struct StreamDef {
    pub name: String,
    pub primary_key: Vec<String>,
    pub cursor_field: Option<String>,
    pub json_schema: serde_json::Value,
}

/// Per-stream counters while a run stages.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamCounts {
    pub records: u64,
    /// Bytes of JSON the plugin emitted.
    pub bytes: u64,
    /// Rows with a value that did not fit its declared column (kept in `_sluice_errors`).
    #[serde(default)]
    pub invalid_rows: u64,
}

struct StreamStage {
    def: StreamDef,
    columns: Vec<Column>,
    /// Splits records by column.
    splitter: record::Splitter,
    writer: StreamWriter,
    counts: StreamCounts,
}

/// One run's staging area. Dropping it without [`RunStage::finish`] deletes it.
pub struct RunStage {
    config: StagingConfig,
    dir: PathBuf,
    streams: BTreeMap<String, StreamStage>,
    /// What this run holds of the shared disk budget (all it has staged).
    reserved: Reservation,
    finished: bool,
}

impl RunStage {
    /// Creates `<dir>/<run_id>/` with a Parquet directory per stream. `extracted_at` (RFC 3339)
    /// is stamped on every row.
    pub fn begin(
        config: &StagingConfig,
        run_id: &str,
        extracted_at: &str,
        streams: &[StreamDef],
    ) -> Result<Self, StagingError> {
        let extracted_at = value::timestamp_micros(extracted_at)
            .ok_or_else(|| StagingError::ExtractedAt(extracted_at.to_string()))?;
        let dir = config.dir.join(run_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let limits = RowGroupLimits {
            rows: config.row_group_rows.max(1),
            bytes: config.row_group_bytes.max(1),
            part_bytes: config.part_bytes,
        };
        let mut map = BTreeMap::new();
        for def in streams {
            let columns = columns_for(&def.json_schema, &def.primary_key);
            let splitter = record::Splitter::new(columns.iter().map(|c| c.name.clone()).collect());
            let out = dir.join("parquet").join(&def.name);
            std::fs::create_dir_all(&out)?;
            let writer = StreamWriter::new(&out, run_id, extracted_at, &columns, limits)?;
            map.insert(
                def.name.clone(),
                StreamStage {
                    def: def.clone(),
                    columns,
                    splitter,
                    writer,
                    counts: StreamCounts::default(),
                },
            );
        }
        Ok(Self {
            config: config.clone(),
            dir,
            streams: map,
            reserved: Reservation {
                budget: config.disk.clone(),
                bytes: 0,
            },
            finished: false,
        })
    }

    /// Appends a batch of records to a stream: each must be a JSON object without reserved
    /// (`_sluice_`) fields. The batch is checked whole before any of it is kept, so a bad
    /// record leaves the stream as it was ([`StagingError::BadRecord`]); so does a batch past a
    /// quota ([`StagingError::Quota`]).
    pub fn append(&mut self, stream: &str, records: &[String]) -> Result<(), StagingError> {
        self.append_with(stream, records.len(), |splitter, index, row| {
            let record = records.get(index).map_or("", String::as_str);
            splitter
                .split(record, row)
                .map(|extra| (extra, record.len()))
        })
        .map(|_| ())
    }

    /// [`RunStage::append`] of a batch given field by field (`records.emit-fields`): `spans`
    /// cuts each key and value from `text` (four per field: key start and end, value start and
    /// end, in order), `fields` says how many fields each record has. The same checks and the
    /// same rows as `append` of the records `{k1:v1,...}` (their JSON text is never written);
    /// returns the bytes of that text.
    pub fn append_fields(
        &mut self,
        stream: &str,
        text: &str,
        spans: &[u32],
        fields: &[u32],
    ) -> Result<u64, StagingError> {
        let pieces: u64 = fields.iter().map(|n| u64::from(*n)).sum();
        if pieces.saturating_mul(4) != spans.len() as u64 {
            return Err(StagingError::BadRecord {
                stream: stream.to_string(),
                index: fields.len().saturating_sub(1),
                reason: record::FIELD_SPANS_WRONG.into(),
            });
        }
        let (mut at, mut end) = (0usize, 0usize);
        self.append_with(stream, fields.len(), |splitter, index, row| {
            let n = fields.get(index).map_or(0, |n| *n as usize * 4);
            let mine = spans.get(at..at + n).ok_or(record::FIELD_SPANS_WRONG)?;
            at += n;
            splitter.split_fields(text, mine, &mut end, row)
        })
    }

    /// Appends `count` records, record `i` split into its row by `split(splitter, i, row)`
    /// (which returns its `_sluice_extra` and its bytes of JSON). Every record is split before
    /// any is kept; returns the bytes of the batch.
    fn append_with<'a>(
        &mut self,
        stream: &str,
        count: usize,
        mut split: impl FnMut(
            &mut record::Splitter,
            usize,
            &mut [Option<&'a str>],
        ) -> Result<(Option<String>, usize), String>,
    ) -> Result<u64, StagingError> {
        let st = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| StagingError::UnknownStream(stream.to_string()))?;
        // `values` holds each record's columns in turn (`width` a record), `extras` its
        // `_sluice_extra`, `sizes` its bytes of JSON.
        let width = st.splitter.width();
        let mut values: Vec<Option<&'a str>> = vec![None; count * width];
        let mut extras: Vec<Option<String>> = Vec::with_capacity(count);
        let mut sizes: Vec<usize> = Vec::with_capacity(count);
        for index in 0..count {
            let row = &mut values[index * width..(index + 1) * width];
            let (extra, size) = split(&mut st.splitter, index, row)
                .and_then(|split| key_present(&st.columns, row).map(|()| split))
                .map_err(|reason| StagingError::BadRecord {
                    stream: stream.to_string(),
                    index,
                    reason,
                })?;
            extras.push(extra);
            sizes.push(size);
        }
        let n: u64 = sizes.iter().map(|s| *s as u64).sum();
        if self.reserved.bytes.saturating_add(n) > self.config.run_quota_bytes {
            return Err(StagingError::Quota {
                scope: "this run",
                limit_mib: self.config.run_quota_bytes >> 20,
            });
        }
        if !self.config.disk.reserve(n) {
            return Err(StagingError::Quota {
                scope: "all runs together",
                limit_mib: self.config.disk.limit >> 20,
            });
        }
        self.reserved.bytes += n;
        for (i, (size, extra)) in sizes.iter().zip(&extras).enumerate() {
            let seq = st.counts.records;
            let row = &values[i * width..(i + 1) * width];
            if st.writer.push(row, extra.as_deref(), seq, *size) {
                st.counts.invalid_rows += 1;
            }
            st.counts.records += 1;
            st.counts.bytes += *size as u64;
            if st.writer.full() {
                st.writer.flush()?;
            }
        }
        self.keep_buffers_in_budget()?;
        Ok(n)
    }

    /// Writes out the stream buffering the most while the run's buffers exceed their budget.
    fn keep_buffers_in_budget(&mut self) -> Result<(), StagingError> {
        loop {
            let total: usize = self
                .streams
                .values()
                .map(|s| s.writer.buffered_bytes())
                .sum();
            if total <= self.config.run_buffer_bytes {
                return Ok(());
            }
            match self
                .streams
                .values_mut()
                .max_by_key(|s| s.writer.buffered_bytes())
            {
                Some(largest) => largest.writer.flush()?,
                None => return Ok(()),
            }
        }
    }

    /// Counters of every stream so far.
    pub fn counts(&self) -> BTreeMap<String, StreamCounts> {
        self.streams
            .iter()
            .map(|(k, s)| (k.clone(), s.counts.clone()))
            .collect()
    }

    /// Writes what is buffered and closes every stream's last Parquet part.
    pub fn finish(mut self) -> Result<StagedRun, StagingError> {
        let mut out = Vec::new();
        for (_, st) in std::mem::take(&mut self.streams) {
            let mut files = Vec::new();
            for part in st.writer.finish()? {
                let (bytes, sha256) = hash_file(&part.path)?;
                files.push(StagedFile {
                    path: part.path,
                    rows: part.rows,
                    bytes,
                    sha256,
                });
            }
            out.push(StagedStream {
                def: st.def,
                columns: st.columns,
                counts: st.counts,
                files,
            });
        }
        self.finished = true;
        let reserved = std::mem::replace(
            &mut self.reserved,
            Reservation {
                budget: self.config.disk.clone(),
                bytes: 0,
            },
        );
        Ok(StagedRun {
            dir: self.dir.clone(),
            streams: out,
            _reserved: reserved,
        })
    }
}

impl Drop for RunStage {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Checks that every primary-key column (the columns that are not nullable) of a split record
/// holds a value of its type: a row without its key could not be told apart from the others
/// by the deduplicating view, and the column is declared NOT NULL.
fn key_present(columns: &[Column], row: &[Option<&str>]) -> Result<(), String> {
    for (c, raw) in columns.iter().zip(row) {
        if c.nullable {
            continue;
        }
        match raw.map(|r| value::typed(r, value::Kind::of(&c.duck_type))) {
            None | Some(value::Typed::Null) => {
                return Err(format!("primary-key field {:?} is missing or null", c.name));
            }
            Some(value::Typed::Misfit) => {
                return Err(format!(
                    "primary-key field {:?} does not hold a {} value",
                    c.name, c.duck_type
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A staged run: Parquet parts on local disk, ready to upload.
#[derive(Debug)]
pub struct StagedRun {
    dir: PathBuf,
    pub streams: Vec<StagedStream>,
    /// Released when the staging directory is deleted.
    _reserved: Reservation,
}

impl StagedRun {
    /// Deletes the staging directory.
    pub fn cleanup(self) {
        drop(self)
    }
}

impl Drop for StagedRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone)]
pub struct StagedStream {
    pub def: StreamDef,
    pub columns: Vec<Column>,
    pub counts: StreamCounts,
    pub files: Vec<StagedFile>,
}

#[derive(Debug, Clone)]
pub struct StagedFile {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, hex::encode(h.finalize())))
}

/// A string literal body for SQL (single quotes doubled).
pub fn sql_str(s: &str) -> String {
    s.replace('\'', "''")
}

/// A quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests;
