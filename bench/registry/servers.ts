/**
 * The two registries under test, each a child process on loopback with filesystem
 * storage in its own temp folder: shoal's registry (the candidate) and CNCF
 * Distribution 2.8 from Debian (the baseline).
 */
import { execFile } from 'node:child_process'
import { mkdir, rm, stat, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { SHOAL_NODE_OPTIONS } from '../../bin/node-options.js'
import {
  findFreePort,
  type ServiceProcess,
  startServiceProcess,
  waitForHttp,
} from '../lib/service-process.js'

/** Which implementation a target runs. */
export type RegistryKind = 'shoal' | 'distribution'

/** A running registry. */
export interface RegistryTarget {
  /** Label in the report: 'shoal' or 'distribution' (or 'distribution-b' in self-comparison). */
  name: string
  kind: RegistryKind
  url: URL
  pid: number
  dataDir: string
  process: ServiceProcess
  stop(): Promise<void>
}

/**
 * The directory holding a blob's content in a server's filesystem storage: shoal's
 * `blobs/<alg>/<hex[0:2]>/<hex>` (data and piece map, registry/src/storage/paths.ts)
 * and Distribution's `docker/registry/v2/blobs/<alg>/<hex[0:2]>/<hex>`.
 * @throws when `digest` is not `<algorithm>:<hex>`
 */
export function blobContentDir(kind: RegistryKind, dataDir: string, digest: string): string {
  const match = /^([a-z0-9]+):([a-f0-9]{2,})$/.exec(digest)
  if (!match) throw new Error(`not a digest: ${digest}`)
  const [, algorithm, hex] = match as unknown as [string, string, string]
  const root = kind === 'shoal' ? join(dataDir, 'blobs') : join(dataDir, 'docker', 'registry', 'v2', 'blobs')
  return join(root, algorithm, hex.slice(0, 2), hex)
}

/**
 * Deletes a pushed blob's content from `target`'s disk behind the server's back, so
 * that a benchmark's disk usage and page cache do not grow with every push. Only for
 * blobs that are never asked for again: the repository still links them. Returns
 * false when the directory was not there.
 */
export async function removeBlobContent(target: RegistryTarget, digest: string): Promise<boolean> {
  const dir = blobContentDir(target.kind, target.dataDir, digest)
  try {
    await stat(dir)
  } catch {
    return false
  }
  await rm(dir, { recursive: true, force: true })
  return true
}

const READY_TIMEOUT_MS = 60_000
const execFileAsync = promisify(execFile)

/** Path of Debian's Distribution binary. */
export const DISTRIBUTION_BINARY = '/usr/bin/docker-registry'

function distributionConfig(dataDir: string, port: number): string {
  // Debian's packaged defaults (in-memory blob descriptor cache, filesystem storage),
  // with the access log and the periodic storage health check off: shoal logs no
  // access lines by default and runs no such check either.
  return [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(dataDir)}`,
    '  delete:',
    '    enabled: true',
    '  cache:',
    '    blobdescriptor: inmemory',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    'health:',
    '  storagedriver:',
    '    enabled: false',
    '',
  ].join('\n')
}

/**
 * Starts Distribution with a config in `workDir` and data under `workDir/data`, and
 * waits until /v2/ answers.
 * @throws when the binary is missing or the server does not come up
 */
export async function startDistribution(init: { name: string; workDir: string }): Promise<RegistryTarget> {
  const dataDir = join(init.workDir, 'data')
  await mkdir(dataDir, { recursive: true })
  const port = await findFreePort()
  const configPath = join(init.workDir, 'config.yml')
  await writeFile(configPath, distributionConfig(dataDir, port))
  const child = startServiceProcess({
    command: DISTRIBUTION_BINARY,
    args: ['serve', configPath],
    stdoutPath: join(init.workDir, 'stdout.log'),
    stderrPath: join(init.workDir, 'stderr.log'),
  })
  const url = new URL(`http://127.0.0.1:${port}`)
  try {
    await Promise.race([
      waitForHttp(new URL('/v2/', url).href, READY_TIMEOUT_MS),
      child.exited.then((code) => {
        throw new Error(`docker-registry exited (${code}); see ${child.stderrPath}`)
      }),
    ])
  } catch (error) {
    await child.stop()
    throw error
  }
  return {
    name: init.name,
    kind: 'distribution',
    url,
    pid: child.pid,
    dataDir,
    process: child,
    stop: () => child.stop(),
  }
}

/**
 * Starts `bin/shoal.js registry --listen 127.0.0.1:0 --data <workDir>/data`, reads
 * the URL from its `{"msg":"listening","service":"registry"}` log line, and waits
 * until /v2/ answers.
 * @throws when the CLI fails or never logs that line
 */
export async function startShoal(init: {
  name: string
  workDir: string
  repoRoot: string
  /** `cli` runs `bin/shoal.js registry`; `direct` runs storage + HTTP without the CLI. @default 'cli' */
  entry?: 'cli' | 'direct'
  extraArgs?: string[]
  nodeArgs?: string[]
}): Promise<RegistryTarget> {
  const dataDir = join(init.workDir, 'data')
  await mkdir(dataDir, { recursive: true })
  // bin/shoal.js bundles the sources on the first start after a change, inside the
  // process that then serves; build it beforehand so that the measured process does not
  // carry esbuild and the build in its memory.
  if (init.entry !== 'direct') await buildShoalBundle(init.repoRoot)
  const launch = shoalLaunch(init)
  const child = startServiceProcess({
    command: launch.command,
    args: [...launch.args, '--listen', '127.0.0.1:0', '--data', dataDir, ...(init.extraArgs ?? [])],
    cwd: init.workDir,
    stdoutPath: join(init.workDir, 'stdout.log'),
    stderrPath: join(init.workDir, 'stderr.log'),
  })
  let url: URL
  try {
    const line = await child.waitForStdoutLine((text) => {
      try {
        const record = JSON.parse(text) as { msg?: unknown; service?: unknown; url?: unknown }
        return record.msg === 'listening' && record.service === 'registry' && typeof record.url === 'string'
      } catch {
        return false
      }
    }, READY_TIMEOUT_MS)
    url = new URL((JSON.parse(line) as { url: string }).url)
    await waitForHttp(new URL('/v2/', url).href, READY_TIMEOUT_MS)
  } catch (error) {
    await child.stop()
    throw error
  }
  return {
    name: init.name,
    kind: 'shoal',
    url,
    pid: child.pid,
    dataDir,
    process: child,
    stop: () => child.stop(),
  }
}

/**
 * How shoal's process is started. The CLI runs as users run it: `bin/shoal.js` executed
 * through its shebang line (`shoal registry` of an installed package, `npx shoal`,
 * `npm start`), so the node options on that line apply and the measured pid is node's
 * own. Extra node options need node named explicitly: the shebang's options
 * (SHOAL_NODE_OPTIONS) come first, then the extra ones (a later option wins). The direct
 * entry gets SHOAL_NODE_OPTIONS too, so both entries run with the same heap settings.
 */
function shoalLaunch(init: { repoRoot: string; entry?: 'cli' | 'direct'; nodeArgs?: string[] }): {
  command: string
  args: string[]
} {
  if (init.entry === 'direct') {
    return {
      command: process.execPath,
      args: [
        ...SHOAL_NODE_OPTIONS,
        ...(init.nodeArgs ?? []),
        resolve(init.repoRoot, 'bin', 'run-ts.js'),
        resolve(init.repoRoot, 'bench', 'registry', 'shoal-direct-server.ts'),
      ],
    }
  }
  const bin = resolve(init.repoRoot, 'bin', 'shoal.js')
  if (!init.nodeArgs?.length) return { command: bin, args: ['registry'] }
  return {
    command: process.execPath,
    args: [...SHOAL_NODE_OPTIONS, ...init.nodeArgs, bin, 'registry'],
  }
}

/**
 * The node options on a script's `#!/usr/bin/env -S node <options>` line (none for a
 * plain `#!/usr/bin/env node`).
 */
export function shebangNodeOptions(script: string): string[] {
  const first = script.split('\n', 1)[0] ?? ''
  const match = /^#!\S*env\s+(?:-S\s+)?node\b(.*)$/.exec(first)
  if (!match) throw new Error(`not a node shebang line: ${first}`)
  return match[1]!.trim().split(/\s+/).filter(Boolean)
}

/**
 * Runs `node bin/shoal.js --version`, which builds the esbuild bundle of the sources
 * when it is missing or stale, and waits for it.
 * @throws when the command fails
 */
async function buildShoalBundle(repoRoot: string): Promise<void> {
  await execFileAsync(process.execPath, [resolve(repoRoot, 'bin', 'shoal.js'), '--version'], {
    cwd: repoRoot,
    timeout: READY_TIMEOUT_MS,
  })
}
