// js-issues: GitHub issues, incrementally, with the JavaScript SDK (sluice-connector-sdk).
//
// Reads `GET {api_url}/repos/{owner}/{repo}/issues?state=all&sort=updated&direction=asc&since=…`
// for each configured repository, following `Link: rel="next"` pages, with the secret `token`
// injected by the host as `Authorization: Bearer …`. Emits the stream `issues` and checkpoints,
// after each page, the newest `updated_at` seen per repository: the next run starts there.
//
// Build: `npx sluice-js-build connector.js -o js-issues.wasm` (see docs/sdk-js.md).
// @ts-check
import { Batcher, Connector, ConnectorError, LoopGuard, bearer, clampToNow, exportConnector, fetch } from 'sluice-connector-sdk';

const ISSUE = {
  type: 'object',
  properties: {
    id: { type: 'integer' },
    repository: { type: 'string' },
    number: { type: 'integer' },
    title: { type: 'string' },
    state: { type: 'string' },
    user_login: { type: ['string', 'null'] },
    comments: { type: 'integer' },
    is_pull_request: { type: 'boolean' },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
    closed_at: { type: ['string', 'null'], format: 'date-time' },
  },
};

const CONFIG = {
  type: 'object',
  additionalProperties: false, // a misnamed field is refused by name, not ignored
  required: ['api_url', 'repositories'],
  properties: {
    api_url: { type: 'string', description: "GitHub's API root, e.g. https://api.github.com" },
    repositories: { type: 'array', items: { type: 'string' }, minItems: 1 },
    page_size: { type: 'integer', minimum: 1, maximum: 100 },
  },
};

/** @param {Record<string, any>} config */
function api(config) {
  const url = String(config.api_url ?? '');
  if (!/^https?:\/\//.test(url)) throw new ConnectorError('invalid-config', 'api_url must be an http(s) URL');
  return url.replace(/\/+$/, '');
}

/** @param {string} repo @param {Record<string, any>} issue */
function record(repo, issue) {
  return {
    id: issue.id,
    repository: repo,
    number: issue.number,
    title: issue.title,
    state: issue.state,
    user_login: issue.user?.login ?? null,
    comments: issue.comments ?? 0,
    is_pull_request: 'pull_request' in issue,
    created_at: issue.created_at,
    updated_at: issue.updated_at,
    closed_at: issue.closed_at ?? null,
  };
}

class Issues extends Connector {
  manifest() {
    return {
      id: 'js-issues',
      name: 'GitHub issues (JavaScript SDK example)',
      version: '0.1.0',
      description: 'Issues of GitHub repositories, incrementally on updated_at.',
      configSchema: CONFIG,
      secrets: [{ name: 'token', description: 'A GitHub token', required: true }],
      hosts: ['https://api.github.com', '{config.api_url}'],
      streams: [{ name: 'issues', jsonSchema: ISSUE, primaryKey: ['id'], cursorField: 'updated_at' }],
    };
  }

  /** @param {Record<string, any>} config */
  validate(config) {
    const auth = { secretHeaders: [bearer('token')] };
    const user = fetch(`${api(config)}/user`, auth).raiseForStatus().json();
    for (const repo of config.repositories) fetch(`${api(config)}/repos/${repo}`, auth).raiseForStatus();
    return { login: user.login, repositories: config.repositories.length };
  }

  /** @param {import('sluice-connector-sdk').SyncRequest} request */
  sync(request) {
    const config = request.config;
    /** @type {Record<string, string>} */
    const since = { ...(request.state.issues?.since ?? {}) };
    const out = new Batcher(500);
    for (const repo of config.repositories) {
      const params = { state: 'all', sort: 'updated', direction: 'asc', per_page: config.page_size ?? 100, since: since[repo] };
      let page = fetch(`${api(config)}/repos/${repo}/issues`, { params, secretHeaders: [bearer('token')] });
      // An upstream whose pages go round in circles fails the run instead of looping.
      const guard = new LoopGuard(`issues of ${repo}`);
      for (;;) {
        const issues = page.raiseForStatus().json();
        guard.page(issues.length, String(issues[0]?.id), String(issues[issues.length - 1]?.id));
        for (const issue of issues) {
          out.push('issues', record(repo, issue));
          if (!since[repo] || issue.updated_at > since[repo]) since[repo] = issue.updated_at;
        }
        // An issue dated in the future never becomes the cursor (later runs would skip
        // everything written until then).
        if (since[repo]) since[repo] = clampToNow(since[repo], `issues of ${repo}`);
        out.checkpoint('issues', { since });
        const next = page.nextLink();
        if (!next) break;
        guard.follow(next);
        page = fetch(next, { secretHeaders: [bearer('token')] });
      }
    }
    out.flush();
  }
}

export const connector = exportConnector(new Issues());
