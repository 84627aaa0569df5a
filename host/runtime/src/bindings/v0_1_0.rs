//! `sluice:connector@0.1.0`, frozen in `wit/versions/0.1.0/connector.wit`. Still served: each
//! import delegates to the current world's implementation (in [`crate::host`]), and every
//! conversion between this version's types and the current ones is in this file.
//!
//! 0.1.0 has no `clock` interface, and its `sync-request` has no `started-at` or `run-id`: a
//! 0.1.0 component simply does not get them.

use super::latest::exports::sluice::connector::connector as now_connector;
use super::latest::sluice::connector as now;
use crate::host::HostState;

wasmtime::component::bindgen!({
    path: "../../wit/versions/0.1.0",
    world: "connector-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

/// The package version of this module's world.
pub const VERSION: &str = "0.1.0";

use exports::sluice::connector::connector as old_connector;
use sluice::connector::{http, log, records, secrets, types};

impl types::Host for HostState {}

impl http::Host for HostState {
    async fn fetch(
        &mut self,
        request: http::Request,
    ) -> wasmtime::Result<Result<http::Response, http::HttpError>> {
        let out = now::http::Host::fetch(self, request.into()).await?;
        Ok(out.map(Into::into).map_err(Into::into))
    }
}

impl records::Host for HostState {
    async fn emit(
        &mut self,
        stream: String,
        records: Vec<String>,
    ) -> wasmtime::Result<Result<(), records::EmitError>> {
        let out = now::records::Host::emit(self, stream, records).await?;
        Ok(out.map_err(Into::into))
    }

    async fn checkpoint(
        &mut self,
        stream: String,
        state: String,
    ) -> wasmtime::Result<Result<(), records::EmitError>> {
        let out = now::records::Host::checkpoint(self, stream, state).await?;
        Ok(out.map_err(Into::into))
    }
}

impl secrets::Host for HostState {
    async fn get(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<String, secrets::SecretError>> {
        let out = now::secrets::Host::get(self, name).await?;
        Ok(out.map_err(Into::into))
    }
}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        now::log::Host::log(self, level.into(), message, fields).await
    }
}

// Imports: what a 0.1.0 guest passes in, converted to the current types...

impl From<http::Method> for now::http::Method {
    fn from(m: http::Method) -> Self {
        match m {
            http::Method::Get => Self::Get,
            http::Method::Head => Self::Head,
            http::Method::Post => Self::Post,
            http::Method::Put => Self::Put,
            http::Method::Patch => Self::Patch,
            http::Method::Delete => Self::Delete,
        }
    }
}

impl From<http::SecretHeader> for now::http::SecretHeader {
    fn from(h: http::SecretHeader) -> Self {
        Self {
            header: h.header,
            secret: h.secret,
            prefix: h.prefix,
        }
    }
}

impl From<http::Request> for now::http::Request {
    fn from(r: http::Request) -> Self {
        Self {
            method: r.method.into(),
            url: r.url,
            headers: r.headers,
            body: r.body,
            secret_headers: r.secret_headers.into_iter().map(Into::into).collect(),
            idempotent: r.idempotent,
        }
    }
}

impl From<log::Level> for now::log::Level {
    fn from(l: log::Level) -> Self {
        match l {
            log::Level::Trace => Self::Trace,
            log::Level::Debug => Self::Debug,
            log::Level::Info => Self::Info,
            log::Level::Warn => Self::Warn,
            log::Level::Error => Self::Error,
        }
    }
}

// ...and what the host answers, converted back.

impl From<now::http::Response> for http::Response {
    fn from(r: now::http::Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<now::http::HttpError> for http::HttpError {
    fn from(e: now::http::HttpError) -> Self {
        use now::http::HttpError as E;
        match e {
            E::Denied(m) => Self::Denied(m),
            E::InvalidRequest(m) => Self::InvalidRequest(m),
            E::UnknownSecret(m) => Self::UnknownSecret(m),
            E::Timeout => Self::Timeout,
            E::Connection(m) => Self::Connection(m),
            E::TooLarge(n) => Self::TooLarge(n),
        }
    }
}

impl From<now::records::EmitError> for records::EmitError {
    fn from(e: now::records::EmitError) -> Self {
        use now::records::EmitError as E;
        match e {
            E::UnknownStream(s) => Self::UnknownStream(s),
            E::InvalidRecord(r) => Self::InvalidRecord(r),
        }
    }
}

impl From<now::secrets::SecretError> for secrets::SecretError {
    fn from(e: now::secrets::SecretError) -> Self {
        use now::secrets::SecretError as E;
        match e {
            E::Undeclared(n) => Self::Undeclared(n),
            E::Missing(n) => Self::Missing(n),
        }
    }
}

// Exports: what the host passes to a 0.1.0 guest, and what it returns.

impl From<&now_connector::SyncRequest> for old_connector::SyncRequest {
    /// `started-at` and `run-id` do not exist in 0.1.0: they are left out.
    fn from(r: &now_connector::SyncRequest) -> Self {
        Self {
            config: r.config.clone(),
            streams: r.streams.clone(),
            state: r.state.clone(),
        }
    }
}

impl From<old_connector::ConnectorManifest> for now_connector::ConnectorManifest {
    fn from(m: old_connector::ConnectorManifest) -> Self {
        Self {
            id: m.id,
            name: m.name,
            version: m.version,
            description: m.description,
            config_schema: m.config_schema,
            secrets: m.secrets.into_iter().map(Into::into).collect(),
            hosts: m.hosts,
            streams: m.streams.into_iter().map(Into::into).collect(),
            memory_mib: m.memory_mib,
        }
    }
}

impl From<old_connector::SecretSpec> for now_connector::SecretSpec {
    fn from(s: old_connector::SecretSpec) -> Self {
        Self {
            name: s.name,
            description: s.description,
            required: s.required,
        }
    }
}

impl From<types::StreamSpec> for now::types::StreamSpec {
    fn from(s: types::StreamSpec) -> Self {
        Self {
            name: s.name,
            description: s.description,
            primary_key: s.primary_key,
            cursor_field: s.cursor_field,
            json_schema: s.json_schema,
        }
    }
}

impl From<types::ConnectorError> for now::types::ConnectorError {
    fn from(e: types::ConnectorError) -> Self {
        use types::ErrorCode as C;
        let code = match e.code {
            C::InvalidCredentials => now::types::ErrorCode::InvalidCredentials,
            C::InsufficientScope => now::types::ErrorCode::InsufficientScope,
            C::InvalidConfig => now::types::ErrorCode::InvalidConfig,
            C::Unreachable => now::types::ErrorCode::Unreachable,
            C::RateLimited => now::types::ErrorCode::RateLimited,
            C::Internal => now::types::ErrorCode::Internal,
        };
        Self {
            code,
            message: e.message,
        }
    }
}
