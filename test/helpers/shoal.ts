/**
 * Runs the real shoal CLI (`node bin/shoal.js <command> ...`) as a child process for
 * end-to-end tests, and learns where it listens from its JSON log line
 * `{"msg":"listening","service":"<service>","url":"http://127.0.0.1:PORT"}`.
 */
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SHOAL_NODE_OPTIONS } from '../../bin/node-options.js'
import type { NetworkNamespace } from './netns.js'
import { type ManagedProcess, startProcess } from './processes.js'

/** The repository root (where bin/shoal.js lives). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** The CLI entry point. */
export const SHOAL_BIN = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url))

/**
 * The arguments for `node` that start the shoal CLI as its `#!` line does: the node
 * options of every shoal process (bin/node-options.js), bin/shoal.js, then `args`.
 * Long-running shoal processes should be started this way (`spawn(process.execPath,
 * shoalNodeArgs(['registry', ...]))`) so that they run with the same heap settings as an
 * installed `shoal`. `SHOAL_EXTRA_NODE_OPTIONS` in the environment (space-separated)
 * adds options after those, for experiments that NODE_OPTIONS does not allow
 * (`--trace-gc`, other V8 flags).
 */
export function shoalNodeArgs(args: readonly string[]): string[] {
  const extra = (process.env.SHOAL_EXTRA_NODE_OPTIONS ?? '').split(/\s+/).filter((o) => o !== '')
  return [...SHOAL_NODE_OPTIONS, ...extra, SHOAL_BIN, ...args]
}

/** Options for {@link startShoalService}. */
export interface StartShoalServiceInit {
  /** The CLI command and its arguments, e.g. `['registry', '--listen', '127.0.0.1:0']`. */
  args: string[]
  /** The `service` field of the listening log line to wait for. */
  service: string
  /** Folder for the log file. */
  logDir: string
  /** The log file's base name. @default service */
  name?: string
  /** Run inside this network namespace. */
  netns?: NetworkNamespace
  env?: NodeJS.ProcessEnv
  /** @default 60000 (the first start bundles the sources) */
  startTimeoutMs?: number
}

/** A running shoal process and the URL it announced. */
export interface ShoalService {
  readonly url: string
  /** `127.0.0.1:PORT`, as image references spell a registry. */
  readonly host: string
  readonly port: number
  readonly process: ManagedProcess
  /** Stops the process by PID (SIGTERM, then SIGKILL). Safe to call twice. */
  stop(): Promise<void>
}

/** Parses one stdout line; returns the URL when it is `service`'s listening line. */
export function parseListeningLine(line: string, service: string): string | undefined {
  if (!line.startsWith('{')) return undefined
  try {
    const record = JSON.parse(line) as { msg?: unknown; service?: unknown; url?: unknown }
    if (record.msg === 'listening' && record.service === service && typeof record.url === 'string') {
      return record.url
    }
  } catch {
    // Not JSON after all.
  }
  return undefined
}

/**
 * Starts `node <SHOAL_NODE_OPTIONS> bin/shoal.js ...args` and waits for its listening line. Throws, with the
 * log tail, when the process exits or stays silent past the deadline (and stops it).
 */
export async function startShoalService(init: StartShoalServiceInit): Promise<ShoalService> {
  const command = process.execPath
  const args = shoalNodeArgs(init.args)
  const wrapped = init.netns ? init.netns.wrap(command, args) : { command, args }
  const proc = await startProcess({
    name: init.name ?? init.service,
    ...wrapped,
    cwd: REPO_ROOT,
    env: { NODE_ENV: 'test', ...init.env },
    logDir: init.logDir,
    stopTimeoutMs: 10_000,
  })
  let url: string
  try {
    url = await proc.waitForLine(
      (line, stream) => (stream === 'stdout' ? parseListeningLine(line, init.service) : undefined),
      { timeoutMs: init.startTimeoutMs ?? 60_000, description: `"listening" line of the ${init.service}` },
    )
  } catch (err) {
    await proc.stop()
    throw err
  }
  const parsed = new URL(url)
  return {
    url: url.replace(/\/$/, ''),
    host: parsed.host,
    port: Number(parsed.port),
    process: proc,
    stop: async () => {
      await proc.stop()
    },
  }
}

/** Options for {@link startShoalRegistry}. */
export interface StartShoalRegistryInit {
  /** The registry's data folder (`--data`). */
  dataDir: string
  /** Folder for the log file (`shoal-registry.log`). @default the parent of dataDir */
  logDir?: string
  /** More CLI arguments, e.g. `['--upstream', 'http://127.0.0.1:5000']` or `['--config', file]`. */
  extraArgs?: string[]
  /** @default '127.0.0.1:0' */
  listen?: string
  /** Run inside this network namespace (then the URL is on its loopback). */
  netns?: NetworkNamespace
  env?: NodeJS.ProcessEnv
  startTimeoutMs?: number
}

/**
 * Starts a shoal seed registry: `node bin/shoal.js registry --listen 127.0.0.1:0 --data
 * DIR ...extraArgs`, and resolves once it has logged where it listens. Throws with the
 * log tail when it fails to start.
 */
export async function startShoalRegistry(init: StartShoalRegistryInit): Promise<ShoalService> {
  await mkdir(init.dataDir, { recursive: true })
  const logDir = init.logDir ?? dirname(init.dataDir)
  await mkdir(logDir, { recursive: true })
  return startShoalService({
    args: [
      'registry',
      '--listen',
      init.listen ?? '127.0.0.1:0',
      '--data',
      init.dataDir,
      ...(init.extraArgs ?? []),
    ],
    service: 'registry',
    name: 'shoal-registry',
    logDir,
    netns: init.netns,
    env: init.env,
    startTimeoutMs: init.startTimeoutMs,
  })
}
