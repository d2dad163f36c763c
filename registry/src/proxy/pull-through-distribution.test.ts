/**
 * The pull-through cache in front of the real CNCF Distribution registry, across a
 * restart: a multi-arch image pulled for one platform is still served by tag from the
 * filesystem cache after the storage and the cache are recreated with Distribution
 * stopped, and GC keeps it. (The wider suite against Distribution is in test/e2e.)
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { afterEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import { createRegistryClient, type RegistryClient } from '../../../protocol/src/registry-client/index.js'
import { startDistribution } from '../../../test/helpers/distribution.js'
import { createFilesystemDriver, createStorageRegistry, type StorageRegistry } from '../storage/index.js'
import { createPullThroughRegistry } from './pull-through.js'

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

async function pushPlatform(client: RegistryClient, repository: string, architecture: string) {
  const config = Buffer.from(JSON.stringify({ architecture, os: 'linux', rootfs: { type: 'layers' } }))
  const layer = randomBytes(50_000)
  await client.uploadBlob(repository, config)
  await client.uploadBlob(repository, layer)
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: digestOf(config), size: config.byteLength },
      layers: [{ mediaType: MEDIA_TYPES.ociLayerGzip, digest: digestOf(layer), size: layer.byteLength }],
    }),
  )
  const { digest } = await client.putManifest(
    repository,
    digestOf(manifest),
    manifest,
    MEDIA_TYPES.ociManifest,
  )
  return { config, layer, manifest, digest, architecture }
}

describe('pull-through cache of a multi-arch image across a restart, in front of Distribution', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('serves the index by tag and the pulled platform with Distribution stopped, and fails for the other', async () => {
    const dist = await startDistribution()
    cleanups.push(() => dist.stop())
    const client = createRegistryClient({ url: dist.url })
    const amd64 = await pushPlatform(client, 'team/multi', 'amd64')
    const arm64 = await pushPlatform(client, 'team/multi', 'arm64')
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [amd64, arm64].map((p) => ({
          mediaType: MEDIA_TYPES.ociManifest,
          digest: p.digest,
          size: p.manifest.byteLength,
          platform: { architecture: p.architecture, os: 'linux' },
        })),
      }),
    )
    const indexDigest = (await client.putManifest('team/multi', 'latest', index, MEDIA_TYPES.ociIndex)).digest

    const dir = await mkdtemp(join(tmpdir(), 'shoal-proxy-restart-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    let clock = Date.now()
    const open = async (): Promise<StorageRegistry> => {
      const storage = createStorageRegistry({ driver: createFilesystemDriver({ root: dir }) })
      await storage.start()
      cleanups.push(() => storage.stop())
      return storage
    }
    const cacheOver = (storage: StorageRegistry) =>
      createPullThroughRegistry(
        { local: storage },
        { upstreams: [{ url: dist.url, prefix: 'dist' }], tagTtlMs: 60_000, now: () => clock },
      )

    // Pull for amd64 only, as a client on that platform does.
    const first = await open()
    const before = cacheOver(first)
    const byTag = await before.getManifest('dist/team/multi', 'latest')
    expect(byTag.digest).toBe(indexDigest)
    expect(byTag.mediaType).toBe(MEDIA_TYPES.ociIndex)
    expect((await before.getManifest('dist/team/multi', amd64.digest)).digest).toBe(amd64.digest)
    for (const blob of [amd64.config, amd64.layer]) {
      const bytes = await readAll((await before.getBlob('dist/team/multi', digestOf(blob))).stream)
      expect(bytes.equals(blob)).toBe(true)
    }
    await first.stop()

    // Restart everything over the same directory with the upstream gone, past the tag TTL.
    await dist.halt()
    clock += 120_000
    const second = await open()
    const after = cacheOver(second)
    const served = async () => {
      const m = await after.getManifest('dist/team/multi', 'latest')
      expect(m.digest).toBe(indexDigest)
      expect(Buffer.from(m.body).equals(index)).toBe(true)
      expect((await after.statManifest('dist/team/multi', 'latest')).mediaType).toBe(MEDIA_TYPES.ociIndex)
      const platform = await after.getManifest('dist/team/multi', amd64.digest)
      expect(Buffer.from(platform.body).equals(amd64.manifest)).toBe(true)
      for (const blob of [amd64.config, amd64.layer]) {
        const bytes = await readAll((await after.getBlob('dist/team/multi', digestOf(blob))).stream)
        expect(digestOf(bytes)).toBe(digestOf(blob))
      }
    }
    await served()
    expect((await after.listTags('dist/team/multi', {})).items).toEqual(['latest'])

    await expect(after.getManifest('dist/team/multi', arm64.digest)).rejects.toMatchObject({
      name: 'UpstreamError',
      status: 502,
    })
    const missing = after.getBlob('dist/team/multi', digestOf(arm64.layer))
    await expect(missing).rejects.toMatchObject({ name: 'UpstreamError', status: 502 })
    await expect(missing).rejects.toThrow(/is not cached/)

    // GC with no grace keeps everything the tagged index reaches, absent children and all.
    const report = await second.collectGarbage({ graceMs: 0 })
    expect(report).toMatchObject({ manifestsDeleted: 0, blobsDeleted: 0, manifestsMarked: 3 })
    await served()
  })
})
