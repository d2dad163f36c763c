/**
 * `npm run bench:cluster`: builds a cluster in network namespaces (a bridge, the origin,
 * the tracker and N nodes, shaped with tc, jumbo frames), pushes a random image, and lets
 * every node pull it at the same moment, first straight from CNCF Distribution on the
 * origin (the baseline), then through a shoal agent per node over the swarm. Reports
 * per-node completion percentiles, the last node against the Kumar–Ross fluid bound,
 * origin egress and machine CPU, as a table, JSON and an SVG plot. Removes everything it
 * made, also on Ctrl-C; `--cleanup` removes what an earlier run left behind.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { skopeoCopy } from '../../test/helpers/images.js'
import { requireBinaries } from '../../test/helpers/processes.js'
import { startNodeContainerds } from '../../test/testbed/containerd-nodes.js'
import { writeBenchImage } from '../../test/testbed/image.js'
import {
  curlIn,
  PORTS,
  type PullProgress,
  type PullTarget,
  runPulls,
  sampleByLabel,
  sampleSum,
} from '../../test/testbed/services.js'
import { createTestbed, type Testbed } from '../../test/testbed/testbed.js'
import {
  DEFAULT_DOWN_QUEUE_MS,
  DEFAULT_QUEUE_MS,
  type QdiscCounters,
  readQdiscCounters,
} from '../../test/testbed/shaping.js'
import { readTcpCounters, sumTcpCounters, type TcpCounters } from '../../test/testbed/tcp-counters.js'
import { cleanupLeftovers, JUMBO_MTU, TESTBED_PREFIX, type TestbedHost } from '../../test/testbed/topology.js'
import { defaultResultPath, writeJsonResult } from '../lib/json-output.js'
import { type ProcessCounters, readProcessCounters, readThreadCpuSeconds } from '../lib/process-sampler.js'
import { probeCpuSpeed } from '../lib/machine-quiet.js'
import { progress } from '../lib/progress.js'
import { readMachineCpuTimes, systemInfo } from '../lib/system-info.js'
import { fluidBound } from './bound.js'
import {
  alignTimeline,
  formatRounds,
  judgeTargets,
  type RoundResult,
  renderPlots,
  summarizeRound,
  type TimelineSample,
} from './report.js'

const USAGE = `usage: npm run bench:cluster -- [options]      (as root)

  --nodes LIST          node counts to run, e.g. 10,25,50 (default 3)
  --node-mbit N         each node's upload and download, Mbit/s (default 20)
  --origin-mbit N       the origin's upload, Mbit/s (default 20)
  --image-mb N          image size in MB (10^6 bytes) (default 20)
  --layers N            random layers the image is split over (default 2)
  --systems LIST        shoal,distribution (default both; distribution is the baseline)
  --tracker-arg A       extra argument to \`shoal tracker\` (repeatable), e.g. --tracker-arg=--announce-interval-ms=2000
  --agent-arg A         extra argument to \`shoal agent\` (repeatable)
  --registry-arg A      extra argument to \`shoal registry\` (repeatable)
  --containerd          pull with a real \`ctr images pull\` from a containerd per node (fresh for every round)
  --mtu N               MTU of every veth (default ${JUMBO_MTU})
  --tcp-cc NAME         TCP congestion control of every host (default: what the machine sets)
  --queue-ms N          queue of the nodes' and the origin's uplinks, in ms of their rate; beyond it
                        packets are dropped (default ${DEFAULT_QUEUE_MS})
  --down-queue-ms N     queue of the nodes' downlinks, in ms of their rate; 0: htb's 1,000 frames, the
                        testbed's default until session 18 (default ${DEFAULT_DOWN_QUEUE_MS})
  --json PATH           JSON result path (default bench/results/cluster-<time>.json; the SVG goes beside it)
  --warm-up-mb N        shoal: before the measured pull, every node pulls another image of N MB through the
                        same agents (as a cluster that has pulled before; default 0: cold agents)
  --idle-s N            shoal: also measure the CPU of the idle seed, tracker and agents for N s before and after the pulls
  --keep                keep the work folder (logs of every daemon and client)
  --cleanup             only remove namespaces and processes an earlier run left behind, then exit
  -h, --help            show this help
`

interface Options {
  nodes: number[]
  nodeMbit: number
  originMbit: number
  imageBytes: number
  layers: number
  systems: Array<'shoal' | 'distribution'>
  trackerArgs: string[]
  agentArgs: string[]
  registryArgs: string[]
  mtu: number
  /** TCP congestion control of every host; undefined keeps the machine's. */
  tcpCongestionControl: string | undefined
  queueMs: number | undefined
  downQueueMs: number | undefined
  jsonPath: string
  keep: boolean
  idleSeconds: number
  warmUpBytes: number
  cleanup: boolean
  containerd: boolean
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      nodes: { type: 'string', default: '3' },
      'node-mbit': { type: 'string', default: '20' },
      'origin-mbit': { type: 'string', default: '20' },
      'image-mb': { type: 'string', default: '20' },
      layers: { type: 'string', default: '2' },
      systems: { type: 'string', default: 'distribution,shoal' },
      'tracker-arg': { type: 'string', multiple: true, default: [] },
      'agent-arg': { type: 'string', multiple: true, default: [] },
      'registry-arg': { type: 'string', multiple: true, default: [] },
      mtu: { type: 'string', default: String(JUMBO_MTU) },
      'tcp-cc': { type: 'string' },
      'queue-ms': { type: 'string' },
      'down-queue-ms': { type: 'string' },
      json: { type: 'string' },
      keep: { type: 'boolean', default: false },
      'idle-s': { type: 'string', default: '0' },
      'warm-up-mb': { type: 'string', default: '0' },
      cleanup: { type: 'boolean', default: false },
      containerd: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) {
    process.stdout.write(USAGE)
    process.exit(0)
  }
  const positive = (name: string, text: string): number => {
    const n = Number(text)
    if (!(Number.isFinite(n) && n > 0)) throw new Error(`--${name} must be a positive number, got ${text}`)
    return n
  }
  const atLeastZero = (name: string, text: string, what = 'a number'): number => {
    const n = Number(text)
    if (!(Number.isFinite(n) && n >= 0)) throw new Error(`--${name} must be ${what} >= 0, got ${text}`)
    return n
  }
  const idleSeconds = atLeastZero('idle-s', values['idle-s'], 'a number of seconds')
  const warmUpMb = atLeastZero('warm-up-mb', values['warm-up-mb'], 'a number of MB')
  const nodes = values.nodes.split(',').map((s) => positive('nodes', s.trim()))
  const systems = values.systems.split(',').map((s) => s.trim())
  for (const s of systems) {
    if (s !== 'shoal' && s !== 'distribution') throw new Error(`unknown system ${s}`)
  }
  return {
    nodes: nodes.map((n) => Math.round(n)),
    nodeMbit: positive('node-mbit', values['node-mbit']),
    originMbit: positive('origin-mbit', values['origin-mbit']),
    imageBytes: Math.round(positive('image-mb', values['image-mb']) * 1e6),
    layers: Math.round(positive('layers', values.layers)),
    systems: systems as Options['systems'],
    trackerArgs: values['tracker-arg'],
    agentArgs: values['agent-arg'],
    registryArgs: values['registry-arg'],
    mtu: Math.round(positive('mtu', values.mtu)),
    tcpCongestionControl: values['tcp-cc'],
    queueMs: values['queue-ms'] === undefined ? undefined : positive('queue-ms', values['queue-ms']),
    downQueueMs:
      values['down-queue-ms'] === undefined
        ? undefined
        : atLeastZero('down-queue-ms', values['down-queue-ms']),
    jsonPath: values.json ?? defaultResultPath('cluster'),
    keep: values.keep,
    idleSeconds,
    warmUpBytes: Math.round(warmUpMb * 1e6),
    cleanup: values.cleanup,
    containerd: values.containerd,
  }
}

/** `of` applied to each role's process ids. */
function byRole<T>(roles: Record<string, number[]>, of: (pids: number[]) => T): Record<string, T> {
  return Object.fromEntries(Object.entries(roles).map(([role, pids]) => [role, of(pids)]))
}

/** Counters of `pids` summed; a process that is gone counts 0. */
function sumCounters(pids: readonly number[]): ProcessCounters {
  const sum: ProcessCounters = {
    userSeconds: 0,
    systemSeconds: 0,
    readCalls: 0,
    writeCalls: 0,
    voluntarySwitches: 0,
    involuntarySwitches: 0,
  }
  for (const pid of pids) {
    try {
      const c = readProcessCounters(pid)
      for (const key of Object.keys(sum) as Array<keyof ProcessCounters>) sum[key] += c[key]
    } catch {
      // gone
    }
  }
  return sum
}

/** User plus system CPU seconds so far of `pids`; a process that is gone counts 0. */
function cpuSeconds(pids: readonly number[]): number {
  const c = sumCounters(pids)
  return c.userSeconds + c.systemSeconds
}

/** CPU seconds of the live threads of `pids`, summed by thread name. */
function sumThreadCpu(pids: readonly number[]): Record<string, number> {
  const sum: Record<string, number> = {}
  for (const pid of pids) {
    try {
      for (const [name, v] of Object.entries(readThreadCpuSeconds(pid))) sum[name] = (sum[name] ?? 0) + v
    } catch {
      // gone
    }
  }
  return sum
}

/** `after - before`, key by key of `after` (a key missing before counts 0). */
function subtract(after: object, before: object | undefined): Record<string, number> {
  const b = (before ?? {}) as Record<string, number>
  return Object.fromEntries(Object.entries(after).map(([key, v]) => [key, (v as number) - (b[key] ?? 0)]))
}

/** Cores each role uses over `seconds` of wall time (nothing else is asked of them). */
async function idleCores(roles: Record<string, number[]>, seconds: number): Promise<Record<string, number>> {
  const a = byRole(roles, cpuSeconds)
  const t0 = performance.now()
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
  const b = byRole(roles, cpuSeconds)
  const wall = (performance.now() - t0) / 1000
  return Object.fromEntries(Object.entries(subtract(b, a)).map(([role, cpu]) => [role, cpu / wall]))
}

const REPOSITORY = 'bench/image'
const WARM_UP_REPOSITORY = 'bench/warm-up'
const TAG = 'v1'

/** How a downlink queue of `ms` is described (0: htb's default leaf). */
function downQueueLabel(ms: number): string {
  return ms > 0 ? `${ms} ms` : "htb's 1,000-frame"
}

/**
 * A one-line progress display on stderr: nodes done, blob bytes the clients received,
 * and (once `links` is set) what the nodes' links carried, pieces not yet in reading
 * order included.
 */
function progressDisplay(label: string): {
  update(p: PullProgress): void
  setLinks(sample: TimedSample): void
  end(): void
} {
  const tty = process.stderr.isTTY
  let lastPrint = 0
  let last = ''
  let links: TimedSample | undefined
  return {
    setLinks(sample) {
      links = sample
    },
    update(p) {
      last = `${label}: ${p.done}/${p.total} nodes done${p.failed ? `, ${p.failed} failed` : ''}, ${(p.bytes / 1e6).toFixed(0)} MB to the clients${links ? `, ${(links.nodesDownBytes / 1e6).toFixed(0)} MB down the nodes' links, ${(links.originBytes / 1e6).toFixed(0)} MB from the origin, machine ${(links.machineBusy * 100).toFixed(0)}% busy` : ''}`
      if (tty) process.stderr.write(`\r${last}\x1b[K`)
      else if (Date.now() - lastPrint > 5_000) {
        lastPrint = Date.now()
        progress(last)
      }
    },
    end() {
      if (tty) process.stderr.write('\n')
      else if (last) progress(last)
    },
  }
}

/** A timeline sample before alignTimeline: when it was taken instead of seconds since the start. */
type TimedSample = Omit<TimelineSample, 'seconds'> & { at: number }

/** Link counters every this many ms during a round (one `ip` call in the switch namespace and one in the origin's). */
const TIMELINE_INTERVAL_MS = 5_000

/**
 * Samples the round's link counters and the clients' progress every
 * TIMELINE_INTERVAL_MS until `stop` is called; a failed read skips that sample. Each
 * sample says when it was taken (`at`, epoch ms): alignTimeline puts them on the
 * round's clock once the common start is known.
 */
function startTimeline(
  tb: Testbed,
  nodes: readonly TestbedHost[],
  servicePids: readonly number[],
  progress: () => { bytes: number; done: number },
  onSample: (sample: TimedSample) => void,
): { stop(): Promise<TimedSample[]> } {
  const samples: TimedSample[] = []
  const cpu0 = cpuSeconds(servicePids)
  let machine = readMachineCpuTimes()
  const read = async (): Promise<{ down: number; up: number; origin: number }> => {
    const [links, origin] = await Promise.all([tb.hostLinkBytes(nodes), tb.originTxBytes()])
    return { down: links.downBytes, up: links.upBytes, origin }
  }
  const first = read()
  let running: Promise<void> = Promise.resolve()
  const tick = async (): Promise<void> => {
    try {
      const [base, now] = await Promise.all([first, read()])
      const p = progress()
      const machineNow = readMachineCpuTimes()
      const machineBusy =
        (machineNow.busySeconds - machine.busySeconds) /
        Math.max(1e-9, machineNow.totalSeconds - machine.totalSeconds)
      machine = machineNow
      const sample: TimedSample = {
        at: Date.now(),
        nodesDownBytes: now.down - base.down,
        nodesUpBytes: now.up - base.up,
        originBytes: now.origin - base.origin,
        clientBytes: p.bytes,
        nodesDone: p.done,
        machineBusy: Math.round(machineBusy * 1000) / 1000,
        serviceCpuSeconds: Math.round((cpuSeconds(servicePids) - cpu0) * 100) / 100,
      }
      samples.push(sample)
      onSample(sample)
    } catch {
      // A sample that could not be read is left out.
    }
  }
  const timer = setInterval(() => {
    running = running.then(tick)
  }, TIMELINE_INTERVAL_MS)
  return {
    async stop() {
      clearInterval(timer)
      await running
      await first.catch(() => undefined)
      return samples
    },
  }
}

/** Sums, over every node's agent, where its bytes came from and what it served (Prometheus text). */
async function scrapeAgents(nodes: readonly TestbedHost[]): Promise<Record<string, number>> {
  const totals: Record<string, number> = {}
  const add = (key: string, value: number): void => {
    totals[key] = (totals[key] ?? 0) + value
  }
  await Promise.all(
    nodes.map(async (host) => {
      const text = await curlIn(host, `http://127.0.0.1:${PORTS.agent}/metrics`).catch(() => '')
      for (const [source, v] of Object.entries(
        sampleByLabel(text, 'shoal_agent_swarm_piece_bytes_total', 'source'),
      )) {
        add(`swarmPieceBytes.${source}`, v)
      }
      for (const [source, v] of Object.entries(
        sampleByLabel(text, 'shoal_agent_blob_bytes_total', 'source'),
      )) {
        add(`deliveredBytes.${source}`, v)
      }
      add('uploadedBytes', sampleSum(text, 'shoal_agent_swarm_uploaded_bytes_total'))
      for (const [reason, v] of Object.entries(
        sampleByLabel(text, 'shoal_agent_swarm_wasted_requests_total', 'reason'),
      )) {
        add(`wastedRequests.${reason}`, v)
      }
      for (const [reason, v] of Object.entries(
        sampleByLabel(text, 'shoal_agent_swarm_wasted_bytes_total', 'reason'),
      )) {
        add(`wastedBytes.${reason}`, v)
      }
      add('swarmUnavailable', sampleSum(text, 'shoal_agent_swarm_unavailable_total'))
      add('badPieces', sampleSum(text, 'shoal_agent_swarm_bad_pieces_total'))
      add('p2pConnections.opened', sampleSum(text, 'shoal_agent_p2p_connections_opened_total'))
      add('p2pConnections.closed', sampleSum(text, 'shoal_agent_p2p_connections_closed_total'))
      for (const [transport, v] of Object.entries(
        sampleByLabel(text, 'shoal_agent_p2p_streams_opened_total', 'transport'),
      )) {
        add(`p2pStreams.${transport}`, v)
      }
      for (const [result, v] of Object.entries(
        sampleByLabel(text, 'shoal_agent_swarm_downloads_total', 'result'),
      )) {
        add(`downloads.${result}`, v)
      }
    }),
  )
  return totals
}

/** The seed's piece counters (Prometheus text): sent, deferred by the first-copy rule, sent again by reason. */
function seedCounters(text: string): Record<string, number> {
  const counters: Record<string, number> = {
    piecesSent: sampleSum(text, 'shoal_registry_seed_pieces_sent_total'),
    piecesDeferred: sampleSum(text, 'shoal_registry_seed_pieces_deferred_total'),
  }
  for (const [reason, v] of Object.entries(
    sampleByLabel(text, 'shoal_registry_seed_pieces_repeated_total', 'reason'),
  )) {
    counters[`piecesRepeated.${reason}`] = v
  }
  return counters
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2))
  requireBinaries([
    'ip',
    'tc',
    'nsenter',
    'curl',
    'skopeo',
    '/usr/bin/docker-registry',
    ...(process.argv.includes('--containerd') ? ['containerd', 'ctr'] : []),
  ])
  if (options.cleanup) {
    const removed = await cleanupLeftovers(TESTBED_PREFIX)
    process.stdout.write(removed.length ? `removed ${removed.join(' ')}\n` : 'nothing to remove\n')
    return
  }
  const maxNodes = Math.max(...options.nodes)
  const workDir = await mkdtemp(join(tmpdir(), 'shoal-cluster-'))
  const controller = new AbortController()
  let testbed: Testbed | undefined
  let tearingDown: Promise<void> | undefined
  const teardown = (): Promise<void> => {
    tearingDown ??= (async () => {
      await testbed?.stop()
      if (!options.keep) await rm(workDir, { recursive: true, force: true })
    })()
    return tearingDown
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    progress(`${signal}: stopping every daemon and removing the namespaces`)
    controller.abort()
    void teardown().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  const rounds: RoundResult[] = []
  try {
    progress(
      `building the testbed: ${maxNodes} nodes, ${options.nodeMbit} Mbit/s nodes, ${options.originMbit} Mbit/s origin, MTU ${options.mtu}${options.queueMs === undefined ? '' : `, ${options.queueMs} ms uplink queues`}, ${downQueueLabel(options.downQueueMs ?? DEFAULT_DOWN_QUEUE_MS)} downlink queues`,
    )
    testbed = await createTestbed(
      {
        nodes: maxNodes,
        nodeMbit: options.nodeMbit,
        originMbit: options.originMbit,
        workDir,
        mtu: options.mtu,
        ...(options.tcpCongestionControl === undefined
          ? {}
          : { tcpCongestionControl: options.tcpCongestionControl }),
        ...(options.queueMs === undefined ? {} : { queueMs: options.queueMs }),
        ...(options.downQueueMs === undefined ? {} : { downQueueMs: options.downQueueMs }),
      },
      { signal: controller.signal },
    )
    const tb = testbed
    progress(
      `namespaces ${tb.topology.prefix}*, TCP congestion control ${tb.topology.tcpCongestionControl}; writing a ${options.imageBytes / 1e6} MB image of ${options.layers} layers`,
    )
    const image = await writeBenchImage({
      dir: join(workDir, 'image'),
      totalBytes: options.imageBytes,
      layers: options.layers,
      tag: TAG,
    })
    const warmUpImage =
      options.warmUpBytes > 0 && options.systems.includes('shoal')
        ? await writeBenchImage({
            dir: join(workDir, 'warm-up-image'),
            totalBytes: options.warmUpBytes,
            layers: options.layers,
            tag: TAG,
          })
        : undefined
    const distribution = options.systems.includes('distribution') ? await tb.startDistribution() : undefined
    if (distribution) {
      await skopeoCopy(image.ociRef, `docker://${distribution.host}/${REPOSITORY}:${TAG}`, {
        netns: tb.topology.origin.ns,
      })
      progress(`pushed the image to Distribution at ${distribution.url}`)
    }

    for (const n of options.nodes) {
      const bound = fluidBound({
        fileBytes: image.totalBytes,
        nodes: n,
        originMbit: options.originMbit,
        nodeUpMbit: options.nodeMbit,
        nodeDownMbit: options.nodeMbit,
      })
      progress(`N=${n}: fluid bound ${bound.seconds.toFixed(1)} s (${bound.limitedBy})`)
      const nodes = tb.topology.nodes.slice(0, n)

      // A counter read that fails leaves `what` out of the round, says so, and does not fail it.
      const orLeftOut = <T>(what: string, read: () => Promise<T>): Promise<T | undefined> =>
        read().catch((err: unknown) => {
          progress(`N=${n}: ${what} not read, left out of the round: ${(err as Error).message}`)
          return undefined
        })
      // The kernel's TCP counters of the nodes (summed) and of the origin: what was sent again.
      const readRoundTcp = (): Promise<{ nodes: TcpCounters; origin: TcpCounters } | undefined> =>
        orLeftOut('TCP counters', async () => {
          const [nodeSum, origin] = await Promise.all([
            sumTcpCounters(nodes),
            readTcpCounters(tb.topology.origin),
          ])
          return { nodes: nodeSum, origin }
        })
      // The shaping queues' counters: what the nodes' uplinks (tbf on their eth0), their
      // downlinks (htb on the switch's ports) and the origin's uplink sent and dropped.
      const readRoundQueues = (): Promise<Record<string, QdiscCounters> | undefined> =>
        orLeftOut('shaping queues', async () => {
          const sum = (list: QdiscCounters[]): QdiscCounters =>
            list.reduce(
              (a, c) => ({
                bytes: a.bytes + c.bytes,
                packets: a.packets + c.packets,
                drops: a.drops + c.drops,
                overlimits: a.overlimits + c.overlimits,
              }),
              { bytes: 0, packets: 0, drops: 0, overlimits: 0 },
            )
          const pick = (m: Map<string, QdiscCounters>, dev: string): QdiscCounters => {
            const c = m.get(dev)
            if (c === undefined) throw new Error(`no queue on ${dev}`)
            return c
          }
          const [ups, downs, origin] = await Promise.all([
            Promise.all(nodes.map(async (h) => pick(await readQdiscCounters(h.ns.name, 'eth0'), 'eth0'))),
            readQdiscCounters(tb.topology.switchNs.name),
            readQdiscCounters(tb.topology.origin.ns.name, 'eth0'),
          ])
          return {
            nodesUp: sum(ups),
            nodesDown: sum(nodes.map((h) => pick(downs, h.id))),
            originUp: pick(origin, 'eth0'),
          }
        })

      const measure = async (
        system: 'shoal' | 'distribution',
        targets: PullTarget[],
        registryBytes?: () => Promise<number>,
        servicePids: number[] = [],
      ): Promise<RoundResult> => {
        const ownCpu = (): number => cpuSeconds(servicePids)
        const own0 = ownCpu()
        const display = progressDisplay(`${system} N=${n}`)
        const tx0 = await tb.originTxBytes()
        const reg0 = registryBytes ? await registryBytes() : 0
        const [tcp0, queues0] = await Promise.all([readRoundTcp(), readRoundQueues()])
        const cpuSpeed = probeCpuSpeed()
        const cpu0 = readMachineCpuTimes()
        // With --containerd: fresh containerds (their content store would remember the
        // previous round), pulling through the agent as mirror or straight from the origin.
        const containerds = options.containerd
          ? await startNodeContainerds(
              targets.map((t) => t.host),
              join(workDir, `containerd-${system}-${n}`),
            )
          : undefined
        const first = targets[0]!
        const pullTargets = containerds
          ? await containerds.targets({
              registryHost: first.ns ?? new URL(first.url).host,
              repository: REPOSITORY,
              tag: TAG,
              ...(first.ns ? { mirrorUrl: first.url } : {}),
            })
          : targets
        let pulled = { bytes: 0, done: 0 }
        const timeline = startTimeline(
          tb,
          nodes,
          servicePids,
          () => pulled,
          (sample) => display.setLinks(sample),
        )
        const t0 = performance.now()
        let samples: TimedSample[] = []
        const { startAt, results } = await runPulls(
          pullTargets,
          { repository: REPOSITORY, reference: TAG, logDir: join(workDir, `pulls-${system}-${n}`) },
          {
            onProgress: (p) => {
              pulled = p
              display.update(p)
            },
            signal: controller.signal,
          },
        ).finally(async () => {
          // Also when the pulls fail: the sampling timer must not outlive the round.
          samples = await timeline.stop()
        })
        const wallSeconds = (performance.now() - t0) / 1000
        const cpu1 = readMachineCpuTimes()
        await containerds?.stop()
        const own1 = ownCpu()
        display.end()
        const tx1 = await tb.originTxBytes()
        const reg1 = registryBytes ? await registryBytes() : null
        const [tcp1, queues1] = await Promise.all([readRoundTcp(), readRoundQueues()])
        const round = summarizeRound({
          system,
          nodes: n,
          imageBytes: image.totalBytes,
          bound,
          results,
          originEgressBytes: tx1 - tx0,
          registryBlobBytesSent: reg1 === null ? null : reg1 - reg0,
          machineCpu:
            (cpu1.busySeconds - cpu0.busySeconds) / Math.max(1e-9, cpu1.totalSeconds - cpu0.totalSeconds),
          wallSeconds,
        })
        round.timeline = alignTimeline(samples, startAt)
        round.serviceCpuSeconds = own1 - own0
        round.cpuSpeedMBps = cpuSpeed
        if (tcp0 && tcp1) {
          round.tcp = {
            nodes: subtract(tcp1.nodes, tcp0.nodes),
            origin: subtract(tcp1.origin, tcp0.origin),
          }
          progress(
            `${system} N=${n}: TCP counters of the nodes ${JSON.stringify(round.tcp.nodes)}, of the origin ${JSON.stringify(round.tcp.origin)}`,
          )
        }
        if (queues0 && queues1) {
          round.queues = Object.fromEntries(
            Object.entries(queues1).map(([link, c]) => [link, subtract(c, queues0[link])]),
          )
          progress(`${system} N=${n}: shaping queues ${JSON.stringify(round.queues)}`)
        }
        rounds.push(round)
        progress(
          `${system} N=${n}: last node ${round.maxSeconds?.toFixed(1) ?? '—'} s (${round.ratioToBound?.toFixed(2) ?? '—'}x bound), origin sent ${(round.originEgressBytes / 1e6).toFixed(1)} MB (${round.originEgressRatio.toFixed(2)}x image), CPU ${(round.machineCpu * 100).toFixed(0)}% (registry/agents: ${round.serviceCpuSeconds?.toFixed(0)} CPU-s, pull clients: ${round.clientCpuSeconds.toFixed(0)} CPU-s, over ${round.wallSeconds.toFixed(0)} s), one core's sha256 ${cpuSpeed.toFixed(0)} MB/s before the round`,
        )
        for (const error of round.errors.slice(0, 5)) progress(`  failed: ${error}`)
        return round
      }

      if (distribution) {
        await measure(
          'distribution',
          nodes.map((host) => ({ host, url: distribution.url })),
          undefined,
          [distribution.process.pid],
        )
      }
      if (options.systems.includes('shoal')) {
        const cluster = await tb.startShoal({
          nodes: n,
          dir: join(workDir, `shoal-${n}`),
          trackerArgs: options.trackerArgs,
          agentArgs: options.agentArgs,
          registryArgs: options.registryArgs,
          onAgentStarted: (done, total) => {
            if (done === total || done % 10 === 0) progress(`agents started: ${done}/${total}`)
          },
        })
        try {
          await skopeoCopy(image.ociRef, `docker://${cluster.registry.host}/${REPOSITORY}:${TAG}`, {
            netns: tb.topology.origin.ns,
          })
          const metrics = async (): Promise<number> =>
            sampleSum(
              await curlIn(tb.topology.origin, `${cluster.registry.url}/metrics`),
              'shoal_registry_blob_bytes_sent_total',
            )
          if (warmUpImage) {
            await skopeoCopy(
              warmUpImage.ociRef,
              `docker://${cluster.registry.host}/${WARM_UP_REPOSITORY}:${TAG}`,
              {
                netns: tb.topology.origin.ns,
              },
            )
            const display = progressDisplay(`warm-up N=${n}`)
            const t0 = performance.now()
            const { results } = await runPulls(
              nodes.map((host) => ({
                host,
                url: `http://127.0.0.1:${PORTS.agent}`,
                ns: cluster.registry.host,
              })),
              { repository: WARM_UP_REPOSITORY, reference: TAG, logDir: join(workDir, `pulls-warm-up-${n}`) },
              { onProgress: (p) => display.update(p), signal: controller.signal },
            )
            display.end()
            const failed = results.filter((r) => !r.ok).length
            progress(
              `warm-up N=${n}: every node pulled a ${(warmUpImage.totalBytes / 1e6).toFixed(0)} MB image in ${((performance.now() - t0) / 1000).toFixed(1)} s${failed ? `, ${failed} failed` : ''}`,
            )
          }
          const rolePids = {
            registry: [cluster.registry.process.pid],
            tracker: [cluster.tracker.process.pid],
            agents: cluster.agents.map((a) => a.process.pid),
          }
          const idleBefore =
            options.idleSeconds > 0 ? await idleCores(rolePids, options.idleSeconds) : undefined
          // What the agents had done before the pull (connections opened while they
          // joined the cluster, say), so the totals after it can be told apart.
          const agentsBefore = await scrapeAgents(nodes)
          const counters0 = byRole(rolePids, sumCounters)
          const threads0 = byRole(rolePids, sumThreadCpu)
          const round = await measure(
            'shoal',
            nodes.map((host) => ({
              host,
              url: `http://127.0.0.1:${PORTS.agent}`,
              ns: cluster.registry.host,
            })),
            metrics,
            [cluster.registry, cluster.tracker, ...cluster.agents].map((service) => service.process.pid),
          )
          const counters1 = byRole(rolePids, sumCounters)
          const threads1 = byRole(rolePids, sumThreadCpu)
          round.serviceThreadCpuByRole = Object.fromEntries(
            Object.entries(threads1).map(([role, t]) => [
              role,
              Object.fromEntries(
                Object.entries(subtract(t, threads0[role])).map(([name, v]) => [name, Number(v.toFixed(2))]),
              ),
            ]),
          )
          progress(
            `shoal N=${n}: CPU-s by thread during the pulls ${JSON.stringify(round.serviceThreadCpuByRole)}`,
          )
          round.serviceCountersByRole = Object.fromEntries(
            Object.entries(counters1).map(([role, c]) => [role, subtract(c, counters0[role])]),
          )
          progress(
            `shoal N=${n}: counters by role during the pulls ${JSON.stringify(round.serviceCountersByRole)}`,
          )
          round.serviceCpuByRole = Object.fromEntries(
            Object.entries(round.serviceCountersByRole).map(([role, c]) => [
              role,
              (c.userSeconds ?? 0) + (c.systemSeconds ?? 0),
            ]),
          )
          if (idleBefore) {
            round.idleCores = {
              seconds: options.idleSeconds,
              before: idleBefore,
              after: await idleCores(rolePids, options.idleSeconds),
            }
            progress(`shoal N=${n}: idle cores before/after the pulls ${JSON.stringify(round.idleCores)}`)
          }
          progress(`shoal N=${n}: CPU-s by role during the pulls ${JSON.stringify(round.serviceCpuByRole)}`)
          round.agentsBeforePull = agentsBefore
          round.agents = await scrapeAgents(nodes)
          round.seed = seedCounters(
            await curlIn(tb.topology.origin, `${cluster.registry.url}/metrics`).catch(() => ''),
          )
          progress(`shoal N=${n}: seed's counters ${JSON.stringify(round.seed)}`)
          progress(`shoal N=${n}: agents' counters ${JSON.stringify(round.agents)}`)
          progress(`shoal N=${n}: agents' counters before the pull ${JSON.stringify(round.agentsBeforePull)}`)
        } finally {
          await cluster.stop()
        }
      }
    }

    const table = formatRounds(rounds)
    process.stdout.write(`\n${table}\n\n`)
    const verdicts = judgeTargets(rounds)
    for (const v of verdicts)
      process.stdout.write(`${v.pass ? 'PASS' : 'FAIL'}  ${v.target}: ${v.measured}\n`)
    process.stdout.write(
      `jumbo frames: MTU ${options.mtu} on every veth; image ${(image.totalBytes / 1e6).toFixed(1)} MB in ${options.layers} layers; nodes ${options.nodeMbit} Mbit/s up and down; origin ${options.originMbit} Mbit/s up\n`,
    )
    const result = {
      benchmark: 'cluster',
      date: new Date().toISOString(),
      system: systemInfo(),
      config: {
        nodes: options.nodes,
        nodeMbit: options.nodeMbit,
        originMbit: options.originMbit,
        imageBytes: image.totalBytes,
        layers: options.layers,
        mtu: options.mtu,
        tcpCongestionControl: tb.topology.tcpCongestionControl,
        queueMs: options.queueMs ?? null,
        downQueueMs: options.downQueueMs ?? DEFAULT_DOWN_QUEUE_MS,
        trackerArgs: options.trackerArgs,
        agentArgs: options.agentArgs,
        registryArgs: options.registryArgs,
        warmUpBytes: options.warmUpBytes,
      },
      rounds,
      targets: verdicts,
    }
    const jsonPath = await writeJsonResult(options.jsonPath, result)
    const svgPath = jsonPath.replace(/\.json$/, '') + '.svg'
    await writeFile(svgPath, renderPlots(rounds))
    process.stdout.write(`results: ${jsonPath}\nplot: ${svgPath}\n`)
    if (options.keep) process.stdout.write(`logs: ${workDir}\n`)
  } finally {
    await teardown()
  }
}

main().catch((err: unknown) => {
  process.stderr.write(
    `bench:cluster failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  )
  process.exitCode = 1
})
