/**
 * `npm run bench:registry`: pushes and pulls the same content to shoal's registry and
 * to CNCF Distribution 2.8 in one run, both on loopback with filesystem storage in
 * temp folders, and prints shoal / Distribution ratios for blob push, blob pull and
 * manifest GET rate, plus each server's peak RSS. A measurement, not a test: it exits
 * 0 whatever the verdicts, and 1 only when something broke.
 */
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { summarizeCpuProfile } from '../lib/cpu-profile.js'
import { defaultLoadTool, type LoadTool } from '../lib/http-load.js'
import { defaultResultPath, writeJsonResult } from '../lib/json-output.js'
import { positiveOptionReader } from '../lib/options.js'
import {
  readProcessCpuSeconds,
  readProcessMemory,
  readWaitedChildrenCpuSeconds,
} from '../lib/process-sampler.js'
import { progress } from '../lib/progress.js'
import { readMachineCpuTimes, systemInfo } from '../lib/system-info.js'
import { formatNumber, formatTable } from '../lib/table.js'
import { createBlobSource } from './blob-source.js'
import { closeClient, pushBlobMonolithic } from './oci-client.js'
import { judgeRows, renderReport } from './report.js'
import { buildRegistryRows, sizeLabel } from './rows.js'
import {
  BLOB_REPOSITORY,
  benchManifestGet,
  benchPull,
  benchPushChunked,
  benchPushMonolithic,
  FAIR,
  type Fairness,
  MANIFEST_TAG,
  type PullClient,
  prepareManifest,
  type ThroughputResult,
  warmUp,
} from './scenarios.js'
import { type RegistryTarget, startDistribution, startShoal } from './servers.js'

const MIB = 1024 * 1024
/** The registry issue's memory bound for shoal while pushing and pulling a 1 GiB layer. */
const RSS_LIMIT_BYTES = 200 * 1000 * 1000
const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

const USAGE = `usage: npm run bench:registry -- [options]

  --blob-mb N              size of the generated blob (default 512)
  --chunk-mb N             PATCH size of chunked uploads (default 16)
  --runs N                 runs per measurement, median reported (default 3, --full 5)
  --pull-runs N            runs of each 512 MiB pull measurement (default 7 or --runs if more):
                           a pull takes well under a second, so it needs more samples
  --concurrency N          parallel streams of the concurrent pull (default 4)
  --pull-client C          socket (default: counts the bytes on a bare TCP socket) or http
                           (node:http with for await, the client before 2026-11-28 17:00 UTC)
  --duration-s N           seconds per manifest GET load run (default 5, --full 10)
  --connections N          connections of the manifest GET load (default 50)
  --load-tool T            wrk or autocannon (default wrk when installed)
  --only PARTS             comma-separated parts to run: push, pull, pull-1 (single stream only),
                           manifest (default all); a pull without push pushes its blob untimed
  --full                   also push and pull a 1 GiB blob and judge shoal's peak RSS on it
  --json PATH              JSON result path (default bench/results/registry-<time>.json)
  --candidate KIND         shoal (default) or distribution, to measure Distribution against itself
  --shoal-entry E          cli (default: bin/shoal.js registry) or direct (storage + HTTP, no CLI)
  --shoal-node-option O    pass a node option to shoal's process (repeatable)
  --shoal-arg A            pass an argument to \`shoal registry\` (repeatable), e.g. --shoal-arg=--seed-enabled=false
  --cpu-prof               run shoal under node --cpu-prof and print where its time went
  --keep                   keep the temp folder (data, logs, profiles)
  --unfair                 skip the fairness measures (sync and a quiet machine before every
                           measured push and pull, pushed blobs deleted after measuring), as
                           the benchmark ran before 2026-11-27 08:00 UTC
  -h, --help               show this help
`

/** The parts of the benchmark that `--only` selects. */
const PARTS = ['push', 'pull', 'pull-1', 'manifest'] as const
type Part = (typeof PARTS)[number]

interface BenchConfig {
  blobBytes: number
  chunkBytes: number
  runs: number
  /** Runs of each pull measurement (a pull is short, so it gets more). */
  pullRuns: number
  concurrency: number
  /** How the timed pulls read (`--pull-client`). */
  pullClient: PullClient
  durationSeconds: number
  connections: number
  loadTool: LoadTool
  full: boolean
  /** The parts to run (`--only`). */
  parts: Set<Part>
  largeBlobBytes: number
  jsonPath: string
  candidate: 'shoal' | 'distribution'
  shoalEntry: 'cli' | 'direct'
  shoalNodeOptions: string[]
  shoalArgs: string[]
  cpuProf: boolean
  keep: boolean
  /** The fairness measures (all off with `--unfair`). */
  fairness: Fairness
}

function parseConfig(argv: string[]): BenchConfig | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      'blob-mb': { type: 'string' },
      'chunk-mb': { type: 'string' },
      runs: { type: 'string' },
      'pull-runs': { type: 'string' },
      concurrency: { type: 'string' },
      'pull-client': { type: 'string', default: 'socket' },
      'duration-s': { type: 'string' },
      connections: { type: 'string' },
      'load-tool': { type: 'string' },
      full: { type: 'boolean', default: false },
      only: { type: 'string' },
      json: { type: 'string' },
      candidate: { type: 'string', default: 'shoal' },
      'shoal-entry': { type: 'string', default: 'cli' },
      'shoal-node-option': { type: 'string', multiple: true, default: [] },
      'shoal-arg': { type: 'string', multiple: true, default: [] },
      'cpu-prof': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      unfair: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(USAGE)
    return undefined
  }
  const problems: string[] = []
  const positive = positiveOptionReader(problems)
  const full = values.full
  const loadTool = (values['load-tool'] ?? defaultLoadTool()) as LoadTool
  if (loadTool !== 'wrk' && loadTool !== 'autocannon') problems.push(`--load-tool must be wrk or autocannon`)
  const candidate = values.candidate as BenchConfig['candidate']
  if (candidate !== 'shoal' && candidate !== 'distribution') {
    problems.push(`--candidate must be shoal or distribution`)
  }
  const shoalEntry = values['shoal-entry'] as BenchConfig['shoalEntry']
  if (shoalEntry !== 'cli' && shoalEntry !== 'direct') problems.push(`--shoal-entry must be cli or direct`)
  const pullClient = values['pull-client'] as PullClient
  if (pullClient !== 'socket' && pullClient !== 'http') problems.push(`--pull-client must be socket or http`)
  const parts = new Set<Part>()
  for (const name of (values.only ?? 'push,pull,manifest').split(',')) {
    const part = name.trim() as Part
    if (PARTS.includes(part)) parts.add(part)
    else problems.push(`--only takes ${PARTS.join(', ')}; got ${name}`)
  }
  const runs = Math.round(positive('runs', values.runs, full ? 5 : 3))
  const config: BenchConfig = {
    blobBytes: Math.round(positive('blob-mb', values['blob-mb'], 512) * MIB),
    chunkBytes: Math.round(positive('chunk-mb', values['chunk-mb'], 16) * MIB),
    runs,
    pullRuns: Math.round(positive('pull-runs', values['pull-runs'], Math.max(runs, 7))),
    concurrency: Math.round(positive('concurrency', values.concurrency, 4)),
    pullClient,
    durationSeconds: Math.round(positive('duration-s', values['duration-s'], full ? 10 : 5)),
    connections: Math.round(positive('connections', values.connections, 50)),
    loadTool,
    full,
    parts,
    largeBlobBytes: 1024 * MIB,
    jsonPath: values.json ?? defaultResultPath('registry'),
    candidate,
    shoalEntry,
    shoalNodeOptions: values['shoal-node-option'],
    shoalArgs: values['shoal-arg'],
    cpuProf: values['cpu-prof'],
    keep: values.keep,
    fairness: values.unfair ? { settle: false, removePushed: false } : FAIR,
  }
  if (problems.length > 0) throw new Error(problems.join('\n') + '\n\n' + USAGE)
  return config
}

/** Which server goes first in which run. */
function orderText(candidate: string, baseline: string): string {
  return `${candidate} first in odd runs, ${baseline} first in even runs`
}

/** The fairness measures of this run, in one line of the header. */
function fairnessText(fairness: Fairness, candidate: string, baseline: string): string {
  const measures = [orderText(candidate, baseline)]
  if (fairness.settle) {
    measures.push(
      'sync + machine idle (< 0.25 cores busy, < 16 MB dirty for 0.3 s) before every measured push and pull',
    )
  }
  if (fairness.removePushed) measures.push('pushed blobs deleted from disk after measuring')
  if (!fairness.settle && !fairness.removePushed)
    measures.push('--unfair: no sync, no idle wait, no deletion')
  return measures.join('; ')
}

async function main(): Promise<void> {
  const config = parseConfig(process.argv.slice(2))
  if (!config) return
  const workDir = await mkdtemp(join(tmpdir(), 'shoal-bench-registry-'))
  const targets: RegistryTarget[] = []
  let failed = false
  try {
    const startedAt = new Date()
    const systemAtStart = systemInfo()
    progress(
      `work dir ${workDir}; ${systemAtStart.cpuCount} CPUs, load ${systemAtStart.loadAverage.join(' ')}`,
    )
    progress(`generating a ${sizeLabel(config.blobBytes)} blob`)
    const source = await createBlobSource({ dir: workDir, sizeBytes: config.blobBytes })

    const profileDir = join(workDir, 'profiles')
    await mkdir(profileDir, { recursive: true })
    const candidateDir = join(workDir, config.candidate === 'shoal' ? 'shoal' : 'distribution-b')
    const baselineDir = join(workDir, 'distribution')
    await mkdir(candidateDir)
    await mkdir(baselineDir)
    const candidate =
      config.candidate === 'shoal'
        ? await startShoal({
            name: 'shoal',
            workDir: candidateDir,
            repoRoot: REPO_ROOT,
            entry: config.shoalEntry,
            extraArgs: config.shoalArgs,
            nodeArgs: [
              ...config.shoalNodeOptions,
              ...(config.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
            ],
          })
        : await startDistribution({ name: 'distribution-b', workDir: candidateDir })
    targets.push(candidate)
    const baseline = await startDistribution({ name: 'distribution', workDir: baselineDir })
    targets.push(baseline)
    const idleRss: Record<string, number> = {}
    for (const target of targets) {
      idleRss[target.name] = readProcessMemory(target.pid).rssBytes
      progress(
        `${target.name} (pid ${target.pid}) at ${target.url.href}, RSS ${(idleRss[target.name]! / 1e6).toFixed(0)} MB`,
      )
    }

    const machineStart = readMachineCpuTimes()
    const ownCpuStart = (): number =>
      readProcessCpuSeconds(process.pid) +
      readWaitedChildrenCpuSeconds(process.pid) +
      targets.reduce((sum, target) => sum + readProcessCpuSeconds(target.pid), 0)
    const oursStart = ownCpuStart()

    progress('warming up both servers and pushing the small image for the manifest test')
    await warmUp(targets, await createBlobSource({ dir: workDir, sizeBytes: 8 * MIB }))
    const manifestDigest = await prepareManifest(targets)

    const parts = config.parts
    const pushes = parts.has('push')
    const mono = pushes
      ? await benchPushMonolithic(targets, source, config.runs, 'monolithic', config.fairness)
      : undefined
    const chunked = pushes
      ? await benchPushChunked(targets, source, config.runs, config.chunkBytes, config.fairness)
      : undefined
    let pull: Record<string, ThroughputResult> | undefined
    let pullConcurrent: Record<string, ThroughputResult> | undefined
    if (parts.has('pull') || parts.has('pull-1')) {
      let pulledDigest = mono?.digests[0]
      if (!pulledDigest) {
        const blob = source.variant('pulled')
        for (const target of targets) await pushBlobMonolithic(target.url, BLOB_REPOSITORY, blob)
        pulledDigest = blob.digest
      }
      pull = await benchPull(targets, pulledDigest, source.size, config.pullRuns, 1, {
        verifyFirst: true,
        fairness: config.fairness,
        client: config.pullClient,
      })
      if (parts.has('pull')) {
        pullConcurrent = await benchPull(
          targets,
          pulledDigest,
          source.size,
          config.pullRuns,
          config.concurrency,
          { verifyFirst: false, fairness: config.fairness, client: config.pullClient },
        )
      }
    }
    let large: { push: Record<string, ThroughputResult>; pull: Record<string, ThroughputResult> } | undefined
    if (config.full) {
      progress(`generating a ${sizeLabel(config.largeBlobBytes)} blob`)
      const largeSource = await createBlobSource({ dir: workDir, sizeBytes: config.largeBlobBytes })
      const largePush = await benchPushMonolithic(targets, largeSource, 1, 'large', config.fairness)
      const largePull = await benchPull(targets, largePush.digests[0]!, largeSource.size, 1, 1, {
        verifyFirst: true,
        fairness: config.fairness,
        client: config.pullClient,
      })
      large = { push: largePush.results, pull: largePull }
    }

    const loadInit = {
      tool: config.loadTool,
      connections: config.connections,
      durationSeconds: config.durationSeconds,
      warmupSeconds: 2,
      rounds: config.runs,
    }
    const byDigest = parts.has('manifest')
      ? await benchManifestGet(targets, manifestDigest, { ...loadInit, order: 0 })
      : undefined
    const byTag = parts.has('manifest')
      ? await benchManifestGet(targets, MANIFEST_TAG, { ...loadInit, order: 1 })
      : undefined

    const machineEnd = readMachineCpuTimes()
    const oursEnd = ownCpuStart()
    const wallSeconds =
      machineEnd.totalSeconds / systemAtStart.cpuCount - machineStart.totalSeconds / systemAtStart.cpuCount
    const otherCores = Math.max(
      0,
      (machineEnd.busySeconds - machineStart.busySeconds - (oursEnd - oursStart)) /
        Math.max(wallSeconds, 1e-9),
    )

    const c = candidate.name
    const b = baseline.name
    const rows = buildRegistryRows(
      { mono: mono?.results, chunked, pull, pullConcurrent, byDigest, byTag, idleRss, large },
      { candidate: c, baseline: b },
      {
        blobBytes: config.blobBytes,
        chunkBytes: config.chunkBytes,
        concurrency: config.concurrency,
        connections: config.connections,
        durationSeconds: config.durationSeconds,
        largeBlobBytes: config.largeBlobBytes,
        rssLimitBytes: RSS_LIMIT_BYTES,
      },
    )
    const judged = judgeRows(rows)

    // Stop the servers before reading profiles: V8 writes them at exit.
    for (const target of targets.splice(0).reverse()) await target.stop()
    let profile: Awaited<ReturnType<typeof summarizeCpuProfile>> | undefined
    if (config.cpuProf) {
      const files = (await readdir(profileDir)).filter((name) => name.endsWith('.cpuprofile'))
      if (files.length > 0)
        profile = await summarizeCpuProfile(join(profileDir, files[0]!), { root: REPO_ROOT })
      else progress(`no CPU profile was written to ${profileDir} (did shoal exit cleanly on SIGTERM?)`)
    }

    const systemAtEnd = systemInfo()
    const lines = [
      '',
      `shoal registry benchmark: ${c} vs ${b} (${new Date().toISOString()})`,
      `machine: ${systemAtStart.cpuCount} x ${systemAtStart.cpuModel}, node ${systemAtStart.nodeVersion}; ` +
        `load average ${systemAtStart.loadAverage[0]} -> ${systemAtEnd.loadAverage[0]}; ` +
        `other processes used ${otherCores.toFixed(2)} cores on average`,
      `runs ${config.runs} (median; ${config.pullRuns} for the ${sizeLabel(config.blobBytes)} pulls), load tool ${config.loadTool}, pull client ${config.pullClient}`,
      `fairness: ${fairnessText(config.fairness, c, b)}`,
      '',
      renderReport(judged, { candidate: c, baseline: b }),
      '',
    ]
    if (profile) {
      lines.push(
        `where ${c}'s CPU time went (self time, ${formatNumber(profile.totalMs / 1000)} s profiled):`,
        formatTable(
          [{ header: 'function' }, { header: 'self ms' }, { header: 'share' }],
          profile.functions
            .slice(0, 20)
            .map((entry) => [entry.name, entry.selfMs.toFixed(0), (entry.share * 100).toFixed(1) + '%']),
        ),
        '',
        formatTable(
          [{ header: 'file' }, { header: 'self ms' }, { header: 'share' }],
          profile.files
            .slice(0, 15)
            .map((entry) => [entry.name, entry.selfMs.toFixed(0), (entry.share * 100).toFixed(1) + '%']),
        ),
        '',
      )
    }
    process.stdout.write(lines.join('\n') + '\n')

    const jsonPath = await writeJsonResult(config.jsonPath, {
      benchmark: 'registry',
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      config: { ...config, parts: [...config.parts] },
      idleRssBytes: idleRss,
      system: { atStart: systemAtStart, atEnd: systemAtEnd, otherProcessesCores: otherCores },
      servers: { candidate: c, baseline: b },
      fairness: { ...config.fairness, order: orderText(c, b), text: fairnessText(config.fairness, c, b) },
      rows: judged,
      details: {
        pushMonolithic: mono?.results,
        pushChunked: chunked,
        pull,
        pullConcurrent,
        manifestByDigest: byDigest,
        manifestByTag: byTag,
        ...(large ? { largePush: large.push, largePull: large.pull } : {}),
      },
      ...(profile ? { cpuProfile: profile } : {}),
    })
    progress(`JSON result written to ${jsonPath}`)
  } catch (error) {
    failed = true
    process.stderr.write(
      `bench:registry failed: ${error instanceof Error ? (error.stack ?? error.message) : error}\n`,
    )
    for (const target of targets) {
      process.stderr.write(
        `  ${target.name} logs: ${target.process.stdoutPath} ${target.process.stderrPath}\n`,
      )
    }
  } finally {
    for (const target of targets.reverse()) await target.stop().catch(() => {})
    closeClient()
    if (config.keep || failed) progress(`kept ${workDir}`)
    else await rm(workDir, { recursive: true, force: true })
  }
  if (failed) process.exitCode = 1
}

await main()
