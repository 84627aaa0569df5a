use super::*;
use serde_json::json;

fn stream() -> StreamDef {
    StreamDef {
        name: "items".into(),
        primary_key: vec!["id".into()],
        cursor_field: Some("updated_at".into()),
        json_schema: json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": ["string", "null"]},
                "amount": {"type": "number"},
                "active": {"type": "boolean"},
                "updated_at": {"type": "string", "format": "date-time"},
                "tags": {"type": "array"}
            }
        }),
    }
}

/// The same stream without a primary key: `id` is an ordinary (nullable) integer column, so
/// misfit values in it are typed as in any column instead of refusing the record.
fn stream_without_key() -> StreamDef {
    StreamDef {
        primary_key: vec![],
        ..stream()
    }
}

/// A run of [`stream_without_key`] staged under `dir`.
fn begin_without_key(dir: &std::path::Path) -> RunStage {
    let cfg = StagingConfig::new(dir);
    RunStage::begin(
        &cfg,
        "run1",
        "2024-05-01T12:00:00Z",
        &[stream_without_key()],
    )
    .unwrap()
}

#[test]
fn columns_follow_the_schema() {
    let cols = columns_for(&stream().json_schema, &["id".into()]);
    let got: Vec<(&str, &str, bool)> = cols
        .iter()
        .map(|c| (c.name.as_str(), c.duck_type.as_str(), c.nullable))
        .collect();
    assert_eq!(
        got,
        vec![
            ("id", "BIGINT", false),
            ("name", "VARCHAR", true),
            ("amount", "DOUBLE", true),
            ("active", "BOOLEAN", true),
            ("updated_at", "TIMESTAMPTZ", true),
            ("tags", "JSON", true),
        ]
    );
}

#[test]
fn of_names_equal_but_for_case_the_primary_key_is_the_column() {
    let schema = json!({"type": "object", "properties": {
        "ID": {"type": "string"}, "id": {"type": "integer"}, "Name": {"type": "string"}, "name": {"type": "string"}}});
    // (Sorted: whether properties keep their declared order depends on serde_json's features.)
    let mut names: Vec<String> = columns_for(&schema, &["id".into()])
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["Name", "id"]);
}

#[test]
fn a_record_without_a_usable_primary_key_refuses_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StagingConfig::new(dir.path());
    let mut stage = RunStage::begin(&cfg, "run1", "2024-05-01T12:00:00Z", &[stream()]).unwrap();
    stage.append("items", &[r#"{"id":1}"#.to_string()]).unwrap();
    for (bad, says) in [
        (r#"{"name":"no id"}"#, "missing or null"),
        (r#"{"id":null}"#, "missing or null"),
        (r#"{"id":"x"}"#, "BIGINT"),
        (r#"{"id":1.5}"#, "BIGINT"),
    ] {
        let batch = vec![r#"{"id":2}"#.to_string(), bad.to_string()];
        match stage.append("items", &batch) {
            Err(StagingError::BadRecord {
                index: 1, reason, ..
            }) => {
                assert!(
                    reason.contains("\"id\"") && reason.contains(says),
                    "{bad}: {reason}"
                )
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(
        stage.counts()["items"].records,
        1,
        "refused batches keep nothing"
    );
}

#[test]
fn a_run_becomes_typed_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StagingConfig::new(dir.path());
    let mut stage = RunStage::begin(&cfg, "run1", "2024-05-01T12:00:00Z", &[stream()]).unwrap();
    let recs: Vec<String> = (0..1000)
        .map(|i| json!({"id": i, "name": format!("n{i}"), "amount": i as f64 / 2.0, "active": i % 2 == 0, "updated_at": "2024-05-01T10:00:00Z", "tags": ["x"], "new_field": i}).to_string())
        .collect();
    stage.append("items", &recs).unwrap();
    // A batch with one bad record is refused whole: nothing of it reaches the file.
    let mut bad = recs[..5].to_vec();
    bad[2] = "[1]".into();
    assert!(matches!(
        stage.append("items", &bad),
        Err(StagingError::BadRecord { index: 2, .. })
    ));
    bad[2] = r#"{"id": 1, "_sluice_seq": 5}"#.into();
    assert!(matches!(
        stage.append("items", &bad),
        Err(StagingError::BadRecord { index: 2, .. })
    ));
    assert!(matches!(
        stage.append("nope", &recs),
        Err(StagingError::UnknownStream(_))
    ));
    assert_eq!(stage.counts()["items"].records, 1000);
    let staged = stage.finish().unwrap();
    let s = &staged.streams[0];
    assert_eq!(s.files.iter().map(|f| f.rows).sum::<u64>(), 1000);
    let db = duckdb::Connection::open_in_memory().unwrap();
    let f = s.files[0].path.to_string_lossy().to_string();
    let (n, sum, extra, run): (i64, i64, String, String) = db
        .query_row(
            "SELECT count(*), sum(id), max(_sluice_extra::VARCHAR), max(_sluice_run_id), max(_sluice_seq) FROM read_parquet(?)",
            [&f],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)?)),
        )
        .map(|(n, sum, extra, run, seq)| {
            assert_eq!(seq, 999, "sequence numbers are dense");
            (n, sum, extra, run)
        })
        .unwrap();
    assert_eq!((n, sum, run.as_str()), (1000, 499500, "run1"));
    assert!(extra.contains("new_field"), "{extra}");
    let ty: String = db
        .query_row(
            "SELECT typeof(updated_at) FROM read_parquet(?) LIMIT 1",
            [&f],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ty, "TIMESTAMP WITH TIME ZONE");
}

/// Wide records (in CI a 37,500-issue GitHub sync once ran DuckDB's JSON reader out of memory):
/// written as row groups while they arrive, many row groups to a part, every row kept.
#[test]
fn wide_records_are_written_in_row_groups_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StagingConfig::new(dir.path());
    cfg.row_group_bytes = 1 << 20;
    let names: Vec<String> = (0..12).map(|i| format!("text_{i}")).collect();
    let mut properties = serde_json::Map::new();
    properties.insert("id".into(), json!({"type": "integer"}));
    for n in &names {
        properties.insert(n.clone(), json!({"type": ["string", "null"]}));
    }
    let def = StreamDef {
        name: "wide".into(),
        primary_key: vec!["id".into()],
        cursor_field: None,
        json_schema: json!({"type": "object", "properties": properties}),
    };
    let mut stage = RunStage::begin(&cfg, "wide", "2024-05-01T12:00:00Z", &[def]).unwrap();
    let filler = "x".repeat(180);
    let n = 25_000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<String> = chunk
            .iter()
            .map(|id| {
                let mut r = serde_json::Map::new();
                r.insert("id".into(), json!(id));
                for (i, name) in names.iter().enumerate() {
                    r.insert(name.clone(), json!(format!("{id}-{i}-{filler}")));
                }
                serde_json::Value::Object(r).to_string()
            })
            .collect();
        stage.append("wide", &batch).unwrap();
    }
    let staged = stage.finish().unwrap();
    let files = &staged.streams[0].files;
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), n);
    let db = duckdb::Connection::open_in_memory().unwrap();
    let (rows, groups, ids): (i64, i64, i64) = db
        .query_row(
            &format!(
                "SELECT (SELECT count(*) FROM read_parquet('{f}')), \
                 (SELECT count(DISTINCT row_group_id) FROM parquet_metadata('{f}')), \
                 (SELECT count(DISTINCT id) FROM read_parquet('{f}'))",
                f = files[0].path.display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((rows, ids), (n as i64, n as i64));
    // ~2.6 KB a record, 1 MiB a row group.
    assert!(groups > 50, "{groups} row groups");
}

#[test]
fn staging_quotas_stop_a_run_and_leave_the_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StagingConfig::new(dir.path());
    cfg.run_quota_bytes = 64 << 10;
    cfg.disk = DiskBudget::new(100 << 10);
    let rec = json!({"id": 1, "name": "x".repeat(4000)}).to_string();
    let batch: Vec<String> = vec![rec; 4]; // ~16 KiB a batch
    let mut a = RunStage::begin(&cfg, "a", "2024-05-01T12:00:00Z", &[stream()]).unwrap();
    a.append("items", &batch).unwrap();
    let per_batch = cfg.disk.used(); // the JSON bytes of one batch
    let mut appended = 1;
    let err = loop {
        match a.append("items", &batch) {
            Ok(()) => appended += 1,
            Err(e) => break e,
        }
        assert!(appended < 100, "the run quota never applied");
    };
    assert!(
        matches!(
            err,
            StagingError::Quota {
                scope: "this run",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        appended,
        (64 << 10) / per_batch,
        "batches that fit in 64 KiB"
    );
    // The refused batch is not counted: the budget holds the JSON bytes this run accepted.
    let staged = a.counts()["items"].bytes;
    assert!(staged <= 64 << 10, "{staged}");
    assert_eq!(
        cfg.disk.used(),
        staged,
        "the budget counts what was accepted"
    );
    // A second run has what is left of the shared 100 KiB, then hits it.
    let mut b = RunStage::begin(&cfg, "b", "2024-05-01T12:00:00Z", &[stream()]).unwrap();
    let fits = ((100 << 10) - staged) / per_batch;
    for _ in 0..fits {
        b.append("items", &batch).unwrap();
    }
    let err = b.append("items", &batch).unwrap_err();
    assert!(
        matches!(
            err,
            StagingError::Quota {
                scope: "all runs together",
                ..
            }
        ),
        "{err}"
    );
    // Deleting a run's staging gives its share back.
    let used = cfg.disk.used();
    drop(a);
    assert!(cfg.disk.used() < used);
    b.append("items", &batch).unwrap();
}

#[test]
fn raw_line_breaks_in_whitespace_and_case_clashes_still_convert() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StagingConfig::new(dir.path());
    let def = StreamDef {
        name: "items".into(),
        primary_key: vec!["id".into()],
        cursor_field: None,
        json_schema: json!({"type": "object", "properties": {
            "id": {"type": "integer"},
            "_SLUICE_SEQ": {"type": "string"},
            "Name": {"type": "string"},
            "name": {"type": "string"}
        }}),
    };
    let mut stage = RunStage::begin(&cfg, "run1", "2024-05-01T12:00:00Z", &[def]).unwrap();
    let recs = vec![
        "{\n  \"id\": 1,\r\n  \"Name\": \"a\",\n \"name\": \"b\"\n}".to_string(),
        "{\"id\":2,\n\"_SLUICE_SEQ\":\"x\",\"nested\":{\n\"k\": [1,\n2]}}".to_string(),
    ];
    stage.append("items", &recs).unwrap();
    let staged = stage.finish().unwrap();
    let f = &staged.streams[0].files[0];
    assert_eq!(f.rows, 2);
    let db = duckdb::Connection::open_in_memory().unwrap();
    let extra: Vec<String> = db
        .prepare(&format!(
            "SELECT CAST(_sluice_extra AS VARCHAR) FROM read_parquet('{}') ORDER BY id",
            f.path.display()
        ))
        .unwrap()
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .map(|r| r.unwrap().unwrap_or_default())
        .collect();
    assert!(extra[0].contains("\"name\":\"b\""), "{extra:?}");
    assert!(extra[1].contains("_SLUICE_SEQ"), "{extra:?}");
    assert!(extra[1].contains("\"k\""), "{extra:?}");
}

/// Issue 15.2: what emit accepted, commit writes. A value of the wrong type, a number past
/// 64 bits or a fraction in an integer column becomes NULL in its column and is kept, byte for
/// byte, in `_sluice_errors`; the conversion never fails on it.
#[test]
fn values_that_do_not_fit_their_column_are_kept_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = begin_without_key(dir.path());
    let recs: Vec<String> = [
        r#"{"id":1,"name":"ok","amount":2.5,"active":true,"updated_at":"2024-05-01T10:00:00Z","tags":[1]}"#,
        r#"{"id":"2","name":7,"amount":"lots","active":"yes","updated_at":"not a time"}"#,
        r#"{"id":3,"amount":18446744073709551616,"active":false}"#,
        r#"{"id":4,"name":{"o":1}}"#,
        r#"{"id":18446744073709551616}"#,
        r#"{"id":-9223372036854775809}"#,
        r#"{"id":1.5}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    stage.append("items", &recs).unwrap();
    let staged = stage.finish().unwrap();
    let st = &staged.streams[0];
    assert_eq!(st.files[0].rows, 7, "every accepted record is committed");
    assert_eq!(
        st.counts.invalid_rows, 4,
        "rows 2, 5, 6 and 7 carry a misfit value"
    );
    let db = duckdb::Connection::open_in_memory().unwrap();
    type Row = (
        i64,
        Option<i64>,
        Option<String>,
        Option<f64>,
        Option<bool>,
        Option<String>,
    );
    let rows: Vec<Row> = db
        .prepare(&format!(
            "SELECT _sluice_seq, id, name, amount, active, CAST(_sluice_errors AS VARCHAR) FROM read_parquet('{}') ORDER BY _sluice_seq",
            st.files[0].path.display()
        ))
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows[0],
        (0, Some(1), Some("ok".into()), Some(2.5), Some(true), None)
    );
    // Row 2: a numeric string fits the integer column; the rest are kept as sent.
    let (_, id, name, amount, active, errors) = &rows[1];
    assert_eq!(
        (*id, name.as_deref(), *amount, *active),
        (Some(2), Some("7"), None, None)
    );
    let errors: serde_json::Value = serde_json::from_str(errors.as_deref().unwrap()).unwrap();
    assert_eq!(
        errors,
        json!({"amount": "lots", "active": "yes", "updated_at": "not a time"})
    );
    // A number past 64 bits in a DOUBLE column is a DOUBLE (no error); an object in a text
    // column is its JSON text.
    assert_eq!(rows[2].3, Some(18446744073709551616.0));
    assert_eq!(rows[3].2.as_deref(), Some(r#"{"o":1}"#));
    // Integers that do not fit BIGINT, and fractions, are never rounded: kept exactly.
    for (row, text) in [
        (4, "18446744073709551616"),
        (5, "-9223372036854775809"),
        (6, "1.5"),
    ] {
        assert_eq!(rows[row].1, None, "row {row}");
        assert_eq!(
            rows[row].5.as_deref(),
            Some(format!(r#"{{"id":{text}}}"#).as_str()),
            "row {row}"
        );
    }
}

/// DuckDB's own typing would round `1.5` into an integer column and read `true` as 1 without
/// an error; staging sees such values as records arrive and converts them the careful way.
#[test]
fn values_duckdb_would_change_silently_are_kept_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = begin_without_key(dir.path());
    let recs = vec![
        r#"{"id":1,"amount":1}"#.to_string(),
        r#"{"id":2.5,"active":1}"#.to_string(),
        r#"{"id":3,"active":"yes"}"#.to_string(),
    ];
    stage.append("items", &recs).unwrap();
    let staged = stage.finish().unwrap();
    let f = &staged.streams[0].files[0];
    assert_eq!(staged.streams[0].counts.invalid_rows, 2);
    let db = duckdb::Connection::open_in_memory().unwrap();
    let got: Vec<(Option<i64>, Option<bool>, Option<String>)> = db
        .prepare(&format!(
            "SELECT id, active, CAST(_sluice_errors AS VARCHAR) FROM read_parquet('{}') ORDER BY _sluice_seq",
            f.path.display()
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got[0], (Some(1), None, None));
    assert_eq!(
        got[1],
        (None, None, Some(r#"{"id":2.5,"active":1}"#.into()))
    );
    assert_eq!(got[2], (Some(3), None, Some(r#"{"active":"yes"}"#.into())));
}

/// Issue 15.2: staging memory does not grow with record width. 200 MB of records that each
/// carry a 10 KB undeclared field convert at the default memory settings (128 MiB), and
/// every value arrives whole.
#[test]
fn wide_undeclared_values_far_past_the_memory_limit_convert() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StagingConfig::new(dir.path());
    let mut stage = RunStage::begin(&cfg, "wide", "2024-05-01T12:00:00Z", &[stream()]).unwrap();
    let blob = |i: usize| format!("{i:05}{}", "y".repeat(10_000));
    for start in (0..20_000).step_by(1000) {
        let recs: Vec<String> = (start..start + 1000)
            .map(|i| json!({"id": i, "name": format!("n{i}"), "blob": blob(i)}).to_string())
            .collect();
        stage.append("items", &recs).unwrap();
    }
    let staged = stage.finish().unwrap();
    let st = &staged.streams[0];
    let rows: u64 = st.files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, 20_000);
    let db = duckdb::Connection::open_in_memory().unwrap();
    let paths: Vec<String> = st
        .files
        .iter()
        .map(|f| format!("'{}'", f.path.display()))
        .collect();
    let (n, total, ok): (i64, i64, bool) = db
        .query_row(
            &format!(
                "SELECT count(DISTINCT id), sum(length(_sluice_extra->>'blob')), \
                 bool_and(_sluice_extra->>'blob' = lpad(id::VARCHAR, 5, '0') || repeat('y', 10000)) \
                 FROM read_parquet([{}])",
                paths.join(", ")
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, total, ok), (20_000, 20_000 * 10_005, true));
}

/// JSON values — undeclared fields and JSON-typed columns — are committed byte for byte:
/// DuckDB's JSON parser would re-print `0.1000000000000000055511151231257827` as `0.1`.
#[test]
fn json_values_keep_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StagingConfig::new(dir.path());
    let mut stage = RunStage::begin(&cfg, "run1", "2024-05-01T12:00:00Z", &[stream()]).unwrap();
    let rec = r#"{"id":1,"tags":[1.50,0.1000000000000000055511151231257827,1e400],"x":{"d":18446744073709551616,"e":-0.0}}"#;
    stage.append("items", &[rec.to_string()]).unwrap();
    let staged = stage.finish().unwrap();
    let db = duckdb::Connection::open_in_memory().unwrap();
    let (tags, extra, ty): (String, String, String) = db
        .query_row(
            &format!(
                "SELECT CAST(tags AS VARCHAR), CAST(_sluice_extra AS VARCHAR), typeof(tags) FROM read_parquet('{}')",
                staged.streams[0].files[0].path.display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(ty, "JSON", "JSON columns carry Parquet's JSON logical type");
    assert_eq!(tags, "[1.50,0.1000000000000000055511151231257827,1e400]");
    assert_eq!(extra, r#"{"x":{"d":18446744073709551616,"e":-0.0}}"#);
}

/// The largest record emit accepts converts, escaped JSON and all; a larger one is refused at
/// emit, so nothing accepted can fail later.
#[test]
fn the_largest_accepted_record_converts_and_a_larger_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StagingConfig::new(dir.path());
    let mut stage = RunStage::begin(&cfg, "big", "2024-05-01T12:00:00Z", &[stream()]).unwrap();
    // Quotes double when the undeclared field travels escaped.
    let filler = "\"".repeat((MAX_RECORD_BYTES - 100) / 2);
    let rec = json!({"id": 1, "blob": filler}).to_string();
    assert!(rec.len() <= MAX_RECORD_BYTES, "{}", rec.len());
    stage.append("items", &[rec]).unwrap();
    let too_big = json!({"id": 2, "blob": "x".repeat(MAX_RECORD_BYTES)}).to_string();
    let err = stage.append("items", &[too_big]).unwrap_err();
    assert!(matches!(err, StagingError::BadRecord { .. }), "{err}");
    let staged = stage.finish().unwrap();
    assert_eq!(staged.streams[0].files[0].rows, 1);
}

/// A batch given field by field (`records.emit-fields`) stages exactly as the same records
/// given as JSON text: the same Parquet, byte for byte, the same counts, the same refusals.
#[test]
fn a_batch_given_field_by_field_stages_as_its_records_do() {
    let records: Vec<Vec<(String, String)>> = (0..3000)
        .map(|i| {
            let mut fields = vec![
                (r#""id""#.to_string(), i.to_string()),
                (
                    r#""name""#.into(),
                    json!(format!("n\"{i}\u{e9}")).to_string(),
                ),
                (
                    r#""amount""#.into(),
                    if i % 7 == 0 {
                        r#""lots""#.into()
                    } else {
                        format!("{i}.50")
                    },
                ),
                (r#""updated_at""#.into(), r#""2024-05-01T10:00:00Z""#.into()),
                (r#""t\u0061gs""#.into(), format!(r#"[{i}, {{"k": "v"}}]"#)),
                (r#""new_field""#.into(), format!(r#"{{"deep": [[{i}]]}}"#)),
            ];
            if i % 5 == 0 {
                fields.push((r#""id""#.into(), "-1".into()));
            }
            fields
        })
        .collect();
    let texts: Vec<String> = records
        .iter()
        .map(|f| {
            let joined: Vec<String> = f.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", joined.join(","))
        })
        .collect();
    // Between the spans, text that is not read: separators, and a dropped field.
    let (mut text, mut ends, mut fields) = (String::new(), Vec::new(), Vec::new());
    for f in &records {
        text.push('{');
        for (k, v) in f {
            for (piece, after) in [(k, ":"), (v, r#","url":"\ud800","#)] {
                ends.push(text.len() as u32);
                text.push_str(piece);
                ends.push(text.len() as u32);
                text.push_str(after);
            }
        }
        text.push('}');
        fields.push(f.len() as u32);
    }
    let run = |by_fields: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut stage = begin_without_key(dir.path());
        if by_fields {
            let bytes = stage.append_fields("items", &text, &ends, &fields).unwrap();
            assert_eq!(bytes, texts.iter().map(|t| t.len() as u64).sum::<u64>());
        } else {
            stage.append("items", &texts).unwrap();
        }
        let staged = stage.finish().unwrap();
        let st = &staged.streams[0];
        let files: Vec<Vec<u8>> = st
            .files
            .iter()
            .map(|f| std::fs::read(&f.path).unwrap())
            .collect();
        (st.counts.clone(), files)
    };
    let (by_text, by_fields) = (run(false), run(true));
    assert_eq!(by_text.0.records, 3000);
    assert!(by_text.0.invalid_rows > 0);
    assert_eq!(by_text, by_fields);

    // Refused the same way: a bad value, a reserved name; and ends that do not add up.
    let dir = tempfile::tempdir().unwrap();
    let mut stage = begin_without_key(dir.path());
    for (key, value) in [(r#""id""#, "[1,]"), (r#""_sluice_seq""#, "1")] {
        let bad = format!("{key}{value}");
        let at = text.len() as u32;
        let bad_ends = [
            at,
            at + key.len() as u32,
            at + key.len() as u32,
            at + bad.len() as u32,
        ];
        let mut t = text.clone();
        t.push_str(&bad);
        let mut e = ends.clone();
        e.extend(bad_ends);
        let mut f = fields.clone();
        f.push(1);
        assert!(matches!(
            stage.append_fields("items", &t, &e, &f),
            Err(StagingError::BadRecord { index: 3000, .. })
        ));
    }
    assert!(matches!(
        stage.append_fields("items", &text, &ends[..ends.len() - 4], &fields),
        Err(StagingError::BadRecord { .. })
    ));
    assert_eq!(
        stage.counts()["items"].records,
        0,
        "nothing of a refused batch is kept"
    );
}

#[test]
fn only_columns_whose_values_repeat_are_dictionary_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let mut stage = RunStage::begin(
        &StagingConfig::new(dir.path()),
        "dict",
        "2024-05-01T12:00:00Z",
        &[stream()],
    )
    .unwrap();
    let n = 3000u64;
    let batch: Vec<String> = (0..n)
        .map(|id| {
            let name = ["open", "closed", "draft"][(id % 3) as usize];
            json!({"id": id, "name": name,
                   "amount": id as f64 / 8.0, "active": id % 2 == 0,
                   "updated_at": format!("2024-05-01T{:02}:{:02}:{:02}Z", id / 3600, id / 60 % 60, id % 60)})
            .to_string()
        })
        .collect();
    stage.append("items", &batch).unwrap();
    let staged = stage.finish().unwrap();
    let file = staged.streams[0].files[0].path.display().to_string();
    let db = duckdb::Connection::open_in_memory().unwrap();
    let encoded = |column: &str| -> String {
        db.query_row(
            &format!(
                "SELECT string_agg(DISTINCT encodings, ',') FROM parquet_metadata('{file}') \
                 WHERE path_in_schema = '{column}'"
            ),
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    for repeated in ["name", "_sluice_run_id", "_sluice_extracted_at"] {
        assert!(
            encoded(repeated).contains("DICTIONARY"),
            "{repeated}: {}",
            encoded(repeated)
        );
    }
    for distinct in ["id", "amount", "updated_at", "_sluice_seq"] {
        assert!(
            !encoded(distinct).contains("DICTIONARY"),
            "{distinct}: {}",
            encoded(distinct)
        );
    }
    // The values read back whichever way they were encoded.
    let (rows, ids, names, amount): (i64, i64, i64, f64) = db
        .query_row(
            &format!(
                "SELECT count(*), count(DISTINCT id), count(DISTINCT name), sum(amount) \
                 FROM read_parquet('{file}')"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((rows, ids, names), (n as i64, n as i64, 3));
    assert_eq!(amount, (0..n).map(|id| id as f64 / 8.0).sum::<f64>());
}
