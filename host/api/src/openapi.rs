//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use serde_json::Value;
use utoipa::openapi::schema::{ArrayBuilder, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{Components, KnownFormat, Object, Ref, RefOr, SchemaFormat};
use utoipa::{Modify, OpenApi};

use crate::schema;

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice", description = "Runs data connectors as sandboxed WebAssembly components."),
    paths(
        crate::connectors::health,
        serve,
        crate::connectors::ready,
        crate::metrics::serve,
        crate::connectors::list,
        crate::connectors::get_one,
        crate::connectors::docs,
        crate::mirror::ping,
        crate::mirror::validate,
        crate::mirror::create_run,
        crate::mirror::list_runs,
        crate::mirror::get_run,
        crate::mirror::cancel_run,
        crate::mirror::schema_sync,
        crate::services::list,
        crate::services::get_one,
        crate::services::connect,
        crate::services::disconnect,
        crate::services::health,
        crate::services::docs,
    ),
    modifiers(&TokenScheme, &CatalogShapes)
)]
struct ApiDoc;

struct TokenScheme;

impl Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-connect-service-token"))),
        );
    }
}

/// The catalog types live in `sluice-runs` and name `sluice-storage` types that have no schema
/// derive: their column and connector shapes are described here, and the members that are always
/// present (null or not) are marked required.
struct CatalogShapes;

impl Modify for CatalogShapes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert("ColumnSpec".into(), schema::column_spec().into());
        components
            .schemas
            .insert("ConnectorRef".into(), schema::connector_ref().into());
        if let Some(stream) = object_mut(components, "CatalogStream") {
            stream.properties.insert(
                "columns".into(),
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("ColumnSpec"))
                    .description(Some(
                        "Columns, as DuckDB types them (the _sluice_* columns included).",
                    ))
                    .into(),
            );
            require(stream, &["cursor_field", "view_sql"]);
        }
        if let Some(catalog) = object_mut(components, "Catalog") {
            catalog
                .properties
                .insert("connector".into(), schema::nullable_ref("ConnectorRef"));
            require(catalog, &["connector"]);
            if let Some(RefOr::T(Schema::Object(at))) = catalog.properties.get_mut("generated_at") {
                at.format = Some(SchemaFormat::KnownFormat(KnownFormat::DateTime));
            }
        }
    }
}

fn object_mut<'a>(components: &'a mut Components, name: &str) -> Option<&'a mut Object> {
    match components.schemas.get_mut(name)? {
        RefOr::T(Schema::Object(o)) => Some(o),
        _ => None,
    }
}

fn require(o: &mut Object, names: &[&str]) {
    for n in names {
        if !o.required.iter().any(|r| r == n) {
            o.required.push((*n).to_string());
        }
    }
}

/// The OpenAPI document of this service, as JSON.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    fix_link_keys(&mut doc);
    doc
}

/// utoipa 5 serializes a Link Object's members in snake_case (`operation_id`); OpenAPI names
/// them `operationId`, `operationRef` and `requestBody`, and clients ignore the others.
fn fix_link_keys(doc: &mut Value) {
    let ops = doc
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for op in ops {
        let responses = op
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|r| r.values_mut());
        for response in responses {
            let links = response
                .get_mut("links")
                .and_then(Value::as_object_mut)
                .into_iter()
                .flat_map(|l| l.values_mut())
                .filter_map(Value::as_object_mut);
            for link in links {
                for (from, to) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(v) = link.remove(from) {
                        link.insert(to.into(), v);
                    }
                }
            }
        }
    }
}

#[utoipa::path(get, path = "/openapi.json", tag = "service", operation_id = "getOpenApiDocument",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = std::collections::BTreeMap<String, Value>, content_type = "application/json")))]
pub async fn serve() -> impl axum::response::IntoResponse {
    // Built and serialized once: the route is open, and building the document per request let
    // 1,000 clients pipelining requests they never read hold the pod's CPU (an outside attack,
    // session 11: /health timed out). The document does not change while the process runs.
    static BODY: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    let body = BODY.get_or_init(|| bytes::Bytes::from(document().to_string()));
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.clone(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    fn doc() -> Value {
        super::document()
    }

    /// Every schema in the document, with where it is.
    fn schemas(v: &Value, at: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                if m.contains_key("type") || m.contains_key("$ref") || m.contains_key("oneOf") {
                    out.push((at.to_string(), v.clone()));
                }
                for (k, c) in m {
                    // Examples and links hold values, not schemas.
                    if k != "example" && k != "examples" && k != "links" {
                        schemas(c, &format!("{at}/{k}"), out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    schemas(c, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_object_is_left_undescribed() {
        let mut all = vec![];
        schemas(&doc(), "#", &mut all);
        for (at, s) in all {
            let is_object = s["type"] == "object"
                || s["type"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "object"));
            if is_object {
                assert!(
                    s.get("properties").is_some() || s.get("additionalProperties").is_some(),
                    "{at} is a bare object (a typed client sees Record<string, never>): {s}"
                );
            }
        }
    }

    #[test]
    fn operation_ids_are_unique_and_descriptive() {
        let d = doc();
        let mut seen = BTreeSet::new();
        for (path, item) in d["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(
                    id.len() >= 4 && !["list", "get_one", "serve", "health", "ready"].contains(&id),
                    "{method} {path}: operationId {id:?}"
                );
                assert!(seen.insert(id.to_string()), "operationId {id} repeated");
            }
        }
    }

    #[test]
    fn parameters_are_never_null() {
        let d = doc();
        for (path, item) in d["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    assert!(
                        !p["schema"].to_string().contains("null"),
                        "{method} {path}: parameter {p} may be null"
                    );
                }
            }
        }
    }

    #[test]
    fn timestamps_are_date_times_and_always_present_members_required() {
        let d = doc();
        let s = &d["components"]["schemas"];
        for (schema, field) in [
            ("RunRecord", "created_at"),
            ("RunRecord", "started_at"),
            ("RunRecord", "finished_at"),
            ("Catalog", "generated_at"),
        ] {
            assert_eq!(
                s[schema]["properties"][field]["format"], "date-time",
                "{schema}.{field}"
            );
        }
        for (schema, fields) in [
            (
                "RunRecord",
                &[
                    "connector_version",
                    "started_at",
                    "finished_at",
                    "error",
                    "created_at",
                ][..],
            ),
            ("StreamStats", &["invalid_rows", "refused_records"]),
            ("CatalogStream", &["cursor_field", "view_sql", "columns"]),
            ("Catalog", &["connector", "generated_at"]),
            ("ConnectorInfo", &["file", "memory_mib", "config_schema"]),
            ("StreamInfo", &["cursor_field", "json_schema"]),
            ("FailureInfo", &["serving"]),
        ] {
            let required = s[schema]["required"].as_array().unwrap();
            for f in fields {
                assert!(required.iter().any(|r| r == f), "{schema}.{f} not required");
            }
        }
        let retry = &d["paths"]["/internal/mirror-connections/runs"]["post"]["responses"]["503"];
        assert!(retry["headers"]["Retry-After"].is_object(), "{retry}");
    }

    #[test]
    fn links_name_operations_that_exist() {
        let d = doc();
        let text = d.to_string();
        assert!(
            !text.contains("\"operation_id\""),
            "snake_case link member left"
        );
        let ids: BTreeSet<&str> = d["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|i| i.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let created = &d["paths"]["/internal/mirror-connections/runs"]["post"]["responses"]["202"];
        let links = created["links"].as_object().unwrap();
        assert_eq!(links.len(), 2, "{created}");
        for link in links.values() {
            let id = link["operationId"].as_str().unwrap();
            assert!(ids.contains(id), "link to unknown operation {id}");
            assert_eq!(link["parameters"]["run_id"], "$response.body#/run_id");
        }
    }
}
