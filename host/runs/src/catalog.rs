//! The schema catalog of a connection: what storage committed, as tables the backend can query.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_runtime::StreamSpec;
use sluice_staging::{EXTRACTED_AT_COLUMN, RUN_ID_COLUMN, SEQ_COLUMN, columns_for, ident};
use sluice_storage::commit::{self, ColumnSpec, ConnectorRef, Layout};
use sluice_storage::{StorageError, Store};

/// One table of the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CatalogStream {
    pub name: String,
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<ColumnSpec>,
    pub primary_key: Vec<String>,
    pub cursor_field: Option<String>,
    /// Rows in the committed files (before primary-key deduplication).
    pub row_count: u64,
    /// Committed Parquet files, as DuckDB addresses them.
    pub files: Vec<String>,
    /// DuckDB SQL creating a view of the latest version of each row (`None` without files).
    pub view_sql: Option<String>,
}

/// `_schema.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Catalog {
    pub connection_id: String,
    #[schema(value_type = Option<Object>)]
    pub connector: Option<ConnectorRef>,
    pub generated_at: String,
    pub committed_runs: usize,
    pub streams: Vec<CatalogStream>,
}

/// Why a schema-sync wrote no catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Reading the committed runs or writing `_schema.json` failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The connection's data was committed by another connector (see
    /// [`crate::pipeline::check_same_connector`]); nothing was written.
    #[error("{0}")]
    OtherConnector(String),
}

/// Builds the catalog of `connector`'s connection from committed runs (plus `discovered`
/// streams with no data yet) and writes it to `_schema.json` next to the data.
///
/// A stream's table is made of the files since the last run that read it in full: a run that
/// was handed no state for it — a `full_refresh` run, or one after runs that never
/// checkpointed the stream (a stream synced in full every time) —, replayed from the manifests
/// exactly as the pipeline hands state in and [`commit::commit_run`] keeps it. A connector
/// given no state reads the stream from the start, so rows the upstream deleted leave the table
/// at the next full read instead of staying forever; older files stay in storage, unreferenced
/// by the catalog.
pub async fn schema_sync(
    store: &dyn Store,
    layout: &Layout,
    connection_id: &str,
    connector: &str,
    discovered: &[StreamSpec],
) -> Result<Catalog, CatalogError> {
    let state = commit::read_state(store, layout).await?;
    crate::pipeline::check_same_connector(&state, connector, connection_id)
        .map_err(|e| CatalogError::OtherConnector(e.to_string()))?;
    let mut streams: BTreeMap<String, CatalogStream> = BTreeMap::new();
    // Streams with a committed state before the run at hand (what it was handed).
    let mut with_state: BTreeSet<String> = BTreeSet::new();
    for run_id in &state.runs {
        let m = commit::read_manifest(store, layout, run_id).await?;
        let full_reads: BTreeSet<String> = m
            .streams
            .keys()
            .filter(|name| m.full_refresh || !with_state.contains(*name))
            .cloned()
            .collect();
        for (name, s) in &m.streams {
            if s.state.is_some() {
                with_state.insert(name.clone());
            } else if m.full_refresh {
                with_state.remove(name);
            }
        }
        for (name, s) in m.streams {
            let entry = streams
                .entry(name.clone())
                .or_insert_with(|| CatalogStream {
                    name: name.clone(),
                    columns: vec![],
                    primary_key: vec![],
                    cursor_field: None,
                    row_count: 0,
                    files: vec![],
                    view_sql: None,
                });
            if full_reads.contains(&name) {
                // A full read: the table is what it read, from here on.
                entry.columns.clear();
                entry.files.clear();
                entry.row_count = 0;
            }
            // The latest run's schema describes the table; older files are read by name.
            entry.columns = merge_columns(&entry.columns, &s.columns);
            entry.primary_key = s.primary_key;
            entry.cursor_field = s.cursor_field;
            entry.row_count += s.files.iter().map(|f| f.rows).sum::<u64>();
            entry
                .files
                .extend(s.files.iter().map(|f| store.url(&f.key)));
        }
    }
    for d in discovered {
        streams
            .entry(d.name.clone())
            .or_insert_with(|| planned_stream(d));
    }
    for s in streams.values_mut() {
        s.view_sql = view_sql(s);
    }
    let catalog = Catalog {
        connection_id: connection_id.to_string(),
        connector: state.connector,
        generated_at: crate::now_rfc3339(),
        committed_runs: state.runs.len(),
        streams: streams.into_values().collect(),
    };
    let body =
        serde_json::to_vec_pretty(&catalog).map_err(|e| StorageError::Invalid(e.to_string()))?;
    store.put_bytes(&layout.schema_key(), body).await?;
    Ok(catalog)
}

/// The table a stream will have before any data was committed: its columns as staging types
/// them from the stream's JSON Schema, plus the host's columns.
pub fn planned_stream(d: &StreamSpec) -> CatalogStream {
    let mut columns: Vec<ColumnSpec> = columns_for(&d.json_schema, &d.primary_key)
        .into_iter()
        .map(|c| ColumnSpec {
            name: c.name,
            data_type: c.duck_type,
            nullable: c.nullable,
        })
        .collect();
    columns.extend(crate::pipeline::host_columns());
    CatalogStream {
        name: d.name.clone(),
        columns,
        primary_key: d.primary_key.clone(),
        cursor_field: d.cursor_field.clone(),
        row_count: 0,
        files: vec![],
        view_sql: None,
    }
}

/// Columns of the newest schema, keeping columns older files still have (schema evolution).
fn merge_columns(old: &[ColumnSpec], new: &[ColumnSpec]) -> Vec<ColumnSpec> {
    let mut out = new.to_vec();
    for c in old {
        if !out.iter().any(|n| n.name == c.name) {
            out.push(ColumnSpec {
                nullable: true,
                ..c.clone()
            });
        }
    }
    out
}

/// `CREATE VIEW` of the latest version of each row: deduplicated on the primary key, the
/// newest run winning, then the last record emitted within it.
fn view_sql(s: &CatalogStream) -> Option<String> {
    if s.files.is_empty() {
        return None;
    }
    let files = s
        .files
        .iter()
        .map(|f| format!("'{}'", f.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let source = format!("read_parquet([{files}], union_by_name = true)");
    let name = ident(&s.name);
    if s.primary_key.is_empty() {
        return Some(format!(
            "CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source};"
        ));
    }
    let pk = s
        .primary_key
        .iter()
        .map(|k| ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "CREATE OR REPLACE VIEW {name} AS SELECT * EXCLUDE (_sluice_rank) FROM (SELECT *, row_number() OVER (PARTITION BY {pk} ORDER BY {at} DESC, {run} DESC, {seq} DESC) AS _sluice_rank FROM {source}) WHERE _sluice_rank = 1;",
        at = ident(EXTRACTED_AT_COLUMN),
        run = ident(RUN_ID_COLUMN),
        seq = ident(SEQ_COLUMN),
    ))
}
