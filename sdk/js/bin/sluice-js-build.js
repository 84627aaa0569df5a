#!/usr/bin/env node
// sluice-js-build APP.js [-o OUT.wasm] [--wit DIR]: builds a connector into a component.
//
// 1. esbuild bundles the app, this SDK and any npm dependency into one ES module (StarlingMonkey,
//    the engine componentize-js embeds, cannot resolve bare npm specifiers), keeping the world's
//    imports `sluice:connector/<interface>` external and adding the world's version to them
//    (`sluice:connector/http@0.2.0`), read from the WIT's `package` line;
// 2. componentize-js 0.23 turns the bundle into a component for the world `connector-plugin`,
//    with `http` and `fetch-event` disabled: the host does not link wasi:http (the network is
//    `http.fetch`).
import { mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { build } from 'esbuild';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: 'string', short: 'o' },
    wit: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help || positionals.length !== 1) {
  console.error('usage: sluice-js-build APP.js [-o OUT.wasm] [--wit DIR]');
  process.exit(values.help ? 0 : 2);
}
const app = resolve(positionals[0]);
const out = resolve(values.out ?? `${basename(app).replace(/\.[cm]?[jt]s$/, '')}.wasm`);
const witDir = resolve(values.wit ?? join(here, '..', 'wit'));

// The world's version, from the `package sluice:connector@X;` line of the WIT's top-level files.
let version;
for (const f of (await readdir(witDir)).filter((f) => f.endsWith('.wit'))) {
  const m = /^package\s+sluice:connector@([0-9A-Za-z.+-]+)\s*;/m.exec(await readFile(join(witDir, f), 'utf8'));
  if (m) version = m[1];
}
if (!version) {
  console.error(`no 'package sluice:connector@VERSION;' in ${witDir}`);
  process.exit(1);
}

const work = await mkdtemp(join(tmpdir(), 'sluice-js-build-'));
try {
  const bundle = join(work, 'connector.js');
  await build({
    entryPoints: [app],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    outfile: bundle,
    logLevel: 'warning',
    plugins: [
      {
        name: 'sluice-world',
        setup(b) {
          b.onResolve({ filter: /^sluice:connector\// }, (args) => ({
            path: args.path.includes('@') ? args.path : `${args.path}@${version}`,
            external: true,
          }));
        },
      },
    ],
  });
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: witDir,
    worldName: 'connector-plugin',
    disableFeatures: ['http', 'fetch-event'],
  });
  const tmp = `${out}.tmp`;
  await writeFile(tmp, component);
  await rename(tmp, out);
  const { size } = await stat(out);
  console.log(`${out} (${size} bytes, sluice:connector@${version}, componentize ${((Date.now() - started) / 1000).toFixed(1)} s)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
