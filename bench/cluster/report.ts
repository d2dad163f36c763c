/**
 * Turns the pull results of one benchmark round into the numbers the cluster report
 * shows (percentiles, last node, ratio to the fluid bound, origin egress) and renders
 * the table and the plots.
 */
import { composeSvg, renderLineChart } from '../lib/svg.js'
import { formatTable } from '../lib/table.js'
import type { PullResult } from '../../test/testbed/services.js'
import { type FluidBound, percentile } from './bound.js'

/** The system a round measured. */
export type SystemName = 'shoal' | 'distribution'

/** One round: one system pulled by N nodes at once. */
export interface RoundResult {
  system: SystemName
  nodes: number
  imageBytes: number
  bound: FluidBound
  ok: number
  failed: number
  /** Per-node completion times in seconds from the common start (failed nodes excluded). */
  completionSeconds: number[]
  p50Seconds: number | null
  p90Seconds: number | null
  p99Seconds: number | null
  maxSeconds: number | null
  /** The last node's completion over the fluid bound. */
  ratioToBound: number | null
  /** Bytes sent on the origin's uplink during the round (tc/ip link counters, all protocols). */
  originEgressBytes: number
  originEgressRatio: number
  /** Blob bytes the registry says it sent (shoal: HTTP + seed pieces; absent for Distribution). */
  registryBlobBytesSent: number | null
  /** Busy share of the whole machine during the pulls (0..1, all cores). */
  machineCpu: number
  /**
   * One core's sha256 MB/s just before the round (probeCpuSpeed): rounds measured on a
   * shared host that had slowed down show it here.
   */
  cpuSpeedMBps?: number
  wallSeconds: number
  /** CPU seconds the servers used during the round (Distribution; or seed, tracker and agents). */
  serviceCpuSeconds?: number
  /** shoal: CPU seconds during the round by role (seed registry, tracker, all agents). */
  serviceCpuByRole?: Record<string, number>
  /** shoal: user/system CPU, system calls and context switches during the round by role. */
  serviceCountersByRole?: Record<string, Record<string, number>>
  /** shoal: CPU seconds during the round by role and thread name (main, V8 workers, libuv pool). */
  serviceThreadCpuByRole?: Record<string, Record<string, number>>
  /**
   * shoal with `--idle-s`: cores each role used while nothing was pulled, measured for
   * that many seconds right before the pulls and right after them.
   */
  idleCores?: { seconds: number; before: Record<string, number>; after: Record<string, number> }
  /**
   * Samples taken every few seconds during the pulls, from the common start: bytes the
   * switch sent down to the round's nodes and up from them, bytes the origin sent (all
   * link counters, every protocol), and what the clients had received and finished.
   */
  timeline?: TimelineSample[]
  /** Blob requests the clients resumed with Range after a broken connection. */
  retries: number
  /**
   * CPU time of the pull clients, summed (they share the machine with what they pull
   * from: a reader can see how much of it the test harness took).
   */
  clientCpuSeconds: number
  errors: string[]
  /**
   * The kernel's TCP counters over the round (test/testbed/tcp-counters.ts): the nodes'
   * summed, and the origin's. Segments sent again, timeouts, D-SACKs.
   */
  tcp?: { nodes: Record<string, number>; origin: Record<string, number> }
  /**
   * The shaping queues over the round: the nodes' uplinks and downlinks (summed) and the
   * origin's uplink, with what each sent and dropped.
   */
  queues?: Record<string, Record<string, number>>
  /** shoal: the agents' own counters summed (bytes by source, uploads, fallbacks). */
  agents?: Record<string, number>
  /** shoal: the same counters read just before the pull (what joining the cluster cost). */
  agentsBeforePull?: Record<string, number>
  /** The seed's piece counters since it started (a warm-up pull included): sent, deferred (first-copy rule), sent again by reason. */
  seed?: Record<string, number>
}

/** One sample of a round's timeline (RoundResult.timeline). */
export interface TimelineSample {
  /** Seconds since the common start. */
  seconds: number
  /** Bytes down the nodes' links since the start (what reached the nodes, from peers and the origin). */
  nodesDownBytes: number
  /** Bytes up the nodes' links since the start (what they sent to each other and to the origin). */
  nodesUpBytes: number
  /** Bytes on the origin's uplink since the start. */
  originBytes: number
  /** Blob bytes the pull clients had received. */
  clientBytes: number
  /** Nodes whose pull had finished. */
  nodesDone: number
  /** Busy share of the whole machine (0..1, all cores) since the sample before. */
  machineBusy: number
  /** CPU seconds the benchmarked servers (Distribution; or seed, tracker and agents) used since the start. */
  serviceCpuSeconds: number
}

/**
 * Places samples taken at `at` (epoch ms) on the round's clock: seconds since the common
 * start `startAt` the pull clients were given. The sampling begins a few seconds before
 * that (runPulls gives the clients time to start), and samples from before it are left
 * out.
 */
export function alignTimeline(
  samples: ReadonlyArray<Omit<TimelineSample, 'seconds'> & { at: number }>,
  startAt: number,
): TimelineSample[] {
  return samples
    .filter((s) => s.at > startAt)
    .map(({ at, ...rest }) => ({ seconds: Math.round((at - startAt) / 100) / 10, ...rest }))
}

/** Summarises one round. */
export function summarizeRound(init: {
  system: SystemName
  nodes: number
  imageBytes: number
  bound: FluidBound
  results: PullResult[]
  originEgressBytes: number
  registryBlobBytesSent: number | null
  machineCpu: number
  wallSeconds: number
}): RoundResult {
  const okResults = init.results.filter((r) => r.ok)
  const times = okResults.map((r) => r.completionMs / 1000).sort((a, b) => a - b)
  const pick = (p: number): number | null => (times.length > 0 ? percentile(times, p) : null)
  const allDone = okResults.length === init.results.length
  const max = times.length > 0 ? times.at(-1)! : null
  return {
    system: init.system,
    nodes: init.nodes,
    imageBytes: init.imageBytes,
    bound: init.bound,
    ok: okResults.length,
    failed: init.results.length - okResults.length,
    completionSeconds: times,
    p50Seconds: pick(50),
    p90Seconds: pick(90),
    p99Seconds: pick(99),
    maxSeconds: max,
    ratioToBound: allDone && max !== null ? max / init.bound.seconds : null,
    originEgressBytes: init.originEgressBytes,
    originEgressRatio: init.originEgressBytes / init.imageBytes,
    registryBlobBytesSent: init.registryBlobBytesSent,
    machineCpu: init.machineCpu,
    wallSeconds: init.wallSeconds,
    retries: init.results.reduce((sum, r) => sum + r.retries, 0),
    clientCpuSeconds: Math.round(init.results.reduce((sum, r) => sum + r.cpuSeconds, 0) * 100) / 100,
    errors: init.results.filter((r) => !r.ok).map((r) => `${r.node}: ${r.error ?? 'failed'}`),
  }
}

/** The report table: one row per round. */
export function formatRounds(rounds: readonly RoundResult[]): string {
  const s = (v: number | null): number | null => (v === null ? null : Math.round(v * 100) / 100)
  return formatTable(
    [
      { header: 'system' },
      { header: 'N' },
      { header: 'ok' },
      { header: 'p50 s' },
      { header: 'p90 s' },
      { header: 'p99 s' },
      { header: 'last s' },
      { header: 'bound s' },
      { header: 'last/bound' },
      { header: 'origin MB' },
      { header: 'origin/image' },
      { header: 'CPU %' },
    ],
    rounds.map((r) => [
      r.system,
      r.nodes,
      `${r.ok}/${r.ok + r.failed}`,
      s(r.p50Seconds),
      s(r.p90Seconds),
      s(r.p99Seconds),
      s(r.maxSeconds),
      s(r.bound.seconds),
      s(r.ratioToBound),
      Math.round(r.originEgressBytes / 1e5) / 10,
      s(r.originEgressRatio),
      Math.round(r.machineCpu * 100),
    ]),
  )
}

const COLORS: Record<SystemName, string> = { shoal: '#1f77b4', distribution: '#d62728' }
const DASHES = ['', '6 3', '2 3', '10 3 2 3']

/** One dash pattern per N among `rounds` (one colour per system, see COLORS). */
function dashFor(rounds: readonly RoundResult[], nodes: number): string {
  const sizes = [...new Set(rounds.map((x) => x.nodes))].sort((a, b) => a - b)
  return DASHES[sizes.indexOf(nodes) % DASHES.length] ?? ''
}

/** The plots: CDF of completion times per round, and the last node's time against N. */
export function renderPlots(rounds: readonly RoundResult[]): string {
  const cdf = renderLineChart({
    title: 'Node completion times (CDF)',
    xLabel: 'seconds since the common start',
    yLabel: 'fraction of nodes done',
    step: true,
    yMin: 0,
    yMax: 1,
    width: 620,
    series: rounds.map((r) => ({
      name: `${r.system} N=${r.nodes}`,
      // One colour per system, one dash pattern per N.
      color: COLORS[r.system],
      dash: dashFor(rounds, r.nodes),
      points: [
        [0, 0] as const,
        ...r.completionSeconds.map((t, j) => [t, (j + 1) / (r.ok + r.failed)] as const),
      ],
    })),
  })
  const charts = [cdf]
  const timed = rounds.filter((r) => r.timeline !== undefined && r.timeline.length > 0)
  if (timed.length > 0) charts.push(renderTimeline(timed))
  const sizes = [...new Set(rounds.map((r) => r.nodes))].sort((a, b) => a - b)
  if (sizes.length < 2) return composeSvg(charts)
  const line = (system: SystemName) => ({
    name: `${system} last node`,
    color: COLORS[system],
    markers: true,
    points: rounds
      .filter((r) => r.system === system && r.maxSeconds !== null)
      .sort((a, b) => a.nodes - b.nodes)
      .map((r) => [r.nodes, r.maxSeconds!] as const),
  })
  const bound = {
    name: 'fluid bound',
    color: '#555',
    markers: true,
    points: sizes.map((n) => [n, rounds.find((r) => r.nodes === n)!.bound.seconds] as const),
  }
  const scaling = renderLineChart({
    title: 'Time until the last node is done',
    xLabel: 'nodes (N)',
    yLabel: 'seconds',
    series: [line('shoal'), line('distribution'), bound].filter((s) => s.points.length > 0),
  })
  return composeSvg([...charts, scaling])
}

/**
 * What the nodes' links carried over time, as a share of what the round had to deliver
 * (N x the image), beside what the clients had received: the gap between the two is
 * pieces held but not yet in reading order, and a slow start or a long tail shows as a
 * flat stretch.
 */
function renderTimeline(rounds: readonly RoundResult[]): string {
  return renderLineChart({
    title: 'Bytes delivered over time (share of N x image)',
    xLabel: 'seconds since the common start',
    yLabel: 'share delivered',
    yMin: 0,
    width: 620,
    series: rounds.flatMap((r) => {
      const whole = r.nodes * r.imageBytes
      const points = (pick: (s: TimelineSample) => number) => [
        [0, 0] as const,
        ...(r.timeline ?? []).map((s) => [s.seconds, pick(s) / whole] as const),
      ]
      return [
        {
          name: `${r.system} N=${r.nodes} links`,
          color: COLORS[r.system],
          dash: dashFor(rounds, r.nodes),
          points: points((s) => s.nodesDownBytes),
        },
        {
          name: `${r.system} N=${r.nodes} clients`,
          color: r.system === 'shoal' ? '#9ecae1' : '#fc9272',
          dash: dashFor(rounds, r.nodes),
          points: points((s) => s.clientBytes),
        },
      ]
    }),
  })
}

/** One target of the cluster issue and its verdict on these rounds. */
export interface TargetVerdict {
  target: string
  measured: string
  pass: boolean
}

/**
 * The targets on the shoal rounds: origin egress at most 1.1x the image at every
 * N; the last node within 1.5x the fluid bound at the largest N; growth of the last
 * node's time from the smallest to the largest N at most 1.3x.
 */
export function judgeTargets(rounds: readonly RoundResult[]): TargetVerdict[] {
  const shoal = rounds.filter((r) => r.system === 'shoal').sort((a, b) => a.nodes - b.nodes)
  const verdicts: TargetVerdict[] = []
  for (const r of shoal) {
    verdicts.push({
      target: `origin egress <= 1.1x image at N=${r.nodes}`,
      measured: `${r.originEgressRatio.toFixed(2)}x`,
      pass: r.originEgressRatio <= 1.1,
    })
  }
  const largest = shoal.at(-1)
  if (largest) {
    verdicts.push({
      target: `last node <= 1.5x fluid bound at N=${largest.nodes}`,
      measured: largest.ratioToBound === null ? 'nodes failed' : `${largest.ratioToBound.toFixed(2)}x`,
      pass: largest.ratioToBound !== null && largest.ratioToBound <= 1.5,
    })
  }
  const smallest = shoal[0]
  if (smallest && largest && largest.nodes > smallest.nodes) {
    const growth =
      smallest.maxSeconds && largest.maxSeconds && largest.failed === 0
        ? largest.maxSeconds / smallest.maxSeconds
        : null
    verdicts.push({
      target: `growth of the last node N=${smallest.nodes} -> ${largest.nodes} <= 1.3x`,
      measured: growth === null ? 'nodes failed' : `${growth.toFixed(2)}x`,
      pass: growth !== null && growth <= 1.3,
    })
  }
  return verdicts
}
