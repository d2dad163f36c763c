/**
 * A shoal cluster in one process for the swarm suites: a seed registry
 * (createRegistryNode, seed enabled), a tracker (createTrackerNode) and agents
 * (createAgentNode with the default swarm), each on its own loopback HTTP server and
 * libp2p node, with their own prom-client registries so metrics can be asserted per part.
 */
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import type { Digest } from '../../protocol/src/index.js'
import { createRegistryClient } from '../../protocol/src/registry-client/index.js'
import { type AgentConfigInput, parseAgentConfig } from '../../peer-agent/src/config.js'
import { type AgentNode, createAgentNode, type SwarmFactory } from '../../peer-agent/src/main.js'
import type { AgentSwarm } from '../../peer-agent/src/swarm/index.js'
import { parseRegistryConfig } from '../../registry/src/config.js'
import { createRegistryNode } from '../../registry/src/main.js'
import { parseTrackerConfig, type TrackerConfigInput } from '../../tracker/src/config.js'
import { createTrackerNode } from '../../tracker/src/main.js'

export const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? 'silent' })

/** An HTTP server on a free loopback port. */
export interface Served {
  url: string
  host: string
  close(): Promise<void>
}

/** Serves `handler` on 127.0.0.1:0. */
export async function serve(handler: http.RequestListener): Promise<Served> {
  const server = http.createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** The value of one sample of a metric, 0 when absent; labels must all match. */
export async function metricValue(
  metrics: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = await metrics.getSingleMetric(name)?.get()
  let sum = 0
  for (const v of metric?.values ?? []) {
    if (Object.entries(labels).every(([k, x]) => v.labels[k] === x)) sum += v.value
  }
  return sum
}

/** Polls `check` until it holds; throws after `timeoutMs`. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** A running part with its metrics. */
export interface Part {
  url: string
  host: string
  metrics: Registry
  stop(): Promise<void>
}

/** A running agent. */
export interface AgentPart extends Part {
  node: AgentNode
  dataDir: string
  swarm: AgentSwarm
}

/** Options of a cluster. */
export interface ClusterInit {
  tracker?: TrackerConfigInput | false
  /** Seed settings of the registry (trackerUrl is filled in). */
  seed?: Record<string, unknown>
}

/** A registry, a tracker and agents under one temp dir. */
export interface Cluster {
  dir: string
  registry: Part
  tracker: Part | undefined
  agents: AgentPart[]
  /** Starts an agent (swarm on) pointed at the registry and tracker. */
  addAgent(config?: AgentConfigInput, swarm?: SwarmFactory): Promise<AgentPart>
  /** Pushes a blob to the seed and waits until its piece map is served. */
  push(repository: string, bytes: Uint8Array, digest: Digest): Promise<void>
  /** GETs a blob through an agent's mirror endpoint; resolves to its sha256 digest and size. */
  pull(agent: AgentPart, repository: string, digest: Digest): Promise<{ digest: string; size: number }>
  /** Stops everything started (agents, registry, tracker) and removes the temp dir. */
  stop(): Promise<void>
}

/** Starts a registry with its seed and a tracker. */
export async function startCluster(init: ClusterInit = {}): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-swarm-'))
  const stops: Array<() => Promise<void>> = []
  let tracker: Part | undefined
  if (init.tracker !== false) {
    const metrics = new Registry()
    const node = await createTrackerNode(
      parseTrackerConfig({ announceIntervalMs: 1000, peerTtlMs: 10_000, ...(init.tracker ?? {}) }),
      { logger, metrics },
    )
    await node.start()
    const served = await serve(node.app.callback())
    let stopped = false
    tracker = {
      ...served,
      metrics,
      async stop() {
        if (stopped) return
        stopped = true
        await served.close()
        await node.stop()
      },
    }
    stops.push(tracker.stop)
  }
  const registryMetrics = new Registry()
  const registryNode = await createRegistryNode(
    parseRegistryConfig({
      storageDriver: 'filesystem',
      gcIntervalMs: 0,
      dataDir: join(dir, 'registry'),
      seed: { ...(tracker ? { trackerUrl: tracker.url } : {}), ...(init.seed ?? {}) },
    }),
    { logger, metrics: registryMetrics },
  )
  await registryNode.start()
  const registryServed = await serve(registryNode.app.callback())
  let registryStopped = false
  const registry: Part = {
    ...registryServed,
    metrics: registryMetrics,
    async stop() {
      if (registryStopped) return
      registryStopped = true
      await registryServed.close()
      await registryNode.stop()
    },
  }
  stops.push(registry.stop)
  const agents: AgentPart[] = []
  let agentCount = 0

  return {
    dir,
    registry,
    tracker,
    agents,

    async addAgent(config = {}, swarm) {
      const metrics = new Registry()
      const dataDir = (config.dataDir as string | undefined) ?? join(dir, `agent-${agentCount++}`)
      const node = await createAgentNode(
        parseAgentConfig({
          registryUrl: registry.url,
          ...(tracker ? { trackerUrl: tracker.url } : {}),
          swarm: true,
          swarmStallTimeoutMs: 15_000,
          dhtTimeoutMs: 3_000,
          logLevel: 'silent',
          ...config,
          dataDir,
        }),
        { logger, metrics, ...(swarm ? { swarm } : {}) },
      )
      await node.start()
      const served = await serve(node.app.callback())
      let stopped = false
      const agent: AgentPart = {
        ...served,
        metrics,
        node,
        dataDir,
        swarm: node.swarm as AgentSwarm,
        async stop() {
          if (stopped) return
          stopped = true
          await served.close()
          await node.stop()
        },
      }
      agents.push(agent)
      stops.push(agent.stop)
      return agent
    },

    async push(repository, bytes, digest) {
      const client = createRegistryClient({ url: registry.url })
      await client.uploadBlob(repository, bytes)
      await waitUntil(async () => {
        const res = await fetch(`${registry.url}/shoal/v1/piece-maps/${digest}`)
        await res.body?.cancel()
        return res.ok
      }, `the piece map of ${digest}`)
    },

    async pull(agent, repository, digest) {
      const res = await fetch(`${agent.url}/v2/${repository}/blobs/${digest}?ns=${registry.host}`)
      if (!res.ok || res.body === null) throw new Error(`pull through ${agent.url} answered ${res.status}`)
      const hash = createHash('sha256')
      let size = 0
      for await (const chunk of res.body) {
        hash.update(chunk)
        size += chunk.byteLength
      }
      return { digest: `sha256:${hash.digest('hex')}`, size }
    },

    async stop() {
      // Agents first (their stopped announces reach a live tracker), then the seed, then the tracker.
      for (const stop of stops.reverse()) {
        try {
          await stop()
        } catch {}
      }
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** Prints each agent's byte and piece counters (set SHOAL_SWARM_DEBUG to see them). */
export async function debugAgents(agents: AgentPart[]): Promise<void> {
  if (!process.env.SHOAL_SWARM_DEBUG) return
  for (const agent of agents) {
    const row: Record<string, number> = {}
    for (const s of ['peer', 'seed', 'upstream', 'cache']) {
      row[`blob_${s}`] = await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: s })
      row[`pieces_${s}`] = await metricValue(agent.metrics, 'shoal_agent_swarm_pieces_total', { source: s })
    }
    row.unavailable = await metricValue(agent.metrics, 'shoal_agent_swarm_unavailable_total')
    row.failed = await metricValue(agent.metrics, 'shoal_agent_swarm_downloads_total', { result: 'failed' })
    row.bad = await metricValue(agent.metrics, 'shoal_agent_swarm_bad_pieces_total')
    console.log(agent.swarm.peerId.slice(-6), JSON.stringify(row))
  }
}
