/**
 * Requests-per-second measurement of one URL with a fixed number of connections for a
 * fixed time, through wrk (a C load generator, light on a shared CPU) or autocannon
 * (in-process, always available as a devDependency).
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)

/** The load generators `runHttpLoad` can drive. */
export type LoadTool = 'wrk' | 'autocannon'

/** What to load and how hard. */
export interface HttpLoadInit {
  url: string
  headers?: Record<string, string>
  connections: number
  durationSeconds: number
  tool: LoadTool
  /** wrk threads. @default 1 */
  threads?: number
}

/** The result of one load run. */
export interface HttpLoadResult {
  tool: LoadTool
  requestsPerSecond: number
  totalRequests: number
  /** Responses with a status outside 2xx (and 3xx for wrk). */
  non2xx: number
  /** Connect, read, write errors and timeouts. */
  errors: number
  latencyP50Ms: number
  latencyP99Ms: number
}

/** The preferred load tool on this machine: wrk when installed, otherwise autocannon. */
export function defaultLoadTool(): LoadTool {
  return existsSync('/usr/bin/wrk') || existsSync('/usr/local/bin/wrk') ? 'wrk' : 'autocannon'
}

/**
 * Runs one load test.
 * @throws when the tool fails or its output cannot be read
 */
export async function runHttpLoad(init: HttpLoadInit): Promise<HttpLoadResult> {
  return init.tool === 'wrk' ? runWrk(init) : runAutocannon(init)
}

function wrkDurationMs(text: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text)
  if (!match) return Number.NaN
  const value = Number(match[1])
  const unit = match[2]
  return unit === 'us' ? value / 1000 : unit === 'ms' ? value : unit === 's' ? value * 1000 : value * 60_000
}

/**
 * Reads the numbers out of wrk's `--latency` report.
 * @throws when the report has no Requests/sec line
 */
export function parseWrkOutput(output: string): Omit<HttpLoadResult, 'tool'> {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output)
  if (!rps) throw new Error(`unexpected wrk output:\n${output}`)
  const total = /^\s*(\d+) requests in/m.exec(output)
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(output)
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
  const percentile = (p: string): number => {
    const match = new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(output)
    return match ? wrkDurationMs(match[1]!) : Number.NaN
  }
  return {
    requestsPerSecond: Number(rps[1]),
    totalRequests: total ? Number(total[1]) : Number.NaN,
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    errors: socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0,
    latencyP50Ms: percentile('50'),
    latencyP99Ms: percentile('99'),
  }
}

async function runWrk(init: HttpLoadInit): Promise<HttpLoadResult> {
  const args = [
    '--latency',
    '-t',
    String(init.threads ?? 1),
    '-c',
    String(init.connections),
    '-d',
    `${init.durationSeconds}s`,
  ]
  for (const [name, value] of Object.entries(init.headers ?? {})) args.push('-H', `${name}: ${value}`)
  args.push(init.url)
  const { stdout } = await execFileAsync('wrk', args, { timeout: (init.durationSeconds + 30) * 1000 })
  return { tool: 'wrk', ...parseWrkOutput(stdout) }
}

async function runAutocannon(init: HttpLoadInit): Promise<HttpLoadResult> {
  const { default: autocannon } = await import('autocannon')
  const result = await autocannon({
    url: init.url,
    connections: init.connections,
    duration: init.durationSeconds,
    headers: init.headers ?? {},
  })
  return {
    tool: 'autocannon',
    requestsPerSecond: result.requests.total / result.duration,
    totalRequests: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
  }
}
