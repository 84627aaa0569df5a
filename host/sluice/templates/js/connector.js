// {{id}}: a Sluice connector written with the JavaScript SDK (sluice-connector-sdk).
//
// - config `base_url` (the API root); secret `api_key`, put by the host into the `x-api-key`
//   header (the value never enters the plugin);
// - validate: `GET {base_url}/me`;
// - stream `items` (primary key `id`, cursor `updated_at`): `GET {base_url}/items`, then
//   `?since=<newest updated_at seen>` from the committed state on later runs, following
//   `Link: rel="next"` pages and checkpointing the newest cursor after each page.
// @ts-check
import { Batcher, Connector, ConnectorError, LoopGuard, clampToNow, exportConnector, fetch } from 'sluice-connector-sdk';

const ITEM = {
  type: 'object',
  required: ['id', 'updated_at'],
  properties: {
    id: { type: 'integer' },
    name: { type: ['string', 'null'] },
    updated_at: { type: 'string', format: 'date-time' },
  },
};

const CONFIG = {
  type: 'object',
  additionalProperties: false, // a misnamed field is refused by name, not ignored
  required: ['base_url'],
  properties: {
    base_url: { type: 'string', description: 'The API root, e.g. https://api.example.com/v1' },
  },
};

// The API key in `x-api-key`, injected by the host.
const API_KEY = { secretHeaders: [{ header: 'x-api-key', secret: 'api_key' }] };

/** @param {Record<string, any>} config */
function base(config) {
  const url = String(config.base_url ?? '');
  if (!/^https?:\/\//.test(url)) throw new ConnectorError('invalid-config', 'base_url must be an http(s) URL');
  return url.replace(/\/+$/, '');
}

/** The record as the stream's schema declares it. @param {Record<string, any>} item */
function record(item) {
  return { id: item.id, name: item.name ?? null, updated_at: item.updated_at };
}

class Items extends Connector {
  manifest() {
    return {
      id: '{{id}}',
      name: '{{id}}',
      version: '0.1.0',
      description: 'Items of an HTTP API, incrementally on updated_at.',
      configSchema: CONFIG,
      secrets: [{ name: 'api_key', description: 'The API key, sent as the x-api-key header', required: true }],
      hosts: ['{config.base_url}'],
      streams: [{ name: 'items', jsonSchema: ITEM, primaryKey: ['id'], cursorField: 'updated_at' }],
    };
  }

  /** @param {Record<string, any>} config */
  validate(config) {
    const me = fetch(`${base(config)}/me`, API_KEY).raiseForStatus().json();
    return { account: me.name ?? null };
  }

  /** @param {import('sluice-connector-sdk').SyncRequest} request */
  sync(request) {
    /** @type {string | undefined} */
    let since = request.state.items?.since;
    let page = fetch(`${base(request.config)}/items`, { ...API_KEY, params: { since } });
    const out = new Batcher(500);
    // An API whose pages go round in circles fails the run instead of looping until its deadline.
    const guard = new LoopGuard('items');
    for (;;) {
      const items = page.raiseForStatus().json();
      guard.page(items.length, String(items[0]?.id), String(items[items.length - 1]?.id));
      for (const item of items) {
        out.push('items', record(item));
        if (since === undefined || item.updated_at > since) since = item.updated_at;
      }
      if (since !== undefined) {
        // An item dated in the future never becomes the cursor.
        since = clampToNow(since, 'items');
        out.checkpoint('items', { since });
      }
      const next = page.nextLink();
      if (!next) break;
      guard.follow(next);
      page = fetch(next, API_KEY);
    }
    out.flush();
  }
}

export const connector = exportConnector(new Items());
