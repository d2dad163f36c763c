#!/usr/bin/env node
// The shoal command. A fresh clone needs no build step: on the first start, and again
// whenever a source file changed, the TypeScript sources are bundled with esbuild into
// node_modules/.cache/shoal/ and later starts import that bundle directly. Compared
// with compiling module by module through a loader thread (tsx), a node starts faster
// and its resident memory is about 35 MB lower, which matters with one agent per node
// and fifty agents in the cluster testbed. SHOAL_TSX=1 runs the sources through tsx.
import './polyfill.js'
import { startCpuProfileFromEnv } from './cpu-profile.js'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

// File work runs on libuv's thread pool (4 threads by default). An agent syncs every
// piece it stores; with only four threads a few slow syncs hold up every other file
// read and write of the process (serving pieces, the mirror). Set before any pool use.
process.env.UV_THREADPOOL_SIZE ??= '16'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const entry = join(root, 'cli/src/main.ts')
const SOURCE_DIRS = ['cli', 'protocol', 'registry', 'tracker', 'peer-agent']

/** A fingerprint of every source file's path, size and mtime: cheap, and changes on any edit. */
function sourceFingerprint() {
  const hash = createHash('sha256')
  const walk = (dir) => {
    const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))
    for (const e of entries) {
      if (e.name === 'node_modules' || e.name.startsWith('.')) continue
      const path = join(dir, e.name)
      if (e.isDirectory()) walk(path)
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) {
        const st = statSync(path)
        hash.update(`${path}\0${st.size}\0${st.mtimeMs}\n`)
      }
    }
  }
  for (const dir of SOURCE_DIRS) walk(join(root, dir))
  hash.update(readFileSync(join(root, 'package-lock.json')))
  return hash.digest('hex').slice(0, 16)
}

// Modules that find files beside themselves (import.meta.url) must keep seeing their
// own location, not the bundle's.
const keepImportMetaUrl = {
  name: 'keep-import-meta-url',
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8')
      const url = JSON.stringify(pathToFileURL(args.path).href)
      return { contents: source.replaceAll('import.meta.url', url), loader: 'ts' }
    })
  },
}

async function bundle() {
  const dir = join(root, 'node_modules/.cache/shoal')
  const out = join(dir, `shoal-${sourceFingerprint()}.mjs`)
  if (existsSync(out)) return out
  mkdirSync(dir, { recursive: true })
  const esbuild = await import('esbuild')
  // Several processes may start at once: each writes its own file and renames it into place.
  const tmp = `${out}.${process.pid}.tmp`
  await esbuild.build({
    entryPoints: [entry],
    outfile: tmp,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'inline',
    logLevel: 'error',
    plugins: [keepImportMetaUrl],
  })
  await esbuild.stop?.()
  renameSync(tmp, out)
  return out
}

startCpuProfileFromEnv()

if (process.env.SHOAL_TSX === '1') {
  const { register } = await import('tsx/esm/api')
  register()
  await import(pathToFileURL(entry).href)
} else {
  process.setSourceMapsEnabled(true)
  let bundled
  try {
    bundled = await bundle()
  } catch (err) {
    console.error(`shoal: could not build the sources: ${err instanceof Error ? err.message : err}`)
    process.exit(1)
  }
  await import(pathToFileURL(bundled).href)
}
