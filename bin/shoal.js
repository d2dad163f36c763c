#!/usr/bin/env -S node --max-semi-space-size=4 --initial-old-space-size=64
// The shoal command. A fresh clone needs no build step: on the first start, and again
// whenever a source file changed, the TypeScript sources are bundled with esbuild into
// node_modules/.cache/shoal/ (bin/bundle.js) and later starts import that bundle
// directly. Compared with compiling module by module through a loader thread (tsx), a
// node starts faster and its resident memory is about 35 MB lower, which matters with
// one agent per node and fifty agents in the cluster testbed. SHOAL_TSX=1 runs the
// sources through tsx.
//
// The node options on the `#!` line are SHOAL_NODE_OPTIONS (bin/node-options.js says
// what each does and why). V8 reads them when it creates the heap, so they only work
// where node starts: this line covers `shoal ...`, `npx shoal ...`, `npm start` and
// `./bin/shoal.js ...`; `node bin/shoal.js` runs without them unless they are given as
// `node <SHOAL_NODE_OPTIONS> bin/shoal.js ...` (as test/helpers/shoal.ts does) or in
// NODE_OPTIONS. `env -S` needs GNU coreutils 8.30 or later or a BSD env; where env lacks
// it (BusyBox), start shoal as `node --max-semi-space-size=4 --initial-old-space-size=64
// bin/shoal.js`.
import './polyfill.js'
import { isatty } from 'node:tty'
import { pathToFileURL } from 'node:url'
import { bundleSources, ENTRY } from './bundle.js'
import { startCpuProfileFromEnv } from './cpu-profile.js'

// File work runs on libuv's thread pool (4 threads by default). An agent syncs every
// piece it stores; with only four threads a few slow syncs hold up every other file
// read and write of the process (serving pieces, the mirror). Set before any pool use.
process.env.UV_THREADPOOL_SIZE ??= '16'

// libp2p's loggers (weald, as the debug package) ask whether stderr is a terminal each
// time one is created, unless DEBUG_COLORS says: a system call for every connection and
// stream an agent opens (isTTY was 0.4-0.6% of the pulling agents' samples in the
// cluster testbed's profiles). The same answer, asked once. Set before libp2p loads.
process.env.DEBUG_COLORS ??= isatty(2) ? 'true' : 'false'

startCpuProfileFromEnv()

if (process.env.SHOAL_TSX === '1') {
  const { register } = await import('tsx/esm/api')
  register()
  await import(pathToFileURL(ENTRY).href)
} else {
  // Stack traces name bundle lines unless source maps are asked for: SHOAL_SOURCE_MAPS=1
  // (or node's own --enable-source-maps) maps them back to the TypeScript sources, at
  // about 15 MB of memory for the decoded maps.
  if (process.env.SHOAL_SOURCE_MAPS === '1') process.setSourceMapsEnabled(true)
  let bundled
  try {
    bundled = await bundleSources()
  } catch (err) {
    console.error(`shoal: could not build the sources: ${err instanceof Error ? err.message : err}`)
    process.exit(1)
  }
  await import(pathToFileURL(bundled).href)
}
