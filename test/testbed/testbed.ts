/**
 * The cluster testbed as one object: the shaped namespace network ({@link createTopology},
 * {@link applyShaping}) plus the daemons on it, every one of them tracked so that
 * `stop()` ends them by PID and removes every namespace, also after a failure halfway.
 */
import { join } from 'node:path'
import { applyShaping, readAllLinkCounters, readLinkCounters, type ShapingPlan } from './shaping.js'
import {
  startAgent,
  startDistribution,
  startSeedRegistry,
  startTracker,
  type TestbedService,
} from './services.js'
import { createTopology, type TestbedHost, type Topology } from './topology.js'

/** Options of {@link createTestbed}. */
export interface TestbedInit extends ShapingPlan {
  nodes: number
  /** Folder for logs and data of every daemon. */
  workDir: string
  /** Per-run namespace prefix (see topology.ts). */
  prefix?: string
  mtu?: number
  /** TCP congestion control of every host (see TopologyInit); unset keeps the machine's. */
  tcpCongestionControl?: string
}

/** The shoal side of a run: seed registry, tracker and one agent per node used. */
export interface ShoalCluster {
  registry: TestbedService
  tracker: TestbedService
  agents: TestbedService[]
  /** Stops the agents, the registry and the tracker. Safe to call twice. */
  stop(): Promise<void>
}

/** Options of {@link Testbed.startShoal}. */
export interface StartShoalInit {
  /** Run agents on the first `nodes` nodes. */
  nodes: number
  /** Folder for this cluster's logs and data. */
  dir: string
  registryArgs?: string[]
  trackerArgs?: string[]
  agentArgs?: string[]
  onAgentStarted?: (started: number, total: number) => void
}

/** A running testbed. */
export interface Testbed {
  readonly topology: Topology
  readonly plan: ShapingPlan
  /** Bytes the origin has sent on its uplink so far. */
  originTxBytes(): Promise<number>
  /**
   * Bytes the switch has sent down to `hosts` and received up from them so far, summed
   * (their veths' far ends, all protocols, retransmissions included). One `ip` call.
   */
  hostLinkBytes(hosts: readonly TestbedHost[]): Promise<{ downBytes: number; upBytes: number }>
  /** Starts the baseline Distribution on the origin (data under `<workDir>/distribution`). */
  startDistribution(): Promise<TestbedService>
  /** Starts tracker, seed registry and agents; stops what it started if one fails. */
  startShoal(init: StartShoalInit): Promise<ShoalCluster>
  /** Stops every daemon started and removes every namespace. Safe to call twice. */
  stop(): Promise<void>
}

async function inBatches<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  let failure: unknown
  const worker = async (): Promise<void> => {
    while (next < items.length && failure === undefined) {
      const i = next++
      try {
        results[i] = await task(items[i]!)
      } catch (err) {
        failure ??= err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (failure !== undefined) throw failure
  return results
}

/** Builds the network, shapes it and returns the testbed. Needs root, iproute2 and tc. */
export async function createTestbed(
  init: TestbedInit,
  options: { signal?: AbortSignal } = {},
): Promise<Testbed> {
  const topology = await createTopology(
    {
      nodes: init.nodes,
      prefix: init.prefix,
      mtu: init.mtu,
      ...(init.tcpCongestionControl === undefined ? {} : { tcpCongestionControl: init.tcpCongestionControl }),
    },
    options,
  )
  const plan: ShapingPlan = {
    nodeMbit: init.nodeMbit,
    originMbit: init.originMbit,
    ...(init.queueMs === undefined ? {} : { queueMs: init.queueMs }),
    ...(init.downQueueMs === undefined ? {} : { downQueueMs: init.downQueueMs }),
  }
  const live = new Set<TestbedService>()
  const track = (service: TestbedService): TestbedService => {
    live.add(service)
    const stop = service.stop
    return {
      ...service,
      stop: async () => {
        live.delete(service)
        await stop()
      },
    }
  }
  let stopped = false
  const stopAll = async (): Promise<void> => {
    await Promise.all([...live].map((s) => s.stop().catch(() => {})))
    live.clear()
  }
  try {
    await applyShaping(topology, plan)
  } catch (err) {
    await topology.destroy()
    throw err
  }
  return {
    topology,
    plan,
    originTxBytes: async () => (await readLinkCounters(topology.origin.ns.name)).txBytes,
    hostLinkBytes: async (hosts) => {
      const counters = await readAllLinkCounters(topology.switchNs.name)
      let downBytes = 0
      let upBytes = 0
      for (const host of hosts) {
        const c = counters.get(host.id)
        if (!c) throw new Error(`no switch port for ${host.id}`)
        downBytes += c.txBytes
        upBytes += c.rxBytes
      }
      return { downBytes, upBytes }
    },
    startDistribution: async () =>
      track(await startDistribution(topology.origin, join(init.workDir, 'distribution'))),
    startShoal: async (shoal) => {
      if (shoal.nodes > topology.nodes.length) throw new RangeError(`only ${topology.nodes.length} nodes`)
      const started: TestbedService[] = []
      const stopCluster = async (): Promise<void> => {
        // Agents first (they announce their leaving), then the seed and the tracker.
        const agents = started.filter((s) => s.process.name.startsWith('agent-'))
        await Promise.all(agents.map((s) => s.stop().catch(() => {})))
        for (const s of started.filter((x) => !agents.includes(x)).reverse()) await s.stop().catch(() => {})
        started.length = 0
      }
      try {
        const tracker = track(
          await startTracker(topology.tracker, join(shoal.dir, 'tracker'), shoal.trackerArgs),
        )
        started.push(tracker)
        const registry = track(
          await startSeedRegistry(
            topology.origin,
            join(shoal.dir, 'registry'),
            tracker.url,
            shoal.registryArgs,
          ),
        )
        started.push(registry)
        let count = 0
        // Starting Node processes is CPU-heavy; a few at once keeps two cores from thrashing.
        const agents = await inBatches(topology.nodes.slice(0, shoal.nodes), 4, async (host) => {
          const agent = track(
            await startAgent(host, join(shoal.dir, `agent-${host.id}`), {
              registryUrl: registry.url,
              trackerUrl: tracker.url,
              extraArgs: shoal.agentArgs,
            }),
          )
          started.push(agent)
          shoal.onAgentStarted?.(++count, shoal.nodes)
          return agent
        })
        return { registry, tracker, agents, stop: stopCluster }
      } catch (err) {
        await stopCluster()
        throw err
      }
    },
    stop: async () => {
      if (stopped) return
      stopped = true
      await stopAll()
      await topology.destroy()
    },
  }
}
