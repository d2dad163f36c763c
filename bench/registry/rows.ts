/**
 * The rows of the registry benchmark's report: which measurement is compared how, and
 * against which target.
 */
import type { ManifestLoadResult, ThroughputResult } from './scenarios.js'
import type { ReportRow } from './report.js'

const MIB = 1024 * 1024

/**
 * Everything the registry benchmark measured, keyed by target name. A part left out with
 * `--only` is missing, and so are its rows.
 */
export interface RegistryMeasurements {
  mono?: Record<string, ThroughputResult>
  chunked?: Record<string, ThroughputResult>
  pull?: Record<string, ThroughputResult>
  pullConcurrent?: Record<string, ThroughputResult>
  byDigest?: Record<string, ManifestLoadResult>
  byTag?: Record<string, ManifestLoadResult>
  /** RSS of each server right after start, bytes. */
  idleRss: Record<string, number>
  /** The 1 GiB push and pull of `--full`. */
  large?: { push: Record<string, ThroughputResult>; pull: Record<string, ThroughputResult> }
}

/** The settings that appear in row labels and targets. */
export interface RowSettings {
  blobBytes: number
  chunkBytes: number
  concurrency: number
  connections: number
  durationSeconds: number
  largeBlobBytes: number
  /** shoal's RSS bound while pushing and pulling. */
  rssLimitBytes: number
}

/** "512 MiB", "1 GiB". */
export function sizeLabel(bytes: number): string {
  if (bytes >= 1024 * MIB && bytes % (1024 * MIB) === 0) return `${bytes / 1024 / MIB} GiB`
  const mib = bytes / MIB
  return `${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB`
}

/**
 * Builds the report rows: throughputs and request rates must reach the baseline; shoal's
 * peak RSS must stay under the bound (judged on the 1 GiB run when there is one); CPU
 * and idle RSS are reported only.
 */
export function buildRegistryRows(
  m: RegistryMeasurements,
  names: { candidate: string; baseline: string },
  settings: RowSettings,
): ReportRow[] {
  const c = names.candidate
  const b = names.baseline
  const blob = sizeLabel(settings.blobBytes)
  const throughputRows = (metric: string, results: Record<string, ThroughputResult>): ReportRow => ({
    metric,
    unit: 'MB/s',
    candidate: results[c]!.mbPerSecond.median,
    baseline: results[b]!.mbPerSecond.median,
    target: { kind: 'ratio-at-least', min: 1 },
  })
  const peakOf = (name: string, ...results: (Record<string, ThroughputResult> | undefined)[]): number =>
    Math.max(...results.filter((result) => result !== undefined).map((result) => result[name]!.peakRssBytes))
  const rows: ReportRow[] = []
  const add = (...more: (ReportRow | false | undefined)[]): void => {
    for (const row of more) if (row) rows.push(row)
  }
  const manifestRow = (by: string, results: Record<string, ManifestLoadResult>): ReportRow => ({
    metric: `manifest GET by ${by}, ${settings.connections} conns, ${settings.durationSeconds}s runs`,
    unit: 'req/s',
    candidate: results[c]!.requestsPerSecond,
    baseline: results[b]!.requestsPerSecond,
    target: { kind: 'ratio-at-least', min: 1 },
  })
  const transfers = [m.mono, m.chunked, m.pull, m.pullConcurrent].filter((result) => result !== undefined)
  add(
    m.mono && throughputRows(`blob push ${blob}, monolithic POST+PUT`, m.mono),
    m.chunked &&
      throughputRows(`blob push ${blob}, chunked ${sizeLabel(settings.chunkBytes)} PATCHes`, m.chunked),
    m.pull && throughputRows(`blob pull ${blob}, 1 stream`, m.pull),
    m.pullConcurrent &&
      throughputRows(`blob pull ${blob}, ${settings.concurrency} concurrent streams (sum)`, m.pullConcurrent),
    m.byDigest && manifestRow('digest', m.byDigest),
    m.byTag && manifestRow('tag', m.byTag),
    {
      metric: 'RSS after start, idle',
      unit: 'MB',
      candidate: m.idleRss[c]! / 1e6,
      baseline: m.idleRss[b]! / 1e6,
      target: { kind: 'none' },
    },
    transfers.length > 0 && {
      metric: `peak RSS during ${blob} ${m.mono || m.chunked ? (m.pull || m.pullConcurrent ? 'pushes and pulls' : 'pushes') : 'pulls'}`,
      unit: 'MB',
      candidate: peakOf(c, ...transfers) / 1e6,
      baseline: peakOf(b, ...transfers) / 1e6,
      target: m.large
        ? { kind: 'none' }
        : { kind: 'below', max: settings.rssLimitBytes / 1e6, label: `< ${settings.rssLimitBytes / 1e6} MB` },
    },
    m.byDigest &&
      m.byTag && {
        metric: 'peak RSS during manifest GET load',
        unit: 'MB',
        candidate: Math.max(m.byDigest[c]!.peakRssBytes, m.byTag[c]!.peakRssBytes) / 1e6,
        baseline: Math.max(m.byDigest[b]!.peakRssBytes, m.byTag[b]!.peakRssBytes) / 1e6,
        target: { kind: 'none' },
      },
  )
  if (m.large) {
    const big = sizeLabel(settings.largeBlobBytes)
    add(
      throughputRows(`blob push ${big}, monolithic (1 run)`, m.large.push),
      throughputRows(`blob pull ${big}, 1 stream (1 run)`, m.large.pull),
      {
        metric: `peak RSS during ${big} push and pull`,
        unit: 'MB',
        candidate: peakOf(c, m.large.push, m.large.pull) / 1e6,
        baseline: peakOf(b, m.large.push, m.large.pull) / 1e6,
        target: {
          kind: 'below',
          max: settings.rssLimitBytes / 1e6,
          label: `< ${settings.rssLimitBytes / 1e6} MB`,
        },
      },
    )
  }
  if (m.mono) {
    add(
      {
        metric: 'server CPU per GiB pushed (monolithic, incl. after)',
        unit: 'CPU s',
        candidate: m.mono[c]!.cpuSecondsPerGiB,
        baseline: m.mono[b]!.cpuSecondsPerGiB,
        target: { kind: 'none' },
      },
      {
        metric: 'server busy after the push answered (monolithic)',
        unit: 's',
        candidate: m.mono[c]!.backgroundSeconds,
        baseline: m.mono[b]!.backgroundSeconds,
        target: { kind: 'none' },
      },
    )
  }
  if (m.pull) {
    add({
      metric: 'server CPU per GiB pulled (1 stream)',
      unit: 'CPU s',
      candidate: m.pull[c]!.cpuSecondsPerGiB,
      baseline: m.pull[b]!.cpuSecondsPerGiB,
      target: { kind: 'none' },
    })
    add(...cpuAndFaultRows(`pulled (1 stream)`, m.pull, c, b))
  }
  if (m.pullConcurrent)
    add(...cpuAndFaultRows(`pulled (${settings.concurrency} streams)`, m.pullConcurrent, c, b))
  if (m.mono) add(...cpuAndFaultRows(`pushed (monolithic, incl. after)`, m.mono, c, b))
  if (m.byDigest) {
    add({
      metric: 'server CPU per manifest GET by digest',
      unit: 'CPU µs',
      candidate: m.byDigest[c]!.cpuMicrosecondsPerRequest,
      baseline: m.byDigest[b]!.cpuMicrosecondsPerRequest,
      target: { kind: 'none' },
    })
  }
  return rows
}

/**
 * User CPU, system CPU and minor page faults of the server per GiB for one operation:
 * a server in a slow state shows several times the user CPU and faults for the same bytes.
 */
function cpuAndFaultRows(
  what: string,
  results: Record<string, ThroughputResult>,
  candidate: string,
  baseline: string,
): ReportRow[] {
  const row = (metric: string, unit: string, value: (result: ThroughputResult) => number): ReportRow => ({
    metric,
    unit,
    candidate: value(results[candidate]!),
    baseline: value(results[baseline]!),
    target: { kind: 'none' },
  })
  return [
    row(`server user CPU per GiB ${what}`, 'CPU s', (result) => result.userSecondsPerGiB),
    row(`server system CPU per GiB ${what}`, 'CPU s', (result) => result.systemSecondsPerGiB),
    row(`server minor page faults per GiB ${what}`, 'faults', (result) => result.minorFaultsPerGiB),
  ]
}
