/**
 * The pull-through cache in front of the real CNCF Distribution registry: content
 * pushed into Distribution with the shared client is served through the cache, then
 * from the cache when the upstream is stopped, rate limiting or failing; tags are
 * revalidated after their TTL; basic and token auth upstreams work.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { afterEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../protocol/src/index.js'
import { createRegistryClient, type RegistryClient } from '../../protocol/src/registry-client/index.js'
import { createPullThroughRegistry, type UpstreamConfig } from '../../registry/src/proxy/index.js'
import { createFilesystemDriver, createStorageRegistry } from '../../registry/src/storage/index.js'
import {
  createTokenIssuer,
  type DistributionOptions,
  startCountingProxy,
  startDistribution,
  startTokenServer,
} from '../helpers/distribution.js'

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

async function pushImage(client: RegistryClient, repository: string, tag: string, layerBytes = 200_000) {
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }),
  )
  const layer = randomBytes(layerBytes)
  await client.uploadBlob(repository, config)
  await client.uploadBlob(repository, layer, { chunkSize: 64 * 1024 })
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: digestOf(config), size: config.byteLength },
      layers: [{ mediaType: MEDIA_TYPES.ociLayerGzip, digest: digestOf(layer), size: layer.byteLength }],
    }),
  )
  await client.putManifest(repository, tag, manifest, MEDIA_TYPES.ociManifest)
  return { config, layer, manifest, manifestDigest: digestOf(manifest) }
}

describe('pull-through cache in front of Distribution', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function setup(
    opts: { distribution?: DistributionOptions; upstream?: Partial<UpstreamConfig>; viaProxy?: boolean } = {},
  ) {
    const dist = await startDistribution(opts.distribution)
    cleanups.push(() => dist.stop())
    const counting = await startCountingProxy(dist.url)
    cleanups.push(() => counting.stop())
    const dir = await mkdtemp(join(tmpdir(), 'shoal-proxy-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const local = createStorageRegistry({ driver: createFilesystemDriver({ root: dir }) })
    await local.start()
    cleanups.push(() => local.stop())
    let clock = Date.now()
    const registry = createPullThroughRegistry(
      { local },
      {
        upstreams: [
          { url: opts.viaProxy === false ? dist.url : counting.url, prefix: 'dist', ...opts.upstream },
        ],
        tagTtlMs: 60_000,
        now: () => clock,
      },
    )
    return {
      dist,
      counting,
      local,
      registry,
      advance: (ms: number) => {
        clock += ms
      },
    }
  }

  it('serves content only the upstream has, byte-identical, then from cache with the upstream stopped', async () => {
    const { dist, registry, local, counting } = await setup()
    const img = await pushImage(createRegistryClient({ url: dist.url }), 'team/app', 'v1')
    const manifest = await registry.getManifest('dist/team/app', 'v1')
    expect(Buffer.from(manifest.body).equals(img.manifest)).toBe(true)
    expect(manifest.digest).toBe(img.manifestDigest)
    expect(manifest.mediaType).toBe(MEDIA_TYPES.ociManifest)
    for (const blob of [img.config, img.layer]) {
      const reader = await registry.getBlob('dist/team/app', digestOf(blob))
      const bytes = await readAll(reader.stream)
      expect(bytes.equals(blob)).toBe(true)
      expect(digestOf(bytes)).toBe(digestOf(blob))
    }
    expect((await local.statBlob('dist/team/app', digestOf(img.layer))).size).toBe(img.layer.byteLength)
    const upstreamRequests = counting.requests.length

    await dist.halt()
    const again = await registry.getBlob('dist/team/app', digestOf(img.layer))
    expect((await readAll(again.stream)).equals(img.layer)).toBe(true)
    expect((await registry.getManifest('dist/team/app', img.manifestDigest)).digest).toBe(img.manifestDigest)
    expect((await registry.getManifest('dist/team/app', 'v1')).digest).toBe(img.manifestDigest)
    expect(counting.requests.length).toBe(upstreamRequests)
  })

  it('revalidates a tag after its TTL and picks up a re-pushed tag', async () => {
    const { dist, registry, advance } = await setup()
    const client = createRegistryClient({ url: dist.url })
    const v1 = await pushImage(client, 'team/app', 'latest')
    expect((await registry.getManifest('dist/team/app', 'latest')).digest).toBe(v1.manifestDigest)
    const v2 = await pushImage(client, 'team/app', 'latest')
    expect((await registry.getManifest('dist/team/app', 'latest')).digest).toBe(v1.manifestDigest)
    advance(61_000)
    const fresh = await registry.getManifest('dist/team/app', 'latest')
    expect(fresh.digest).toBe(v2.manifestDigest)
    expect(Buffer.from(fresh.body).equals(v2.manifest)).toBe(true)
  })

  it('serves stale tags when the upstream is down, rate limiting or failing, and fails with its status otherwise', async () => {
    const { dist, registry, counting, advance } = await setup()
    const img = await pushImage(createRegistryClient({ url: dist.url }), 'team/app', 'v1')
    await registry.getManifest('dist/team/app', 'v1')
    await readAll((await registry.getBlob('dist/team/app', digestOf(img.layer))).stream)

    counting.setMode('429')
    advance(61_000)
    expect((await registry.getManifest('dist/team/app', 'v1')).digest).toBe(img.manifestDigest)
    expect(
      (await readAll((await registry.getBlob('dist/team/app', digestOf(img.layer))).stream)).equals(
        img.layer,
      ),
    ).toBe(true)
    await expect(registry.getManifest('dist/team/app', 'v2')).rejects.toMatchObject({
      name: 'TooManyRequestsError',
    })

    counting.setMode('503')
    advance(61_000)
    expect((await registry.getManifest('dist/team/app', 'v1')).digest).toBe(img.manifestDigest)
    await expect(registry.getManifest('dist/team/app', 'v2')).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 503,
    })

    counting.setMode('forward')
    await dist.halt()
    advance(61_000)
    // With Distribution stopped the counting proxy resets each connection.
    expect((await registry.getManifest('dist/team/app', 'v1')).digest).toBe(img.manifestDigest)
    counting.setMode('refuse')
    advance(61_000)
    expect((await registry.getManifest('dist/team/app', 'v1')).digest).toBe(img.manifestDigest)
    await expect(registry.getManifest('dist/team/app', 'v2')).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 502,
    })
    await expect(registry.getBlob('dist/team/app', digestOf('never pushed'))).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 502,
    })
  })

  it('fails with a connection error status when the upstream is down and nothing is cached', async () => {
    const { dist, registry } = await setup({ viaProxy: false })
    await dist.halt()
    await expect(registry.getManifest('dist/team/app', 'v1')).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 502,
    })
  })

  it('fetches a blob from the upstream once for concurrent readers', async () => {
    const { dist, registry, counting } = await setup()
    const img = await pushImage(createRegistryClient({ url: dist.url }), 'team/app', 'v1', 2 * 1024 * 1024)
    const digest = digestOf(img.layer)
    // Each reader consumes its stream as soon as it has one, as HTTP clients do.
    const bodies = await Promise.all(
      [1, 2, 3, 4].map(async () => readAll((await registry.getBlob('dist/team/app', digest)).stream)),
    )
    for (const b of bodies) expect(b.equals(img.layer)).toBe(true)
    expect(counting.count(`GET /v2/team/app/blobs/${digest}`)).toBe(1)
  })

  it('pulls through an upstream with basic auth, and refuses wrong credentials', async () => {
    const users = { puller: 'pull-pass' }
    const { dist, registry } = await setup({
      distribution: { htpasswd: users },
      upstream: { username: 'puller', password: 'pull-pass' },
    })
    const img = await pushImage(
      createRegistryClient({ url: dist.url, username: 'puller', password: 'pull-pass' }),
      'private/app',
      'v1',
    )
    expect((await registry.getManifest('dist/private/app', 'v1')).digest).toBe(img.manifestDigest)
    expect(
      (await readAll((await registry.getBlob('dist/private/app', digestOf(img.layer))).stream)).equals(
        img.layer,
      ),
    ).toBe(true)

    const dir = await mkdtemp(join(tmpdir(), 'shoal-proxy-wrong-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const local = createStorageRegistry({ driver: createFilesystemDriver({ root: dir }) })
    await local.start()
    cleanups.push(() => local.stop())
    const wrong = createPullThroughRegistry(
      { local },
      { upstreams: [{ url: dist.url, prefix: 'dist', username: 'puller', password: 'nope' }] },
    )
    await expect(wrong.getManifest('dist/private/app', 'v1')).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
    await expect(wrong.getBlob('dist/private/app', digestOf(img.layer))).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
  })

  it('pulls through an upstream with token auth', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-token-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const issuer = await createTokenIssuer(dir)
    const tokens = await startTokenServer({
      issuer,
      issuerName: 'shoal-issuer',
      service: 'shoal-upstream',
      users: { robot: 'robot-pass' },
    })
    cleanups.push(() => tokens.stop())
    const token = {
      realm: tokens.realm,
      service: 'shoal-upstream',
      issuer: 'shoal-issuer',
      rootCertBundle: issuer.certPath,
    }
    const { dist, registry } = await setup({
      distribution: { token },
      upstream: { username: 'robot', password: 'robot-pass' },
      viaProxy: false,
    })
    const img = await pushImage(
      createRegistryClient({ url: dist.url, username: 'robot', password: 'robot-pass' }),
      'org/app',
      'v1',
    )
    expect((await registry.getManifest('dist/org/app', 'v1')).digest).toBe(img.manifestDigest)
    expect(
      (await readAll((await registry.getBlob('dist/org/app', digestOf(img.config))).stream)).equals(
        img.config,
      ),
    ).toBe(true)
    expect(
      tokens.requests.some((r) => r.user === 'robot' && r.scopes.includes('repository:org/app:pull')),
    ).toBe(true)
  })
})
