/**
 * `shoal preheat <image>`: asks the tracker to preheat an image on the seed or the
 * agents (docs/adr/0005-preheat-jobs-in-the-tracker.md). Prints the job id on stdout;
 * with --wait, draws a progress bar on stderr until the job ends and exits 1 when it
 * failed or was cancelled.
 */
import { Command } from 'commander'
import { isFinalJobState, type PreheatJob, parseScope } from '../../../protocol/src/preheat-api.js'
import { createPreheatClient } from '../../../protocol/src/tracker-client/preheat.js'
import { EXIT_FAILURE, EXIT_USAGE, guarded } from '../errors.js'

/** What runPreheat needs. */
export interface PreheatOptions {
  image: string
  tracker: string
  token: string
  platforms: string[]
  scope: string
  wait: boolean
  registryUrl?: string
  username?: string
  password?: string
  /** Poll interval while waiting. @default 500 */
  intervalMs?: number
}

/** Where runPreheat writes. */
export interface PreheatIo {
  stdout: { write(text: string): unknown }
  stderr: { write(text: string): unknown; isTTY?: boolean }
  fetch?: typeof fetch
  signal?: AbortSignal
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

/** One progress line: `[#####.....]  50%  2/4 targets  1.0 MiB/2.0 MiB  running`. */
export function progressLine(job: PreheatJob, width = 30): string {
  const { bytesTotal, bytesDone, targets, targetsDone } = job.progress
  const fraction =
    bytesTotal > 0 ? Math.min(1, bytesDone / bytesTotal) : targets > 0 ? targetsDone / targets : 0
  const filled = Math.round(fraction * width)
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(fraction * 100)).padStart(3)}%  ${targetsDone}/${targets} targets  ${bytes(bytesDone)}/${bytes(bytesTotal)}  ${job.state}`
}

/** Creates the job and, with `wait`, follows it; resolves to the exit code. */
export async function runPreheat(options: PreheatOptions, io: PreheatIo): Promise<number> {
  const client = createPreheatClient({
    url: options.tracker,
    token: options.token,
    ...(io.fetch ? { fetch: io.fetch } : {}),
  })
  let job = await client.create(
    {
      image: options.image,
      scope: options.scope,
      ...(options.platforms.length > 0 ? { platforms: options.platforms } : {}),
      ...(options.registryUrl ? { registryUrl: options.registryUrl } : {}),
      ...(options.username ? { username: options.username } : {}),
      ...(options.password ? { password: options.password } : {}),
    },
    io.signal ? { signal: io.signal } : {},
  )
  io.stdout.write(`${job.id}\n`)
  if (!options.wait) return 0
  const tty = io.stderr.isTTY === true
  let lastLine = ''
  while (!isFinalJobState(job.state)) {
    const line = progressLine(job)
    if (line !== lastLine) {
      io.stderr.write(tty ? `\r${line}` : `${line}\n`)
      lastLine = line
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 500))
    io.signal?.throwIfAborted()
    job = await client.get(job.id, io.signal ? { signal: io.signal } : {})
  }
  io.stderr.write(`${tty ? '\r' : ''}${progressLine(job)}\n`)
  if (job.state === 'succeeded') {
    io.stderr.write(`preheat ${job.id} succeeded: ${job.image} on ${job.targets.length} target(s)\n`)
    return 0
  }
  io.stderr.write(`preheat ${job.id} ${job.state}: ${job.reason ?? 'no reason given'}\n`)
  for (const t of job.targets.filter((x) => x.state === 'failed').slice(0, 10))
    io.stderr.write(`  ${t.id}: ${t.error ?? 'failed'}\n`)
  return EXIT_FAILURE
}

/** Builds the `preheat` subcommand. */
export function preheatCommand(): Command {
  return new Command('preheat')
    .description('preheat an image on the seed registry or on the agents before a rollout')
    .argument('<image>', 'image reference: host[:port]/repository[:tag|@digest]')
    .option(
      '--platform <os/arch>',
      'platform to take from an index (repeatable; default all)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('--scope <scope>', 'all | seed | count:N | percent:P | zone:Z', 'all')
    .option('--wait', 'wait for the job to end, with a progress bar on stderr; exit 1 when it fails')
    .option('--tracker <url>', 'tracker URL (env SHOAL_TRACKER_URL)')
    .option('--token <token>', 'tracker admin token (env SHOAL_ADMIN_TOKEN)')
    .option(
      '--registry-url <url>',
      "base URL of the image's registry (default http for loopback, https otherwise)",
    )
    .option('--username <name>', "user for the image's registry")
    .option('--password <password>', "password for the image's registry (env SHOAL_REGISTRY_PASSWORD)")
    .action(
      guarded('preheat', async (image: string, opts: Record<string, unknown>) => {
        const tracker = (opts.tracker as string | undefined) ?? process.env.SHOAL_TRACKER_URL
        const token = (opts.token as string | undefined) ?? process.env.SHOAL_ADMIN_TOKEN
        const usage = (message: string) => {
          process.stderr.write(`shoal preheat: ${message}\n`)
          process.exitCode = EXIT_USAGE
        }
        if (tracker === undefined) return usage('--tracker (or SHOAL_TRACKER_URL) is required')
        if (token === undefined) return usage('--token (or SHOAL_ADMIN_TOKEN) is required')
        try {
          parseScope(opts.scope as string)
        } catch (err) {
          return usage((err as Error).message)
        }
        const password = (opts.password as string | undefined) ?? process.env.SHOAL_REGISTRY_PASSWORD
        process.exitCode = await runPreheat(
          {
            image,
            tracker,
            token,
            platforms: opts.platform as string[],
            scope: opts.scope as string,
            wait: opts.wait === true,
            ...(opts.registryUrl ? { registryUrl: opts.registryUrl as string } : {}),
            ...(opts.username ? { username: opts.username as string } : {}),
            ...(password ? { password } : {}),
          },
          { stdout: process.stdout, stderr: process.stderr },
        )
      }),
    )
}
