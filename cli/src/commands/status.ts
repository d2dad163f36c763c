/**
 * `shoal status --tracker URL`: prints what the tracker's live view shows (agents,
 * swarms, preheat jobs, bytes by source) in the terminal, from `GET /v1/overview`.
 * `--watch` redraws every second.
 */
import { Command } from 'commander'
import type { Overview } from '../../../tracker/src/live/overview.js'
import { EXIT_USAGE, guarded } from '../errors.js'

function bytes(n: number | undefined): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n ?? 0
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

/** Renders an overview as plain text. */
export function renderStatus(o: Overview): string {
  const t = o.totals
  const out: string[] = [
    `bytes by source: peers ${bytes(t.peer)}, seed ${bytes(t.seed)}, upstream ${bytes(t.upstream)}, cache ${bytes(t.cache)}; uploaded to peers ${bytes(t.uploaded)}`,
    '',
    `AGENTS (${o.agents.length})`,
    table(
      ['PEER', 'ZONE', 'ADDRESS', 'CACHE', 'UP/S', 'DOWN/S', 'FROM PEERS', 'FROM SEED', 'FROM UPSTREAM'],
      o.agents.map((a) => [
        a.peerId,
        a.zone ?? '-',
        a.address ?? '-',
        `${bytes(a.cacheUsedBytes)}${a.cacheQuotaBytes ? `/${bytes(a.cacheQuotaBytes)}` : ''}`,
        bytes(a.uploadBytesPerSec),
        bytes(a.downloadBytesPerSec),
        bytes(a.bytesBySource?.peer),
        bytes(a.bytesBySource?.seed),
        bytes(a.bytesBySource?.upstream),
      ]),
    ),
    '',
    `SWARMS (${o.swarms.length})`,
    table(
      [
        'BLOB',
        'PEERS',
        'COMPLETE',
        'SEEDS',
        'ORIGIN SLOTS',
        'COMPLETION',
        'FROM PEERS',
        'FROM SEED',
        'FROM UPSTREAM',
      ],
      o.swarms.map((s) => [
        s.digest,
        String(s.peers),
        String(s.complete),
        String(s.seeds),
        String(s.originSlotsInUse),
        `${Math.round(s.completion * 100)}%`,
        bytes(s.bytesFromPeers),
        bytes(s.bytesFromSeed),
        bytes(s.bytesFromUpstream),
      ]),
    ),
    '',
    `PREHEAT JOBS (${o.jobs.length})`,
    table(
      ['JOB', 'IMAGE', 'SCOPE', 'STATE', 'TARGETS', 'PROGRESS', 'REASON'],
      o.jobs.map((j) => [
        j.id,
        j.image,
        j.scope,
        j.state,
        `${j.progress.targetsDone}/${j.progress.targets}`,
        j.progress.bytesTotal > 0
          ? `${Math.round((100 * j.progress.bytesDone) / j.progress.bytesTotal)}%`
          : '-',
        j.reason ?? '',
      ]),
    ),
  ]
  return `${out.join('\n')}\n`
}

/** Fetches the overview from a tracker. */
export async function fetchOverview(tracker: string, fetchImpl: typeof fetch = fetch): Promise<Overview> {
  const res = await fetchImpl(`${tracker.replace(/\/+$/, '')}/v1/overview`, {
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(10_000),
  })
  if (!res.ok) throw new Error(`tracker ${tracker} answered ${res.status} to GET /v1/overview`)
  return (await res.json()) as Overview
}

/** Builds the `status` subcommand. */
export function statusCommand(): Command {
  return new Command('status')
    .description("print the tracker's live view: agents, swarms, preheat jobs, bytes by source")
    .option('--tracker <url>', 'tracker URL (env SHOAL_TRACKER_URL)')
    .option('--watch', 'redraw every second until interrupted')
    .action(
      guarded('status', async (opts: Record<string, unknown>) => {
        const tracker = (opts.tracker as string | undefined) ?? process.env.SHOAL_TRACKER_URL
        if (tracker === undefined) {
          process.stderr.write('shoal status: --tracker (or SHOAL_TRACKER_URL) is required\n')
          process.exitCode = EXIT_USAGE
          return
        }
        for (;;) {
          const text = renderStatus(await fetchOverview(tracker))
          process.stdout.write(opts.watch ? `\x1b[H\x1b[2J${text}` : text)
          if (!opts.watch) return
          await new Promise((r) => setTimeout(r, 1000))
        }
      }),
    )
}
