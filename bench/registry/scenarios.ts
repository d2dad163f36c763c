/**
 * The measurements of the registry benchmark. Each runs the same operation against
 * every target, alternating which target goes first from run to run so that slow
 * drift on a shared machine does not favour one of them, and samples the server's
 * RSS and CPU time around every operation. With `Fairness` on, every measured push
 * and pull starts from the same machine state (page cache flushed, machine idle) and
 * pushed blobs do not pile up on disk.
 */
import { randomBytes } from 'node:crypto'
import { type HttpLoadResult, type LoadTool, runHttpLoad } from '../lib/http-load.js'
import { flushAndWaitForQuiet, type QuietResult } from '../lib/machine-quiet.js'
import { createProcessSampler, type ProcessSample, waitForIdle } from '../lib/process-sampler.js'
import { progress } from '../lib/progress.js'
import { median, megabytesPerSecond, type Summary, summarize } from '../lib/stats.js'
import type { BlobSource } from './blob-source.js'
import {
  getManifest,
  MANIFEST_ACCEPT,
  pullBlob,
  pullBlobSocket,
  pushBlobChunked,
  pushBlobMonolithic,
  pushSmallBlob,
  putManifest,
} from './oci-client.js'
import { diffProcessTimes, type ProcessTimes, readProcessTimes } from './process-times.js'
import { type RegistryTarget, removeBlobContent } from './servers.js'

/** Repository the large blobs are pushed to. */
export const BLOB_REPOSITORY = 'bench/blob'
/** Repository holding the small manifest of the manifest GET test. */
export const MANIFEST_REPOSITORY = 'bench/manifest'
/** Tag of that manifest. */
export const MANIFEST_TAG = 'bench'

const GIB = 1024 ** 3
/** Length of the idle check after each operation (see waitForIdle). */
const IDLE_WINDOW_SECONDS = 0.3

/**
 * What the benchmark does so that the two servers are measured in the same machine
 * state, whatever order the operations come in.
 */
/** How the timed pulls read a blob (see benchPull). */
export type PullClient = 'socket' | 'http'

export interface Fairness {
  /**
   * Before every measured push and pull: `sync` (write back the dirty page cache the
   * previous operation left, which would otherwise be written during this one), then
   * wait until the whole machine is idle and the dirty page cache nearly empty.
   */
  settle: boolean
  /**
   * After every measured push: delete the pushed blob from the server's disk (unless
   * a later pull needs it), so disk usage and page cache stay flat over the run.
   */
  removePushed: boolean
}

/** Both measures on: the default. */
export const FAIR: Fairness = { settle: true, removePushed: true }

/** A throughput measured over several runs, with the server's resources during them. */
export interface ThroughputResult {
  /** MB/s (10^6 bytes per second) per run; for concurrent pulls, all streams together. */
  mbPerSecond: Summary
  /** Highest server RSS during any of the runs, bytes. */
  peakRssBytes: number
  /** Server CPU seconds per GiB moved (background work after the answer included), median over runs. */
  cpuSecondsPerGiB: number
  /** Server CPU seconds per second of transfer, in cores, median over runs. */
  serverCores: number
  /** Seconds the server kept working after the client was done, median over runs. */
  backgroundSeconds: number
  /** Server user-mode CPU seconds per GiB moved, median over runs. */
  userSecondsPerGiB: number
  /** Server kernel CPU seconds per GiB moved, median over runs. */
  systemSecondsPerGiB: number
  /** Server minor page faults per GiB moved, median over runs. */
  minorFaultsPerGiB: number
  /**
   * Per run, in order: MB/s, the server's counters over the run (background work
   * included), and what the settling before it did (when `Fairness.settle`).
   */
  runs: { mbPerSecond: number; times: ProcessTimes; settle?: QuietResult }[]
}

/** Manifest GET load results for one target. */
export interface ManifestLoadResult extends HttpLoadResult {
  /** Requests per second of each run; `requestsPerSecond` is their median. */
  requestsPerSecondRuns: number[]
  peakRssBytes: number
  /** Server CPU microseconds per request. */
  cpuMicrosecondsPerRequest: number
}

/**
 * Runs `operation` against `target` while sampling the server process. The time is
 * what the client waited for; sampling goes on until the server is idle again, so CPU
 * and peak RSS include work it does in the background after answering (shoal's seed
 * computes a blob's piece map after the push), and that work cannot spill over into
 * the next target's measurement.
 */
async function sampled<T>(
  target: RegistryTarget,
  operation: () => Promise<T>,
  options: { settleBefore?: boolean } = {},
): Promise<{
  value: T
  seconds: number
  sample: ProcessSample
  settleSeconds: number
  times: ProcessTimes
  settleBefore?: QuietResult
}> {
  let settleBefore: QuietResult | undefined
  if (options.settleBefore) {
    settleBefore = await flushAndWaitForQuiet()
    if (!settleBefore.quiet) {
      progress(
        `machine not quiet before ${target.name}'s run after ${settleBefore.waitSeconds.toFixed(1)} s: ` +
          `${settleBefore.busyCores.toFixed(2)} cores busy, ${mb(settleBefore.dirtyBytes)} MB dirty`,
      )
    }
  }
  const sampler = createProcessSampler({ pid: target.pid })
  sampler.start()
  const timesBefore = readProcessTimes(target.pid)
  const startedAt = performance.now()
  try {
    const value = await operation()
    const seconds = (performance.now() - startedAt) / 1000
    const settleStartedAt = performance.now()
    if (!(await waitForIdle(target.pid, { windowMs: IDLE_WINDOW_SECONDS * 1000 })))
      progress(`${target.name} did not become idle within 30 s`)
    const settleSeconds = (performance.now() - settleStartedAt) / 1000
    const times = diffProcessTimes(timesBefore, readProcessTimes(target.pid))
    return {
      value,
      seconds,
      sample: sampler.stop(),
      settleSeconds,
      times,
      ...(settleBefore ? { settleBefore } : {}),
    }
  } finally {
    sampler.stop()
  }
}

function orderFor<T>(targets: T[], run: number): T[] {
  return run % 2 === 0 ? targets : [...targets].reverse()
}

/** Accumulates per-target samples of one scenario. */
function createCollector(targets: RegistryTarget[]) {
  interface Run {
    mbps: number
    seconds: number
    settleSeconds: number
    sample: ProcessSample
    times: ProcessTimes
    bytes: number
    settleBefore?: QuietResult
  }
  const runs = new Map<string, Run[]>()
  for (const target of targets) runs.set(target.name, [])
  return {
    add(
      target: RegistryTarget,
      bytes: number,
      measured: {
        seconds: number
        settleSeconds: number
        sample: ProcessSample
        times: ProcessTimes
        settleBefore?: QuietResult
      },
    ) {
      runs.get(target.name)!.push({ mbps: megabytesPerSecond(bytes, measured.seconds), bytes, ...measured })
    },
    results(): Record<string, ThroughputResult> {
      const out: Record<string, ThroughputResult> = {}
      for (const [name, list] of runs) {
        const perGiB = (value: (run: Run) => number): number =>
          summarize(list.map((run) => value(run) / (run.bytes / GIB))).median
        out[name] = {
          mbPerSecond: summarize(list.map((run) => run.mbps)),
          peakRssBytes: Math.max(...list.map((run) => run.sample.peakRssBytes)),
          cpuSecondsPerGiB: summarize(list.map((run) => run.sample.cpuSeconds / (run.bytes / GIB))).median,
          serverCores: summarize(list.map((run) => run.sample.cpuSeconds / run.seconds)).median,
          // The idle check itself takes one window; only time beyond it is background work.
          backgroundSeconds: summarize(
            list.map((run) => Math.max(0, run.settleSeconds - IDLE_WINDOW_SECONDS)),
          ).median,
          userSecondsPerGiB: perGiB((run) => run.times.userSeconds),
          systemSecondsPerGiB: perGiB((run) => run.times.systemSeconds),
          minorFaultsPerGiB: perGiB((run) => run.times.minorFaults),
          runs: list.map((run) => ({
            mbPerSecond: run.mbps,
            times: run.times,
            ...(run.settleBefore ? { settle: run.settleBefore } : {}),
          })),
        }
      }
      return out
    },
  }
}

/**
 * Pushes `runs` fresh variants of the blob to every target as monolithic uploads
 * (POST + one PUT). Returns per-target throughput and the digests pushed; with
 * `fairness.removePushed` only the first one (which the pulls use) stays on disk.
 */
export async function benchPushMonolithic(
  targets: RegistryTarget[],
  source: BlobSource,
  runs: number,
  labelPrefix: string,
  fairness: Fairness,
): Promise<{ results: Record<string, ThroughputResult>; digests: string[] }> {
  const collector = createCollector(targets)
  const digests: string[] = []
  for (let run = 0; run < runs; run++) {
    const blob = source.variant(`${labelPrefix}-${run}`)
    digests.push(blob.digest)
    for (const target of orderFor(targets, run)) {
      const measured = await sampled(target, () => pushBlobMonolithic(target.url, BLOB_REPOSITORY, blob), {
        settleBefore: fairness.settle,
      })
      collector.add(target, blob.size, measured)
      if (fairness.removePushed && run > 0) await removePushed(target, blob.digest)
      const { seconds, sample, times } = measured
      progress(
        `push monolithic ${target.name} run ${run + 1}/${runs}: ` +
          `${megabytesPerSecond(blob.size, seconds).toFixed(1)} MB/s, peak RSS ${mb(sample.peakRssBytes)} MB, ` +
          timesText(times),
      )
    }
  }
  return { results: collector.results(), digests }
}

/** Pushes `runs` fresh variants of the blob to every target as chunked PATCH uploads. */
export async function benchPushChunked(
  targets: RegistryTarget[],
  source: BlobSource,
  runs: number,
  chunkBytes: number,
  fairness: Fairness,
): Promise<Record<string, ThroughputResult>> {
  const collector = createCollector(targets)
  for (let run = 0; run < runs; run++) {
    const blob = source.variant(`chunked-${run}`)
    for (const target of orderFor(targets, run)) {
      const measured = await sampled(
        target,
        () => pushBlobChunked(target.url, BLOB_REPOSITORY, blob, chunkBytes),
        { settleBefore: fairness.settle },
      )
      collector.add(target, blob.size, measured)
      if (fairness.removePushed) await removePushed(target, blob.digest)
      const { seconds, sample, times } = measured
      progress(
        `push chunked ${target.name} run ${run + 1}/${runs}: ` +
          `${megabytesPerSecond(blob.size, seconds).toFixed(1)} MB/s, peak RSS ${mb(sample.peakRssBytes)} MB, ` +
          timesText(times),
      )
    }
  }
  return collector.results()
}

/**
 * GETs `digest` from every target: one verified pull first (untimed; it also warms
 * the page cache for both alike), then `runs` timed pulls of `concurrency` parallel
 * streams each (1 = a single stream), through `options.client`: `socket` (the default)
 * counts the bytes on a bare socket (pullBlobSocket), `http` reads them through
 * node:http as the benchmark did before 2026-11-28 17:00 UTC.
 */
export async function benchPull(
  targets: RegistryTarget[],
  digest: string,
  size: number,
  runs: number,
  concurrency: number,
  options: { verifyFirst: boolean; fairness: Fairness; client?: PullClient },
): Promise<Record<string, ThroughputResult>> {
  const pull = options.client === 'http' ? pullBlob : pullBlobSocket
  if (options.verifyFirst) {
    for (const target of targets) {
      await pullBlob(target.url, BLOB_REPOSITORY, digest, { expectedSize: size, verify: true })
    }
  }
  const collector = createCollector(targets)
  for (let run = 0; run < runs; run++) {
    for (const target of orderFor(targets, run)) {
      const measured = await sampled(
        target,
        () =>
          Promise.all(
            Array.from({ length: concurrency }, () =>
              pull(target.url, BLOB_REPOSITORY, digest, { expectedSize: size }),
            ),
          ),
        { settleBefore: options.fairness.settle },
      )
      collector.add(target, size * concurrency, measured)
      const { seconds, sample, times } = measured
      progress(
        `pull x${concurrency} ${target.name} run ${run + 1}/${runs}: ` +
          `${megabytesPerSecond(size * concurrency, seconds).toFixed(1)} MB/s, peak RSS ${mb(sample.peakRssBytes)} MB, ` +
          timesText(times),
      )
    }
  }
  return collector.results()
}

/**
 * Pushes (monolithic and chunked) and pulls a small blob on every target, untimed, so
 * that the measured runs do not include one-off start-up costs (JIT compilation, lazy
 * module loading, first directory creation).
 */
export async function warmUp(targets: RegistryTarget[], source: BlobSource): Promise<void> {
  for (const target of targets) {
    const mono = source.variant(`warm-up-monolithic-${target.name}`)
    await pushBlobMonolithic(target.url, BLOB_REPOSITORY, mono)
    await pushBlobChunked(
      target.url,
      BLOB_REPOSITORY,
      source.variant(`warm-up-chunked-${target.name}`),
      1024 * 1024,
    )
    await pullBlob(target.url, BLOB_REPOSITORY, mono.digest, { expectedSize: mono.size, verify: true })
  }
}

/**
 * Pushes a small OCI image (config + one 2 KiB layer + manifest, tagged) to every target
 * and checks it reads back. Returns the manifest digest (the same on every target).
 * @throws when a target answers wrongly or the digests differ
 */
export async function prepareManifest(targets: RegistryTarget[]): Promise<string> {
  const layer = randomBytes(2048)
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [`sha256:${'0'.repeat(64)}`] },
      config: {},
    }),
  )
  let manifestDigest: string | undefined
  for (const target of targets) {
    const configDigest = await pushSmallBlob(target.url, MANIFEST_REPOSITORY, config)
    const layerDigest = await pushSmallBlob(target.url, MANIFEST_REPOSITORY, layer)
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: configDigest,
          size: config.length,
        },
        layers: [
          {
            mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
            digest: layerDigest,
            size: layer.length,
          },
        ],
        annotations: { 'org.opencontainers.image.title': 'shoal registry benchmark' },
      }),
    )
    const digest = await putManifest(
      target.url,
      MANIFEST_REPOSITORY,
      MANIFEST_TAG,
      'application/vnd.oci.image.manifest.v1+json',
      manifest,
    )
    if (manifestDigest !== undefined && digest !== manifestDigest) {
      throw new Error(`${target.name} reports manifest digest ${digest}, expected ${manifestDigest}`)
    }
    manifestDigest = digest
    const byDigest = await getManifest(target.url, MANIFEST_REPOSITORY, digest)
    const byTag = await getManifest(target.url, MANIFEST_REPOSITORY, MANIFEST_TAG)
    if (!byDigest.equals(manifest) || !byTag.equals(manifest)) {
      throw new Error(`${target.name} returned a different manifest body than was pushed`)
    }
  }
  return manifestDigest!
}

/**
 * Measures manifest GET requests per second by `reference` (digest or tag) with a fixed
 * number of connections and duration: `rounds` runs per target, alternating which goes
 * first, median reported; each target gets a short unmeasured warm-up first.
 * @throws when the load tool fails or any response is not 2xx
 */
export async function benchManifestGet(
  targets: RegistryTarget[],
  reference: string,
  init: {
    tool: LoadTool
    connections: number
    durationSeconds: number
    warmupSeconds: number
    rounds: number
    order: number
  },
): Promise<Record<string, ManifestLoadResult>> {
  const kind = reference.startsWith('sha256:') ? 'digest' : 'tag'
  const perTarget = new Map<string, { load: HttpLoadResult; sample: ProcessSample }[]>()
  const load = (target: RegistryTarget, durationSeconds: number) =>
    runHttpLoad({
      url: new URL(`/v2/${MANIFEST_REPOSITORY}/manifests/${reference}`, target.url).href,
      headers: { Accept: MANIFEST_ACCEPT },
      tool: init.tool,
      connections: init.connections,
      durationSeconds,
    })
  for (const target of targets) {
    perTarget.set(target.name, [])
    if (init.warmupSeconds > 0) await load(target, init.warmupSeconds)
  }
  for (let round = 0; round < init.rounds; round++) {
    for (const target of orderFor(targets, round + init.order)) {
      const { value, sample } = await sampled(target, () => load(target, init.durationSeconds))
      if (value.non2xx > 0 || value.totalRequests === 0) {
        throw new Error(
          `${target.name}: ${value.non2xx} of ${value.totalRequests} manifest GETs were not 2xx`,
        )
      }
      perTarget.get(target.name)!.push({ load: value, sample })
      progress(
        `manifest GET by ${kind} ${target.name} run ${round + 1}/${init.rounds}: ` +
          `${value.requestsPerSecond.toFixed(0)} req/s, p99 ${value.latencyP99Ms.toFixed(2)} ms` +
          (value.errors > 0 ? `, ${value.errors} socket errors` : ''),
      )
    }
  }
  const out: Record<string, ManifestLoadResult> = {}
  for (const [name, runs] of perTarget) {
    const totalRequests = runs.reduce((sum, run) => sum + run.load.totalRequests, 0)
    const cpuSeconds = runs.reduce((sum, run) => sum + run.sample.cpuSeconds, 0)
    out[name] = {
      tool: init.tool,
      requestsPerSecond: median(runs.map((run) => run.load.requestsPerSecond)),
      requestsPerSecondRuns: runs.map((run) => run.load.requestsPerSecond),
      totalRequests,
      non2xx: 0,
      errors: runs.reduce((sum, run) => sum + run.load.errors, 0),
      latencyP50Ms: median(runs.map((run) => run.load.latencyP50Ms)),
      latencyP99Ms: median(runs.map((run) => run.load.latencyP99Ms)),
      peakRssBytes: Math.max(...runs.map((run) => run.sample.peakRssBytes)),
      cpuMicrosecondsPerRequest: (cpuSeconds / totalRequests) * 1e6,
    }
  }
  return out
}

/** Deletes a measured push's blob from the target's disk; says so when it was not found. */
async function removePushed(target: RegistryTarget, digest: string): Promise<void> {
  if (!(await removeBlobContent(target, digest))) {
    progress(`${target.name}: pushed blob ${digest} not found on disk, so not removed`)
  }
}

/** "user 1.20 s, sys 0.40 s, 1234 minor faults" of one operation. */
function timesText(times: ProcessTimes): string {
  return (
    `user ${times.userSeconds.toFixed(2)} s, sys ${times.systemSeconds.toFixed(2)} s, ` +
    `${times.minorFaults} minor faults`
  )
}

function mb(bytes: number): string {
  return (bytes / 1e6).toFixed(0)
}
