// Types of sluice-connector-sdk. The raw WIT bindings' types, generated from wit/ by
// `jco guest-types` (npm run types, run on pack), are in types/wit/.

/** The WIT `error-code`s. */
export type ErrorCode =
  | 'invalid-credentials'
  | 'insufficient-scope'
  | 'invalid-config'
  | 'unreachable'
  | 'rate-limited'
  | 'internal';

export declare const ERROR_CODES: readonly ErrorCode[];

/** Thrown from validate/discover/sync, returned to the host as `connector-error {code, message}`. */
export declare class ConnectorError extends Error {
  constructor(code: ErrorCode, message: string);
  readonly code: ErrorCode;
  /** What componentize-js returns as the result's error case. */
  readonly payload: { code: ErrorCode; message: string };
  /** 401 invalid-credentials, 403 insufficient-scope, 404 invalid-config, 429 rate-limited, 5xx unreachable, else internal. */
  static fromStatus(status: number, message: string): ConnectorError;
}

/** A JSON Schema (draft 2020-12), as an object. */
export type JsonSchema = Record<string, unknown>;

/** One table a connector produces. */
export interface Stream {
  /** `[a-z][a-z0-9_]*`, unique in the connector. */
  name: string;
  description?: string;
  /** JSON Schema of one record: an object with `properties`. Default `{type: 'object'}`. */
  jsonSchema?: JsonSchema;
  primaryKey?: string[];
  cursorField?: string;
}

/** A credential the connector uses, by name. */
export interface Secret {
  name: string;
  description?: string;
  /** Default true. */
  required?: boolean;
}

/** The static description of a connector. */
export interface Manifest {
  /** `[a-z][a-z0-9-]*` */
  id: string;
  name: string;
  /** Semantic version. */
  version: string;
  description?: string;
  configSchema?: JsonSchema;
  secrets?: Secret[];
  /** `https://api.example.com`, `http://host:port`, or `{config.FIELD}`. */
  hosts?: string[];
  streams?: Stream[];
  memoryMib?: number;
}

/** What `sync` receives. */
export interface SyncRequest {
  config: Record<string, any>;
  /** Streams to sync (never empty). */
  streams: string[];
  /** Committed state per stream, as last checkpointed (empty on a full refresh). */
  state: Record<string, any>;
  /** When this run started, RFC 3339 UTC (world 0.2.0; undefined with 0.1.0). */
  startedAt?: string;
  /** The run's id (world 0.2.0; undefined with 0.1.0). */
  runId?: string;
}

/** Base class: override manifest, validate and sync (and discover if streams depend on the config). */
export declare class Connector {
  manifest(): Manifest;
  validate(config: Record<string, any>): unknown;
  discover(config: Record<string, any>): Stream[];
  sync(request: SyncRequest): void;
}

/** The world's `connector` export: `export const connector = exportConnector(new MyConnector())`. */
export declare function exportConnector(impl: Connector): {
  manifest(): unknown;
  validate(config: string): string;
  discover(config: string): unknown[];
  sync(request: unknown): void;
};

/** Ask the host to put a secret into a header, after `prefix`. */
export interface SecretHeader {
  header: string;
  secret: string;
  prefix?: string;
}

/** `Authorization: Bearer <secret>`, injected by the host. */
export declare function bearer(secret: string): SecretHeader;

export interface FetchOptions {
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Query parameters, percent-encoded and appended; undefined/null values are left out. */
  params?: Record<string, string | number | boolean | undefined | null>;
  headers?: Record<string, string>;
  secretHeaders?: SecretHeader[];
  /** A JSON body (sets content-type). */
  json?: unknown;
  body?: string | Uint8Array;
  /** Safe to send again (a POST that only reads). */
  idempotent?: boolean;
}

export declare class Response {
  readonly status: number;
  /** Lowercase names. */
  readonly headers: [string, string][];
  readonly body: Uint8Array;
  readonly url: string;
  readonly ok: boolean;
  header(name: string): string | undefined;
  text(): string;
  json(): any;
  /** `this` for 2xx, else throws ConnectorError.fromStatus. */
  raiseForStatus(): Response;
  /** The `rel="next"` target of the Link headers. */
  nextLink(): string | undefined;
}

/** How the host's `denied` message begins when the upstream chose the refused destination. */
export declare const UPSTREAM_DENIED_PREFIX: string;

/**
 * The error code `fetch` throws for a host `http-error` (`{tag, val}`): `timeout`/`connection`
 * unreachable, `denied`/`invalid-request` invalid-config except a `denied` for a destination the
 * upstream chose (a redirect or Link header, message starting `the upstream `): internal.
 */
export declare function httpErrorCode(err: { tag: string; val?: unknown }): ErrorCode;

/** Outbound HTTP through the host (which checks, retries, waits out rate limits, injects secrets). */
export declare function fetch(url: string, options?: FetchOptions): Response;

export declare function emit(stream: string, records: (object | string)[]): void;
export declare function checkpoint(stream: string, state: unknown): void;

/**
 * Emits a stream's records every `size` records; `checkpoint` flushes the stream first. Records
 * still pending when `sync` returns are emitted then (an error there fails the sync).
 */
export declare class Batcher {
  constructor(size?: number);
  readonly size: number;
  readonly emitted: number;
  push(stream: string, record: object | string): void;
  flushStream(stream: string): void;
  flush(): void;
  checkpoint(stream: string, state: unknown): void;
  pending(stream: string): number;
}

/**
 * Ends a listing whose paging goes round in circles: `follow(cursor)` before following a cursor,
 * `page(count, ...identity)` for each page; both throw `ConnectorError('internal', …)` on a loop.
 */
export declare class LoopGuard {
  static readonly MAX_EMPTY_PAGES: number;
  constructor(subject: string);
  follow(cursor: string): void;
  page(count: number, ...identity: string[]): void;
}

/** `value` (RFC 3339), or now when it is later: an upstream date in the future never becomes a cursor. */
export declare function clampToNow(value: string, subject: string): string;

export declare function secret(name: string): string;
export declare function log(
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error',
  message: string,
  fields?: Record<string, unknown>,
): void;
/** Wall-clock milliseconds since the Unix epoch. */
export declare function nowMs(): number;
