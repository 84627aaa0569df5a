//! Staging: the records a run emits, kept on local disk and turned into typed Parquet.
//!
//! While a run syncs, each stream's records are appended to an NDJSON file under the run's
//! staging directory (so memory stays flat however big the run). Each line gets a sequence
//! number, and fields the stream's JSON Schema does not declare are moved, not dropped, into
//! `_sluice_extra`. When the run ends, DuckDB (with a memory limit and a spill directory)
//! reads those files with the declared column types and writes zstd Parquet parts.

mod schema;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

pub use schema::{Column, columns_for};

/// Columns the host adds to every row.
pub const SEQ_COLUMN: &str = "_sluice_seq";
pub const EXTRA_COLUMN: &str = "_sluice_extra";
pub const RUN_ID_COLUMN: &str = "_sluice_run_id";
pub const EXTRACTED_AT_COLUMN: &str = "_sluice_extracted_at";
/// The largest record staging accepts, in bytes of JSON. Larger ones are refused at emit (the
/// plugin gets `invalid-record`), so that nothing accepted can fail the conversion: DuckDB's
/// JSON reader takes objects up to [`MAX_LINE_BYTES`], and a staged line can be twice its
/// record (JSON values travel escaped, see `encode_line`).
pub const MAX_RECORD_BYTES: usize = 8 << 20;
/// The longest staged line DuckDB is told to expect (its `maximum_object_size`).
const MAX_LINE_BYTES: usize = 2 * MAX_RECORD_BYTES + (1 << 20);
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
    #[error("stream {stream:?}: DuckDB could not type the records: {message}")]
    Convert { stream: String, message: String },
    #[error("DuckDB: {0}")]
    Duck(#[from] duckdb::Error),
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
    /// DuckDB's memory limit, in MiB; beyond it DuckDB spills to the run's temp directory.
    pub memory_limit_mib: u32,
    pub threads: u32,
    /// Target size of one Parquet part; larger streams are split.
    pub part_bytes: u64,
    /// Bytes of records one run may stage (NDJSON); DuckDB's spill files get as much again.
    pub run_quota_bytes: u64,
    /// The budget every run's staged records share.
    pub disk: Arc<DiskBudget>,
}

impl StagingConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            memory_limit_mib: 128,
            threads: 2,
            part_bytes: 128 << 20,
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
    declared: HashMap<String, Fit>,
    path: PathBuf,
    writer: BufWriter<File>,
    counts: StreamCounts,
    /// A value seen so far would be changed by DuckDB's own typing (e.g. `1.5` rounded into an
    /// integer column): convert with the tolerant SQL from the start.
    misfit: bool,
}

/// Which JSON values DuckDB's JSON reader turns into a declared column without changing them
/// (it rounds `1.5` and reads `true` as `1` in a BIGINT column, and `"yes"` as true).
#[derive(Debug, Clone, Copy)]
enum Fit {
    /// Integer literals within BIGINT, or null.
    Integer,
    /// Number literals, or null.
    Number,
    /// `true`, `false` or null.
    Boolean,
    /// Any value, kept as its JSON text (see [`encode_line`]).
    Json,
    /// Anything (text; timestamps and dates fail loudly when they do not parse).
    Any,
}

impl Fit {
    fn of(duck_type: &str) -> Self {
        match duck_type {
            "BIGINT" => Self::Integer,
            "DOUBLE" => Self::Number,
            "BOOLEAN" => Self::Boolean,
            "JSON" => Self::Json,
            _ => Self::Any,
        }
    }

    fn accepts(self, raw: &str) -> bool {
        match self {
            Self::Any | Self::Json => true,
            _ if raw == "null" => true,
            Self::Integer => raw.parse::<i64>().is_ok(),
            Self::Number => raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()),
            Self::Boolean => raw == "true" || raw == "false",
        }
    }
}

/// One run's staging area. Dropping it without [`RunStage::finish`] deletes it.
pub struct RunStage {
    config: StagingConfig,
    run_id: String,
    dir: PathBuf,
    streams: BTreeMap<String, StreamStage>,
    /// The encoded lines of the batch being appended.
    batch: Vec<u8>,
    /// What this run holds of the shared disk budget (all it has staged).
    reserved: Reservation,
    finished: bool,
}

impl RunStage {
    /// Creates `<dir>/<run_id>/` with one NDJSON file per stream.
    pub fn begin(
        config: &StagingConfig,
        run_id: &str,
        streams: &[StreamDef],
    ) -> Result<Self, StagingError> {
        let dir = config.dir.join(run_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.join("records"))?;
        let mut map = BTreeMap::new();
        for def in streams {
            let columns = columns_for(&def.json_schema, &def.primary_key);
            let declared = columns
                .iter()
                .map(|c| (c.name.clone(), Fit::of(&c.duck_type)))
                .collect();
            let path = dir.join("records").join(format!("{}.ndjson", def.name));
            let writer = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            map.insert(
                def.name.clone(),
                StreamStage {
                    def: def.clone(),
                    columns,
                    declared,
                    path,
                    writer,
                    counts: StreamCounts::default(),
                    misfit: false,
                },
            );
        }
        Ok(Self {
            config: config.clone(),
            run_id: run_id.to_string(),
            dir,
            streams: map,
            batch: Vec::with_capacity(1 << 16),
            reserved: Reservation {
                budget: config.disk.clone(),
                bytes: 0,
            },
            finished: false,
        })
    }

    /// Appends a batch of records to a stream: each must be a JSON object without reserved
    /// (`_sluice_`) fields. The batch is checked whole before any of it is written, so a bad
    /// record leaves the stream as it was ([`StagingError::BadRecord`]).
    pub fn append(&mut self, stream: &str, records: &[String]) -> Result<(), StagingError> {
        let st = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| StagingError::UnknownStream(stream.to_string()))?;
        self.batch.clear();
        for (index, rec) in records.iter().enumerate() {
            let seq = st.counts.records + index as u64;
            let fits = encode_line(&mut self.batch, seq, rec, &st.declared).map_err(|reason| {
                StagingError::BadRecord {
                    stream: stream.to_string(),
                    index,
                    reason,
                }
            })?;
            st.misfit |= !fits;
        }
        let n = self.batch.len() as u64;
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
        st.writer.write_all(&self.batch)?;
        st.counts.records += records.len() as u64;
        st.counts.bytes += records.iter().map(|r| r.len() as u64).sum::<u64>();
        Ok(())
    }

    /// Counters of every stream so far.
    pub fn counts(&self) -> BTreeMap<String, StreamCounts> {
        self.streams
            .iter()
            .map(|(k, s)| (k.clone(), s.counts.clone()))
            .collect()
    }

    /// Flushes the records and has DuckDB write each stream's Parquet parts.
    /// `extracted_at` is an RFC 3339 timestamp stamped on every row.
    pub fn finish(mut self, extracted_at: &str) -> Result<StagedRun, StagingError> {
        for st in self.streams.values_mut() {
            st.writer.flush()?;
        }
        let tmp = self.dir.join("duckdb-tmp");
        std::fs::create_dir_all(&tmp)?;
        let open = || -> Result<duckdb::Connection, StagingError> {
            let db = duckdb::Connection::open(self.dir.join("stage.duckdb"))?;
            db.execute_batch(&format!(
                "SET memory_limit='{}MiB'; SET max_temp_directory_size='{}MiB'; SET threads={}; SET temp_directory='{}'; SET preserve_insertion_order=false;",
                self.config.memory_limit_mib,
                (self.config.run_quota_bytes >> 20).max(1),
                self.config.threads.max(1),
                sql_str(&tmp.to_string_lossy())
            ))?;
            Ok(db)
        };
        let mut db = open()?;
        let mut out = Vec::new();
        for st in self.streams.values() {
            let out_dir = self.dir.join("parquet").join(&st.def.name);
            std::fs::create_dir_all(&out_dir)?;
            let mut files = Vec::new();
            let mut invalid_rows = 0u64;
            if st.counts.records > 0 {
                let staged_bytes = std::fs::metadata(&st.path)?.len();
                let sql = |tolerant, input: &Path| {
                    copy_sql(
                        input,
                        &out_dir,
                        &st.columns,
                        &self.run_id,
                        extracted_at,
                        self.config.part_bytes,
                        tolerant,
                    )
                };
                let threads = copy_threads(staged_bytes, self.config.threads);
                let oom = |e: &duckdb::Error| e.to_string().contains("Out of Memory");
                let mut tolerant = st.misfit;
                let mut attempt = db.execute_batch(&format!(
                    "SET threads={threads}; {}",
                    sql(tolerant, &st.path).copy()
                ));
                if let Err(e) = &attempt
                    && !tolerant
                    && !oom(e)
                {
                    // A value that does not fit its column: convert again keeping such values
                    // in `_sluice_errors` instead of failing the run.
                    tracing::info!(stream = %st.def.name, "values that do not fit their columns; converting with _sluice_errors");
                    tolerant = true;
                    reset_dir(&out_dir)?;
                    attempt = db.execute_batch(&format!(
                        "SET threads={threads}; {}",
                        sql(tolerant, &st.path).copy()
                    ));
                }
                if let Err(e) = attempt {
                    if !oom(&e) {
                        return Err(StagingError::Convert {
                            stream: st.def.name.clone(),
                            message: e.to_string(),
                        });
                    }
                    // DuckDB's JSON reader holds the text of what it read for the whole COPY
                    // (with 10 KB values, ~1 MiB of memory per MiB of records), so wide
                    // records exhaust any limit. Convert again in chunks instead: each chunk
                    // is read into a table of the on-disk staging database, which DuckDB's
                    // buffer manager can spill, and the table is copied to Parquet at the end.
                    // On a fresh connection: the failed attempt's buffers are not all given
                    // back to a connection that ran out.
                    tracing::warn!(stream = %st.def.name, "DuckDB ran out of memory; converting in chunks");
                    reset_dir(&out_dir)?;
                    drop(db);
                    db = open()?;
                    let chunks = split_lines(&st.path, &self.dir.join("chunks"), CHUNK_BYTES)?;
                    let mut done = convert_in_chunks(&db, &chunks, |input| sql(tolerant, input));
                    if let Err(e) = &done
                        && !tolerant
                        && !oom(e)
                    {
                        reset_dir(&out_dir)?;
                        done = convert_in_chunks(&db, &chunks, |input| sql(true, input));
                    }
                    let _ = std::fs::remove_dir_all(self.dir.join("chunks"));
                    done.map_err(|e| StagingError::Convert {
                        stream: st.def.name.clone(),
                        message: e.to_string(),
                    })?;
                }
                let mut paths: Vec<PathBuf> = std::fs::read_dir(&out_dir)?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .collect();
                paths.sort_by_key(|p| part_number(p));
                for path in paths {
                    let (rows, invalid): (i64, i64) = db.query_row(
                        &format!(
                            "SELECT count(*), count({}) FROM read_parquet(?)",
                            ident(ERRORS_COLUMN)
                        ),
                        [path.to_string_lossy()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    invalid_rows += invalid as u64;
                    let (bytes, sha256) = hash_file(&path)?;
                    files.push(StagedFile {
                        path,
                        rows: rows as u64,
                        bytes,
                        sha256,
                    });
                }
            }
            out.push(StagedStream {
                def: st.def.clone(),
                columns: st.columns.clone(),
                counts: StreamCounts {
                    invalid_rows,
                    ..st.counts.clone()
                },
                files,
            });
        }
        drop(db);
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

/// Appends `{"_sluice_seq":N, <declared fields>, "_sluice_extra":{<the rest>}}` + newline to
/// `line` (left partly written on error). Records whose fields are all declared are copied
/// without re-encoding. Returns whether every declared value fits its column as it is.
fn encode_line(
    line: &mut Vec<u8>,
    seq: u64,
    record: &str,
    declared: &HashMap<String, Fit>,
) -> Result<bool, String> {
    if record.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "record of {} bytes; at most {MAX_RECORD_BYTES} are accepted",
            record.len()
        ));
    }
    let fields: Vec<(Cow<'_, str>, &RawValue)> = parse_object(record)?;
    let fits = fields.iter().all(|(k, v)| {
        declared
            .get(k.as_ref())
            .is_none_or(|fit| fit.accepts(v.get().trim()))
    });
    let start = line.len();
    line.extend_from_slice(b"{\"");
    line.extend_from_slice(SEQ_COLUMN.as_bytes());
    line.extend_from_slice(b"\":");
    line.extend_from_slice(seq.to_string().as_bytes());
    if fields.iter().any(|(k, _)| k.starts_with("_sluice_")) {
        return Err("field names starting with _sluice_ are reserved".into());
    }
    let json_valued = |k: &str, v: &RawValue| {
        matches!(declared.get(k), Some(Fit::Json)) && v.get().trim() != "null"
    };
    if fields
        .iter()
        .all(|(k, v)| declared.contains_key(k.as_ref()) && !json_valued(k, v))
    {
        let inner = record.trim();
        let inner = &inner[1..inner.len() - 1];
        if !inner.trim().is_empty() {
            line.push(b',');
            line.extend_from_slice(inner.as_bytes());
        }
    } else {
        // JSON-typed values travel as strings of their text: DuckDB's JSON reader would parse
        // and re-print them (`0.10` → `0.1`), while a string cast to JSON keeps every byte.
        let mut extra = Vec::new();
        for (k, v) in &fields {
            if declared.contains_key(k.as_ref()) {
                line.push(b',');
                serde_json::to_writer(&mut *line, k).map_err(|e| e.to_string())?;
                line.push(b':');
                if json_valued(k, v) {
                    serde_json::to_writer(&mut *line, v.get()).map_err(|e| e.to_string())?;
                } else {
                    line.extend_from_slice(v.get().as_bytes());
                }
            } else {
                extra.push((k, v));
            }
        }
        let mut object = Vec::with_capacity(64);
        object.push(b'{');
        for (i, (k, v)) in extra.iter().enumerate() {
            if i > 0 {
                object.push(b',');
            }
            serde_json::to_writer(&mut object, k).map_err(|e| e.to_string())?;
            object.push(b':');
            object.extend_from_slice(v.get().as_bytes());
        }
        object.push(b'}');
        let object = std::str::from_utf8(&object).map_err(|e| e.to_string())?;
        line.extend_from_slice(b",\"");
        line.extend_from_slice(EXTRA_COLUMN.as_bytes());
        line.extend_from_slice(b"\":");
        serde_json::to_writer(&mut *line, object).map_err(|e| e.to_string())?;
    }
    line.extend_from_slice(b"}");
    // A valid JSON text holds raw line breaks only as whitespace (RFC 8259 §7 forbids them in
    // strings), so blanking them keeps the value and keeps the record on one NDJSON line.
    for b in &mut line[start..] {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    line.push(b'\n');
    Ok(fits)
}

fn parse_object(record: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, String> {
    struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> Deserialize<'de> for Fields<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = m.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                        out.push((k, v));
                    }
                    Ok(Fields(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Fields<'_>>(record)
        .map(|f| f.0)
        .map_err(|e| e.to_string())
}

/// The COPY that types a stream's NDJSON into Parquet parts.
///
/// First try (`tolerant = false`): DuckDB's JSON reader types the declared columns itself —
/// the fastest and leanest path, but one value that does not fit fails the whole COPY.
///
/// Then (`tolerant = true`): declared columns are read as JSON and cast here, so a value that
/// does not fit its column never fails the conversion: the column gets NULL and the original
/// JSON value, byte for byte, goes to `_sluice_errors` (`{"column": value}`, NULL when the row
/// has none). These casts are strict: an integer column takes only integer literals (or strings
/// of one) that fit BIGINT — `1.5` or `18446744073709551616` are kept in `_sluice_errors`, never
/// rounded — and a boolean column only `true`/`false`. It holds every declared value as text
/// while converting, so it needs more memory than the first.
fn copy_sql(
    input: &Path,
    out_dir: &Path,
    columns: &[Column],
    run_id: &str,
    extracted_at: &str,
    part_bytes: u64,
    tolerant: bool,
) -> ConvertSql {
    let mut types = vec![format!("'{SEQ_COLUMN}': 'BIGINT'")];
    // JSON-typed values arrive as strings of their text (see `encode_line`): read as text and
    // cast, which keeps every byte.
    types.extend(columns.iter().map(|c| {
        let read_as = match c.duck_type.as_str() {
            "JSON" => "VARCHAR",
            _ if tolerant => "JSON",
            t => t,
        };
        format!("'{}': '{read_as}'", sql_str(&c.name))
    }));
    types.push(format!("'{EXTRA_COLUMN}': 'VARCHAR'"));
    let mut select = Vec::new();
    let mut checks = Vec::new();
    for c in columns {
        let col = ident(&c.name);
        if c.duck_type == "JSON" {
            select.push(format!("CAST({col} AS JSON) AS {col}"));
            continue;
        }
        let cast = if tolerant {
            typed_value(&col, &c.duck_type)
        } else {
            None
        };
        let Some(cast) = cast else {
            select.push(col);
            continue;
        };
        select.push(format!("{cast} AS {col}"));
        if c.duck_type != "VARCHAR" {
            checks.push(format!(
                "{{'k': '{name}', 'v': CASE WHEN {col} IS NOT NULL AND json_type({col}) <> 'NULL' AND ({cast}) IS NULL THEN {col} END}}",
                name = sql_str(&c.name),
            ));
        }
    }
    select.push(format!(
        "CAST({extra} AS JSON) AS {extra}",
        extra = ident(EXTRA_COLUMN)
    ));
    select.push(if checks.is_empty() {
        format!("NULL::JSON AS {}", ident(ERRORS_COLUMN))
    } else {
        let bad = format!("list_filter([{}], x -> x.v IS NOT NULL)", checks.join(", "));
        format!(
            "CASE WHEN len({bad}) = 0 THEN NULL ELSE to_json(map_from_entries({bad})) END AS {}",
            ident(ERRORS_COLUMN)
        )
    });
    select.push(format!("'{}' AS {}", sql_str(run_id), ident(RUN_ID_COLUMN)));
    select.push(format!(
        "TIMESTAMPTZ '{}' AS {}",
        sql_str(extracted_at),
        ident(EXTRACTED_AT_COLUMN)
    ));
    select.push(ident(SEQ_COLUMN));
    ConvertSql {
        select: format!(
            "SELECT {select} FROM read_json('{input}', format='newline_delimited', maximum_object_size={MAX_LINE_BYTES}, columns={{{types}}})",
            select = select.join(", "),
            input = sql_str(&input.to_string_lossy()),
            types = types.join(", "),
        ),
        to: format!(
            "TO '{out}' (FORMAT PARQUET, COMPRESSION ZSTD, ROW_GROUP_SIZE 16384, ROW_GROUP_SIZE_BYTES '8MB', FILE_SIZE_BYTES {part_bytes}, FILENAME_PATTERN '{run}-{{i}}')",
            out = sql_str(&out_dir.to_string_lossy()),
            run = sql_str(run_id),
        ),
    }
}

/// The two halves of a conversion: the typed SELECT over an NDJSON file, and the Parquet
/// target.
struct ConvertSql {
    select: String,
    to: String,
}

impl ConvertSql {
    /// One COPY straight from the NDJSON file.
    fn copy(&self) -> String {
        format!("COPY ({}) {}", self.select, self.to)
    }
}

/// Size of the NDJSON chunks of a chunked conversion.
const CHUNK_BYTES: u64 = 8 << 20;

/// Splits an NDJSON file into files of about `chunk_bytes` each, at line ends, in `dir`.
fn split_lines(input: &Path, dir: &Path, chunk_bytes: u64) -> std::io::Result<Vec<PathBuf>> {
    use std::io::BufRead;
    std::fs::create_dir_all(dir)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, File::open(input)?);
    let mut chunks = Vec::new();
    let mut line = Vec::new();
    let mut current: Option<(BufWriter<File>, u64)> = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if current.as_ref().is_none_or(|(_, n)| *n >= chunk_bytes) {
            if let Some((mut w, _)) = current.take() {
                w.flush()?;
            }
            let path = dir.join(format!("{:06}.ndjson", chunks.len()));
            current = Some((BufWriter::new(File::create(&path)?), 0));
            chunks.push(path);
        }
        if let Some((w, n)) = current.as_mut() {
            w.write_all(&line)?;
            *n += line.len() as u64;
        }
    }
    if let Some((mut w, _)) = current {
        w.flush()?;
    }
    Ok(chunks)
}

/// Reads each chunk into one table of the staging database, then copies the table to Parquet.
fn convert_in_chunks(
    db: &duckdb::Connection,
    chunks: &[PathBuf],
    sql: impl Fn(&Path) -> ConvertSql,
) -> Result<(), duckdb::Error> {
    db.execute_batch("SET threads=1; DROP TABLE IF EXISTS staged;")?;
    let mut to = String::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let s = sql(chunk);
        if i == 0 {
            db.execute_batch(&format!("CREATE TABLE staged AS {}", s.select))?;
        } else {
            db.execute_batch(&format!("INSERT INTO staged {}", s.select))?;
        }
        to = s.to;
    }
    db.execute_batch(&format!("COPY staged {to}; DROP TABLE staged;"))
}

/// The SQL that turns JSON column `col` into `duck_type`, NULL when the value does not fit;
/// `None` for JSON columns, which keep the value as it is.
fn typed_value(col: &str, duck_type: &str) -> Option<String> {
    let text = format!("json_extract_string({col}, '$')");
    Some(match duck_type {
        "JSON" => return None,
        "VARCHAR" => text,
        "BIGINT" => format!(
            "CASE WHEN regexp_full_match({text}, '-?[0-9]+') THEN TRY_CAST({text} AS BIGINT) END"
        ),
        "BOOLEAN" => format!("CASE WHEN {text} IN ('true', 'false') THEN {text} = 'true' END"),
        other => format!("TRY_CAST({text} AS {other})"),
    })
}

/// DuckDB's JSON reader reads in blocks of 32 MiB, a buffer per thread: a stream smaller than
/// a block gains nothing from a second thread and would pay a buffer for it (with GitHub's wide
/// issues the two buffers overran the 128 MiB limit; measured in the issue 5 notes).
fn copy_threads(staged_bytes: u64, max_threads: u32) -> u32 {
    const JSON_BLOCK: u64 = 32 << 20;
    (staged_bytes.div_ceil(JSON_BLOCK) as u32).clamp(1, max_threads.max(1))
}

/// Empties a conversion's output directory before another attempt.
fn reset_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(dir)?;
    std::fs::create_dir_all(dir)
}

fn part_number(p: &Path) -> u64 {
    p.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
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
