//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Json;

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice", description = "Runs data connectors as sandboxed WebAssembly components."),
    paths(
        crate::connectors::health,
        serve,
        crate::connectors::ready,
        crate::connectors::list,
        crate::connectors::get_one,
        crate::mirror::ping,
        crate::mirror::validate,
        crate::mirror::create_run,
        crate::mirror::list_runs,
        crate::mirror::get_run,
        crate::mirror::cancel_run,
        crate::mirror::schema_sync,
    ),
    modifiers(&TokenScheme)
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

/// The OpenAPI document of this service.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
