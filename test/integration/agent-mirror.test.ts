/**
 * The agent's mirror endpoint in one process against a real shoal seed registry
 * (createRegistryNode) and real CNCF Distribution upstreams: how `ns` names the
 * upstream, tags re-resolved and digests cached, blobs cached after the first pull and
 * counted by source, byte ranges, upstream errors passed through with their status,
 * damaged upstream bodies never cached nor handed over whole, and the
 * private-repository gate against Distribution with htpasswd auth.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { BlobUnknownError, type Digest, digestOf, MEDIA_TYPES } from '../../protocol/src/index.js'
import { createRegistryClient } from '../../protocol/src/registry-client/index.js'
import { blobFixture } from '../../protocol/src/testing/fixtures.js'
import { type AgentConfigInput, parseAgentConfig } from '../../peer-agent/src/config.js'
import { type AgentNode, createAgentNode, type SwarmFactory } from '../../peer-agent/src/main.js'
import { parseRegistryConfig } from '../../registry/src/config.js'
import { createRegistryNode } from '../../registry/src/main.js'
import {
  type CountingProxy,
  createTokenIssuer,
  type DistributionInstance,
  startCountingProxy,
  startDistribution,
  startTokenServer,
} from '../helpers/distribution.js'
import { type Served, serve } from './swarm-cluster.js'

const logger = pino({ level: 'silent' })

interface TestImage {
  manifest: Buffer
  digest: Digest
  config: { bytes: Uint8Array; digest: Digest }
  layer: { bytes: Uint8Array; digest: Digest }
}

function imageFixture(seed: number, layerBytes = 256 * 1024): TestImage {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }))
  const layer = blobFixture(layerBytes, seed)
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: digestOf(config), size: config.byteLength },
      layers: [{ mediaType: MEDIA_TYPES.ociLayerGzip, digest: layer.digest, size: layer.size }],
    }),
  )
  return {
    manifest,
    digest: digestOf(manifest),
    config: { bytes: config, digest: digestOf(config) },
    layer: { bytes: layer.bytes, digest: layer.digest },
  }
}

async function pushImage(
  url: string,
  repository: string,
  tag: string,
  image: TestImage,
  credentials: { username?: string; password?: string } = {},
): Promise<void> {
  const client = createRegistryClient({ url, ...credentials })
  await client.uploadBlob(repository, image.config.bytes)
  await client.uploadBlob(repository, image.layer.bytes)
  await client.putManifest(repository, tag, image.manifest, MEDIA_TYPES.ociManifest)
}

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`
}

/** The value of one sample of a metric in Prometheus text, 0 when absent. */
async function metricValue(metrics: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = await metrics.getSingleMetric(name)?.get()
  const sample = metric?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))
  return sample?.value ?? 0
}

async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

const ACCEPT = [MEDIA_TYPES.ociManifest, MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifest].join(', ')

describe('agent mirror endpoint', () => {
  const stops: Array<() => Promise<void>> = []
  let dir: string
  let seed: Served
  let hub: DistributionInstance
  let agent: { node: AgentNode; url: string; metrics: Registry }

  async function startAgent(config: AgentConfigInput, swarm?: SwarmFactory): Promise<typeof agent> {
    const metrics = new Registry()
    const node = await createAgentNode(
      parseAgentConfig({ dataDir: join(dir, `agent-${stops.length}`), registryUrl: seed.url, ...config }),
      { logger, metrics, ...(swarm === undefined ? {} : { swarm }) },
    )
    await node.start()
    const served = await serve(node.app.callback())
    stops.push(async () => {
      await served.close()
      await node.stop()
    })
    return { node, url: served.url, metrics }
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-agent-mirror-'))
    stops.push(() => rm(dir, { recursive: true, force: true }))
    const seedNode = await createRegistryNode(
      parseRegistryConfig({ storageDriver: 'memory', gcIntervalMs: 0, dataDir: join(dir, 'seed') }),
      { logger, metrics: new Registry() },
    )
    await seedNode.start()
    seed = await serve(seedNode.app.callback())
    stops.push(async () => {
      await seed.close()
      await seedNode.stop()
    })
    hub = await startDistribution()
    stops.push(() => hub.stop())
    agent = await startAgent({ upstreams: [{ host: 'docker.io', url: hub.url }] })
  })

  afterEach(async () => {
    for (const stop of stops.splice(0).reverse()) await stop()
  })

  it('answers GET /v2/ and refuses pushes and unknown paths with OCI errors', async () => {
    const base = await fetch(`${agent.url}/v2/`)
    expect(base.status).toBe(200)
    expect(base.headers.get('docker-distribution-api-version')).toBe('registry/2.0')
    const put = await fetch(`${agent.url}/v2/x/manifests/latest`, { method: 'PUT', body: '{}' })
    expect(put.status).toBe(405)
    expect(put.headers.get('allow')).toBe('GET, HEAD')
    expect(((await put.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('UNSUPPORTED')
    const unknown = await fetch(`${agent.url}/v2/x/tags/list`)
    expect(unknown.status).toBe(404)
    await unknown.arrayBuffer()
    for (const [path, code] of [
      ['/v2/UPPER/manifests/latest', 'NAME_INVALID'],
      ['/v2/x/manifests/bad:tag', 'DIGEST_INVALID'],
      ['/v2/x/manifests/-tag', 'TAG_INVALID'],
      ['/v2/x/blobs/sha256:1234', 'DIGEST_INVALID'],
      ['/v2/x/blobs/md5:abc', 'DIGEST_INVALID'],
      ['/v2/a%2F..%2Fetc/blobs/sha256:x', 'NAME_INVALID'],
    ] as const) {
      const res = await fetch(`${agent.url}${path}`)
      expect(res.status, path).toBe(400)
      expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, path).toBe(code)
    }
    const badNs = await fetch(`${agent.url}/v2/x/manifests/latest?ns=${encodeURIComponent('a b')}`)
    expect(badNs.status).toBe(400)
    await badNs.arrayBuffer()
  })

  it('maps ns=<seed host> and unlisted hosts to the seed, and no ns to docker.io with library/', async () => {
    const onSeed = imageFixture(1)
    const onHub = imageFixture(2)
    await pushImage(seed.url, 'team/app', 'v1', onSeed)
    await pushImage(hub.url, 'library/busybox', 'v1', onHub)

    const viaSeedHost = await fetch(`${agent.url}/v2/team/app/manifests/v1?ns=${seed.host}`, {
      headers: { accept: ACCEPT },
    })
    expect(viaSeedHost.status).toBe(200)
    expect(viaSeedHost.headers.get('docker-content-digest')).toBe(onSeed.digest)
    expect(Buffer.from(await viaSeedHost.arrayBuffer()).equals(onSeed.manifest)).toBe(true)

    const viaOtherHost = await fetch(`${agent.url}/v2/team/app/manifests/v1?ns=registry.example.com`)
    expect(viaOtherHost.headers.get('docker-content-digest')).toBe(onSeed.digest)
    await viaOtherHost.arrayBuffer()

    // Docker's registry-mirrors send no ns and mean Docker Hub; `busybox` is `library/busybox`.
    for (const path of ['/v2/busybox/manifests/v1', '/v2/library/busybox/manifests/v1?ns=docker.io']) {
      const res = await fetch(`${agent.url}${path}`, { headers: { accept: ACCEPT } })
      expect(res.status, path).toBe(200)
      expect(res.headers.get('docker-content-digest')).toBe(onHub.digest)
      expect(Buffer.from(await res.arrayBuffer()).equals(onHub.manifest)).toBe(true)
    }
    // The seed does not have it under docker.io's name and Docker Hub does not have the seed's.
    const missing = await fetch(`${agent.url}/v2/team/app/manifests/v1`)
    expect(missing.status).toBe(404)
    expect(((await missing.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe(
      'MANIFEST_UNKNOWN',
    )

    const blob = await fetch(`${agent.url}/v2/busybox/blobs/${onHub.layer.digest}`)
    expect(blob.status).toBe(200)
    expect(blob.headers.get('docker-content-digest')).toBe(onHub.layer.digest)
    expect(digestOf(new Uint8Array(await blob.arrayBuffer()))).toBe(onHub.layer.digest)
    const seedBlob = await fetch(`${agent.url}/v2/team/app/blobs/${onSeed.layer.digest}?ns=${seed.host}`)
    expect(digestOf(new Uint8Array(await seedBlob.arrayBuffer()))).toBe(onSeed.layer.digest)
    expect(await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'upstream' })).toBe(
      onHub.layer.bytes.byteLength,
    )
    expect(await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'seed' })).toBe(
      onSeed.layer.bytes.byteLength,
    )
  })

  it('resolves tags upstream every time and serves manifests by digest from its cache', async () => {
    const first = imageFixture(3)
    const second = imageFixture(4)
    await pushImage(hub.url, 'library/app', 'latest', first)

    const head1 = await fetch(`${agent.url}/v2/library/app/manifests/latest?ns=docker.io`, {
      method: 'HEAD',
      headers: { accept: ACCEPT },
    })
    expect(head1.status).toBe(200)
    expect(head1.headers.get('docker-content-digest')).toBe(first.digest)
    expect(Number(head1.headers.get('content-length'))).toBe(first.manifest.byteLength)
    const byDigest = await fetch(`${agent.url}/v2/library/app/manifests/${first.digest}?ns=docker.io`)
    expect(Buffer.from(await byDigest.arrayBuffer()).equals(first.manifest)).toBe(true)

    // A re-push moves the tag: the mirror must follow at once.
    await pushImage(hub.url, 'library/app', 'latest', second)
    const head2 = await fetch(`${agent.url}/v2/library/app/manifests/latest?ns=docker.io`, { method: 'HEAD' })
    expect(head2.headers.get('docker-content-digest')).toBe(second.digest)
    const get2 = await fetch(`${agent.url}/v2/library/app/manifests/latest?ns=docker.io`, {
      headers: { accept: ACCEPT },
    })
    expect(get2.headers.get('docker-content-digest')).toBe(second.digest)
    expect(Buffer.from(await get2.arrayBuffer()).equals(second.manifest)).toBe(true)

    // With the upstream gone, digests are still served; a tag cannot be resolved.
    await hub.halt()
    for (const image of [first, second]) {
      const res = await fetch(`${agent.url}/v2/library/app/manifests/${image.digest}?ns=docker.io`)
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toBe(MEDIA_TYPES.ociManifest)
      expect(Buffer.from(await res.arrayBuffer()).equals(image.manifest)).toBe(true)
    }
    const tag = await fetch(`${agent.url}/v2/library/app/manifests/latest?ns=docker.io`)
    expect(tag.status).toBe(502)
    await tag.arrayBuffer()
  })

  it('caches a blob after its first pull and serves it from the cache, counted as such', async () => {
    const image = imageFixture(5, 1024 * 1024 + 17)
    await pushImage(hub.url, 'library/big', 'v1', image)
    const url = `${agent.url}/v2/library/big/blobs/${image.layer.digest}?ns=docker.io`
    const size = image.layer.bytes.byteLength

    const head = await fetch(url, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(Number(head.headers.get('content-length'))).toBe(size)
    expect(head.headers.get('docker-content-digest')).toBe(image.layer.digest)

    const first = await fetch(url)
    expect(Number(first.headers.get('content-length'))).toBe(size)
    expect(digestOf(new Uint8Array(await first.arrayBuffer()))).toBe(image.layer.digest)
    await waitUntil(() => agent.node.cache.has(image.layer.digest), 'the blob to be cached')

    await hub.halt()
    const second = await fetch(url)
    expect(second.status).toBe(200)
    expect(digestOf(new Uint8Array(await second.arrayBuffer()))).toBe(image.layer.digest)
    const head2 = await fetch(url, { method: 'HEAD' })
    expect(Number(head2.headers.get('content-length'))).toBe(size)

    expect(await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'upstream' })).toBe(
      size,
    )
    expect(await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'cache' })).toBe(size)
    expect(
      await metricValue(agent.metrics, 'shoal_agent_http_requests_total', {
        method: 'GET',
        route: '/v2/<name>/blobs/<digest>',
        status: '200',
      }),
    ).toBe(2)
  })

  it('asks the swarm slot before the upstream, and the upstream for what the swarm lacks', async () => {
    const inSwarm = imageFixture(11)
    const notInSwarm = imageFixture(12)
    await pushImage(hub.url, 'library/swarmed', 'v1', inSwarm)
    await pushImage(hub.url, 'library/swarmed', 'v2', notInSwarm)
    const lifecycle: string[] = []
    const withSwarm = await startAgent({ upstreams: [{ host: 'docker.io', url: hub.url }] }, ({ cache }) => ({
      async start() {
        lifecycle.push(`start ${typeof cache.has}`)
      },
      async stop() {
        lifecycle.push('stop')
      },
      async stat(ref) {
        if (ref.digest !== inSwarm.layer.digest) throw new BlobUnknownError()
        return { digest: ref.digest, size: inSwarm.layer.bytes.byteLength }
      },
      async open(ref, range) {
        if (ref.digest !== inSwarm.layer.digest) throw new BlobUnknownError()
        const bytes = Buffer.from(inSwarm.layer.bytes)
        const start = range?.start ?? 0
        const end = range?.end ?? bytes.byteLength - 1
        return {
          size: bytes.byteLength,
          stream: Readable.from([bytes.subarray(start, end + 1)]),
          range: { start, end },
          source: 'peer',
        }
      },
    }))
    expect(lifecycle).toEqual(['start function'])
    for (const image of [inSwarm, notInSwarm]) {
      const res = await fetch(`${withSwarm.url}/v2/library/swarmed/blobs/${image.layer.digest}`)
      expect(digestOf(new Uint8Array(await res.arrayBuffer()))).toBe(image.layer.digest)
    }
    expect(await metricValue(withSwarm.metrics, 'shoal_agent_blob_bytes_total', { source: 'peer' })).toBe(
      inSwarm.layer.bytes.byteLength,
    )
    expect(await metricValue(withSwarm.metrics, 'shoal_agent_blob_bytes_total', { source: 'upstream' })).toBe(
      notInSwarm.layer.bytes.byteLength,
    )
    await withSwarm.node.stop()
    expect(lifecycle).toEqual(['start function', 'stop'])
  })

  it('answers byte ranges with 206 and unsatisfiable ones with 416, cached or not', async () => {
    const image = imageFixture(6, 100_000)
    await pushImage(hub.url, 'library/ranged', 'v1', image)
    const url = `${agent.url}/v2/library/ranged/blobs/${image.layer.digest}?ns=docker.io`
    const bytes = Buffer.from(image.layer.bytes)

    async function expectRanges(): Promise<void> {
      const resume = await fetch(url, { headers: { range: 'bytes=40000-' } })
      expect(resume.status).toBe(206)
      expect(resume.headers.get('content-range')).toBe(`bytes 40000-99999/100000`)
      expect(Number(resume.headers.get('content-length'))).toBe(60_000)
      expect(Buffer.from(await resume.arrayBuffer()).equals(bytes.subarray(40_000))).toBe(true)

      const middle = await fetch(url, { headers: { range: 'bytes=10-19' } })
      expect(middle.status).toBe(206)
      expect(Buffer.from(await middle.arrayBuffer()).equals(bytes.subarray(10, 20))).toBe(true)

      const suffix = await fetch(url, { headers: { range: 'bytes=-5' } })
      expect(suffix.headers.get('content-range')).toBe('bytes 99995-99999/100000')
      expect(Buffer.from(await suffix.arrayBuffer()).equals(bytes.subarray(99_995))).toBe(true)

      const beyond = await fetch(url, { headers: { range: 'bytes=100000-' } })
      expect(beyond.status).toBe(416)
      expect(beyond.headers.get('content-range')).toBe('bytes */100000')
      expect(((await beyond.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe(
        'RANGE_INVALID',
      )
    }

    await expectRanges()
    // Ranged reads of an uncached blob are not cached (only whole reads are).
    expect(agent.node.cache.has(image.layer.digest)).toBe(false)
    const whole = await fetch(url)
    expect(digestOf(new Uint8Array(await whole.arrayBuffer()))).toBe(image.layer.digest)
    await waitUntil(() => agent.node.cache.has(image.layer.digest), 'the blob to be cached')
    const fromUpstream = await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', {
      source: 'upstream',
    })
    await expectRanges()
    expect(await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'upstream' })).toBe(
      fromUpstream,
    )
    expect(await metricValue(agent.metrics, 'shoal_agent_blob_bytes_total', { source: 'cache' })).toBe(
      60_000 + 10 + 5,
    )
  })

  it('passes upstream failures through with the upstream status', async () => {
    const proxy: CountingProxy = await startCountingProxy(hub.url)
    stops.push(() => proxy.stop())
    const viaProxy = await startAgent({ upstreams: [{ host: 'docker.io', url: proxy.url }] })
    const image = imageFixture(7)
    await pushImage(hub.url, 'library/flaky', 'v1', image)
    const manifestUrl = `${viaProxy.url}/v2/library/flaky/manifests/v1?ns=docker.io`
    const blobUrl = `${viaProxy.url}/v2/library/flaky/blobs/${image.layer.digest}?ns=docker.io`

    const missingBlob = await fetch(
      `${viaProxy.url}/v2/library/flaky/blobs/${image.config.digest.replace(/.$/, '0')}`,
    )
    expect(missingBlob.status).toBe(404)
    expect(((await missingBlob.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe(
      'BLOB_UNKNOWN',
    )

    for (const [mode, status] of [
      ['503', 503],
      ['429', 429],
      ['refuse', 502],
    ] as const) {
      proxy.setMode(mode)
      for (const url of [manifestUrl, blobUrl]) {
        const res = await fetch(url)
        expect(res.status, `${mode} ${url}`).toBe(status)
        const body = (await res.json()) as { errors: Array<{ code: string }> }
        expect(body.errors).toHaveLength(1)
      }
    }
    proxy.setMode('forward')
    const ok = await fetch(blobUrl)
    expect(digestOf(new Uint8Array(await ok.arrayBuffer()))).toBe(image.layer.digest)
  })

  it('never caches nor completes a truncated or corrupted upstream body', async () => {
    const image = imageFixture(8, 512 * 1024)
    await pushImage(hub.url, 'library/damaged', 'v1', image)
    let damage: 'truncate' | 'corrupt' | 'none' = 'truncate'
    // In front of Distribution: blob GETs are cut off half-way or have one byte flipped.
    const upstream = await serve((req, res) => {
      const target = new URL(req.url ?? '/', hub.url)
      const isBlob = req.method === 'GET' && target.pathname.includes('/blobs/')
      fetch(target, {
        method: req.method,
        headers: { ...(req.headers.range ? { range: req.headers.range } : {}) },
      })
        .then(async (up) => {
          const headers: Record<string, string> = {}
          up.headers.forEach((v, k) => {
            if (k !== 'transfer-encoding' && k !== 'connection') headers[k] = v
          })
          const body = Buffer.from(await up.arrayBuffer())
          res.writeHead(up.status, headers)
          if (!isBlob || damage === 'none') {
            res.end(req.method === 'HEAD' ? undefined : body)
          } else if (damage === 'truncate') {
            res.write(body.subarray(0, body.byteLength >> 1), () => res.destroy())
          } else {
            const bad = Buffer.from(body)
            bad[bad.byteLength - 3] = (bad[bad.byteLength - 3] ?? 0) ^ 0xff
            res.end(bad)
          }
        })
        .catch(() => res.destroy())
    })
    stops.push(() => upstream.close())
    const viaDamage = await startAgent({ upstreams: [{ host: 'docker.io', url: upstream.url }] })
    const url = `${viaDamage.url}/v2/library/damaged/blobs/${image.layer.digest}`

    for (const mode of ['truncate', 'corrupt'] as const) {
      damage = mode
      const res = await fetch(url)
      // Headers may already be out; the body must then fail rather than end complete.
      if (res.status === 200) {
        await expect(res.arrayBuffer(), mode).rejects.toThrow()
      } else {
        expect(res.status).toBeGreaterThanOrEqual(500)
        await res.arrayBuffer()
      }
      expect(viaDamage.node.cache.has(image.layer.digest)).toBe(false)
    }
    damage = 'none'
    const good = await fetch(url)
    expect(digestOf(new Uint8Array(await good.arrayBuffer()))).toBe(image.layer.digest)
    await waitUntil(() => viaDamage.node.cache.has(image.layer.digest), 'the good blob to be cached')
  })

  describe('private repositories', () => {
    let locked: DistributionInstance
    const USERS = { agent: 'agent-pass', alice: 'alice-pass' }

    beforeEach(async () => {
      locked = await startDistribution({ htpasswd: USERS })
      stops.push(() => locked.stop())
    })

    it('serves cached content only to clients the upstream accepts', async () => {
      const image = imageFixture(9)
      await pushImage(locked.url, 'corp/secret', 'v1', image, { username: 'alice', password: USERS.alice })
      const gated = await startAgent({
        upstreams: [
          { host: 'corp.example', url: locked.url, username: 'agent', password: USERS.agent },
          // Without credentials of its own the agent pulls with the client's.
          { host: 'bare.example', url: locked.url },
        ],
      })
      const manifestUrl = `${gated.url}/v2/corp/secret/manifests/v1?ns=corp.example`
      const blobUrl = `${gated.url}/v2/corp/secret/blobs/${image.layer.digest}?ns=corp.example`

      const anonymous = await fetch(manifestUrl)
      expect(anonymous.status).toBe(401)
      expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic realm="shoal-test"/)
      expect(((await anonymous.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe(
        'UNAUTHORIZED',
      )

      const alice = { authorization: basic('alice', USERS.alice) }
      const ok = await fetch(manifestUrl, { headers: { ...alice, accept: ACCEPT } })
      expect(ok.status).toBe(200)
      expect(Buffer.from(await ok.arrayBuffer()).equals(image.manifest)).toBe(true)
      const blob = await fetch(blobUrl, { headers: alice })
      expect(digestOf(new Uint8Array(await blob.arrayBuffer()))).toBe(image.layer.digest)
      await waitUntil(() => gated.node.cache.has(image.layer.digest), 'the private blob to be cached')

      // Cached now, but still not for clients the upstream refuses.
      const refusedHeaders: Array<Record<string, string>> = [
        {},
        { authorization: basic('alice', 'wrong') },
        { authorization: 'Bearer junk' },
      ]
      for (const headers of refusedHeaders) {
        for (const url of [
          blobUrl,
          `${gated.url}/v2/corp/secret/manifests/${image.digest}?ns=corp.example`,
        ]) {
          const refused = await fetch(url, { headers })
          expect(refused.status, JSON.stringify(headers)).toBe(401)
          expect(refused.headers.get('www-authenticate')).toMatch(/^Basic /)
          await refused.arrayBuffer()
        }
      }
      const again = await fetch(blobUrl, { headers: alice })
      expect(again.status).toBe(200)
      expect(digestOf(new Uint8Array(await again.arrayBuffer()))).toBe(image.layer.digest)
      expect(await metricValue(gated.metrics, 'shoal_agent_blob_bytes_total', { source: 'cache' })).toBe(
        image.layer.bytes.byteLength,
      )

      // Pass-through of the client's credentials when the agent has none.
      const bare = await fetch(`${gated.url}/v2/corp/secret/manifests/v1?ns=bare.example`, {
        headers: { ...alice, accept: ACCEPT },
      })
      expect(bare.status).toBe(200)
      await bare.arrayBuffer()
      const bareAnonymous = await fetch(`${gated.url}/v2/corp/secret/manifests/v1?ns=bare.example`)
      expect(bareAnonymous.status).toBe(401)
      await bareAnonymous.arrayBuffer()
    })

    it('serves a cached private blob only through a repository that holds it, to clients it accepts', async () => {
      const secret = imageFixture(11)
      const open = imageFixture(12)
      await pushImage(locked.url, 'corp/secret', 'v1', secret, { username: 'alice', password: USERS.alice })
      await pushImage(hub.url, 'pub/app', 'v1', open)
      const proxy: CountingProxy = await startCountingProxy(locked.url)
      stops.push(() => proxy.stop())
      const gated = await startAgent({
        upstreams: [
          { host: 'corp.example', url: proxy.url, username: 'agent', password: USERS.agent },
          { host: 'docker.io', url: hub.url },
        ],
      })
      const layer = secret.layer.digest
      const privateUrl = `${gated.url}/v2/corp/secret/blobs/${layer}?ns=corp.example`
      const publicUrl = `${gated.url}/v2/pub/app/blobs/${layer}?ns=docker.io`
      const alice = { authorization: basic('alice', USERS.alice) }
      const errorCode = async (res: Response) =>
        ((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code

      // An authorised client pulls the private layer; the agent caches it.
      const first = await fetch(privateUrl, { headers: alice })
      expect(first.status).toBe(200)
      expect(digestOf(new Uint8Array(await first.arrayBuffer()))).toBe(layer)
      await waitUntil(() => gated.node.cache.has(layer), 'the private blob to be cached')
      const blobPath = `/v2/corp/secret/blobs/${layer}`
      // The agent's upstream client answers the htpasswd challenge: its first GET goes twice.
      const gets = proxy.count(`GET ${blobPath}`)
      expect(gets).toBeGreaterThan(0)

      // Asked for through a public repository that does not hold it: 404, not the cached bytes.
      const anyone: Array<Record<string, string>> = [{}, alice]
      for (const headers of anyone) {
        const leaked = await fetch(publicUrl, { headers })
        expect(leaked.status, JSON.stringify(headers)).toBe(404)
        expect(await errorCode(leaked)).toBe('BLOB_UNKNOWN')
        const leakedHead = await fetch(publicUrl, { method: 'HEAD', headers })
        expect(leakedHead.status).toBe(404)
      }
      const ranged = await fetch(publicUrl, { headers: { range: 'bytes=0-99' } })
      expect(ranged.status).toBe(404)
      await ranged.arrayBuffer()
      // The public repository's own layer is still served to anyone.
      const own = await fetch(`${gated.url}/v2/pub/app/blobs/${open.layer.digest}?ns=docker.io`)
      expect(own.status).toBe(200)
      expect(digestOf(new Uint8Array(await own.arrayBuffer()))).toBe(open.layer.digest)

      // Through the private repository itself: 401 without credentials or with wrong ones.
      const refusedHeaders: Array<Record<string, string>> = [{}, { authorization: basic('alice', 'wrong') }]
      for (const headers of refusedHeaders) {
        const refused = await fetch(privateUrl, { headers })
        expect(refused.status, JSON.stringify(headers)).toBe(401)
        expect(refused.headers.get('www-authenticate')).toMatch(/^Basic /)
        expect(await errorCode(refused)).toBe('UNAUTHORIZED')
      }

      // The authorised client is served from the cache, with no more upstream GETs nor
      // HEADs: its verdict for this blob is cached.
      const headsBefore = proxy.count(`HEAD ${blobPath}`)
      for (let i = 0; i < 3; i++) {
        const again = await fetch(privateUrl, { headers: alice })
        expect(again.status).toBe(200)
        expect(digestOf(new Uint8Array(await again.arrayBuffer()))).toBe(layer)
      }
      expect(proxy.count(`GET ${blobPath}`)).toBe(gets)
      expect(proxy.count(`HEAD ${blobPath}`)).toBe(headsBefore)
      expect(await metricValue(gated.metrics, 'shoal_agent_blob_bytes_total', { source: 'cache' })).toBe(
        3 * secret.layer.bytes.byteLength,
      )

      // Another credential costs one HEAD of its own for this blob, then none.
      const other = { authorization: basic('agent', USERS.agent) }
      for (let i = 0; i < 3; i++) {
        const res = await fetch(privateUrl, { headers: other })
        expect(res.status).toBe(200)
        await res.arrayBuffer()
      }
      expect(proxy.count(`HEAD ${blobPath}`)).toBe(headsBefore + 1)
      expect(proxy.count(`GET ${blobPath}`)).toBe(gets)
    })

    it('points anonymous clients at the upstream token realm and accepts its bearer tokens', async () => {
      const issuer = await createTokenIssuer(dir)
      const tokens = await startTokenServer({
        issuer,
        issuerName: 'shoal-test-issuer',
        service: 'shoal-test-registry',
        users: USERS,
        anonymousPull: false,
      })
      stops.push(() => tokens.stop())
      const tokenRegistry = await startDistribution({
        token: {
          realm: tokens.realm,
          service: 'shoal-test-registry',
          issuer: 'shoal-test-issuer',
          rootCertBundle: issuer.certPath,
        },
      })
      stops.push(() => tokenRegistry.stop())
      const image = imageFixture(10)
      await pushImage(tokenRegistry.url, 'corp/tokened', 'v1', image, {
        username: 'alice',
        password: USERS.alice,
      })
      const gated = await startAgent({
        upstreams: [
          { host: 'tok.example', url: tokenRegistry.url, username: 'agent', password: USERS.agent },
        ],
      })
      const manifestUrl = `${gated.url}/v2/corp/tokened/manifests/v1?ns=tok.example`

      const anonymous = await fetch(manifestUrl)
      expect(anonymous.status).toBe(401)
      const challenge = anonymous.headers.get('www-authenticate') ?? ''
      expect(challenge).toContain(`realm="${tokens.realm}"`)
      expect(challenge).toContain('service="shoal-test-registry"')
      await anonymous.arrayBuffer()

      // What a client does with the challenge: ask the realm, with its credentials, for a pull token.
      const realm = new URL(tokens.realm)
      realm.searchParams.set('service', 'shoal-test-registry')
      realm.searchParams.set('scope', 'repository:corp/tokened:pull')
      const granted = (await (
        await fetch(realm, { headers: { authorization: basic('alice', USERS.alice) } })
      ).json()) as { token: string }
      const bearer = { authorization: `Bearer ${granted.token}` }
      const ok = await fetch(manifestUrl, { headers: { ...bearer, accept: ACCEPT } })
      expect(ok.status).toBe(200)
      expect(Buffer.from(await ok.arrayBuffer()).equals(image.manifest)).toBe(true)
      const blob = await fetch(`${gated.url}/v2/corp/tokened/blobs/${image.layer.digest}?ns=tok.example`, {
        headers: bearer,
      })
      expect(digestOf(new Uint8Array(await blob.arrayBuffer()))).toBe(image.layer.digest)

      const junk = await fetch(manifestUrl, { headers: { authorization: 'Bearer junk' } })
      expect(junk.status).toBe(401)
      await junk.arrayBuffer()
    })
  })
})
