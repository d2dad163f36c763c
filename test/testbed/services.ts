/**
 * The daemons of the cluster testbed, each started inside its host's namespace by PID:
 * the baseline CNCF Distribution and the shoal seed registry on the origin, the shoal
 * tracker on its own host, one shoal agent per node (its mirror on the node's own
 * 127.0.0.1:5001, its libp2p on the node's 198.18 address), and the pull clients.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { findBinary, type ManagedProcess, runCommand, startProcess } from '../helpers/processes.js'
import { type ShoalService, startShoalService } from '../helpers/shoal.js'
import type { TestbedHost } from './topology.js'

/** Debian's CNCF Distribution binary (override with SHOAL_DISTRIBUTION_BINARY). */
export const DISTRIBUTION_BINARY = process.env.SHOAL_DISTRIBUTION_BINARY ?? '/usr/bin/docker-registry'

/** The puller run in every node namespace. */
export const PULL_CLIENT = fileURLToPath(new URL('./pull-client.mjs', import.meta.url))

/** Ports on the testbed hosts. */
export const PORTS = {
  distribution: 5000,
  registry: 5080,
  seedP2p: 4001,
  tracker: 7070,
  agent: 5001,
  agentP2p: 4001,
}

/** A daemon in a namespace and the URL it serves (on the host's 198.18 address or its loopback). */
export interface TestbedService {
  readonly url: string
  /** `host:port` as image references name a registry. */
  readonly host: string
  readonly process: ManagedProcess
  stop(): Promise<void>
}

/**
 * GETs `url` from inside `host`'s namespace with curl and returns the body; throws on a
 * non-2xx answer or a connection failure.
 */
export async function curlIn(
  host: TestbedHost,
  url: string,
  options: { timeoutMs?: number } = {},
): Promise<string> {
  const result = await host.ns.exec('curl', ['-sSf', '--max-time', '10', url], {
    timeoutMs: options.timeoutMs ?? 15_000,
  })
  return result.stdout
}

export { sampleSum } from '../helpers/metrics.js'

/** The samples of a metric in Prometheus text, summed by the value of `label` ('' when absent). */
export function sampleByLabel(text: string, name: string, label: string): Record<string, number> {
  const sums: Record<string, number> = {}
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    const value = new RegExp(`${label}="([^"]*)"`).exec(line)?.[1] ?? ''
    sums[value] = (sums[value] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sums
}

/**
 * Starts Distribution on `host` at `<address>:5000` with filesystem storage under
 * `dir`, and waits until it logs that it listens. Throws with its log tail otherwise.
 */
export async function startDistribution(host: TestbedHost, dir: string): Promise<TestbedService> {
  await mkdir(join(dir, 'storage'), { recursive: true })
  const addr = `${host.address}:${PORTS.distribution}`
  const config = join(dir, 'config.yml')
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: info',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'storage')}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: ${addr}`,
      '',
    ].join('\n'),
  )
  const wrapped = host.ns.wrap(DISTRIBUTION_BINARY, ['serve', config])
  const proc = await startProcess({ name: 'distribution', ...wrapped, logDir: dir })
  try {
    await proc.waitForLine((line) => (/listening on/.test(line) ? true : undefined), {
      timeoutMs: 20_000,
      description: 'Distribution listening',
    })
  } catch (err) {
    await proc.stop()
    throw err
  }
  return { url: `http://${addr}`, host: addr, process: proc, stop: async () => void (await proc.stop()) }
}

function wrapService(service: ShoalService): TestbedService {
  return { url: service.url, host: service.host, process: service.process, stop: service.stop }
}

/** Starts `shoal tracker` on `host` at `<address>:7070`. */
export async function startTracker(
  host: TestbedHost,
  dir: string,
  extraArgs: string[] = [],
): Promise<TestbedService> {
  await mkdir(dir, { recursive: true })
  const service = await startShoalService({
    args: ['tracker', '--listen', `${host.address}:${PORTS.tracker}`, ...extraArgs],
    service: 'tracker',
    name: 'tracker',
    logDir: dir,
    netns: host.ns,
  })
  return wrapService(service)
}

/**
 * Starts `shoal registry` (the seed) on `host` at `<address>:5080`, its libp2p seed on
 * `<address>:4001`, announcing to `trackerUrl`, with data under `dir/data`.
 */
export async function startSeedRegistry(
  host: TestbedHost,
  dir: string,
  trackerUrl: string,
  extraArgs: string[] = [],
): Promise<TestbedService> {
  await mkdir(join(dir, 'data'), { recursive: true })
  const service = await startShoalService({
    args: [
      'registry',
      '--listen',
      `${host.address}:${PORTS.registry}`,
      '--data',
      join(dir, 'data'),
      '--gc-interval-ms',
      '0',
      '--seed-listen',
      `/ip4/${host.address}/tcp/${PORTS.seedP2p}`,
      '--seed-tracker-url',
      trackerUrl,
      ...extraArgs,
    ],
    service: 'registry',
    name: 'shoal-registry',
    logDir: dir,
    netns: host.ns,
  })
  return wrapService(service)
}

/**
 * Starts `shoal agent` on node `host`: its mirror on the node's 127.0.0.1:5001, its
 * libp2p on `<address>:4001`, pointed at the seed registry and the tracker.
 */
export async function startAgent(
  host: TestbedHost,
  dir: string,
  init: { registryUrl: string; trackerUrl?: string; extraArgs?: string[] },
): Promise<TestbedService> {
  await mkdir(join(dir, 'data'), { recursive: true })
  const service = await startShoalService({
    args: [
      'agent',
      '--listen',
      `127.0.0.1:${PORTS.agent}`,
      '--data',
      join(dir, 'data'),
      '--registry',
      init.registryUrl,
      ...(init.trackerUrl ? ['--tracker', init.trackerUrl] : []),
      '--p2p-listen',
      `/ip4/${host.address}/tcp/${PORTS.agentP2p}`,
      ...(init.extraArgs ?? []),
    ],
    service: 'agent',
    name: `agent-${host.id}`,
    logDir: dir,
    netns: host.ns,
    startTimeoutMs: 180_000,
  })
  return wrapService(service)
}

/** What one node's pull client reported. */
export interface PullResult {
  node: string
  ok: boolean
  /** Milliseconds from the common start to the end of this node's pull. */
  completionMs: number
  bytes: number
  /** Blob requests resumed with Range after a broken connection. */
  retries: number
  /** The client's own CPU time from the start to its end, s (0 when it did not say). */
  cpuSeconds: number
  error?: string
}

/** One node's pull: where its client pulls from. */
export interface PullTarget {
  host: TestbedHost
  /** Base URL the client pulls from (the node's agent, or the origin directly). */
  url: string
  /** Adds `?ns=<ns>` to every request (the mirror protocol). */
  ns?: string
  /** Run this command at the start time instead of the HTTP puller (e.g. `ctr images pull`). */
  command?: string[]
}

/** Progress of a pull round. */
export interface PullProgress {
  done: number
  failed: number
  total: number
  bytes: number
}

/**
 * Starts a pull client on every target, all told to begin at the same moment (a few
 * seconds after they are spawned), waits for all of them, and returns one result per
 * target in order. `onProgress` is called about twice a second. Never throws for a
 * failed pull (see `ok`); throws when a client cannot be started.
 */
export async function runPulls(
  targets: readonly PullTarget[],
  init: { repository: string; reference: string; logDir: string; timeoutMs?: number },
  options: { onProgress?: (progress: PullProgress) => void; signal?: AbortSignal } = {},
): Promise<{ startAt: number; results: PullResult[] }> {
  await mkdir(init.logDir, { recursive: true })
  const node = findBinary(process.execPath) ?? 'node'
  const startAt = Date.now() + 2_000 + targets.length * 100
  const timeoutMs = init.timeoutMs ?? 1_800_000
  const clients = await Promise.all(
    targets.map((target) =>
      startProcess({
        name: `pull-${target.host.id}`,
        ...target.host.ns.wrap(node, [
          PULL_CLIENT,
          '--url',
          target.url,
          '--repo',
          init.repository,
          '--ref',
          init.reference,
          ...(target.ns ? ['--ns', target.ns] : []),
          '--start-at',
          String(startAt),
          '--timeout-ms',
          String(timeoutMs),
          ...(target.command ? ['--exec', '--', ...target.command] : []),
        ]),
        logDir: init.logDir,
      }),
    ),
  )
  const parse = (line: string): Record<string, unknown> | undefined => {
    if (!line.startsWith('{')) return undefined
    try {
      return JSON.parse(line) as Record<string, unknown>
    } catch {
      return undefined
    }
  }
  const finals: Array<Record<string, unknown> | undefined> = clients.map(() => undefined)
  const ticker = setInterval(() => {
    let bytes = 0
    let done = 0
    let failed = 0
    clients.forEach((client, i) => {
      const lines = client.lines()
      for (let j = lines.length - 1; j >= 0; j--) {
        const record = parse(lines[j]!)
        if (record && typeof record.bytes === 'number') {
          bytes += record.bytes
          break
        }
      }
      if (finals[i]?.event === 'done') done++
      else if (finals[i] !== undefined) failed++
    })
    options.onProgress?.({ done, failed, total: clients.length, bytes })
  }, 500)
  const abort = (): void => {
    for (const client of clients) void client.stop({ timeoutMs: 1_000 })
  }
  options.signal?.addEventListener('abort', abort, { once: true })
  try {
    const results = await Promise.all(
      clients.map(async (client, i): Promise<PullResult> => {
        const target = targets[i]!
        try {
          const record = await client.waitForLine(
            (line) => {
              const r = parse(line)
              return r && (r.event === 'done' || r.event === 'error') ? r : undefined
            },
            { timeoutMs: timeoutMs + 60_000, description: 'the end of the pull' },
          )
          finals[i] = record
          return {
            node: target.host.id,
            ok: record.event === 'done',
            completionMs: Number(record.finishedAt) - startAt,
            bytes: Number(record.bytes),
            retries: Number(record.retries ?? 0),
            cpuSeconds: Number(record.cpuMs ?? 0) / 1000,
            ...(record.event === 'error' ? { error: String(record.message) } : {}),
          }
        } catch (err) {
          finals[i] = { event: 'error' }
          return {
            node: target.host.id,
            ok: false,
            completionMs: Date.now() - startAt,
            bytes: 0,
            retries: 0,
            cpuSeconds: 0,
            error: (err as Error).message.split('\n')[0],
          }
        } finally {
          await client.stop({ timeoutMs: 2_000 })
        }
      }),
    )
    return { startAt, results }
  } finally {
    clearInterval(ticker)
    options.signal?.removeEventListener('abort', abort)
  }
}

/** Runs a command inside a host's namespace (for pushes with skopeo and the like). */
export async function execIn(
  host: TestbedHost,
  command: string,
  args: string[],
  timeoutMs = 600_000,
): Promise<string> {
  const result = await runCommand('nsenter', [`--net=${host.ns.path}`, '--', command, ...args], { timeoutMs })
  return result.stdout
}
