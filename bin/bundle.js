// Bundles the shoal sources with esbuild for bin/shoal.js (ADR 0006): one entry module
// and one chunk per part that the CLI imports on demand, with source maps in files of
// their own, cached under node_modules/.cache/shoal/<fingerprint>/.
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** The repository root (the folder above bin/). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
/** The module the bundle starts from. */
export const ENTRY = join(ROOT, 'cli/src/main.ts')
const SOURCE_DIRS = ['cli', 'protocol', 'registry', 'tracker', 'peer-agent']

/**
 * A fingerprint of every source file's path, size and mtime, the lockfile and this file
 * (which holds the build settings): cheap, and changes on any edit.
 */
export function sourceFingerprint() {
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
  for (const dir of SOURCE_DIRS) walk(join(ROOT, dir))
  hash.update(readFileSync(join(ROOT, 'package-lock.json')))
  hash.update(readFileSync(fileURLToPath(import.meta.url)))
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

/**
 * Returns the path of the bundle's entry module, `<cacheDir>/<fingerprint>/main.mjs`,
 * building it first when it is missing (the sources changed).
 *
 * Code splitting gives every `await import()` of the CLI its own chunk (the registry,
 * tracker and agent parts), and esbuild keeps an npm package's import in the chunk that
 * uses it, so a process loads only the code and packages of the parts it runs:
 * `shoal registry` does not load the tracker's Redis client, for example. Each module
 * names its source map in a comment, and Node reads a map only when source maps are on;
 * an inline map would be most of the bundle's text (1.5 MB) and, decoded, about 15 MB of
 * resident memory in every process.
 * @param {{ cacheDir?: string }} [options] where bundles are kept (default node_modules/.cache/shoal)
 * @returns {Promise<string>}
 */
export async function bundleSources(options = {}) {
  const cacheDir = options.cacheDir ?? join(ROOT, 'node_modules/.cache/shoal')
  const dir = join(cacheDir, sourceFingerprint())
  const main = join(dir, 'main.mjs')
  if (existsSync(main)) return main
  mkdirSync(cacheDir, { recursive: true })
  const esbuild = await import('esbuild')
  // Several processes may start at once: each builds into a folder of its own and
  // renames it into place; the first rename wins and the others discard their copy.
  const tmp = `${dir}.${process.pid}.tmp`
  rmSync(tmp, { recursive: true, force: true })
  await esbuild.build({
    entryPoints: { main: ENTRY },
    outdir: tmp,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // npm packages are bundled too: resolving and compiling the hundreds of small modules
    // of libp2p and its peers one by one was most of a process's start (ADR 0006,
    // amendment of session 14). CommonJS packages in an ES module bundle call `require`
    // for node's own modules, which an ES module lacks: the banner gives each chunk one.
    banner: {
      js: "import { createRequire as __shoalCreateRequire } from 'node:module'; const require = __shoalCreateRequire(import.meta.url);",
    },
    sourcemap: 'linked',
    logLevel: 'error',
    plugins: [keepImportMetaUrl],
  })
  await esbuild.stop?.()
  try {
    renameSync(tmp, dir)
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true })
    if (!existsSync(main)) throw err
  }
  return main
}
