// The API as a typed client sees it. `scripts/contract-api.sh` generates `generated/api.ts` from the
// `/openapi.json` the built service serves (openapi-typescript, default options) and compiles this
// file with `tsc --strict`: one typed call of every route, as a Node backend would write it, and
// type assertions on what comes back. It is never run; compiling is the test.
//
// `// @ts-expect-error` lines are requests the document must refuse: tsc fails if one compiles.

import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api.js";

type Schemas = components["schemas"];

/** True when A and B are the same type (not merely assignable). */
type Equals<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<_T extends true>(): void {}

export async function everyRoute(baseUrl: string, token: string): Promise<void> {
  const client = createClient<paths>({
    baseUrl,
    headers: { "x-connect-service-token": token },
  });

  // GET /health, GET /ready, GET /openapi.json
  {
    const { data } = await client.GET("/health");
    const status: string | undefined = data?.status;
    void status;
    const ready = await client.GET("/ready");
    if (ready.error) {
      const loading: string = ready.error.status; // 503 {"status": "loading"}
      void loading;
    }
    const doc = await client.GET("/openapi.json");
    const openapi: { [key: string]: unknown } | undefined = doc.data;
    void openapi;
  }

  // GET /metrics (Prometheus text)
  {
    const { data, error } = await client.GET("/metrics", { parseAs: "text" });
    if (error) {
      const detail: string = error.detail; // 401 (unless METRICS_PUBLIC=true), 500
      void detail;
    } else {
      const text: string = data;
      void text;
    }
  }

  // POST /internal/mirror-connections/ping
  {
    const { data, error } = await client.POST("/internal/mirror-connections/ping");
    if (error) {
      const detail: string = error.detail; // 401
      void detail;
    } else {
      const ok: string = data.status;
      void ok;
    }
  }

  // GET /internal/connectors
  {
    const { data } = await client.GET("/internal/connectors");
    for (const c of data?.connectors ?? []) {
      const schema: { [key: string]: unknown } = c.config_schema;
      const file: string | null = c.file;
      const memory: number | null = c.memory_mib;
      void [schema, file, memory];
      for (const s of c.streams) {
        const pk: string[] = s.primary_key;
        const cursor: string | null = s.cursor_field;
        const json: { [key: string]: unknown } = s.json_schema;
        void [pk, cursor, json];
      }
      for (const s of c.secrets) {
        const name: string = s.name;
        const required: boolean = s.required;
        void [name, required];
      }
    }
    for (const f of data?.failures ?? []) {
      const serving: string | null = f.serving;
      void serving;
    }
    assertType<Equals<Schemas["ConnectorInfo"]["file"], string | null>>();
    assertType<Equals<Schemas["ConnectorInfo"]["memory_mib"], number | null>>();
    assertType<Equals<Schemas["StreamInfo"]["cursor_field"], string | null>>();
    assertType<Equals<Schemas["FailureInfo"]["serving"], string | null>>();
  }

  // GET /internal/connectors/{id}
  {
    const { data, error } = await client.GET("/internal/connectors/{id}", {
      params: { path: { id: "github" } },
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404
      void detail;
    } else {
      const secrets: string[] = data.secrets.map((s) => s.name);
      void secrets;
    }
  }

  // GET /internal/connectors/{id}/docs (Markdown)
  {
    const { data, error } = await client.GET("/internal/connectors/{id}/docs", {
      params: { path: { id: "github" } },
      parseAs: "text",
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404
      void detail;
    } else {
      const markdown: string = data;
      void markdown;
    }
  }

  // POST /internal/mirror-connections/validate
  {
    const { data, error } = await client.POST("/internal/mirror-connections/validate", {
      body: {
        connector: "github",
        config: { repositories: ["a/b"], since: "2024-01-01", nested: { page_size: 100 } },
        credentials: { token: "x" },
      },
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404, 413, 415, 422
      void detail;
    } else if (data.valid) {
      const account: unknown = data.account;
      void account;
      // @ts-expect-error a valid answer has no error
      void data.error;
    } else {
      const code: string = data.error.code;
      const message: string = data.error.message;
      void [code, message];
    }
    // config and credentials may be left out (defaults {}).
    await client.POST("/internal/mirror-connections/validate", { body: { connector: "probe" } });
    await client.POST("/internal/mirror-connections/validate", {
      // @ts-expect-error config is an object
      body: { connector: "github", config: "repositories=a/b" },
    });
    await client.POST("/internal/mirror-connections/validate", {
      // @ts-expect-error credential values are strings
      body: { connector: "github", credentials: { token: 42 } },
    });
    const misspelt: Schemas["ValidateRequest"] = {
      connector: "github",
      // @ts-expect-error unknown members are refused (the service answers 422)
      configuration: {},
    };
    void misspelt;
  }

  // POST /internal/mirror-connections/runs
  let runId = "";
  {
    const { data, error, response } = await client.POST("/internal/mirror-connections/runs", {
      params: { header: { "Idempotency-Key": "sync-conn-42-2024-06-01" } },
      body: {
        connection_id: "conn-42",
        connector: "github",
        config: { repositories: ["a/b"] },
        credentials: { token: "x" },
        streams: ["issues", "pull_requests"],
        full_refresh: false,
        storage: { bucket: "mirror-data", prefix: "mirror", region: "eu-west-1" },
      },
    });
    if (error) {
      // 400, 401, 404, 409, 413, 415, 422, 503 (+ Retry-After)
      const detail: string = error.detail;
      const retryAfter = Number(response.headers.get("Retry-After") ?? "0");
      void [detail, retryAfter];
    } else {
      runId = data.run_id;
      const status: Schemas["RunStatus"] = data.status;
      void status;
    }
    await client.POST("/internal/mirror-connections/runs", {
      // @ts-expect-error storage is required
      body: { connection_id: "conn-42", connector: "github" },
    });
    await client.POST("/internal/mirror-connections/runs", {
      // @ts-expect-error a header parameter is a string or absent, never null
      params: { header: { "Idempotency-Key": null } },
      body: { connection_id: "c", connector: "github", storage: { bucket: "b" } },
    });
  }

  // GET /internal/mirror-connections/runs
  {
    const { data, error } = await client.GET("/internal/mirror-connections/runs", {
      params: { query: { connection_id: "conn-42" } },
    });
    if (error) {
      const detail: string = error.detail; // 400, 401
      void detail;
    } else {
      const newest: Schemas["RunRecord"] | undefined = data.runs[0];
      void newest;
    }
    await client.GET("/internal/mirror-connections/runs");
    await client.GET("/internal/mirror-connections/runs", {
      // @ts-expect-error a query parameter is a string or absent, never null
      params: { query: { connection_id: null } },
    });
  }

  // GET /internal/mirror-connections/runs/{run_id}
  {
    const { data, error } = await client.GET("/internal/mirror-connections/runs/{run_id}", {
      params: { path: { run_id: runId } },
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404
      void detail;
    } else {
      const status: "queued" | "running" | "succeeded" | "failed" | "cancelled" = data.status;
      const created: string = data.created_at;
      const started: string | null = data.started_at;
      const finished: string | null = data.finished_at;
      const failure: { code: string; message: string } | null = data.error;
      const version: string | null = data.connector_version;
      void [status, created, started, finished, failure, version];
      for (const [stream, stats] of Object.entries(data.streams)) {
        const counts: number[] = [
          stats.records,
          stats.bytes,
          stats.files,
          stats.committed_rows,
          stats.invalid_rows,
          stats.refused_records,
        ];
        void [stream, counts];
      }
    }
    assertType<Equals<Schemas["RunRecord"]["started_at"], string | null>>();
    assertType<Equals<Schemas["RunRecord"]["finished_at"], string | null>>();
    assertType<Equals<Schemas["RunRecord"]["error"], Schemas["RunErrorInfo"] | null>>();
    assertType<Equals<Schemas["RunRecord"]["connector_version"], string | null>>();
    assertType<Equals<Schemas["StreamStats"]["invalid_rows"], number>>();
    assertType<Equals<Schemas["StreamStats"]["refused_records"], number>>();
  }

  // POST /internal/mirror-connections/runs/{run_id}/cancel
  {
    const { data, error } = await client.POST(
      "/internal/mirror-connections/runs/{run_id}/cancel",
      { params: { path: { run_id: runId } } },
    );
    if (error) {
      const detail: string = error.detail; // 400, 401, 404
      void detail;
    } else {
      const status: Schemas["RunStatus"] = data.status;
      // true once the cancel of a queued or running run was accepted
      const cancelRequested: boolean = data.cancel_requested;
      void [status, cancelRequested];
    }
  }

  // POST /internal/mirror-connections/schema-sync
  {
    const { data, error } = await client.POST("/internal/mirror-connections/schema-sync", {
      body: {
        connection_id: "conn-42",
        connector: "github",
        config: { repositories: ["a/b"] },
        credentials: { token: "x" },
        storage: { bucket: "mirror-data", prefix: "mirror" },
      },
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404, 413, 415, 422, 502
      void detail;
    } else {
      const generated: string = data.generated_at;
      const connector: { id: string; version: string; sha256: string } | null = data.connector;
      void [generated, connector];
      for (const s of data.streams) {
        const view: string | null = s.view_sql;
        const cursor: string | null = s.cursor_field;
        const columns: { name: string; type: string; nullable: boolean }[] = s.columns;
        const rows: number = s.row_count;
        void [view, cursor, columns, rows];
      }
    }
    // Without a config, schema-sync describes what storage holds.
    await client.POST("/internal/mirror-connections/schema-sync", {
      body: { connection_id: "conn-42", connector: "github", storage: { bucket: "b" } },
    });
    assertType<Equals<Schemas["CatalogStream"]["view_sql"], string | null>>();
    assertType<Equals<Schemas["Catalog"]["connector"], Schemas["ConnectorRef"] | null>>();
  }

  // GET /internal/services
  let serviceId = "purchase-orders";
  {
    const { data } = await client.GET("/internal/services");
    for (const s of data?.services ?? []) {
      serviceId = s.id;
      const connector: { id: string; config: { [key: string]: unknown }; secret: string } =
        s.connector;
      const env: string[] = s.env;
      const urlEnv: string | null = s.url_env;
      const ttl: number = s.ttl_days;
      const configured: boolean = s.secret_configured;
      const secretError: string | null = s.secret_error;
      const health: Schemas["ServiceHealth"] | null = s.last_health;
      void [connector, env, urlEnv, ttl, configured, secretError, health];
    }
    const failure: { message: string; at: string } | null | undefined = data?.error;
    const file: string | null | undefined = data?.file;
    void [failure, file];
    assertType<Equals<Schemas["ServiceInfo"]["last_health"], Schemas["ServiceHealth"] | null>>();
    assertType<Equals<Schemas["ServiceList"]["error"], Schemas["RegistryErrorInfo"] | null>>();
  }

  // GET /internal/services/{id}
  {
    const { data, error } = await client.GET("/internal/services/{id}", {
      params: { path: { id: serviceId } },
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404
      void detail;
    } else {
      const docs: string = data.docs;
      const secretEnv: string = data.secret_env;
      void [docs, secretEnv];
    }
  }

  // GET /internal/services/{id}/docs (Markdown)
  {
    const { data, error } = await client.GET("/internal/services/{id}/docs", {
      params: { path: { id: serviceId } },
      parseAs: "text",
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404
      void detail;
    } else {
      const page: string = data;
      void page;
    }
  }

  // POST /internal/services/{id}/connect
  let tokenId = "";
  {
    const { data, error } = await client.POST("/internal/services/{id}/connect", {
      params: { path: { id: serviceId } },
      body: { user_email: "john@corp.example", ttl_days: 30 },
    });
    if (error) {
      // 400, 401, 403, 404, 413, 415, 422, 502, 503, 504
      const detail: string = error.detail;
      void detail;
    } else {
      tokenId = data.token_id;
      const key: string = data.api_key;
      const expires: string = data.expires_at;
      const env: { [name: string]: string } = data.env;
      void [key, expires, env];
    }
    // ttl_days may be left out (the service's default).
    await client.POST("/internal/services/{id}/connect", {
      params: { path: { id: serviceId } },
      body: { user_email: "john@corp.example" },
    });
    await client.POST("/internal/services/{id}/connect", {
      params: { path: { id: serviceId } },
      // @ts-expect-error user_email is required
      body: { ttl_days: 30 },
    });
  }

  // POST /internal/services/{id}/disconnect
  {
    const { data, error } = await client.POST("/internal/services/{id}/disconnect", {
      params: { path: { id: serviceId } },
      body: { token_id: tokenId },
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404, 413, 415, 422, 502, 503, 504
      void detail;
    } else {
      const status: string = data.status;
      const known: boolean = data.known_to_service;
      void [status, known];
    }
  }

  // GET /internal/services/{id}/health
  {
    const { data, error } = await client.GET("/internal/services/{id}/health", {
      params: { path: { id: serviceId } },
    });
    if (error) {
      const detail: string = error.detail; // 400, 401, 404
      void detail;
    } else {
      const state:
        | "up"
        | "unreachable"
        | "bad_secret"
        | "timeout"
        | "denied"
        | "error"
        | "secret_missing" = data.state;
      const latency: number | null = data.latency_ms;
      const httpStatus: number | null = data.http_status;
      const checked: string = data.checked_at;
      void [state, latency, httpStatus, checked];
    }
  }
}
