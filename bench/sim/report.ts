/**
 * Turns simulator runs into what the cluster benchmark reports: percentiles of the
 * per-node completion time, time to the last node, the Kumar-Ross fluid bound and the
 * ratio to it, origin egress and its ratio to the image size; as a table, JSON rows and
 * an SVG plot (CDF of completion times per run, completion time against N).
 */
import { fluidBound, percentile } from '../cluster/bound.js'
import { type TableCell, formatTable } from '../lib/table.js'
import { type ChartSeries, composeSvg, renderLineChart } from '../lib/svg.js'
import type { SimConfig, SimResult, TimelinePoint } from './simulate.js'

/** A published result to print beside a run (e.g. Uber Kraken's). */
export interface Reference {
  name: string
  p50Seconds?: number
  p99Seconds?: number
}

/** One simulated scenario, summarised. */
export interface SimRow {
  label: string
  nodes: number
  imageBytes: number
  layers: number
  pieceBytes: number[]
  nodeUpMbit: number
  nodeDownMbit: number
  originMbit: number
  latencyMs: number
  seed: number
  p50Seconds: number
  p90Seconds: number
  p99Seconds: number
  maxSeconds: number
  lastDoneSeconds: number
  boundSeconds: number
  boundLimitedBy: string
  ratioToBound: number
  originBytes: number
  originRatio: number
  deliveredPieces: number
  duplicatePieces: number
  /** Bytes sent for nothing (cancelled or duplicate sends) over the bytes delivered. */
  wasteRatio: number
  busyAnswers: number
  events: number
  wallSeconds: number
  reference?: Reference
  /** Sorted completion times in seconds (for the CDF). */
  completionSeconds: number[]
  /** How busy the links were over the run (--timeline). */
  timeline?: TimelinePoint[]
}

/** Summarises one run of `config`. */
export function summarizeSim(
  label: string,
  config: SimConfig,
  result: SimResult,
  reference?: Reference,
): SimRow {
  const seconds = result.completionMs.map((ms) => ms / 1000).sort((a, b) => a - b)
  const nodeDownMbit = config.nodeDownMbit ?? config.nodeUpMbit
  const bound = fluidBound({
    fileBytes: config.imageBytes,
    nodes: config.nodes,
    originMbit: config.originMbit,
    nodeUpMbit: config.nodeUpMbit,
    nodeDownMbit,
  })
  const lastDoneSeconds = result.lastDoneMs / 1000
  const row: SimRow = {
    label,
    nodes: config.nodes,
    imageBytes: config.imageBytes,
    layers: config.layers,
    pieceBytes: result.pieceSize,
    nodeUpMbit: config.nodeUpMbit,
    nodeDownMbit,
    originMbit: config.originMbit,
    latencyMs: config.latencyMs,
    seed: config.seed,
    p50Seconds: percentile(seconds, 50),
    p90Seconds: percentile(seconds, 90),
    p99Seconds: percentile(seconds, 99),
    maxSeconds: seconds[seconds.length - 1]!,
    lastDoneSeconds,
    boundSeconds: bound.seconds,
    boundLimitedBy: bound.limitedBy,
    ratioToBound: lastDoneSeconds / bound.seconds,
    originBytes: result.originBytes,
    originRatio: result.originBytes / config.imageBytes,
    deliveredPieces: result.deliveredPieces,
    duplicatePieces: result.duplicatePieces,
    wasteRatio: result.wastedBytes / (result.imageBytes * config.nodes),
    busyAnswers: result.busyAnswers,
    events: result.events,
    wallSeconds: result.wallMs / 1000,
    completionSeconds: seconds,
  }
  if (reference !== undefined) row.reference = reference
  if (result.timeline !== undefined) row.timeline = result.timeline
  return row
}

/** The report table; a reference's numbers get a row of their own under the run's. */
export function formatSimRows(rows: readonly SimRow[]): string {
  const cells: TableCell[][] = []
  for (const r of rows) {
    cells.push([
      r.label,
      r.nodes,
      r.p50Seconds,
      r.p90Seconds,
      r.p99Seconds,
      r.maxSeconds,
      r.boundSeconds,
      r.ratioToBound,
      r.originBytes / 2 ** 20,
      r.originRatio,
      r.wasteRatio,
      r.wallSeconds,
    ])
    if (r.reference !== undefined) {
      cells.push([
        `  ${r.reference.name} (published)`,
        r.nodes,
        r.reference.p50Seconds,
        undefined,
        r.reference.p99Seconds,
      ])
    }
  }
  return formatTable(
    [
      { header: 'scenario' },
      { header: 'N' },
      { header: 'p50 s' },
      { header: 'p90 s' },
      { header: 'p99 s' },
      { header: 'max s' },
      { header: 'bound s' },
      { header: 'max/bound' },
      { header: 'origin MiB' },
      { header: 'origin/image' },
      { header: 'waste' },
      { header: 'wall s' },
    ],
    cells,
  )
}

/**
 * A run's timeline as a table: per sample the nodes still pulling, how busy their
 * downlinks, all uplinks and the origin were (percent), and the nodes left idle by busy
 * answers alone.
 */
export function formatSimTimeline(row: SimRow): string {
  const cells: TableCell[][] = (row.timeline ?? []).map((p) => [
    p.t,
    p.pulling,
    Math.round(100 * p.downBusy),
    Math.round(100 * p.upBusy),
    Math.round(100 * p.originBusy),
    p.idleOnBusy,
  ])
  return formatTable(
    [
      { header: 't s' },
      { header: 'pulling' },
      { header: 'down %' },
      { header: 'up %' },
      { header: 'origin %' },
      { header: 'idle on busy' },
    ],
    cells,
  )
}

/** At most `points` points of a CDF over sorted `values` (every value when fewer). */
function cdfPoints(values: readonly number[], points = 400): Array<[number, number]> {
  const out: Array<[number, number]> = [[0, 0]]
  const step = Math.max(1, Math.floor(values.length / points))
  for (let i = step - 1; i < values.length; i += step) out.push([values[i]!, (i + 1) / values.length])
  const last = values[values.length - 1]
  if (last !== undefined && out[out.length - 1]![1] < 1) out.push([last, 1])
  return out
}

/** The CDF of completion times per run and, when N varies, completion time against N. */
export function renderSimPlots(rows: readonly SimRow[]): string {
  const panels = [
    renderLineChart({
      title: 'Simulated completion time CDF',
      xLabel: 'seconds since the pull began',
      yLabel: 'fraction of nodes done',
      step: true,
      yMin: 0,
      yMax: 1,
      series: rows.map((r) => ({ name: r.label, points: cdfPoints(r.completionSeconds) })),
    }),
  ]
  const timed = rows.filter((r) => r.timeline !== undefined && r.timeline.length > 0)
  if (timed.length > 0) {
    const series: ChartSeries[] = timed.map((r) => ({
      name: `${r.label} downlinks`,
      points: r.timeline!.map((p) => [p.t, 100 * p.downBusy] as const),
    }))
    if (timed.length === 1) {
      const only = timed[0]!.timeline!
      series.push(
        { name: 'uplinks', points: only.map((p) => [p.t, 100 * p.upBusy] as const) },
        { name: 'origin', points: only.map((p) => [p.t, 100 * p.originBusy] as const) },
      )
    }
    panels.push(
      renderLineChart({
        title: 'Links in use over the run',
        xLabel: 'simulated seconds',
        yLabel: 'percent of capacity in use',
        yMin: 0,
        yMax: 100,
        series,
      }),
    )
  }
  const ns = new Set(rows.map((r) => r.nodes))
  if (ns.size > 1) {
    const series: ChartSeries[] = [
      { name: 'p50', points: rows.map((r) => [Math.log10(r.nodes), r.p50Seconds] as const), markers: true },
      { name: 'max', points: rows.map((r) => [Math.log10(r.nodes), r.maxSeconds] as const), markers: true },
      {
        name: 'fluid bound',
        points: rows.map((r) => [Math.log10(r.nodes), r.boundSeconds] as const),
        markers: true,
      },
    ]
    panels.push(
      renderLineChart({
        title: 'Completion time against N',
        xLabel: 'log10 of the node count N',
        yLabel: 'seconds',
        series,
      }),
    )
  }
  return composeSvg(panels)
}
