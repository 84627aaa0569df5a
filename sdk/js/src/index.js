// Write a Sluice connector in JavaScript.
//
// A connector is a WebAssembly component targeting the `sluice:connector` WIT world (the copy in
// `wit/`). componentize-js embeds this module and the app in SpiderMonkey; the world's imports are
// the modules `sluice:connector/<interface>` (`sluice-js-build` adds the world's version to these
// specifiers when it bundles). The same concepts as the Rust SDK:
//   - a manifest as plain objects (`Manifest`, `Stream`, `Secret` in index.d.ts);
//   - `Connector` with manifest / validate / discover / sync, exported with `exportConnector`;
//   - `Batcher`, which emits in batches and checkpoints after the records it covers;
//   - `fetch`, outbound HTTP through the host, with secrets injected by the host as headers;
//   - `ConnectorError(code, message)`: thrown anywhere in a call, it is returned to the host as
//     the WIT `connector-error` (componentize-js returns a result's error case for a thrown value
//     with an own `payload` property; a plain `Error` would trap the call).

import { fetch as rawFetch } from 'sluice:connector/http';
import { emit as rawEmit, checkpoint as rawCheckpoint } from 'sluice:connector/records';
import { get as rawSecret } from 'sluice:connector/secrets';
import { log as rawLog } from 'sluice:connector/log';

/** The WIT error codes. */
export const ERROR_CODES = [
  'invalid-credentials',
  'insufficient-scope',
  'invalid-config',
  'unreachable',
  'rate-limited',
  'internal',
];

/**
 * An expected failure, returned to the host as `connector-error {code, message}`.
 * The message is one line and must never contain a credential.
 */
export class ConnectorError extends Error {
  constructor(code, message) {
    if (!ERROR_CODES.includes(code)) {
      throw new TypeError(`unknown error code ${code}; one of ${ERROR_CODES.join(', ')}`);
    }
    super(message);
    this.name = 'ConnectorError';
    this.code = code;
    // componentize-js: a thrown value with an own `payload` is the result's error case.
    Object.defineProperty(this, 'payload', { value: { code, message: String(message) }, enumerable: false });
  }

  /** 401 invalid-credentials, 403 insufficient-scope, 404 invalid-config, 429 rate-limited, 5xx unreachable, else internal. */
  static fromStatus(status, message) {
    const code =
      { 401: 'invalid-credentials', 403: 'insufficient-scope', 404: 'invalid-config', 429: 'rate-limited' }[status] ??
      (status >= 500 && status <= 599 ? 'unreachable' : 'internal');
    return new ConnectorError(code, message);
  }
}

/** The error carried by a rejected import call (componentize-js throws it with `payload`). */
function payloadOf(e) {
  return e && typeof e === 'object' && 'payload' in e ? e.payload : e;
}

/** Runs one export: ConnectorError → its payload; anything else is logged and returned as `internal`. */
function guard(call) {
  try {
    return call();
  } catch (e) {
    if (e instanceof ConnectorError) throw e;
    const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    try {
      rawLog('error', `connector failed: ${text}`, e instanceof Error && e.stack ? [['stack', e.stack]] : []);
    } catch {
      // manifest() must not call imports; nothing else to do
    }
    throw new ConnectorError('internal', text);
  }
}

function parseJson(what, text, code) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConnectorError(code, `${what} is not valid JSON: ${e.message}`);
  }
}

function streamToWit(s) {
  return {
    name: s.name,
    description: s.description ?? '',
    primaryKey: [...(s.primaryKey ?? [])],
    cursorField: s.cursorField ?? undefined,
    jsonSchema: JSON.stringify(s.jsonSchema ?? { type: 'object' }),
  };
}

/**
 * Base class of a connector: override `manifest`, `validate` and `sync` (and `discover` if the
 * streams depend on the config), then `export const connector = exportConnector(new MyConnector())`.
 */
export class Connector {
  manifest() {
    throw new Error('manifest() is not implemented');
  }
  validate(_config) {
    throw new ConnectorError('internal', 'validate() is not implemented');
  }
  discover(_config) {
    return this.manifest().streams ?? [];
  }
  sync(_request) {
    throw new ConnectorError('internal', 'sync() is not implemented');
  }
}

/** The world's `connector` export for a Connector instance. */
export function exportConnector(impl) {
  return {
    manifest() {
      const m = impl.manifest();
      return {
        id: m.id,
        name: m.name,
        version: m.version,
        description: m.description ?? '',
        configSchema: JSON.stringify(m.configSchema ?? { type: 'object' }),
        secrets: (m.secrets ?? []).map((s) => ({ name: s.name, description: s.description ?? '', required: s.required ?? true })),
        hosts: [...(m.hosts ?? [])],
        streams: (m.streams ?? []).map(streamToWit),
        memoryMib: m.memoryMib ?? undefined,
      };
    },
    validate(config) {
      return guard(() => JSON.stringify(impl.validate(parseJson('config', config, 'invalid-config')) ?? null));
    },
    discover(config) {
      return guard(() => impl.discover(parseJson('config', config, 'invalid-config')).map(streamToWit));
    },
    sync(request) {
      guard(() => {
        batchers.length = 0;
        const state = {};
        for (const [stream, value] of request.state) state[stream] = parseJson(`state of ${stream}`, value, 'internal');
        impl.sync({
          config: parseJson('config', request.config, 'invalid-config'),
          streams: [...request.streams],
          state,
          startedAt: request.startedAt,
          runId: request.runId,
        });
        // Records a connector pushed and never flushed are emitted, not dropped.
        for (const batcher of batchers) batcher.flush();
        batchers.length = 0;
      });
    },
  };
}

// --- HTTP ---------------------------------------------------------------------------------

/** `Authorization: Bearer <secret>`, injected by the host. */
export function bearer(secret) {
  return { header: 'authorization', secret, prefix: 'Bearer ' };
}

const noQuery = (url) => url.split('?')[0];
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A response, after the host's redirects, retries and rate-limit waits. */
export class Response {
  constructor(status, headers, body, url) {
    this.status = status;
    this.headers = headers;
    this.body = body;
    this.url = url;
  }
  header(name) {
    const n = name.toLowerCase();
    const found = this.headers.find(([k]) => k.toLowerCase() === n);
    return found ? found[1] : undefined;
  }
  text() {
    return decoder.decode(this.body);
  }
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new ConnectorError('internal', `${noQuery(this.url)}: unexpected response body: ${e.message}`);
    }
  }
  get ok() {
    return this.status >= 200 && this.status < 300;
  }
  /** `this` for a 2xx status, else ConnectorError.fromStatus with the upstream's `message`. */
  raiseForStatus() {
    if (this.ok) return this;
    let detail = '';
    try {
      const body = JSON.parse(this.text());
      if (body && typeof body.message === 'string') detail = `: ${body.message.split('\n')[0].slice(0, 200)}`;
    } catch {
      // not JSON: the status says enough
    }
    throw ConnectorError.fromStatus(this.status, `${noQuery(this.url)} answered ${this.status}${detail}`);
  }
  /** The `rel="next"` target of the Link headers, resolved against `url`. */
  nextLink() {
    for (const [k, v] of this.headers) {
      if (k.toLowerCase() !== 'link') continue;
      for (const part of v.split(',')) {
        const [target, ...params] = part.trim().split(';');
        const t = target.trim();
        if (!t.startsWith('<') || !t.endsWith('>')) continue;
        if (params.some((p) => /^rel="?next"?$/.test(p.trim().replace(/\s/g, '')))) {
          return new URL(t.slice(1, -1), this.url).toString();
        }
      }
    }
    return undefined;
  }
}

const HTTP_ERRORS = {
  timeout: 'unreachable',
  connection: 'unreachable',
  denied: 'invalid-config',
  'invalid-request': 'invalid-config',
  'unknown-secret': 'invalid-credentials',
  'too-large': 'internal',
};

/** How the host's `denied` message begins when the upstream chose the refused destination. */
export const UPSTREAM_DENIED_PREFIX = 'the upstream ';

/**
 * The error code of an `http-error`: a `denied` for a destination the upstream chose (a redirect
 * or `Link` header) is `internal`, not the user's config.
 */
export function httpErrorCode(err) {
  if (err.tag === 'denied' && String(err.val).startsWith(UPSTREAM_DENIED_PREFIX)) return 'internal';
  return HTTP_ERRORS[err.tag] ?? 'internal';
}

/**
 * Sends a request through the host's `http.fetch`: the host checks the destination, injects
 * `secretHeaders`, follows redirects, retries idempotent requests and waits out rate limits. A
 * non-2xx status is a Response (see `raiseForStatus`); a transport failure is a ConnectorError.
 */
export function fetch(url, options = {}) {
  const { method = 'GET', params, headers = {}, secretHeaders = [], json, body, idempotent = false } = options;
  let target = url;
  if (params) {
    const q = Object.entries(params)
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join('&');
    if (q) target += (target.includes('?') ? '&' : '?') + q;
  }
  const hdrs = Object.entries(headers).map(([k, v]) => [k, String(v)]);
  let payload = body === undefined ? undefined : typeof body === 'string' ? encoder.encode(body) : body;
  if (json !== undefined) {
    payload = encoder.encode(JSON.stringify(json));
    if (!hdrs.some(([k]) => k.toLowerCase() === 'content-type')) hdrs.push(['content-type', 'application/json']);
  }
  let r;
  try {
    r = rawFetch({
      method: method.toLowerCase(),
      url: target,
      headers: hdrs,
      body: payload,
      secretHeaders: secretHeaders.map((s) => ({ header: s.header, secret: s.secret, prefix: s.prefix ?? '' })),
      idempotent,
    });
  } catch (e) {
    const err = payloadOf(e);
    if (err && typeof err === 'object' && 'tag' in err) {
      const detail = err.val === undefined ? '' : `: ${err.val}`;
      throw new ConnectorError(httpErrorCode(err), `${noQuery(target)}: ${err.tag}${detail}`);
    }
    throw e;
  }
  return new Response(r.status, r.headers, r.body, target);
}

// --- records ------------------------------------------------------------------------------

function emitError(e) {
  const err = payloadOf(e);
  if (err && typeof err === 'object' && 'tag' in err) {
    const val = Array.isArray(err.val) ? `#${err.val[0]}: ${err.val[1]}` : err.val;
    return new ConnectorError('internal', `${err.tag}: ${val}`);
  }
  return e;
}

const serialize = (r) => (typeof r === 'string' ? r : JSON.stringify(r));

/** Emits one batch of records (objects, or serialized JSON objects) to `stream`. Prefer Batcher. */
export function emit(stream, records) {
  try {
    rawEmit(stream, records.map(serialize));
  } catch (e) {
    throw emitError(e);
  }
}

/** Records the state `stream` has reached; it covers every record emitted before. */
export function checkpoint(stream, state) {
  try {
    rawCheckpoint(stream, JSON.stringify(state));
  } catch (e) {
    throw emitError(e);
  }
}

/** Buffers records per stream, emits every `size` records; `checkpoint` flushes first. */
/**
 * Ends a listing whose paging goes round in circles (a broken or hostile upstream): a next-page
 * cursor or URL already followed, or new cursors that keep bringing the records of a page already
 * read. Without it a connector re-reads the same records until the run's deadline (hours). Throws
 * `ConnectorError('internal', …)`: the run fails, nothing of it is committed. The Rust SDK's
 * `sluice_sdk::paging::LoopGuard` does the same.
 */
export class LoopGuard {
  /** Consecutive pages without a record a listing may answer before it is taken for a loop. */
  static MAX_EMPTY_PAGES = 20;

  constructor(subject) {
    this.subject = subject;
    this.cursors = new Set();
    this.pages = new Set();
    this.read = 0;
    this.empty = 0;
  }

  /** Call before following `cursor`; throws when this listing followed it already. */
  follow(cursor) {
    const key = String(cursor);
    if (this.cursors.has(key)) this.loop(`its next-page cursor repeats one already followed (after ${this.read} pages)`);
    this.cursors.add(key);
  }

  /** Call for each page read: `count` records identified by `identity` (strings). */
  page(count, ...identity) {
    this.read += 1;
    if (count === 0) {
      this.empty += 1;
      if (this.empty > LoopGuard.MAX_EMPTY_PAGES) {
        this.loop(`${this.empty} pages in a row came without a record and still pointed to a next one`);
      }
      return;
    }
    this.empty = 0;
    const key = fingerprint([String(count), ...identity.map(String)].join('\n'));
    if (this.pages.has(key)) this.loop(`page ${this.read} repeats the records of a page already read`);
    this.pages.add(key);
  }

  loop(what) {
    throw new ConnectorError('internal', `${this.subject}: the upstream's paging goes round in circles: ${what}; stopped`);
  }
}

/** Two 32-bit FNV-1a hashes (different offset bases) of a string's UTF-16 code units, as hex. */
function fingerprint(text) {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193);
  }
  return (a >>> 0).toString(16) + (b >>> 0).toString(16);
}

/** Every Batcher made since the current `sync` began: flushed when it returns. */
const batchers = [];

/**
 * Buffers records per stream and emits a batch every `size` records; `checkpoint` flushes the
 * stream first. Records still pending when `sync` returns are emitted then (an error there fails
 * the sync), so a forgotten `flush` loses nothing.
 */
export class Batcher {
  constructor(size = 1000) {
    this.size = Math.max(1, size | 0);
    this.pendingByStream = new Map();
    this.emitted = 0;
    batchers.push(this);
  }
  push(stream, record) {
    let buf = this.pendingByStream.get(stream);
    if (!buf) this.pendingByStream.set(stream, (buf = []));
    buf.push(serialize(record));
    if (buf.length >= this.size) this.flushStream(stream);
  }
  flushStream(stream) {
    const buf = this.pendingByStream.get(stream);
    if (buf && buf.length) {
      this.pendingByStream.set(stream, []);
      emit(stream, buf);
      this.emitted += buf.length;
    }
  }
  flush() {
    for (const stream of this.pendingByStream.keys()) this.flushStream(stream);
  }
  checkpoint(stream, state) {
    this.flushStream(stream);
    checkpoint(stream, state);
  }
  pending(stream) {
    return this.pendingByStream.get(stream)?.length ?? 0;
  }
}

// --- secrets, logs, clock -----------------------------------------------------------------

/** The value of a declared secret (prefer `secretHeaders`). invalid-config on undeclared/missing. */
export function secret(name) {
  try {
    return rawSecret(name);
  } catch (e) {
    const err = payloadOf(e);
    if (err && typeof err === 'object' && 'tag' in err) throw new ConnectorError('invalid-config', `${err.tag}: ${err.val}`);
    throw e;
  }
}

/** A structured log line (trace, debug, info, warn, error) attached to the run. Never log a credential. */
export function log(level, message, fields = {}) {
  rawLog(level, message, Object.entries(fields).map(([k, v]) => [k, String(v)]));
}

/** Wall-clock milliseconds since the Unix epoch: `Date.now()`, from the WASI wall clock the host links. */
export function nowMs() {
  return Date.now();
}

/**
 * `value` (an RFC 3339 date-time, the newest `updated_at` seen), or now (`YYYY-MM-DDTHH:MM:SSZ`)
 * when `value` is later: one record dated in the future (a broken clock, a hostile answer) must
 * not move an incremental cursor past every record written until then, which each later run
 * would skip. Held at now, the future record is only read again. Logs a warning naming `subject`
 * when it clamps; a value that does not parse is returned as it is. The Rust SDK's
 * `time::clamp_to_now` does the same.
 */
export function clampToNow(value, subject) {
  const at = Date.parse(value);
  const now = nowMs();
  if (Number.isNaN(at) || at <= now) return value;
  log('warn', "a cursor value from the upstream is in the future; held at the host's clock", { subject, value });
  return new Date(Math.floor(now / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}
