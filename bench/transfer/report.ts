/**
 * Turns the transfer benchmark's measurements into report rows (medians over runs,
 * CPU seconds per GB, the ratio to raw TCP) and the verdict against the target.
 *
 * The verdict is on the median of per-run pairs: in every run shoal's transfer and a
 * raw TCP transfer run back to back (main.ts alternates which goes first), and each run
 * gives one ratio. Raw TCP's speed on a shared 2-core machine swings 2x between
 * invocations and within one; a ratio of two medians can pair a slow shoal run with a
 * fast raw one from another moment, a ratio per pair compares runs that saw the same
 * machine.
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
  /**
   * Median over runs of each run's throughput over that of raw TCP with the same peers in
   * the same run (what the target is judged on).
   */
  pairedRatioToRaw: number | undefined
  /** The per-run ratios behind `pairedRatioToRaw`, in run order. */
  pairRatios: number[]
}

/** The verdict on the target. */
export interface Verdict {
  pass: boolean
  variant: string
  /** The median of the per-run ratios to raw TCP on one connection. */
  ratio: number | undefined
  /** The per-run ratios. */
  pairRatios: number[]
  /** The ratio of the medians, for reference (the `x raw` column). */
  ratioOfMedians: number | undefined
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
      pairedRatioToRaw: undefined,
      pairRatios: [],
    }
    if (first.variant !== undefined) row.variant = first.variant
    rows.push(row)
  }
  for (const row of rows) {
    const raw = rows.find((r) => r.kind === 'raw' && r.peers === row.peers)
    const rawSha = rows.find((r) => r.kind === 'raw-sha256' && r.peers === row.peers)
    if (raw) row.ratioToRaw = row.megabytesPerSecond / raw.megabytesPerSecond
    if (rawSha) row.ratioToRawSha256 = row.megabytesPerSecond / rawSha.megabytesPerSecond
    row.pairRatios = pairRatios(measurements, row)
    if (row.pairRatios.length > 0) row.pairedRatioToRaw = median(row.pairRatios)
  }
  return rows
}

/**
 * The ratio of each run of `row`'s configuration to raw TCP with the same peers in the
 * same run, in run order; runs without both are skipped.
 */
function pairRatios(measurements: Measurement[], row: ReportRow): number[] {
  const mbps = (m: Measurement): number => m.bytes / 1e6 / m.seconds
  const ratios: number[] = []
  for (const m of measurements) {
    if (m.kind !== row.kind || m.peers !== row.peers || m.variant !== row.variant) continue
    const raw = measurements.find((r) => r.kind === 'raw' && r.peers === m.peers && r.run === m.run)
    if (raw !== undefined) ratios.push(mbps(m) / mbps(raw))
  }
  return ratios
}

/**
 * Judges `variant` on one connection (peers = 1) against raw TCP on one connection: the
 * median of the per-run ratios. Fails, rather than passes, when there is no pair.
 */
export function judge(rows: ReportRow[], variant: string): Verdict {
  const row = rows.find((r) => r.kind === 'shoal' && r.variant === variant && r.peers === 1)
  const ratio = row?.pairedRatioToRaw
  const pass = ratio !== undefined && ratio >= TARGET_RATIO
  const shown =
    ratio === undefined
      ? 'not measured'
      : `${ratio.toFixed(2)}x raw TCP (median of ${row!.pairRatios.length} runs paired with raw TCP: ` +
        `${row!.pairRatios.map((r) => r.toFixed(2)).join(', ')}; ratio of medians ${row!.ratioToRaw?.toFixed(2)})`
  return {
    pass,
    variant,
    ratio,
    pairRatios: row?.pairRatios ?? [],
    ratioOfMedians: row?.ratioToRaw,
    target: TARGET_RATIO,
    message: `${pass ? 'PASS' : 'FAIL'}: shoal (${variant}) on one connection runs at ${shown}; target >= ${TARGET_RATIO}x`,
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
    r.pairedRatioToRaw,
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
      { header: 'x raw paired' },
    ],
    cells,
  )
}
