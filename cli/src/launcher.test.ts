/**
 * bin/shoal.js and its bundle (bin/bundle.js): what a started shoal process loads and
 * with which node options it runs.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { isBuiltin } from 'node:module'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bundleSources, ROOT } from '../../bin/bundle.js'

const execFileAsync = promisify(execFile)
const SHOAL = join(ROOT, 'bin', 'shoal.js')

let dir: string
let main: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-launcher-'))
  main = await bundleSources({ cacheDir: join(dir, 'cache') })
}, 60_000)

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Static imports (`import ... from "x"`, `import "x"`) of one bundle module. */
function staticImports(code: string): string[] {
  const found: string[] = []
  for (const match of code.matchAll(/^import\s[^;]*?from\s*"([^"]+)";?$/gms)) found.push(match[1]!)
  for (const match of code.matchAll(/^import\s*"([^"]+)";?$/gm)) found.push(match[1]!)
  return found
}

/**
 * The npm packages whose code a module loads with everything it imports statically from
 * the bundle: packages are bundled, so they are read from the source maps of those
 * modules (`node_modules/<package>/...` sources). Any import of a bare package name is
 * counted too (there should be none).
 */
async function packagesLoadedBy(bundleDir: string, file: string): Promise<Set<string>> {
  const packages = new Set<string>()
  const seen = new Set<string>()
  const visit = async (name: string): Promise<void> => {
    if (seen.has(name)) return
    seen.add(name)
    for (const spec of staticImports(await readFile(join(bundleDir, name), 'utf8'))) {
      if (spec.startsWith('./')) await visit(spec.slice(2))
      else if (!isBuiltin(spec)) packages.add(spec)
    }
    const map = JSON.parse(await readFile(join(bundleDir, `${name}.map`), 'utf8')) as { sources: string[] }
    for (const source of map.sources) {
      const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(source)
      if (match) packages.add(match[1]!)
    }
  }
  await visit(file)
  return packages
}

describe('the shoal bundle', () => {
  it('keeps source maps in files of their own, named by each module', async () => {
    const bundleDir = join(main, '..')
    const modules = (await readdir(bundleDir)).filter((name) => name.endsWith('.mjs'))
    expect(modules).toContain('main.mjs')
    for (const name of modules) {
      const code = await readFile(join(bundleDir, name), 'utf8')
      expect(code).not.toContain('sourceMappingURL=data:')
      expect(code.trimEnd().endsWith(`//# sourceMappingURL=${name}.map`)).toBe(true)
      expect(existsSync(join(bundleDir, `${name}.map`))).toBe(true)
    }
    const map = JSON.parse(await readFile(join(bundleDir, 'main.mjs.map'), 'utf8')) as { sources: string[] }
    expect(map.sources.some((source) => source.endsWith('cli/src/main.ts'))).toBe(true)
  })

  it('loads the npm packages of a part only when that part runs', async () => {
    const bundleDir = join(main, '..')
    const modules = (await readdir(bundleDir)).filter((name) => name.endsWith('.mjs'))
    const defining = async (fn: string): Promise<string> => {
      for (const name of modules) {
        if ((await readFile(join(bundleDir, name), 'utf8')).includes(`async function ${fn}(`)) return name
      }
      throw new Error(`no module defines ${fn}`)
    }
    const atStart = await packagesLoadedBy(bundleDir, 'main.mjs')
    const registry = await packagesLoadedBy(bundleDir, await defining('createRegistryNode'))
    const tracker = await packagesLoadedBy(bundleDir, await defining('createTrackerNode'))
    // The tracker's Redis client is in the tracker's chunk, not where the registry or the
    // CLI itself can reach it; neither is the registry's HTTP framework loaded for --help.
    expect(tracker.has('ioredis')).toBe(true)
    expect(atStart.has('ioredis')).toBe(false)
    expect(registry.has('ioredis')).toBe(false)
    expect(registry.has('koa')).toBe(true)
    expect(atStart.has('koa')).toBe(false)
    expect(atStart.has('commander')).toBe(true)
  })

  it('carries the npm packages inside it: no module imports one at run time', async () => {
    const bundleDir = join(main, '..')
    for (const name of (await readdir(bundleDir)).filter((n) => n.endsWith('.mjs'))) {
      const code = await readFile(join(bundleDir, name), 'utf8')
      const bare = staticImports(code).filter((spec) => !spec.startsWith('./') && !isBuiltin(spec))
      expect({ name, bare }).toEqual({ name, bare: [] })
      for (const match of code.matchAll(/\bimport\(\s*"([^"]+)"/g)) {
        const spec = match[1]!
        expect(spec.startsWith('./') || isBuiltin(spec), `${name} imports ${spec}`).toBe(true)
      }
    }
  })
})

describe('bin/shoal.js', () => {
  /** Runs bin/shoal.js through its own shebang line and reports node's settings at exit. */
  async function runShoal(args: string[], env: Record<string, string | undefined> = {}) {
    const probe = join(dir, 'probe.mjs')
    const report = join(dir, `report-${Math.random().toString(36).slice(2)}.json`)
    await writeFile(
      probe,
      `import { writeFileSync } from 'node:fs'\n` +
        `process.on('exit', () => writeFileSync(${JSON.stringify(report)}, JSON.stringify({ execArgv: process.execArgv, sourceMaps: process.sourceMapsEnabled, debugColors: process.env.DEBUG_COLORS })))\n`,
    )
    const { stdout } = await execFileAsync(SHOAL, args, {
      env: { ...process.env, SHOAL_SOURCE_MAPS: '', ...env, NODE_OPTIONS: `--import=${probe}` },
      timeout: 30_000,
    })
    const settings = JSON.parse(await readFile(report, 'utf8')) as {
      execArgv: string[]
      sourceMaps: boolean
      debugColors: string | undefined
    }
    return { stdout, ...settings }
  }

  it('starts node with a small young generation and without source maps', async () => {
    const run = await runShoal(['--version'])
    expect(run.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
    expect(run.execArgv).toContain('--max-semi-space-size=4')
    expect(run.sourceMaps).toBe(false)
  })

  it("tells libp2p's loggers once whether stderr is a terminal, unless DEBUG_COLORS is set", async () => {
    // stderr is a pipe here: no colours, and the loggers need not ask again.
    expect((await runShoal(['--version'], { DEBUG_COLORS: undefined })).debugColors).toBe('false')
    expect((await runShoal(['--version'], { DEBUG_COLORS: 'yes' })).debugColors).toBe('yes')
  })

  it('turns source maps on with SHOAL_SOURCE_MAPS=1', async () => {
    const run = await runShoal(['--version'], { SHOAL_SOURCE_MAPS: '1' })
    expect(run.sourceMaps).toBe(true)
  })

  it('shows the help of a subcommand that it loads on demand', async () => {
    const run = await runShoal(['registry', '--help'])
    expect(run.stdout).toContain('--listen')
    expect(run.stdout).toContain('docs/CONFIGURATION.md')
  })
})
