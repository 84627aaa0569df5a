//! A connector's documentation for analysts, in Markdown: authentication, configuration,
//! streams with their columns, primary keys and cursors, and how to query the synced Parquet
//! with DuckDB. Generated from the manifest and a catalog (issue 11's "skill file" per
//! connector), served at `GET /internal/connectors/{id}/docs` and written beside the data as
//! `{prefix}/{connection_id}/_README.md` by schema-sync.
//!
//! Everything here comes from the plugin (untrusted): text is written into Markdown as
//! escaped inline text or inside code spans, never as raw Markdown or HTML.

use std::fmt::Write as _;

use serde_json::Value;
use sluice_runtime::manifest::Manifest;

use crate::catalog::CatalogStream;

/// The Markdown page of a connector. `streams` are the catalog's tables (committed, or
/// [`planned_stream`](crate::catalog::planned_stream)s).
pub fn connector_markdown(m: &Manifest, streams: &[CatalogStream]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} ({} {})\n",
        text(&m.name),
        code(&m.id),
        text(&m.version)
    );
    if !m.description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", text(&m.description));
    }
    authentication(&mut out, m);
    configuration(&mut out, &m.config_schema);
    let _ = writeln!(out, "## Streams\n");
    for s in streams {
        let description = m
            .streams
            .iter()
            .find(|d| d.name == s.name)
            .map(|d| d.description.as_str())
            .unwrap_or("");
        stream(&mut out, s, description);
    }
    querying(&mut out);
    out
}

/// An internal service's entry in the services registry (`SERVICES_FILE`), as its page shows it.
/// The registry is the operator's file: `docs` is Markdown written for analysts and goes in as
/// given; the other fields are escaped like plugin text.
pub struct ServiceEntry<'a> {
    /// Service id, e.g. `purchase-orders`.
    pub id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    /// Variables the analyst's key is exported under, e.g. `PO_API_KEY`.
    pub env: &'a [String],
    /// A variable the base URL is exported under, if any.
    pub url_env: Option<&'a str>,
    /// The operator's Markdown for analysts (may be empty).
    pub docs: &'a str,
}

/// The page of an internal service (issue 11's `sc_*.md` skill file): what the service is, the
/// variables the analyst's key arrives in after "Connect", the operator's own docs, then the
/// page of the connector that syncs it (`None`: that connector is not loaded now).
pub fn service_markdown(
    svc: &ServiceEntry,
    connector: Option<(&Manifest, &[CatalogStream])>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {} (service {})\n", text(svc.name), code(svc.id));
    if !svc.description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", text(svc.description));
    }
    let _ = writeln!(out, "## Access\n");
    let vars: Vec<String> = svc.env.iter().map(|v| code(v)).collect();
    let _ = writeln!(
        out,
        "After \"Connect\", your personal API key for this service is in {}.",
        vars.join(", ")
    );
    if let Some(url) = svc.url_env {
        let _ = writeln!(out, "The service's base URL is in {}.", code(url));
    }
    let _ = writeln!(out, "\"Disconnect\" revokes the key.\n");
    if !svc.docs.trim().is_empty() {
        let _ = writeln!(out, "## About the data\n\n{}\n", svc.docs.trim());
    }
    match connector {
        Some((m, streams)) => out.push_str(&connector_markdown(m, streams)),
        None => {
            let _ = writeln!(
                out,
                "Its connector is not loaded right now: no streams to list."
            );
        }
    }
    out
}

fn authentication(out: &mut String, m: &Manifest) {
    let _ = writeln!(out, "## Authentication\n");
    if m.secrets.is_empty() {
        let _ = writeln!(out, "No credentials.\n");
    } else {
        let _ = writeln!(
            out,
            "Credentials go in a request's `credentials` object; the host injects them into \
             the connector's requests and never stores or logs them.\n"
        );
        for s in &m.secrets {
            let required = if s.required { "required" } else { "optional" };
            let _ = writeln!(
                out,
                "- {} ({required}): {}",
                code(&s.name),
                text(&s.description)
            );
        }
        out.push('\n');
    }
    if !m.hosts.is_empty() {
        let hosts: Vec<String> = m.hosts.iter().map(|h| code(&h.to_string())).collect();
        let _ = writeln!(out, "Reaches only: {}.\n", hosts.join(", "));
    }
}

/// The top-level properties of the config's JSON Schema.
fn configuration(out: &mut String, schema: &Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    if props.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Configuration\n\n| field | type | required | description |\n|---|---|---|---|"
    );
    for (name, p) in props {
        let ty = match p.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
            _ => String::new(),
        };
        let description = p.get("description").and_then(Value::as_str).unwrap_or("");
        let yes = requirement(schema, name);
        let _ = writeln!(
            out,
            "| {} | {} | {yes} | {} |",
            code(name),
            text(&ty),
            text(description)
        );
    }
    out.push('\n');
}

/// The names a (sub)schema's `required` lists.
fn required_of(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether config field `name` must be given, as the docs' `required` cell says it: `yes`
/// (the schema's `required`, or every `allOf` branch's), `no`, or, when `anyOf`/`oneOf`
/// branches require it or others, which alternatives (`one of `repositories`, `organization``):
/// GitHub's `repositories` read "no" though the schema demands it or `organization`.
fn requirement(schema: &Value, name: &str) -> String {
    let branches = |key: &str| -> Vec<&Value> {
        schema
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    if required_of(schema).contains(&name)
        || branches("allOf")
            .iter()
            .any(|b| required_of(b).contains(&name))
    {
        return "yes".into();
    }
    for (key, how) in [("anyOf", "at least one of"), ("oneOf", "exactly one of")] {
        let group = branches(key);
        // Only a group whose every branch requires something demands a choice.
        if group.is_empty()
            || group.iter().any(|b| required_of(b).is_empty())
            || !group.iter().any(|b| required_of(b).contains(&name))
        {
            continue;
        }
        let alternatives: Vec<String> = group
            .iter()
            .map(|b| {
                required_of(b)
                    .iter()
                    .map(|n| code(n))
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .collect();
        return format!("{how} {}", alternatives.join(", "));
    }
    "no".into()
}

fn stream(out: &mut String, s: &CatalogStream, description: &str) {
    let _ = writeln!(out, "### {}\n", code(&s.name));
    if !description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", text(description));
    }
    let key = if s.primary_key.is_empty() {
        "none (every row is kept)".to_string()
    } else {
        s.primary_key
            .iter()
            .map(|k| code(k))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sync = match &s.cursor_field {
        Some(c) => format!("incremental on {}", code(c)),
        None => "full refresh each run".to_string(),
    };
    let _ = writeln!(out, "Primary key: {key}. Sync: {sync}.");
    if s.row_count > 0 {
        let files = s.files.len();
        let _ = writeln!(
            out,
            "Committed: {} rows in {files} Parquet file{}.",
            s.row_count,
            if files == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(out, "\n| column | type | nullable |\n|---|---|---|");
    for c in &s.columns {
        let nullable = if c.nullable { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "| {} | {} | {nullable} |",
            code(&c.name),
            text(&c.data_type)
        );
    }
    out.push('\n');
    if let Some(sql) = &s.view_sql {
        let _ = writeln!(
            out,
            "The latest version of each row, as a DuckDB view:\n\n```sql\n{}\n```\n",
            sql.replace("```", "")
        );
    }
}

fn querying(out: &mut String) {
    let _ = writeln!(
        out,
        "## Querying with DuckDB\n\n\
         Each run writes `{{prefix}}/{{connection_id}}/{{stream}}/{{run_id}}-{{part}}.parquet`; only the \
         files named by the runs listed in `_state.json` are committed, and `_schema.json` lists \
         them per stream with a `view_sql` that keeps the latest version of each row (a stream \
         read in full — by a `full_refresh` run, or one its connector does not sync \
         incrementally — lists only the files of its latest full read, so rows deleted upstream \
         leave it). Every row \
         also has `_sluice_run_id`, `_sluice_extracted_at` (the run's start), `_sluice_seq` (order \
         of emission), `_sluice_extra` (fields the schema does not declare, as JSON) and \
         `_sluice_errors` (values that did not fit their column, as JSON).\n\n\
         ```sql\nINSTALL httpfs; LOAD httpfs;  -- for s3:// files (INSTALL downloads the extension once)\n\
         SELECT count(*) FROM read_parquet(['<files from _schema.json>'], union_by_name = true);\n```\n"
    );
}

/// Plugin text as one escaped Markdown paragraph or table cell: no raw HTML, links, headings
/// or column breaks. Text between matching backticks (`` `owner/repo` ``) stays a code span,
/// as its author wrote it (escaped, it showed as \`owner/repo\`); an unmatched backtick is
/// escaped.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('`') {
        out.push_str(&escape(&rest[..at]));
        let run = rest[at..].len() - rest[at..].trim_start_matches('`').len();
        let after = &rest[at + run..];
        match closing_run(after, run) {
            Some(end) if !after[..end].trim().is_empty() => {
                out.push_str(&code(&after[..end]));
                rest = &after[end + run..];
            }
            _ => {
                out.push_str(&"\\`".repeat(run));
                rest = after;
            }
        }
    }
    out.push_str(&escape(rest));
    out
}

/// Where a run of exactly `n` backticks begins in `s` (a code span's end, CommonMark §6.1).
fn closing_run(s: &str, n: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            let start = i;
            while i < bytes.len() && bytes[i] == b'`' {
                i += 1;
            }
            if i - start == n {
                return Some(start);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Plain text with every Markdown-active character escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '!' | '&' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Plugin text inside a code span (CommonMark §6.1): the fence is longer than any run of
/// backticks inside, and line breaks become spaces.
fn code(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let longest = clean.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if clean.starts_with('`') || clean.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", clean.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::planned_stream;
    use serde_json::json;

    fn manifest() -> Manifest {
        let stream: sluice_runtime::StreamSpec = serde_json::from_value(json!({
            "name": "orders", "description": "Orders, newest last",
            "primary_key": ["id"], "cursor_field": "updated_at",
            "json_schema": {"type": "object", "properties": {
                "id": {"type": "integer"}, "updated_at": {"type": "string", "format": "date-time"},
                "total`|`x": {"type": "number"}}}
        }))
        .unwrap();
        Manifest {
            id: "acme".into(),
            name: "Acme <script>alert(1)</script>".into(),
            version: "1.2.3".into(),
            description: "Purchase orders | *all* of them".into(),
            config_schema: json!({"type": "object", "required": ["base_url"],
                "anyOf": [{"required": ["repositories"]}, {"required": ["organization"]}],
                "properties": {
                "base_url": {"type": "string", "description": "Where the API lives, e.g. `https://x/api` (a `|` ``a`b`` `x"},
                "page_size": {"type": ["integer", "null"]},
                "repositories": {"type": "array"},
                "organization": {"type": "string"}
            }}),
            secrets: vec![sluice_runtime::SecretSpec {
                name: "api_key".into(),
                description: "The analyst's key".into(),
                required: true,
            }],
            hosts: vec![sluice_runtime::policy::HostRule::parse("{config.base_url}").unwrap()],
            streams: vec![stream],
            memory_mib: None,
        }
    }

    #[test]
    fn the_page_names_auth_config_streams_columns_keys_and_cursor() {
        let m = manifest();
        let streams: Vec<CatalogStream> = m.streams.iter().map(planned_stream).collect();
        let md = connector_markdown(&m, &streams);
        for want in [
            "# Acme \\<script\\>alert(1)\\</script\\> (`acme` 1.2.3)",
            "Purchase orders \\| \\*all\\* of them",
            "- `api_key` (required): The analyst's key",
            // Paired backticks are code spans; a lone one is escaped, a pipe never splits the cell.
            "| `base_url` | string | yes | Where the API lives, e.g. `https://x/api` (a `\\|` ``a`b`` \\`x |",
            // anyOf: each alternative says so (it read \"no\").
            "| `repositories` | array | at least one of `repositories`, `organization` |  |",
            "| `organization` | string | at least one of `repositories`, `organization` |  |",
            "| `page_size` | integer or null | no |  |",
            "### `orders`",
            "Primary key: `id`. Sync: incremental on `updated_at`.",
            "| `id` | BIGINT | no |",
            "| `updated_at` | TIMESTAMPTZ | yes |",
            "| `_sluice_run_id` | VARCHAR | no |",
            "## Querying with DuckDB",
        ] {
            assert!(md.contains(want), "missing {want:?} in:\n{md}");
        }
        // A backtick or pipe in a plugin's name never breaks out of its code span or cell.
        assert!(md.contains("total`\\|`x"), "{md}");
        assert!(!md.contains("<script>"));
    }

    #[test]
    fn a_service_page_has_its_variables_the_operators_docs_then_the_connector() {
        let m = manifest();
        let streams: Vec<CatalogStream> = m.streams.iter().map(planned_stream).collect();
        let env = vec!["PO_API_KEY".to_string(), "PO_TOKEN".to_string()];
        let svc = ServiceEntry {
            id: "purchase-orders",
            name: "Purchase <b>orders</b>",
            description: "Every PO since 2019",
            env: &env,
            url_env: Some("PO_BASE_URL"),
            docs: "Ask **#finance** for access.\n\n| table | rows |",
        };
        let md = service_markdown(&svc, Some((&m, &streams)));
        let at = |want: &str| {
            md.find(want)
                .unwrap_or_else(|| panic!("missing {want:?} in:\n{md}"))
        };
        let order = [
            at("# Purchase \\<b\\>orders\\</b\\> (service `purchase-orders`)"),
            at("in `PO_API_KEY`, `PO_TOKEN`."),
            at("base URL is in `PO_BASE_URL`."),
            // The operator's Markdown is kept as Markdown.
            at("## About the data\n\nAsk **#finance** for access.\n\n| table | rows |"),
            at("# Acme"),
            at("### `orders`"),
        ];
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "sections out of order:\n{md}"
        );
        let without = service_markdown(&svc, None);
        assert!(without.contains("not loaded"), "{without}");
        assert!(!without.contains("### `orders`"));
    }

    #[test]
    fn code_spans_outlast_the_backticks_inside() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
        assert_eq!(code("a\nb"), "`a b`");
    }
}
