/**
 * `npm run sim`: simulates a whole cluster pulling one image at once through shoal's
 * own hand-out and piece-picking policy (see simulate.ts), and reports what the cluster
 * benchmark reports. Flags describe one scenario (`--nodes` takes a comma list);
 * `--preset scale` runs N = 10, 25, 50, 1000, 10000 at 100 Mbit, `--preset kraken` Uber
 * Kraken's published case. Table on stdout, progress on stderr, JSON and SVG under
 * bench/results/.
 */
import { writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { defaultResultPath, writeJsonResult } from '../lib/json-output.js'
import { progress } from '../lib/progress.js'
import { systemInfo } from '../lib/system-info.js'
import {
  type Reference,
  type SimRow,
  formatSimRows,
  formatSimTimeline,
  renderSimPlots,
  summarizeSim,
} from './report.js'
import {
  AHEAD_MAX_IN_FLIGHT,
  MAX_IN_FLIGHT,
  BUSY_EXTRA_PEERS,
  SOUGHT_EXTRA_PEERS,
  STARTING_PEERS,
  STARTING_PIECES,
} from '../../peer-agent/src/transfer/piece-picker.js'
import { DEFAULT_REPEAT_AFTER_MS } from '../../registry/src/seeder/first-copy.js'
import { MAX_CONCURRENT_UPLOADS, MAX_UPLOADS_PER_PIECE } from '../../protocol/src/p2p/piece-server.js'
import { UPLOAD_TURN_HOLD_MS } from '../../protocol/src/p2p/upload-turns.js'
import type { Sharing } from './flow-network.js'
import { type SimConfig, simulate } from './simulate.js'

const MiB = 2 ** 20

const { values } = parseArgs({
  options: {
    preset: { type: 'string' },
    nodes: { type: 'string', default: '50' },
    'image-mb': { type: 'string', default: '256' },
    layers: { type: 'string', default: '4' },
    'piece-mb': { type: 'string' },
    'node-mbit': { type: 'string', default: '100' },
    'node-down-mbit': { type: 'string' },
    'origin-mbit': { type: 'string', default: '100' },
    'latency-ms': { type: 'string', default: '1' },
    sharing: { type: 'string', default: 'proportional' },
    'have-delay-ms': { type: 'string' },
    'origin-slots': { type: 'string', default: '8' },
    'exclusive-origin-slots': { type: 'boolean', default: false },
    'max-uploads': { type: 'string', default: String(MAX_CONCURRENT_UPLOADS) },
    'origin-max-uploads': { type: 'string', default: '16' },
    'max-uploads-per-piece': { type: 'string', default: String(MAX_UPLOADS_PER_PIECE) },
    'upload-piece-target-ms': { type: 'string', default: '0' },
    'min-uploads': { type: 'string', default: '4' },
    'busy-backoff-ms': { type: 'string', default: '1000' },
    'upload-turn-hold-ms': { type: 'string', default: String(UPLOAD_TURN_HOLD_MS) },
    'first-copy-priority': { type: 'string', default: '2' },
    'requests-per-peer': { type: 'string', default: '1' },
    'origin-requests': { type: 'string', default: '1' },
    'min-requests-in-flight': { type: 'string', default: '4' },
    'max-in-flight': { type: 'string', default: String(MAX_IN_FLIGHT) },
    'ahead-max-in-flight': { type: 'string', default: String(AHEAD_MAX_IN_FLIGHT) },
    'busy-extra-peers': { type: 'string', default: String(BUSY_EXTRA_PEERS) },
    'sought-extra-peers': { type: 'string', default: String(SOUGHT_EXTRA_PEERS) },
    'repeat-piece-after-ms': { type: 'string', default: String(DEFAULT_REPEAT_AFTER_MS) },
    'max-peers': { type: 'string', default: '16' },
    'starting-peers': { type: 'string', default: String(STARTING_PEERS) },
    'tracker-sample': { type: 'string', default: '200' },
    'start-jitter-ms': { type: 'string', default: '0' },
    streaming: { type: 'boolean', default: false },
    timeline: { type: 'boolean', default: false },
    seed: { type: 'string', default: '1' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
})

if (values.help) {
  process.stdout.write(`usage: npm run sim -- [--preset scale|kraken] [--nodes 10,50] [--image-mb 256]
  [--layers 4] [--piece-mb N] [--node-mbit 100] [--node-down-mbit M] [--origin-mbit 100]
  [--latency-ms 1] [--sharing proportional|max-min] [--have-delay-ms D] [--origin-slots 8] [--exclusive-origin-slots] [--max-uploads ${MAX_CONCURRENT_UPLOADS}] [--origin-max-uploads 16] [--max-uploads-per-piece ${MAX_UPLOADS_PER_PIECE}]
  [--upload-piece-target-ms 0 (0: a fixed cap)] [--min-uploads 4]
  [--busy-backoff-ms 1000] [--upload-turn-hold-ms ${UPLOAD_TURN_HOLD_MS} (0: first come, first served)] [--first-copy-priority 2 (0: off)] [--requests-per-peer 1] [--origin-requests 1]
  [--min-requests-in-flight 4] [--max-peers 16] [--starting-peers ${STARTING_PEERS} (peers while a download holds fewer than ${STARTING_PIECES} pieces; 0: off)]
  [--max-in-flight ${MAX_IN_FLIGHT} (requests in flight per download; 0: no cap)]
  [--ahead-max-in-flight ${AHEAD_MAX_IN_FLIGHT} (requests in flight while ahead of the peers; 0: off)]
  [--busy-extra-peers ${BUSY_EXTRA_PEERS} (more peers once half answered busy; 0: off)]
  [--sought-extra-peers ${SOUGHT_EXTRA_PEERS} (more peers for pieces the origin declined that no peer in use holds; 0: off)]
  [--repeat-piece-after-ms ${DEFAULT_REPEAT_AFTER_MS} (the seed's first-copy rule; 0: off)]
  [--tracker-sample 200] [--start-jitter-ms 0] [--streaming] [--seed 1] [--out file.json]
  [--timeline (how busy the links were, per simulated second: table, JSON, plot)]
`)
  process.exit(0)
}

function num(name: keyof typeof values): number | undefined {
  const raw = values[name]
  if (raw === undefined || typeof raw === 'boolean') return undefined
  const n = Number(raw)
  if (!Number.isFinite(n) || n < 0) {
    process.stderr.write(`--${name} must be a non-negative number, got ${raw}\n`)
    process.exit(2)
  }
  return n
}

function sharingOption(): Sharing {
  const s = values.sharing
  if (s !== 'proportional' && s !== 'max-min') {
    process.stderr.write(`--sharing must be proportional or max-min, got ${s}\n`)
    process.exit(2)
  }
  return s
}

interface Scenario {
  label: string
  config: SimConfig
  reference?: Reference
}

function baseConfig(nodes: number): SimConfig {
  const config: SimConfig = {
    nodes,
    imageBytes: Math.round(num('image-mb')! * MiB),
    layers: num('layers')!,
    nodeUpMbit: num('node-mbit')!,
    originMbit: num('origin-mbit')!,
    latencyMs: num('latency-ms')!,
    sharing: sharingOption(),
    seed: num('seed')!,
    originSlots: num('origin-slots')!,
    exclusiveOriginSlots: values['exclusive-origin-slots'],
    maxConcurrentUploads: num('max-uploads')!,
    originMaxConcurrentUploads: num('origin-max-uploads')!,
    maxUploadsPerPiece: num('max-uploads-per-piece')!,
    uploadPieceTargetMs: num('upload-piece-target-ms')!,
    minConcurrentUploads: num('min-uploads')!,
    trackerSample: num('tracker-sample')!,
    busyBackoffMs: num('busy-backoff-ms')!,
    uploadTurnHoldMs: num('upload-turn-hold-ms')!,
    firstCopyPriority: num('first-copy-priority')!,
    requestsPerPeer: num('requests-per-peer')!,
    originRequests: num('origin-requests')!,
    minRequestsInFlight: num('min-requests-in-flight')!,
    maxInFlight: num('max-in-flight')!,
    aheadMaxInFlight: num('ahead-max-in-flight')!,
    busyExtraPeers: num('busy-extra-peers')!,
    soughtExtraPeers: num('sought-extra-peers')!,
    repeatPieceAfterMs: num('repeat-piece-after-ms')!,
    maxPeers: num('max-peers')!,
    startingPeers: num('starting-peers')!,
    startJitterMs: num('start-jitter-ms')!,
    streaming: values.streaming,
    ...(values.timeline ? { timelineMs: 1_000 } : {}),
  }
  const down = num('node-down-mbit')
  if (down !== undefined) config.nodeDownMbit = down
  const piece = num('piece-mb')
  if (piece !== undefined) config.pieceSize = Math.round(piece * MiB)
  const have = num('have-delay-ms')
  if (have !== undefined) config.haveDelayMs = have
  return config
}

function scenarios(): Scenario[] {
  if (values.preset === 'scale') {
    return [10, 25, 50, 1000, 10_000].map((n) => ({ label: `scale N=${n}`, config: baseConfig(n) }))
  }
  if (values.preset === 'kraken') {
    // Kraken (github.com/uber/kraken README): a 3 GB image of two layers to 2,600 hosts,
    // agents capped at 300 MB/s (2400 Mbit) up and down; p50 10 s, p99 18 s. Their
    // origin tier is several hosts: modelled as 4 x 2400 Mbit unless --origin-mbit is given.
    const config = baseConfig(2_600)
    config.imageBytes = 3 * 1024 * MiB
    config.layers = 2
    config.nodeUpMbit = 2_400
    config.nodeDownMbit = 2_400
    config.originMbit = process.argv.includes('--origin-mbit') ? num('origin-mbit')! : 4 * 2_400
    return [
      { label: 'kraken 3 GB x 2600', config, reference: { name: 'Kraken', p50Seconds: 10, p99Seconds: 18 } },
    ]
  }
  if (values.preset !== undefined) {
    process.stderr.write(`unknown --preset ${values.preset} (scale, kraken)\n`)
    process.exit(2)
  }
  return values
    .nodes!.split(',')
    .map((s) => Number(s.trim()))
    .map((n) => {
      if (!Number.isInteger(n) || n < 1) {
        process.stderr.write(`--nodes must be positive integers, got ${values.nodes}\n`)
        process.exit(2)
      }
      return { label: `N=${n}`, config: baseConfig(n) }
    })
}

const rows: SimRow[] = []
for (const s of scenarios()) {
  progress(
    `simulating ${s.label}: ${(s.config.imageBytes / MiB).toFixed(0)} MiB in ${s.config.layers} layers, ` +
      `nodes ${s.config.nodeUpMbit} Mbit, origin ${s.config.originMbit} Mbit, latency ${s.config.latencyMs} ms`,
  )
  const result = simulate({
    ...s.config,
    onProgress: (done, simMs, events) =>
      progress(
        `  ${s.label}: t=${(simMs / 1000).toFixed(1)} s simulated, ${done}/${s.config.nodes} done, ${events} events`,
      ),
  })
  const row = summarizeSim(s.label, s.config, result, s.reference)
  progress(
    `  done: last node at ${row.lastDoneSeconds.toFixed(2)} s (bound ${row.boundSeconds.toFixed(2)} s), ` +
      `origin ${row.originRatio.toFixed(2)}x image, ${row.wallSeconds.toFixed(1)} s wall`,
  )
  rows.push(row)
}

process.stdout.write(`${formatSimRows(rows)}\n`)
for (const row of rows) {
  if (row.timeline !== undefined)
    process.stdout.write(`\n${row.label}: links over the run\n${formatSimTimeline(row)}\n`)
}
const jsonPath = values.out ?? defaultResultPath('sim')
const written = await writeJsonResult(jsonPath, {
  kind: 'sim',
  at: new Date().toISOString(),
  system: systemInfo(),
  argv: process.argv.slice(2),
  rows,
})
const svgPath = written.replace(/\.json$/, '') + '.svg'
await writeFile(svgPath, renderSimPlots(rows))
process.stdout.write(`results: ${written}\nplot:    ${svgPath}\n`)
