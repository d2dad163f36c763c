/**
 * Preheat end to end in one process: a seed registry, a tracker with the admin API and
 * agents. A job for all agents fills every agent's cache with the image's blobs (the
 * right bytes) while the seed sends about one copy; a cancelled job stops its agents'
 * downloads; a job for a missing image fails with the reason.
 */
import { createHash } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { Digest } from '../../protocol/src/index.js'
import type { PreheatJob } from '../../protocol/src/preheat-api.js'
import { createRegistryClient } from '../../protocol/src/registry-client/index.js'
import { blobFixture } from '../../protocol/src/testing/fixtures.js'
import { type Cluster, metricValue, startCluster, waitUntil } from './swarm-cluster.js'

const TOKEN = 'preheat-test-token-0123456789'
const MiB = 1024 * 1024

async function pushImage(cluster: Cluster, repository: string, layerSizes: number[], seed: number) {
  const layers = layerSizes.map((size, i) => blobFixture(size, seed + i))
  const configBytes = new TextEncoder().encode(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }))
  const configDigest = `sha256:${createHash('sha256').update(configBytes).digest('hex')}` as Digest
  await cluster.push(repository, configBytes, configDigest)
  for (const layer of layers) await cluster.push(repository, layer.bytes, layer.digest)
  const manifest = new TextEncoder().encode(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: configBytes.length,
      },
      layers: layers.map((l) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: l.digest,
        size: l.size,
      })),
    }),
  )
  await createRegistryClient({ url: cluster.registry.url }).putManifest(
    repository,
    '1',
    manifest,
    'application/vnd.oci.image.manifest.v1+json',
  )
  const blobs = [
    { digest: configDigest, size: configBytes.length },
    ...layers.map((l) => ({ digest: l.digest, size: l.size })),
  ]
  return { blobs, size: blobs.reduce((s, b) => s + b.size, 0) }
}

async function admin(cluster: Cluster, method: string, path: string, body?: unknown): Promise<PreheatJob> {
  const res = await fetch(`${cluster.tracker!.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  })
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`)
  return (await res.json()) as PreheatJob
}

async function waitForJob(cluster: Cluster, id: string, done: (j: PreheatJob) => boolean, what: string) {
  let job: PreheatJob | undefined
  await waitUntil(
    async () => {
      job = await admin(cluster, 'GET', `/v1/preheat/${id}`)
      return done(job)
    },
    what,
    120_000,
  )
  return job!
}

async function heartbeatAgents(cluster: Cluster, count: number): Promise<void> {
  await waitUntil(
    async () => (await metricValue(cluster.tracker!.metrics, 'shoal_tracker_agents')) >= count,
    `${count} agents to send heartbeats`,
  )
}

describe('preheat through the swarm', () => {
  let cluster: Cluster | undefined
  afterEach(async () => {
    await cluster?.stop()
    cluster = undefined
  })

  it('fills every agent cache with the right bytes while the seed sends about one copy', async () => {
    cluster = await startCluster({
      tracker: { originSlotsPerSwarm: 1, preheat: { adminToken: TOKEN, heartbeatIntervalMs: 200 } },
    })
    const image = await pushImage(cluster, 'team/app', [8 * MiB, 4 * MiB], 11)
    const agents = await Promise.all(Array.from({ length: 5 }, () => cluster!.addAgent()))
    await heartbeatAgents(cluster, 5)
    const sentBefore = await metricValue(cluster.registry.metrics, 'shoal_registry_blob_bytes_sent_total')

    const created = await admin(cluster, 'POST', '/v1/preheat', {
      image: `${cluster.registry.host}/team/app:1`,
    })
    const job = await waitForJob(
      cluster,
      created.id,
      (j) => j.state !== 'pending' && j.state !== 'running',
      'the job',
    )
    expect(job.reason).toBeUndefined()
    expect(job.state).toBe('succeeded')
    expect(job.targets.map((t) => t.id).sort()).toEqual(agents.map((a) => a.swarm.peerId).sort())
    expect(job.progress).toMatchObject({ targets: 5, targetsDone: 5, bytesDone: 5 * image.size })

    const seedSent =
      (await metricValue(cluster.registry.metrics, 'shoal_registry_blob_bytes_sent_total')) - sentBefore
    expect(seedSent).toBeGreaterThan(0)
    expect(seedSent).toBeLessThanOrEqual(1.5 * image.size)

    // Every cache holds every blob; reading them back through the mirror comes from the cache.
    for (const agent of agents) {
      for (const blob of image.blobs) {
        expect(agent.node.cache.has(blob.digest)).toBe(true)
        expect(await cluster.pull(agent, 'team/app', blob.digest)).toEqual({
          digest: blob.digest,
          size: blob.size,
        })
      }
      expect(await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'upstream' })).toBe(0)
      expect(await metricValue(agent.metrics, 'shoal_agent_preheat_tasks_total', { result: 'done' })).toBe(3)
    }
  }, 180_000)

  it('stops the downloads of a cancelled job', async () => {
    // A slow seed keeps the job running long enough to cancel it mid-way.
    cluster = await startCluster({
      tracker: { originSlotsPerSwarm: 1, preheat: { adminToken: TOKEN, heartbeatIntervalMs: 100 } },
      seed: { uploadBytesPerSecond: 1 * MiB },
    })
    const image = await pushImage(cluster, 'team/slow', [16 * MiB], 21)
    const agents = await Promise.all(
      Array.from({ length: 2 }, () => cluster!.addAgent({ swarmStallTimeoutMs: 60_000 })),
    )
    await heartbeatAgents(cluster, 2)
    const created = await admin(cluster, 'POST', '/v1/preheat', {
      image: `${cluster.registry.host}/team/slow:1`,
    })
    const c = cluster
    // Wait until an agent works on the big layer, then cancel.
    const layer = image.blobs[1]!.digest
    await waitUntil(
      async () => (await metricValue(c.registry.metrics, 'shoal_registry_blob_bytes_sent_total')) >= 2 * MiB,
      'the seed to start sending the layer',
      60_000,
    )
    const cancelled = await admin(cluster, 'DELETE', `/v1/preheat/${created.id}`)
    expect(cancelled.state).toBe('cancelled')
    expect(cancelled.reason).toBe('cancelled by an admin')
    // The agents drop the task at their next heartbeat.
    await waitUntil(
      async () => {
        let active = 0
        for (const a of agents)
          active += await metricValue(a.metrics, 'shoal_agent_preheat_tasks_total', { result: 'cancelled' })
        return active >= 1
      },
      'an agent to abort its cancelled task',
      30_000,
    )
    const after = await admin(cluster, 'GET', `/v1/preheat/${created.id}`)
    expect(after.state).toBe('cancelled')
    expect(after.targets.every((t) => t.state === 'cancelled' || t.state === 'done')).toBe(true)
    expect(agents.some((a) => !a.node.cache.has(layer))).toBe(true)
  }, 180_000)

  it('fails a job for a missing image with the reason', async () => {
    cluster = await startCluster({ tracker: { preheat: { adminToken: TOKEN, heartbeatIntervalMs: 200 } } })
    await cluster.addAgent()
    await heartbeatAgents(cluster, 1)
    const created = await admin(cluster, 'POST', '/v1/preheat', {
      image: `${cluster.registry.host}/team/none:1`,
    })
    const job = await waitForJob(cluster, created.id, (j) => j.state === 'failed', 'the job to fail')
    expect(job.reason).toBe(`image not found: team/none:1 on ${cluster.registry.url}`)
  }, 60_000)
})
