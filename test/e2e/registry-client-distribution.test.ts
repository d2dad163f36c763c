/**
 * The shared registry client against the real CNCF Distribution registry: push and
 * pull, ranges, tag pages, error mapping, basic auth and the bearer token flow.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../protocol/src/index.js'
import { createRegistryClient } from '../../protocol/src/registry-client/index.js'
import {
  createTokenIssuer,
  type DistributionInstance,
  startDistribution,
  startTokenServer,
  type TokenServer,
} from '../helpers/distribution.js'

async function readStream(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

function imageManifest(config: Uint8Array, layer: Uint8Array): Uint8Array {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: digestOf(config), size: config.byteLength },
      layers: [{ mediaType: MEDIA_TYPES.ociLayerGzip, digest: digestOf(layer), size: layer.byteLength }],
    }),
  )
}

describe('registry client against Distribution', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function distribution(
    options?: Parameters<typeof startDistribution>[0],
  ): Promise<DistributionInstance> {
    const d = await startDistribution(options)
    cleanups.push(() => d.stop())
    return d
  }

  it('pushes and pulls blobs and manifests, ranges and tag pages, and maps 404s', async () => {
    const reg = await distribution()
    const client = createRegistryClient({ url: reg.url })
    await client.ping()
    const config = Buffer.from('{"architecture":"amd64","os":"linux"}')
    const layer = randomBytes(100_000)
    const pushedConfig = await client.uploadBlob('team/app', config)
    expect(pushedConfig).toEqual({ digest: digestOf(config), size: config.byteLength })
    // Chunked, from an iterable, with an uneven chunk size.
    const pushedLayer = await client.uploadBlob(
      'team/app',
      (async function* () {
        yield layer.subarray(0, 1000)
        yield layer.subarray(1000)
      })(),
      { chunkSize: 30_000, digest: digestOf(layer) },
    )
    expect(pushedLayer.digest).toBe(digestOf(layer))
    const manifest = imageManifest(config, layer)
    const put = await client.putManifest('team/app', 'v1', manifest, MEDIA_TYPES.ociManifest)
    expect(put.digest).toBe(digestOf(manifest))
    await client.putManifest('team/app', 'v2', manifest, MEDIA_TYPES.ociManifest)

    const byTag = await client.getManifest('team/app', 'v1')
    expect(Buffer.from(byTag.body).equals(manifest)).toBe(true)
    expect(byTag.mediaType).toBe(MEDIA_TYPES.ociManifest)
    expect(byTag.digest).toBe(digestOf(manifest))
    const byDigest = await client.getManifest('team/app', digestOf(manifest))
    expect(byDigest.digest).toBe(digestOf(manifest))
    const head = await client.headManifest('team/app', 'v1')
    expect(head).toMatchObject({ digest: digestOf(manifest), size: manifest.byteLength })

    const blob = await client.getBlob('team/app', digestOf(layer))
    expect(blob.size).toBe(layer.byteLength)
    expect((await readStream(blob.stream)).equals(layer)).toBe(true)
    const part = await client.getBlob('team/app', digestOf(layer), { range: { start: 10, end: 19 } })
    expect(part.range).toEqual({ start: 10, end: 19 })
    expect(part.size).toBe(layer.byteLength)
    expect((await readStream(part.stream)).equals(layer.subarray(10, 20))).toBe(true)
    expect(await client.statBlob('team/app', digestOf(layer))).toEqual({
      digest: digestOf(layer),
      size: layer.byteLength,
    })

    // Distribution 2.8 ignores `n` on tag lists (pagination came in v3): all tags in one page.
    const tags = await client.listTags('team/app')
    expect(tags.name).toBe('team/app')
    expect(tags.tags.sort()).toEqual(['v1', 'v2'])

    expect(await client.mountBlob('other/app', digestOf(layer), 'team/app')).toBe(true)
    expect((await client.statBlob('other/app', digestOf(layer))).size).toBe(layer.byteLength)

    const missing = digestOf('missing')
    await expect(client.getBlob('team/app', missing)).rejects.toMatchObject({ name: 'BlobUnknownError' })
    await expect(client.statBlob('team/app', missing)).rejects.toMatchObject({ name: 'BlobUnknownError' })
    await expect(client.getManifest('team/app', 'nope')).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
    await expect(client.headManifest('team/app', 'nope')).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
    await expect(client.listTags('no/such')).rejects.toMatchObject({ name: 'NameUnknownError' })
    await expect(client.uploadBlob('team/app', config, { digest: missing })).rejects.toMatchObject({
      name: 'DigestMismatchError',
    })
  })

  it('reports a connection failure as UpstreamError', async () => {
    const reg = await distribution()
    await reg.halt()
    const client = createRegistryClient({ url: reg.url })
    await expect(client.ping()).rejects.toMatchObject({ name: 'UpstreamError', status: 502 })
  })

  it('authenticates with basic auth and rejects wrong credentials', async () => {
    const reg = await distribution({ htpasswd: { alice: 's3cret' } })
    const data = Buffer.from('basic auth blob')
    const alice = createRegistryClient({ url: reg.url, username: 'alice', password: 's3cret' })
    await alice.ping()
    await alice.uploadBlob('private/app', data)
    const blob = await alice.getBlob('private/app', digestOf(data))
    expect((await readStream(blob.stream)).equals(data)).toBe(true)

    const wrong = createRegistryClient({ url: reg.url, username: 'alice', password: 'wrong' })
    await expect(wrong.statBlob('private/app', digestOf(data))).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
    const anonymous = createRegistryClient({ url: reg.url })
    await expect(anonymous.getBlob('private/app', digestOf(data))).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
  })

  it('runs the bearer token flow against Distribution token auth and caches tokens per scope', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-token-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const issuer = await createTokenIssuer(dir)
    const tokens: TokenServer = await startTokenServer({
      issuer,
      issuerName: 'shoal-test-issuer',
      service: 'shoal-test-registry',
      users: { bob: 'pa55' },
      anonymousPull: true,
    })
    cleanups.push(() => tokens.stop())
    const reg = await distribution({
      token: {
        realm: tokens.realm,
        service: 'shoal-test-registry',
        issuer: 'shoal-test-issuer',
        rootCertBundle: issuer.certPath,
      },
    })

    const bob = createRegistryClient({ url: reg.url, username: 'bob', password: 'pa55' })
    const data = randomBytes(5000)
    await bob.uploadBlob('bob/app', data)
    // One token for push; the PUT after the POST reuses it.
    expect(tokens.requests).toHaveLength(1)
    expect(tokens.requests[0]?.user).toBe('bob')
    // Distribution's challenge lists the actions in no fixed order.
    const scopeOf = (i: number) => {
      const [type, name, actions] = (tokens.requests[i]?.scopes[0] ?? '').split(':')
      return `${type}:${name}:${(actions ?? '').split(',').sort().join(',')}`
    }
    expect(scopeOf(0)).toBe('repository:bob/app:pull,push')
    const blob = await bob.getBlob('bob/app', digestOf(data))
    expect((await readStream(blob.stream)).equals(data)).toBe(true)
    await bob.statBlob('bob/app', digestOf(data))
    // The pull scope got its own token once, then the cache answered.
    expect(tokens.requests).toHaveLength(2)
    expect(scopeOf(1)).toBe('repository:bob/app:pull')

    // Anonymous clients get pull-only tokens: reading works, pushing is refused.
    const anonymous = createRegistryClient({ url: reg.url })
    expect((await anonymous.statBlob('bob/app', digestOf(data))).size).toBe(data.byteLength)
    await expect(anonymous.uploadBlob('bob/app', Buffer.from('x'))).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })

    const wrong = createRegistryClient({ url: reg.url, username: 'bob', password: 'nope' })
    await expect(wrong.statBlob('bob/app', digestOf(data))).rejects.toMatchObject({
      name: 'UnauthorizedError',
    })
  })
})
