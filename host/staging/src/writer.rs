//! A stream's typed rows, buffered as Arrow columns and written to Parquet parts as row groups
//! fill: memory holds at most one row group per stream, and the Parquet is done when the sync is.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::extension::Json;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::value::{Kind, Typed, typed};
use crate::{
    Column, ERRORS_COLUMN, EXTRA_COLUMN, EXTRACTED_AT_COLUMN, RUN_ID_COLUMN, SEQ_COLUMN,
    StagingError,
};

/// When a stream's buffered rows become a row group.
#[derive(Debug, Clone, Copy)]
pub struct RowGroupLimits {
    /// Rows per row group at most.
    pub rows: usize,
    /// Bytes of emitted JSON per row group at most (a row group is written once it reaches this).
    pub bytes: usize,
    /// Target size of one Parquet part, in bytes; a part is closed after the row group that
    /// reaches it.
    pub part_bytes: u64,
}

/// One Parquet part written and closed.
#[derive(Debug, Clone)]
pub struct Part {
    pub path: PathBuf,
    pub rows: u64,
}

/// The Arrow type and builder of one declared column.
enum Builder {
    Integer(Int64Builder),
    Number(Float64Builder),
    Boolean(BooleanBuilder),
    Text(StringBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
}

impl Builder {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Integer => Self::Integer(Int64Builder::new()),
            Kind::Number => Self::Number(Float64Builder::new()),
            Kind::Boolean => Self::Boolean(BooleanBuilder::new()),
            Kind::Text | Kind::Json => Self::Text(StringBuilder::new()),
            Kind::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            Kind::Date => Self::Date(Date32Builder::new()),
        }
    }

    /// Appends a value typed for this builder's kind (`Misfit` and `Null` are NULL).
    fn append(&mut self, value: &Typed<'_>) {
        match (self, value) {
            (Self::Integer(b), Typed::Integer(v)) => b.append_value(*v),
            (Self::Number(b), Typed::Number(v)) => b.append_value(*v),
            (Self::Boolean(b), Typed::Boolean(v)) => b.append_value(*v),
            (Self::Text(b), Typed::Text(v)) => b.append_value(v),
            (Self::Timestamp(b), Typed::Micros(v)) => b.append_value(*v),
            (Self::Date(b), Typed::Days(v)) => b.append_value(*v),
            (Self::Integer(b), _) => b.append_null(),
            (Self::Number(b), _) => b.append_null(),
            (Self::Boolean(b), _) => b.append_null(),
            (Self::Text(b), _) => b.append_null(),
            (Self::Timestamp(b), _) => b.append_null(),
            (Self::Date(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Integer(b) => Arc::new(b.finish()),
            Self::Number(b) => Arc::new(b.finish()),
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
        }
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn json_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true).with_extension_type(Json::default())
}

/// The Arrow schema of a stream's parts: the declared columns, then the host's columns
/// (`_sluice_extra`, `_sluice_errors`, `_sluice_run_id`, `_sluice_extracted_at`, `_sluice_seq`).
fn schema(columns: &[Column]) -> Schema {
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|c| match Kind::of(&c.duck_type) {
            Kind::Integer => Field::new(&c.name, DataType::Int64, true),
            Kind::Number => Field::new(&c.name, DataType::Float64, true),
            Kind::Boolean => Field::new(&c.name, DataType::Boolean, true),
            Kind::Text => Field::new(&c.name, DataType::Utf8, true),
            Kind::Timestamp => Field::new(&c.name, timestamp_type(), true),
            Kind::Date => Field::new(&c.name, DataType::Date32, true),
            Kind::Json => json_field(&c.name),
        })
        .collect();
    fields.push(json_field(EXTRA_COLUMN));
    fields.push(json_field(ERRORS_COLUMN));
    fields.push(Field::new(RUN_ID_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(EXTRACTED_AT_COLUMN, timestamp_type(), false));
    fields.push(Field::new(SEQ_COLUMN, DataType::Int64, false));
    Schema::new(fields)
}

/// zstd (level 1: most of level 3's ratio on JSON-like text at a fraction of the CPU); for the
/// columns that hold whole JSON documents (nearly always distinct, never compared), no
/// dictionary and no min/max statistics (a JSON document's byte order means nothing to a query
/// planner, and computing it compared every value); no dictionary either for the columns whose
/// values in `first` (a part's first row group) are mostly distinct ([`mostly_distinct`]).
fn properties(
    names: &[String],
    kinds: &[Kind],
    first: &RecordBatch,
) -> Result<WriterProperties, StagingError> {
    let mut p = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")));
    let json_columns: Vec<&str> = names
        .iter()
        .zip(kinds)
        .filter(|(_, k)| **k == Kind::Json)
        .map(|(name, _)| name.as_str())
        .chain([EXTRA_COLUMN, ERRORS_COLUMN])
        .collect();
    for name in &json_columns {
        p = p
            .set_column_dictionary_enabled(ColumnPath::from(*name), false)
            .set_column_statistics_enabled(ColumnPath::from(*name), EnabledStatistics::None);
    }
    for (field, array) in first.schema_ref().fields().iter().zip(first.columns()) {
        if !json_columns.contains(&field.name().as_str()) && mostly_distinct(array.as_ref()) {
            p = p.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    Ok(p.build())
}

/// Values looked at by [`mostly_distinct`].
const DISTINCT_SAMPLE: usize = 512;

/// Whether more than half of the first [`DISTINCT_SAMPLE`] non-null values of `array` differ
/// from each other (ids, URLs, titles, timestamps, `_sluice_seq`), judged on at least 64 of them.
/// Parquet's dictionary encoding pays when values repeat; for a column of distinct values it
/// stores each value in the dictionary page *and* an index per row, and the writer hashes every
/// value to build it: such columns are written plain (20k GitHub issues: Parquet 17 % smaller,
/// `sluice run` ~9 % less CPU). Booleans are never dictionary-encoded anyway.
fn mostly_distinct(array: &dyn Array) -> bool {
    use std::collections::HashSet;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{BuildHasher, BuildHasherDefault};
    // Fixed keys: the same rows always give the same encodings.
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let sample = |hashes: &mut dyn Iterator<Item = u64>| {
        let mut seen = HashSet::with_capacity(DISTINCT_SAMPLE);
        let mut n = 0usize;
        for h in hashes.take(DISTINCT_SAMPLE) {
            seen.insert(h);
            n += 1;
        }
        n >= 64 && seen.len() * 2 > n
    };
    if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
        return sample(&mut a.iter().flatten().map(|v| hasher.hash_one(v)));
    }
    if let Some(a) = array.as_any().downcast_ref::<Int64Array>() {
        return sample(&mut a.iter().flatten().map(|v| hasher.hash_one(v)));
    }
    if let Some(a) = array.as_any().downcast_ref::<TimestampMicrosecondArray>() {
        return sample(&mut a.iter().flatten().map(|v| hasher.hash_one(v)));
    }
    if let Some(a) = array.as_any().downcast_ref::<Date32Array>() {
        return sample(&mut a.iter().flatten().map(|v| hasher.hash_one(v)));
    }
    if let Some(a) = array.as_any().downcast_ref::<Float64Array>() {
        return sample(&mut a.iter().flatten().map(|v| hasher.hash_one(v.to_bits())));
    }
    false
}

/// One stream's rows on their way to Parquet.
pub struct StreamWriter {
    dir: PathBuf,
    run_id: String,
    extracted_at: i64,
    kinds: Vec<Kind>,
    names: Vec<String>,
    schema: SchemaRef,
    limits: RowGroupLimits,
    columns: Vec<Builder>,
    extra: StringBuilder,
    errors: StringBuilder,
    seq: Int64Builder,
    /// Rows and bytes of emitted JSON buffered, not yet in a row group.
    rows: usize,
    bytes: usize,
    part: Option<(ArrowWriter<BufWriter<File>>, Part)>,
    parts: Vec<Part>,
}

impl StreamWriter {
    /// A writer of parts `{dir}/{run_id}-{n}.parquet` (created on the first row group).
    /// `extracted_at`: microseconds since the epoch, stamped on every row.
    pub fn new(
        dir: &Path,
        run_id: &str,
        extracted_at: i64,
        columns: &[Column],
        limits: RowGroupLimits,
    ) -> Result<Self, StagingError> {
        let kinds: Vec<Kind> = columns.iter().map(|c| Kind::of(&c.duck_type)).collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            run_id: run_id.to_string(),
            extracted_at,
            columns: kinds.iter().map(|k| Builder::new(*k)).collect(),
            kinds,
            names: columns.iter().map(|c| c.name.clone()).collect(),
            schema: Arc::new(schema(columns)),
            limits,
            extra: StringBuilder::new(),
            errors: StringBuilder::new(),
            seq: Int64Builder::new(),
            rows: 0,
            bytes: 0,
            part: None,
            parts: Vec::new(),
        })
    }

    /// Buffers one row: `values` by column (raw JSON text), `extra` for `_sluice_extra`, `seq`
    /// its sequence number, `bytes` the size of the record as emitted. Returns whether a value
    /// did not fit its column (it is then NULL there and kept in `_sluice_errors`).
    pub fn push(
        &mut self,
        values: &[Option<&str>],
        extra: Option<&str>,
        seq: u64,
        bytes: usize,
    ) -> bool {
        let mut errors: Option<String> = None;
        for (i, raw) in values.iter().enumerate() {
            let value = raw.map_or(Typed::Null, |r| typed(r, self.kinds[i]));
            if let (Typed::Misfit, Some(raw)) = (&value, raw) {
                let e = errors.get_or_insert_with(|| String::from("{"));
                if e.len() > 1 {
                    e.push(',');
                }
                // Column names are JSON Schema property names: valid JSON strings.
                e.push_str(&serde_json::to_string(&self.names[i]).unwrap_or_default());
                e.push(':');
                e.push_str(raw.trim());
            }
            self.columns[i].append(&value);
        }
        self.extra.append_option(extra);
        let misfit = errors.is_some();
        self.errors.append_option(errors.map(|mut e| {
            e.push('}');
            e
        }));
        self.seq
            .append_value(i64::try_from(seq).unwrap_or(i64::MAX));
        self.rows += 1;
        self.bytes += bytes;
        misfit
    }

    /// Bytes of emitted JSON buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the buffer is due to become a row group.
    pub fn full(&self) -> bool {
        self.rows >= self.limits.rows || self.bytes >= self.limits.bytes
    }

    /// Writes the buffered rows as one row group (nothing when none), closing the part when
    /// it reached its target size.
    pub fn flush(&mut self) -> Result<(), StagingError> {
        if self.rows == 0 {
            return Ok(());
        }
        let n = self.rows;
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Builder::finish).collect();
        arrays.push(Arc::new(self.extra.finish()));
        arrays.push(Arc::new(self.errors.finish()));
        arrays.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(self.run_id.as_str(), n),
        )));
        arrays.push(Arc::new(
            TimestampMicrosecondArray::from(vec![self.extracted_at; n]).with_timezone("UTC"),
        ));
        arrays.push(Arc::new(self.seq.finish()) as Arc<Int64Array>);
        self.rows = 0;
        self.bytes = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        let (writer, part) = match &mut self.part {
            Some(open) => open,
            None => self.part.insert(self.open_part(&batch)?),
        };
        writer.write(&batch)?;
        writer.flush()?;
        part.rows += n as u64;
        if writer.bytes_written() as u64 >= self.limits.part_bytes {
            self.close_part()?;
        }
        Ok(())
    }

    /// A new part, its column encodings chosen from its first row group, `first`.
    fn open_part(
        &self,
        first: &RecordBatch,
    ) -> Result<(ArrowWriter<BufWriter<File>>, Part), StagingError> {
        let path = self
            .dir
            .join(format!("{}-{}.parquet", self.run_id, self.parts.len()));
        let file = BufWriter::with_capacity(256 << 10, File::create(&path)?);
        let properties = properties(&self.names, &self.kinds, first)?;
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(properties))?;
        Ok((writer, Part { path, rows: 0 }))
    }

    fn close_part(&mut self) -> Result<(), StagingError> {
        if let Some((writer, part)) = self.part.take() {
            writer.close()?;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Writes what is buffered and closes the last part; the parts in order.
    pub fn finish(mut self) -> Result<Vec<Part>, StagingError> {
        self.flush()?;
        self.close_part()?;
        Ok(self.parts)
    }
}
