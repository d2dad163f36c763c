/**
 * Turns the transfer benchmark's measurements into report rows (medians over runs,
 * CPU seconds per GB, the ratio to raw TCP) and the verdict against the target.
 */
import { formatTable, type TableCell } from '../lib/table.js'
import { median } from '../lib/stats.js'

/** The target: shoal's piece path at least this fraction of raw TCP per connection. */
export const TARGET_RATIO = 0.5

/** What was moved in one measured transfer. */
export type TransferKind = 'raw' | 'raw-sha256' | 'shoal'

/** One measured transfer. */
export interface Measurement {
  kind: TransferKind
  /** Stack variant (shoal only). */
  variant?: string
  /** Serving processes (one connection each). */
  peers: number
  run: number
  bytes: number
  seconds: number
  /** CPU seconds of the fetching process during the transfer. */
  clientCpuSeconds: number
  /** CPU seconds of all serving processes during the transfer. */
  serverCpuSeconds: number
}

/** Medians of one configuration. */
export interface ReportRow {
  label: string
  kind: TransferKind
  variant?: string
  peers: number
  runs: number
  megabytesPerSecond: number
  clientCpuSecondsPerGB: number
  serverCpuSecondsPerGB: number
  cpuSecondsPerGB: number
  /** Throughput over that of raw TCP with the same peers (the target's measure). */
  ratioToRaw: number | undefined
  /** Throughput over raw TCP that also checks every piece's sha256. */
  ratioToRawSha256: number | undefined
}

/** The verdict on the target. */
export interface Verdict {
  pass: boolean
  variant: string
  ratio: number | undefined
  target: number
  message: string
}

function labelOf(m: Pick<Measurement, 'kind' | 'variant'>): string {
  if (m.kind === 'raw') return 'raw TCP'
  if (m.kind === 'raw-sha256') return 'raw TCP + sha256/piece'
  return `shoal ${m.variant ?? ''}`.trim()
}

/** Groups measurements by configuration, in first-seen order, and takes medians. */
export function buildRows(measurements: Measurement[]): ReportRow[] {
  const groups = new Map<string, Measurement[]>()
  for (const m of measurements) {
    const key = `${m.peers}|${m.kind}|${m.variant ?? ''}`
    const list = groups.get(key) ?? []
    list.push(m)
    groups.set(key, list)
  }
  const rows: ReportRow[] = []
  for (const list of groups.values()) {
    const first = list[0]!
    const gb = (m: Measurement): number => m.bytes / 1e9
    const row: ReportRow = {
      label: labelOf(first),
      kind: first.kind,
      peers: first.peers,
      runs: list.length,
      megabytesPerSecond: median(list.map((m) => m.bytes / 1e6 / m.seconds)),
      clientCpuSecondsPerGB: median(list.map((m) => m.clientCpuSeconds / gb(m))),
      serverCpuSecondsPerGB: median(list.map((m) => m.serverCpuSeconds / gb(m))),
      cpuSecondsPerGB: median(list.map((m) => (m.clientCpuSeconds + m.serverCpuSeconds) / gb(m))),
      ratioToRaw: undefined,
      ratioToRawSha256: undefined,
    }
    if (first.variant !== undefined) row.variant = first.variant
    rows.push(row)
  }
  for (const row of rows) {
    const raw = rows.find((r) => r.kind === 'raw' && r.peers === row.peers)
    const rawSha = rows.find((r) => r.kind === 'raw-sha256' && r.peers === row.peers)
    if (raw) row.ratioToRaw = row.megabytesPerSecond / raw.megabytesPerSecond
    if (rawSha) row.ratioToRawSha256 = row.megabytesPerSecond / rawSha.megabytesPerSecond
  }
  return rows
}

/**
 * Judges `variant` on one connection (peers = 1) against raw TCP on one connection.
 * Fails, rather than passes, when either row is missing.
 */
export function judge(rows: ReportRow[], variant: string): Verdict {
  const row = rows.find((r) => r.kind === 'shoal' && r.variant === variant && r.peers === 1)
  const ratio = row?.ratioToRaw
  const pass = ratio !== undefined && ratio >= TARGET_RATIO
  const shown = ratio === undefined ? 'not measured' : `${ratio.toFixed(2)}x`
  return {
    pass,
    variant,
    ratio,
    target: TARGET_RATIO,
    message: `${pass ? 'PASS' : 'FAIL'}: shoal (${variant}) on one connection runs at ${shown} raw TCP; target >= ${TARGET_RATIO}x`,
  }
}

/** The report table. */
export function formatRows(rows: ReportRow[]): string {
  const cells: TableCell[][] = rows.map((r) => [
    r.label,
    r.peers,
    r.megabytesPerSecond,
    r.cpuSecondsPerGB,
    r.clientCpuSecondsPerGB,
    r.serverCpuSecondsPerGB,
    r.ratioToRaw,
    r.ratioToRawSha256,
  ])
  return formatTable(
    [
      { header: 'path' },
      { header: 'peers' },
      { header: 'MB/s' },
      { header: 'CPU s/GB' },
      { header: 'fetcher' },
      { header: 'servers' },
      { header: 'x raw' },
      { header: 'x raw+sha' },
    ],
    cells,
  )
}
