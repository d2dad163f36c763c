/**
 * `npm run bench:transfer`: shoal's piece path between two processes against raw TCP
 * between the same processes, in the same run.
 *
 * Serving processes hold a generated blob in the agent's blob cache and serve it with
 * shoal's piece server (one libp2p node per stack variant) and over raw TCP (the same
 * cache bytes, 1 MiB writes). One fetching process takes every piece with shoal's piece
 * client, checking each piece's sha256 as the agent does, over one connection per
 * server; and reads the same bytes over raw TCP, with and without the sha256 check.
 * CPU seconds of every process come from /proc/<pid>/stat around each transfer.
 * Reported: medians of MB/s, CPU s/GB (both ends) and the ratio to raw TCP, for one
 * connection and for one fetcher with several servers; PASS when the node's stack
 * reaches the target on one connection, judged on the median of per-run ratios
 * (each run measures raw TCP and shoal back to back, alternating which goes first).
 */
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { summarizeCpuProfile } from '../lib/cpu-profile.js'
import { defaultResultPath, writeJsonResult } from '../lib/json-output.js'
import { positiveOptionReader } from '../lib/options.js'
import { readProcessCpuSeconds } from '../lib/process-sampler.js'
import { progress } from '../lib/progress.js'
import { systemInfo } from '../lib/system-info.js'
import { MAX_PIECE_SIZE, MIN_PIECE_SIZE_ALLOWED, pieceSizeAllowed } from '../../protocol/src/piece-map.js'
import { createTestBlob, linkTestBlob } from './blob.js'
import type { FetchJob, FetchResult } from './client-worker.js'
import { buildRows, formatRows, judge, type Measurement, TARGET_RATIO } from './report.js'
import { findVariants, STACK_VARIANTS, type StackVariant } from './stack.js'
import { startWorker, type Worker } from './worker-process.js'

const MIB = 1024 * 1024
/** The stack node.ts runs (shoalNoise, yamux defaults), judged against the target. */
export const NODE_VARIANT = 'default'

const USAGE = `usage: npm run bench:transfer -- [options]

  --size-mb N        size of the generated blob (default 1024)
  --piece-kib N      piece size in KiB, a power of two from 16 to 16384 (default: what
                     choosePieceSize gives the blob, 4096 at 1 GiB)
  --runs N           runs per configuration, median reported (default 5); each run pairs
                     raw TCP and shoal back to back, and the verdict is the median of
                     the per-run ratios
  --peers N          servers of the parallel case, one connection each (default 3; 1 skips it)
  --variants LIST    shoal stack variants, comma-separated (default ${NODE_VARIANT},libp2p-streams)
                     known: ${STACK_VARIANTS.map((v) => v.name).join(', ')}
  --batch N          pieces per request (default 4)
  --depth N          requests in flight per peer (default 2)
  --json PATH        JSON result path (default bench/results/transfer-<time>.json)
  --cpu-prof         profile both sides during the first one-connection run of each shoal
                     variant and print where their time went (profiles kept with --keep)
  --keep             keep the temp folder (blob, profiles)
  --node-options STR node flags for the serving and fetching processes, space-separated
                     (e.g. "--trace-gc"; what they print goes to stderr)
  -h, --help         show this help
`

interface Config {
  sizeBytes: number
  /** Piece size in bytes; undefined: choosePieceSize's. */
  pieceBytes: number | undefined
  runs: number
  peers: number
  variants: StackVariant[]
  batch: number
  depth: number
  jsonPath: string
  cpuProf: boolean
  keep: boolean
  nodeOptions: string[]
}

function parseConfig(argv: string[]): Config | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      'size-mb': { type: 'string' },
      'piece-kib': { type: 'string' },
      runs: { type: 'string' },
      peers: { type: 'string' },
      variants: { type: 'string' },
      batch: { type: 'string' },
      depth: { type: 'string' },
      json: { type: 'string' },
      'cpu-prof': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      'node-options': { type: 'string' },
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
  let variants: StackVariant[] = []
  try {
    variants = findVariants((values.variants ?? `${NODE_VARIANT},libp2p-streams`).split(',').filter(Boolean))
  } catch (err) {
    problems.push((err as Error).message)
  }
  let pieceBytes: number | undefined
  if (values['piece-kib'] !== undefined) {
    pieceBytes = Math.round(positive('piece-kib', values['piece-kib'], 0) * 1024)
    if (!pieceSizeAllowed(pieceBytes))
      problems.push(
        `--piece-kib must be a power of two from ${MIN_PIECE_SIZE_ALLOWED / 1024} to ${MAX_PIECE_SIZE / 1024}, got ${values['piece-kib']}`,
      )
  }
  const config: Config = {
    sizeBytes: Math.round(positive('size-mb', values['size-mb'], 1024) * MIB),
    pieceBytes,
    runs: Math.round(positive('runs', values.runs, 5)),
    peers: Math.round(positive('peers', values.peers, 3)),
    variants,
    batch: Math.round(positive('batch', values.batch, 4)),
    depth: Math.round(positive('depth', values.depth, 2)),
    jsonPath: values.json ?? defaultResultPath('transfer'),
    cpuProf: values['cpu-prof'],
    keep: values.keep,
    nodeOptions: (values['node-options'] ?? '').split(' ').filter(Boolean),
  }
  if (problems.length > 0) throw new Error(`invalid options:\n  ${problems.join('\n  ')}`)
  return config
}

interface ServerInfo {
  worker: Worker
  addresses: Record<string, string>
  rawPort: number
}

/** Runs `transfer` and reads the CPU the fetcher and the given servers used during it. */
async function measure(
  client: Worker,
  servers: ServerInfo[],
  transfer: () => Promise<FetchResult>,
): Promise<FetchResult & { clientCpuSeconds: number; serverCpuSeconds: number }> {
  const pids = [client.pid, ...servers.map((s) => s.worker.pid)]
  const before = pids.map(readProcessCpuSeconds)
  const result = await transfer()
  const after = pids.map(readProcessCpuSeconds)
  const used = after.map((a, i) => a - before[i]!)
  return {
    ...result,
    clientCpuSeconds: used[0]!,
    serverCpuSeconds: used.slice(1).reduce((a, b) => a + b, 0),
  }
}

async function main(): Promise<number> {
  const config = parseConfig(process.argv.slice(2))
  if (config === undefined) return 0
  const startedAt = new Date()
  const system = systemInfo()
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-transfer-'))
  const profileDir = join(dir, 'profiles')
  const workers: Worker[] = []
  try {
    progress(`load average ${system.loadAverage.join(' ')} on ${system.cpuCount} cores`)
    progress(`generating a ${config.sizeBytes / MIB} MiB blob`)
    const roots = Array.from({ length: config.peers }, (_, i) => join(dir, `cache-${i}`))
    const job: FetchJob = await createTestBlob(roots[0]!, config.sizeBytes, config.pieceBytes)
    for (const root of roots.slice(1)) await linkTestBlob(roots[0]!, root, job.digest)
    progress(`blob ${job.digest}: ${job.pieceHashes.length} pieces of ${job.pieceSize / 1024} KiB`)
    if (config.cpuProf) await mkdir(profileDir, { recursive: true })

    const servers: ServerInfo[] = []
    for (const root of roots) {
      const worker = await startWorker('bench/transfer/server-worker.ts', { nodeOptions: config.nodeOptions })
      workers.push(worker)
      const info = await worker.request<{ addresses: Record<string, string>; rawPort: number }>({
        cmd: 'start',
        root,
        variants: config.variants,
      })
      servers.push({ worker, ...info })
    }
    const client = await startWorker('bench/transfer/client-worker.ts', { nodeOptions: config.nodeOptions })
    workers.push(client)
    await client.request({ cmd: 'start', variants: config.variants })

    // Untimed warm-up of every path, so no measured run pays for JIT compilation.
    progress('warming up')
    const warmPieces = Math.max(1, Math.ceil((64 * MIB) / job.pieceSize))
    const warmups: string[] = []
    for (const variant of config.variants) {
      try {
        await client.request({
          cmd: 'shoal',
          variant: variant.name,
          addresses: servers.map((s) => s.addresses[variant.name]!),
          job,
          batch: config.batch,
          depth: config.depth,
          limit: warmPieces * servers.length,
        })
      } catch (err) {
        // Reported with the results; the measured runs show whether the path works.
        const message = err instanceof Error ? err.message.split('\n')[0]! : String(err)
        warmups.push(`${variant.name}: ${message}`)
        progress(`warm-up of ${variant.name} failed: ${message}`)
      }
    }
    await client.request({ cmd: 'raw', ports: servers.map((s) => s.rawPort), job, verify: true })

    const measurements: Measurement[] = []
    const failures: Array<{
      kind: string
      variant: string | undefined
      peers: number
      run: number
      error: string
    }> = []
    const peerCounts = config.peers > 1 ? [1, config.peers] : [1]
    for (let run = 1; run <= config.runs; run++) {
      for (const peers of peerCounts) {
        const used = servers.slice(0, peers)
        const record = async (
          kind: Measurement['kind'],
          variant: string | undefined,
          transfer: () => Promise<FetchResult>,
        ): Promise<void> => {
          // With --cpu-prof, the first one-connection run of each shoal variant is profiled.
          const profiled = config.cpuProf && kind === 'shoal' && run === 1 && peers === 1
          const sides = [client, ...used.map((s) => s.worker)]
          if (profiled) await Promise.all(sides.map((w) => w.request({ cmd: 'profile-start' })))
          let m: Awaited<ReturnType<typeof measure>>
          try {
            m = await measure(client, used, transfer)
          } catch (err) {
            // One failed transfer is reported (and fails the exit code) without losing the others.
            const message = err instanceof Error ? err.message.split('\n')[0]! : String(err)
            failures.push({ kind, variant, peers, run, error: message })
            progress(`run ${run} peers ${peers} ${variant ?? kind}: FAILED ${message}`)
            if (profiled)
              await Promise.all(sides.map((w) => w.request({ cmd: 'profile-stop', path: '/dev/null' })))
            return
          }
          if (profiled) {
            await Promise.all(
              sides.map((w, i) =>
                w.request({
                  cmd: 'profile-stop',
                  path: join(profileDir, `${variant}-${i === 0 ? 'fetcher' : 'server'}.cpuprofile`),
                }),
              ),
            )
          }
          const entry: Measurement = { kind, peers, run, ...m }
          if (variant !== undefined) entry.variant = variant
          measurements.push(entry)
          const mbps = m.bytes / 1e6 / m.seconds
          const cpu = (m.clientCpuSeconds + m.serverCpuSeconds) / (m.bytes / 1e9)
          progress(
            `run ${run} peers ${peers} ${variant ?? kind}: ${mbps.toFixed(0)} MB/s, ${cpu.toFixed(2)} CPU s/GB, ` +
              `fetcher peak RSS ${(m.fetcherMaxRssBytes / MIB).toFixed(0)} MiB`,
          )
        }
        const ports = used.map((s) => s.rawPort)
        const steps: Array<() => Promise<void>> = [
          () => record('raw', undefined, () => client.request({ cmd: 'raw', ports, job, verify: false })),
          ...config.variants.map((variant) => () => {
            const addresses = used.map((s) => s.addresses[variant.name]!)
            return record('shoal', variant.name, () =>
              client.request({
                cmd: 'shoal',
                variant: variant.name,
                addresses,
                job,
                batch: config.batch,
                depth: config.depth,
              }),
            )
          }),
          () =>
            record('raw-sha256', undefined, () => client.request({ cmd: 'raw', ports, job, verify: true })),
        ]
        // The judged pair (raw TCP and the first variant) back to back, raw TCP first in
        // odd runs and second in even ones, so neither always meets the machine first.
        if (run % 2 === 0) steps.reverse()
        for (const step of steps) await step()
      }
    }
    const loadAfter = systemInfo().loadAverage
    for (const worker of workers.splice(0)) await worker.stop()

    const rows = buildRows(measurements)
    const gate = config.variants.some((v) => v.name === NODE_VARIANT)
      ? NODE_VARIANT
      : config.variants[0]!.name
    const verdict = judge(rows, gate)
    let profiles: unknown
    if (config.cpuProf) {
      const files = (await readdir(profileDir)).filter((f) => f.endsWith('.cpuprofile')).sort()
      profiles = await Promise.all(
        files.map(async (f) => ({
          file: f,
          ...(await summarizeCpuProfile(join(profileDir, f), { top: 15, root: process.cwd() })),
        })),
      )
    }

    const out = process.stdout
    out.write(
      `\nshoal piece transfer, ${config.sizeBytes / MIB} MiB blob, ${job.pieceSize / 1024} KiB pieces, ` +
        `median of ${config.runs}, load average ${system.loadAverage[0]} -> ${loadAfter[0]} on ${system.cpuCount} cores\n\n`,
    )
    out.write(`${formatRows(rows)}\n\n`)
    for (const v of config.variants) out.write(`  ${v.name}: ${v.description}\n`)
    out.write(
      '\n  CPU s/GB = CPU seconds of fetcher + servers per 10^9 bytes; x raw = median MB/s over median raw TCP MB/s\n' +
        '  with the same peers; x raw paired = median over runs of MB/s over raw TCP MB/s of the same run (judged)\n',
    )
    if (config.cpuProf && Array.isArray(profiles)) {
      type Entry = { name: string; share: number }
      for (const p of profiles as Array<{
        file: string
        totalMs: number
        functions: Entry[]
        files: Entry[]
      }>) {
        out.write(`\nprofile ${p.file} (${(p.totalMs / 1000).toFixed(1)} s), self time:\n`)
        for (const f of p.functions.slice(0, 12))
          out.write(`  ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.name}\n`)
        out.write('  by file:\n')
        for (const f of p.files.slice(0, 8))
          out.write(`  ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.name}\n`)
      }
    }
    for (const f of failures) {
      out.write(`\nFAILED: ${f.variant ?? f.kind}, ${f.peers} peer(s), run ${f.run}: ${f.error}\n`)
    }
    out.write(`\n${verdict.message}\n`)
    const jsonPath = await writeJsonResult(config.jsonPath, {
      benchmark: 'transfer',
      startedAt: startedAt.toISOString(),
      system,
      loadAverageAfter: loadAfter,
      config: { ...config, variants: config.variants },
      blob: { digest: job.digest, size: job.size, pieceSize: job.pieceSize, pieces: job.pieceHashes.length },
      target: { ratio: TARGET_RATIO, variant: gate },
      verdict,
      rows,
      measurements,
      failures,
      warmupFailures: warmups,
      profiles,
    })
    progress(`JSON result written to ${jsonPath}`)
    return failures.length > 0 ? 1 : 0
  } finally {
    for (const worker of workers) await worker.stop().catch(() => {})
    if (config.keep) progress(`kept ${dir}`)
    else await rm(dir, { recursive: true, force: true })
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `bench:transfer failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    )
    process.exit(1)
  },
)
