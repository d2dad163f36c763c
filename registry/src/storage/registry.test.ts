import * as fs from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { type Digest, digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import type { BlobInfo } from '../service.js'
import {
  createFilesystemDriver,
  createMemoryDriver,
  createStorageRegistry,
  type StorageDriver,
  type StorageRegistry,
  type StorageRegistryInit,
} from './index.js'
import {
  blobFixture,
  bodyOf,
  descriptorOf,
  drain,
  imageIndex,
  imageManifest,
  pushBlob,
  pushImage,
} from './testing.js'
import { blobDataPath, revisionLinkPath } from './paths.js'

const REPO = 'library/alpine'

const drivers: Array<[string, () => Promise<{ driver: StorageDriver; cleanup: () => Promise<void> }>]> = [
  ['memory', async () => ({ driver: createMemoryDriver(), cleanup: async () => {} })],
  [
    'filesystem',
    async () => {
      const dir = await fs.mkdtemp(join(tmpdir(), 'shoal-registry-'))
      // fsync is exercised by the driver conformance and persistence suites; here it only slows things down.
      return {
        driver: createFilesystemDriver({ root: dir, fsync: false }),
        cleanup: () => fs.rm(dir, { recursive: true, force: true }),
      }
    },
  ],
]

async function* failingBody(
  parts: Uint8Array[],
  error = new Error('socket hang up'),
): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p
  throw error
}

describe.each(drivers)('storage registry on %s driver', (_name, factory) => {
  let driver: StorageDriver
  let cleanup: () => Promise<void>
  let r: StorageRegistry
  const committed: BlobInfo[] = []

  function open(init: StorageRegistryInit = {}): StorageRegistry {
    return createStorageRegistry({ driver }, { onBlobCommitted: (info) => committed.push(info), ...init })
  }

  beforeEach(async () => {
    ;({ driver, cleanup } = await factory())
    committed.length = 0
    r = open()
    await r.start()
  })
  afterEach(async () => {
    await r.stop()
    await cleanup()
  })

  describe('blobs', () => {
    it('stats, reads and ranges a linked blob', async () => {
      const { bytes, digest } = blobFixture(100)
      await pushBlob(r, REPO, bytes)
      expect(await r.statBlob(REPO, digest)).toEqual({ digest, size: 100 })
      const full = await r.getBlob(REPO, digest)
      expect(full.range).toEqual({ start: 0, end: 99 })
      expect((await drain(full.stream)).equals(bytes)).toBe(true)
      const part = await r.getBlob(REPO, digest, { start: 10, end: 19 })
      expect(part.range).toEqual({ start: 10, end: 19 })
      expect((await drain(part.stream)).equals(bytes.subarray(10, 20))).toBe(true)
      const tail = await r.getBlob(REPO, digest, { start: 95 })
      expect((await drain(tail.stream)).equals(bytes.subarray(95))).toBe(true)
      const clamped = await r.getBlob(REPO, digest, { start: 90, end: 1000 })
      expect(clamped.range).toEqual({ start: 90, end: 99 })
      expect((await drain(clamped.stream)).length).toBe(10)
    })

    it('rejects unsatisfiable ranges with RangeInvalidError', async () => {
      const { bytes, digest } = blobFixture(10)
      await pushBlob(r, REPO, bytes)
      await expect(r.getBlob(REPO, digest, { start: 10 })).rejects.toMatchObject({
        name: 'RangeInvalidError',
      })
      await expect(r.getBlob(REPO, digest, { start: 5, end: 4 })).rejects.toMatchObject({
        name: 'RangeInvalidError',
      })
      await expect(r.getBlob(REPO, digest, { start: -1 })).rejects.toMatchObject({
        name: 'RangeInvalidError',
      })
    })

    it('serves an empty blob', async () => {
      const digest = await pushBlob(r, REPO, new Uint8Array(0))
      expect(digest).toBe(digestOf(''))
      const reader = await r.getBlob(REPO, digest)
      expect(reader.info.size).toBe(0)
      expect((await drain(reader.stream)).length).toBe(0)
    })

    it('answers BlobUnknownError for unknown blobs and blobs of other repositories', async () => {
      const { bytes, digest } = blobFixture(10)
      await expect(r.statBlob(REPO, digest)).rejects.toMatchObject({ name: 'BlobUnknownError' })
      await expect(r.getBlob(REPO, digest)).rejects.toMatchObject({ name: 'BlobUnknownError' })
      await pushBlob(r, 'other/repo', bytes)
      await expect(r.statBlob(REPO, digest)).rejects.toMatchObject({ name: 'BlobUnknownError' })
    })

    it('deletes a blob link; the content stays for other repositories', async () => {
      const { bytes, digest } = blobFixture(10)
      await pushBlob(r, REPO, bytes)
      await pushBlob(r, 'other/repo', bytes)
      await r.deleteBlob(REPO, digest)
      await expect(r.statBlob(REPO, digest)).rejects.toMatchObject({ name: 'BlobUnknownError' })
      expect((await r.statBlob('other/repo', digest)).size).toBe(10)
      await expect(r.deleteBlob(REPO, digest)).rejects.toMatchObject({ name: 'BlobUnknownError' })
    })

    it('mounts from a repository that holds the blob, or from anywhere without `from`', async () => {
      const { bytes, digest } = blobFixture(10)
      await pushBlob(r, 'src/repo', bytes)
      expect(await r.mountBlob(REPO, digest, 'no/such')).toBeUndefined()
      await expect(r.statBlob(REPO, digest)).rejects.toMatchObject({ name: 'BlobUnknownError' })
      expect(await r.mountBlob(REPO, digest, 'src/repo')).toEqual({ digest, size: 10 })
      expect((await r.statBlob(REPO, digest)).size).toBe(10)
      expect(await r.mountBlob('third', digest)).toEqual({ digest, size: 10 })
      expect(await r.mountBlob('fourth', blobFixture(11).digest)).toBeUndefined()
      await expect(r.mountBlob(REPO, digest, 'Bad..Name')).rejects.toMatchObject({ name: 'NameInvalidError' })
      // Mounting does not count as new content.
      expect(committed.filter((c) => c.digest === digest)).toHaveLength(1)
    })
  })

  describe('uploads', () => {
    it('appends chunks in order and completes with the digest', async () => {
      const { bytes, digest } = blobFixture(3000)
      const u = await r.startUpload(REPO)
      expect(u).toMatchObject({ repository: REPO, offset: 0 })
      expect(typeof u.startedAt).toBe('number')
      let s = await r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(0, 1000)), { start: 0, length: 1000 })
      expect(s.offset).toBe(1000)
      s = await r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(1000, 1500), bytes.subarray(1500, 2000)))
      expect(s.offset).toBe(2000)
      expect((await r.getUpload(REPO, u.id)).offset).toBe(2000)
      const info = await r.completeUpload(REPO, u.id, digest, bodyOf(bytes.subarray(2000)), {
        start: 2000,
        length: 1000,
      })
      expect(info).toEqual({ digest, size: 3000 })
      expect((await drain((await r.getBlob(REPO, digest)).stream)).equals(bytes)).toBe(true)
      await expect(r.getUpload(REPO, u.id)).rejects.toMatchObject({ name: 'BlobUploadUnknownError' })
      expect(committed).toEqual([{ digest, size: 3000 }])
    })

    it('accepts sha512 digests', async () => {
      const { bytes } = blobFixture(500)
      const digest = digestOf(bytes, 'sha512')
      const u = await r.startUpload(REPO)
      await r.appendUpload(REPO, u.id, bodyOf(bytes))
      expect(await r.completeUpload(REPO, u.id, digest)).toEqual({ digest, size: 500 })
      expect((await drain((await r.getBlob(REPO, digest)).stream)).equals(bytes)).toBe(true)
    })

    it('rejects a chunk that does not start at the current offset (RangeInvalidError)', async () => {
      const u = await r.startUpload(REPO)
      await r.appendUpload(REPO, u.id, bodyOf(new Uint8Array(10)))
      await expect(r.appendUpload(REPO, u.id, bodyOf(new Uint8Array(5)), { start: 0 })).rejects.toMatchObject(
        {
          name: 'RangeInvalidError',
        },
      )
      await expect(
        r.appendUpload(REPO, u.id, bodyOf(new Uint8Array(5)), { start: 11 }),
      ).rejects.toMatchObject({
        name: 'RangeInvalidError',
      })
      await expect(
        r.completeUpload(REPO, u.id, digestOf(new Uint8Array(15)), bodyOf(new Uint8Array(5)), { start: 3 }),
      ).rejects.toMatchObject({ name: 'RangeInvalidError' })
      expect((await r.getUpload(REPO, u.id)).offset).toBe(10)
    })

    it('rejects a body longer or shorter than its declared length (SizeInvalidError) and keeps the offset', async () => {
      const { bytes, digest } = blobFixture(100)
      const u = await r.startUpload(REPO)
      await r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(0, 40)))
      await expect(
        r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(40, 60)), { start: 40, length: 10 }),
      ).rejects.toMatchObject({ name: 'SizeInvalidError' })
      expect((await r.getUpload(REPO, u.id)).offset).toBe(40)
      await expect(
        r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(40, 60)), { start: 40, length: 30 }),
      ).rejects.toMatchObject({ name: 'SizeInvalidError' })
      expect((await r.getUpload(REPO, u.id)).offset).toBe(40)
      await expect(r.appendUpload(REPO, u.id, bodyOf(), { length: -1 })).rejects.toMatchObject({
        name: 'SizeInvalidError',
      })
      expect(await r.completeUpload(REPO, u.id, digest, bodyOf(bytes.subarray(40)), { length: 60 })).toEqual({
        digest,
        size: 100,
      })
    })

    it('cuts a truncated body off again so the upload can continue', async () => {
      const { bytes, digest } = blobFixture(300)
      const u = await r.startUpload(REPO)
      await r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(0, 100)))
      await expect(
        r.appendUpload(REPO, u.id, failingBody([bytes.subarray(100, 150), bytes.subarray(150, 180)])),
      ).rejects.toMatchObject({ name: 'BlobUploadInvalidError' })
      expect((await r.getUpload(REPO, u.id)).offset).toBe(100)
      await r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(100, 200)), { start: 100 })
      await expect(
        r.completeUpload(REPO, u.id, digest, failingBody([bytes.subarray(200, 250)])),
      ).rejects.toMatchObject({ name: 'BlobUploadInvalidError' })
      expect((await r.getUpload(REPO, u.id)).offset).toBe(200)
      expect(await r.completeUpload(REPO, u.id, digest, bodyOf(bytes.subarray(200)))).toEqual({
        digest,
        size: 300,
      })
      expect((await drain((await r.getBlob(REPO, digest)).stream)).equals(bytes)).toBe(true)
    })

    it('stops at an aborted signal and keeps the offset', async () => {
      const u = await r.startUpload(REPO)
      const controller = new AbortController()
      async function* body(): AsyncGenerator<Uint8Array> {
        yield new Uint8Array(10)
        controller.abort(new Error('client went away'))
        yield new Uint8Array(10)
      }
      await expect(r.appendUpload(REPO, u.id, body(), {}, { signal: controller.signal })).rejects.toThrow(
        'client went away',
      )
      expect((await r.getUpload(REPO, u.id)).offset).toBe(0)
    })

    it('leaves nothing behind when the digest does not match (DigestMismatchError)', async () => {
      const { bytes } = blobFixture(100)
      const wrong = blobFixture(100, 7).digest
      const u = await r.startUpload(REPO)
      await expect(r.completeUpload(REPO, u.id, wrong, bodyOf(bytes))).rejects.toMatchObject({
        name: 'DigestMismatchError',
      })
      await expect(r.getUpload(REPO, u.id)).rejects.toMatchObject({ name: 'BlobUploadUnknownError' })
      await expect(r.statBlob(REPO, wrong)).rejects.toMatchObject({ name: 'BlobUnknownError' })
      await expect(r.statBlob(REPO, digestOf(bytes))).rejects.toMatchObject({ name: 'BlobUnknownError' })
      expect(await driver.list('/blobs')).toEqual([])
      expect(await driver.list('/uploads')).toEqual([])
      expect(committed).toEqual([])
    })

    it('refuses a malformed digest without losing the upload (DigestInvalidError)', async () => {
      const u = await r.startUpload(REPO)
      await r.appendUpload(REPO, u.id, bodyOf(new Uint8Array(4)))
      for (const bad of [
        'sha256:abc',
        'md5:d41d8cd98f00b204e9800998ecf8427e',
        'nope',
        `sha256:${'G'.repeat(64)}`,
      ]) {
        await expect(r.completeUpload(REPO, u.id, bad)).rejects.toMatchObject({ name: 'DigestInvalidError' })
      }
      expect((await r.getUpload(REPO, u.id)).offset).toBe(4)
    })

    it('does not report existing content as newly committed', async () => {
      const { bytes, digest } = blobFixture(50)
      await pushBlob(r, REPO, bytes)
      await pushBlob(r, 'other', bytes)
      expect(committed).toEqual([{ digest, size: 50 }])
      expect((await r.statBlob('other', digest)).size).toBe(50)
    })

    it('survives a throwing onBlobCommitted hook', async () => {
      r = open({
        onBlobCommitted: () => {
          throw new Error('seeder down')
        },
      })
      const { bytes, digest } = blobFixture(5)
      expect(await pushBlob(r, REPO, bytes)).toBe(digest)
    })

    it('cancels an upload', async () => {
      const u = await r.startUpload(REPO)
      await r.appendUpload(REPO, u.id, bodyOf(new Uint8Array(4)))
      await r.cancelUpload(REPO, u.id)
      await expect(r.getUpload(REPO, u.id)).rejects.toMatchObject({ name: 'BlobUploadUnknownError' })
      await expect(r.cancelUpload(REPO, u.id)).rejects.toMatchObject({ name: 'BlobUploadUnknownError' })
      expect(await driver.list('/uploads')).toEqual([])
    })

    it('answers BlobUploadUnknownError for unknown, foreign and malformed upload ids', async () => {
      const u = await r.startUpload(REPO)
      await expect(r.getUpload('other', u.id)).rejects.toMatchObject({ name: 'BlobUploadUnknownError' })
      await expect(r.appendUpload('other', u.id, bodyOf(new Uint8Array(1)))).rejects.toMatchObject({
        name: 'BlobUploadUnknownError',
      })
      for (const id of [
        '00000000-0000-0000-0000-000000000000',
        '../../blobs',
        '',
        '..',
        u.id.toUpperCase(),
      ]) {
        await expect(r.getUpload(REPO, id)).rejects.toMatchObject({ name: 'BlobUploadUnknownError' })
      }
    })

    it('serialises concurrent appends to one upload', async () => {
      const { bytes, digest } = blobFixture(200)
      const u = await r.startUpload(REPO)
      const results = await Promise.allSettled([
        r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(0, 100)), { start: 0 }),
        r.appendUpload(REPO, u.id, bodyOf(bytes.subarray(0, 100)), { start: 0 }),
      ])
      expect(results.map((x) => x.status).sort()).toEqual(['fulfilled', 'rejected'])
      expect(await r.completeUpload(REPO, u.id, digest, bodyOf(bytes.subarray(100)))).toEqual({
        digest,
        size: 200,
      })
    })
  })

  describe('manifests', () => {
    it('stores a manifest under a tag and reads it by tag and digest', async () => {
      const img = await pushImage(r, REPO, 'v1')
      expect(img.digest).toBe(digestOf(img.body))
      for (const ref of ['v1', img.digest]) {
        const m = await r.getManifest(REPO, ref)
        expect(m).toMatchObject({
          digest: img.digest,
          mediaType: MEDIA_TYPES.ociManifest,
          size: img.body.length,
        })
        expect(Buffer.from(m.body).equals(img.body)).toBe(true)
        expect(await r.statManifest(REPO, ref)).toEqual({
          digest: img.digest,
          mediaType: MEDIA_TYPES.ociManifest,
          size: img.body.length,
        })
      }
      await expect(r.getManifest(REPO, 'v2')).rejects.toMatchObject({ name: 'ManifestUnknownError' })
      await expect(r.getManifest('other', 'v1')).rejects.toMatchObject({ name: 'ManifestUnknownError' })
      await expect(r.statManifest(REPO, digestOf('x'))).rejects.toMatchObject({
        name: 'ManifestUnknownError',
      })
    })

    it('keeps a manifest body in memory after its first read, still checking the repository each time', async () => {
      const img = await pushImage(r, REPO, 'v1')
      await r.getManifest(REPO, img.digest)
      const reads = vi.spyOn(driver, 'getContent')
      try {
        for (const ref of ['v1', img.digest, img.digest]) {
          expect(Buffer.from((await r.getManifest(REPO, ref)).body).equals(img.body)).toBe(true)
        }
        const paths = reads.mock.calls.map(([path]) => path)
        expect(paths).not.toContain(blobDataPath(img.digest))
        expect(paths.filter((path) => path === revisionLinkPath(REPO, img.digest))).toHaveLength(3)
        await expect(r.getManifest('other', img.digest)).rejects.toMatchObject({
          name: 'ManifestUnknownError',
        })
      } finally {
        reads.mockRestore()
      }
    })

    it('moves a tag to a new manifest', async () => {
      const a = await pushImage(r, REPO, 'latest', { seed: 1 })
      const b = await pushImage(r, REPO, 'latest', { seed: 2 })
      expect((await r.getManifest(REPO, 'latest')).digest).toBe(b.digest)
      expect((await r.getManifest(REPO, a.digest)).digest).toBe(a.digest)
    })

    it('stores by digest without a tag, verifying the digest (DigestMismatchError)', async () => {
      const configBytes = Buffer.from('{}')
      await pushBlob(r, REPO, configBytes)
      const body = imageManifest(descriptorOf(MEDIA_TYPES.ociEmpty, configBytes), [])
      await expect(
        r.putManifest(REPO, digestOf('other'), MEDIA_TYPES.ociManifest, body),
      ).rejects.toMatchObject({
        name: 'DigestMismatchError',
      })
      await expect(r.getManifest(REPO, digestOf(body))).rejects.toMatchObject({
        name: 'ManifestUnknownError',
      })
      expect((await r.putManifest(REPO, digestOf(body), MEDIA_TYPES.ociManifest, body)).digest).toBe(
        digestOf(body),
      )
      expect((await r.listTags(REPO, {})).items).toEqual([])
      const sha512 = digestOf(body, 'sha512')
      expect((await r.putManifest(REPO, sha512, undefined, body)).digest).toBe(sha512)
      expect((await r.getManifest(REPO, sha512)).digest).toBe(sha512)
    })

    it('rejects malformed JSON, unknown media types and contradicting Content-Types (ManifestInvalidError)', async () => {
      const bad: Array<[string | undefined, string]> = [
        [MEDIA_TYPES.ociManifest, '{not json'],
        [MEDIA_TYPES.ociManifest, '[]'],
        [
          'application/vnd.example.unknown+json',
          '{"schemaVersion":2,"mediaType":"application/vnd.example.unknown+json"}',
        ],
        [
          MEDIA_TYPES.ociIndex,
          JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, layers: [] }),
        ],
        [MEDIA_TYPES.ociManifest, JSON.stringify({ schemaVersion: 1, mediaType: MEDIA_TYPES.ociManifest })],
        [MEDIA_TYPES.ociManifest, JSON.stringify({ schemaVersion: 2, config: { digest: 'x' }, layers: [] })],
      ]
      for (const [ct, body] of bad) {
        await expect(r.putManifest(REPO, 'x', ct, Buffer.from(body)), body).rejects.toMatchObject({
          name: 'ManifestInvalidError',
        })
      }
      expect(await driver.list('/blobs')).toEqual([])
    })

    it('rejects a manifest larger than maxManifestBytes (ManifestTooLargeError)', async () => {
      r = open({ maxManifestBytes: 400 })
      const configBytes = Buffer.from('{}')
      await pushBlob(r, REPO, configBytes)
      const body = imageManifest(descriptorOf(MEDIA_TYPES.ociEmpty, configBytes), [], {
        annotations: { pad: 'x'.repeat(500) },
      })
      await expect(r.putManifest(REPO, 'big', MEDIA_TYPES.ociManifest, body)).rejects.toMatchObject({
        name: 'ManifestTooLargeError',
      })
      const small = imageManifest(descriptorOf(MEDIA_TYPES.ociEmpty, configBytes), [])
      expect(small.length).toBeLessThanOrEqual(400)
      await r.putManifest(REPO, 'small', MEDIA_TYPES.ociManifest, small)
    })

    it('requires the config and layers to be linked in the repository (ManifestBlobUnknownError)', async () => {
      const configBytes = Buffer.from('{"a":1}')
      const layer = blobFixture(20)
      const config = descriptorOf(MEDIA_TYPES.ociConfig, configBytes)
      const layerDesc = descriptorOf(MEDIA_TYPES.ociLayerGzip, layer.bytes)
      const body = imageManifest(config, [layerDesc])
      await expect(r.putManifest(REPO, 't', MEDIA_TYPES.ociManifest, body)).rejects.toMatchObject({
        name: 'ManifestBlobUnknownError',
        detail: { digest: config.digest },
      })
      await pushBlob(r, REPO, configBytes)
      await pushBlob(r, 'elsewhere', layer.bytes)
      await expect(r.putManifest(REPO, 't', MEDIA_TYPES.ociManifest, body)).rejects.toMatchObject({
        name: 'ManifestBlobUnknownError',
        detail: { digest: layer.digest },
      })
      await r.mountBlob(REPO, layer.digest, 'elsewhere')
      await r.putManifest(REPO, 't', MEDIA_TYPES.ociManifest, body)
    })

    it('accepts foreign layers that live at their URLs', async () => {
      const configBytes = Buffer.from('{}')
      await pushBlob(r, REPO, configBytes)
      const foreign = {
        mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
        digest: blobFixture(10).digest,
        size: 10,
        urls: ['https://example.invalid/layer'],
      }
      const body = imageManifest(descriptorOf(MEDIA_TYPES.ociConfig, configBytes), [foreign])
      await r.putManifest(REPO, 'win', MEDIA_TYPES.ociManifest, body)
    })

    it('requires the child manifests of an index to exist in the repository', async () => {
      const a = await pushImage(r, REPO, 'amd64', { seed: 1 })
      const b = await pushImage(r, 'other', 'arm64', { seed: 2 })
      const index = imageIndex([
        {
          ...descriptorOf(MEDIA_TYPES.ociManifest, a.body),
          platform: { architecture: 'amd64', os: 'linux' },
        },
        {
          ...descriptorOf(MEDIA_TYPES.ociManifest, b.body),
          platform: { architecture: 'arm64', os: 'linux' },
        },
      ])
      await expect(r.putManifest(REPO, 'multi', MEDIA_TYPES.ociIndex, index)).rejects.toMatchObject({
        name: 'ManifestBlobUnknownError',
        detail: { digest: b.digest },
      })
      await pushImage(r, REPO, 'arm64', { seed: 2 })
      const put = await r.putManifest(REPO, 'multi', MEDIA_TYPES.ociIndex, index)
      expect((await r.getManifest(REPO, 'multi')).mediaType).toBe(MEDIA_TYPES.ociIndex)
      expect(put.digest).toBe(digestOf(index))
    })

    it('stores Docker schema 2 manifests and manifest lists', async () => {
      const configBytes = Buffer.from('{"os":"linux"}')
      const layer = blobFixture(40, 8)
      await pushBlob(r, REPO, configBytes)
      await pushBlob(r, REPO, layer.bytes)
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MEDIA_TYPES.dockerManifest,
          config: descriptorOf(MEDIA_TYPES.dockerConfig, configBytes),
          layers: [descriptorOf(MEDIA_TYPES.dockerLayerGzip, layer.bytes)],
        }),
      )
      await r.putManifest(REPO, 'docker', MEDIA_TYPES.dockerManifest, manifest)
      const list = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MEDIA_TYPES.dockerManifestList,
          manifests: [
            {
              ...descriptorOf(MEDIA_TYPES.dockerManifest, manifest),
              platform: { architecture: 'amd64', os: 'linux' },
            },
          ],
        }),
      )
      await r.putManifest(REPO, 'list', MEDIA_TYPES.dockerManifestList, list)
      expect(await r.statManifest(REPO, 'list')).toMatchObject({ mediaType: MEDIA_TYPES.dockerManifestList })
      expect(await r.statManifest(REPO, 'docker')).toMatchObject({ mediaType: MEDIA_TYPES.dockerManifest })
    })

    it('treats artifacts with the empty config (Helm charts) as ordinary manifests', async () => {
      const empty = Buffer.from('{}')
      const chart = blobFixture(300, 5)
      await pushBlob(r, 'charts/nginx', empty)
      await pushBlob(r, 'charts/nginx', chart.bytes)
      const body = imageManifest(
        descriptorOf(MEDIA_TYPES.ociEmpty, empty),
        [descriptorOf('application/vnd.cncf.helm.chart.content.v1.tar+gzip', chart.bytes)],
        { artifactType: 'application/vnd.cncf.helm.config.v1+json' },
      )
      const put = await r.putManifest('charts/nginx', '1.2.3', MEDIA_TYPES.ociManifest, body)
      expect((await r.getManifest('charts/nginx', '1.2.3')).digest).toBe(put.digest)
    })

    it('records referrers for manifests with a subject, which need not exist', async () => {
      const subject = await pushImage(r, REPO, 'v1')
      const empty = Buffer.from('{}')
      await pushBlob(r, REPO, empty)
      const sigLayer = Buffer.from('signature')
      await pushBlob(r, REPO, sigLayer)
      const subjectDesc = descriptorOf(MEDIA_TYPES.ociManifest, subject.body)
      const sig = imageManifest(
        descriptorOf('application/vnd.dev.cosign.config', empty),
        [descriptorOf('application/octet-stream', sigLayer)],
        { subject: subjectDesc, annotations: { 'org.example.kind': 'signature' } },
      )
      const sbom = imageManifest(
        descriptorOf(MEDIA_TYPES.ociEmpty, empty),
        [descriptorOf('application/octet-stream', sigLayer)],
        { subject: subjectDesc, artifactType: 'application/spdx+json' },
      )
      const sigPut = await r.putManifest(REPO, digestOf(sig), MEDIA_TYPES.ociManifest, sig)
      expect(sigPut.subject).toBe(subject.digest)
      await r.putManifest(REPO, digestOf(sbom), MEDIA_TYPES.ociManifest, sbom)

      const all = await r.referrers(REPO, subject.digest)
      expect(all.filtersApplied).toEqual([])
      expect(all.descriptors).toHaveLength(2)
      expect(all.descriptors).toContainEqual({
        mediaType: MEDIA_TYPES.ociManifest,
        digest: digestOf(sig),
        size: sig.length,
        artifactType: 'application/vnd.dev.cosign.config',
        annotations: { 'org.example.kind': 'signature' },
      })
      expect(all.descriptors).toContainEqual({
        mediaType: MEDIA_TYPES.ociManifest,
        digest: digestOf(sbom),
        size: sbom.length,
        artifactType: 'application/spdx+json',
      })
      const filtered = await r.referrers(REPO, subject.digest, 'application/spdx+json')
      expect(filtered).toEqual({
        descriptors: [expect.objectContaining({ digest: digestOf(sbom) })],
        filtersApplied: ['artifactType'],
      })
      expect((await r.referrers(REPO, subject.digest, 'application/none')).descriptors).toEqual([])
      expect((await r.referrers('other', subject.digest)).descriptors).toEqual([])

      // A subject that was never pushed.
      const ghost = digestOf('ghost')
      const orphan = imageManifest(descriptorOf(MEDIA_TYPES.ociEmpty, empty), [], {
        subject: { mediaType: MEDIA_TYPES.ociManifest, digest: ghost, size: 5 },
        artifactType: 'application/example',
      })
      expect((await r.putManifest(REPO, digestOf(orphan), MEDIA_TYPES.ociManifest, orphan)).subject).toBe(
        ghost,
      )
      expect((await r.referrers(REPO, ghost)).descriptors.map((d) => d.digest)).toEqual([digestOf(orphan)])

      // Deleting a referrer removes its entry.
      await r.deleteManifest(REPO, digestOf(sig))
      expect((await r.referrers(REPO, subject.digest)).descriptors.map((d) => d.digest)).toEqual([
        digestOf(sbom),
      ])
    })

    it('deletes by digest (with every tag pointing to it) or only a tag', async () => {
      const a = await pushImage(r, REPO, 'a', { seed: 1 })
      await r.putManifest(REPO, 'a2', MEDIA_TYPES.ociManifest, a.body)
      const b = await pushImage(r, REPO, 'b', { seed: 2 })
      await r.putManifest(REPO, 'b2', MEDIA_TYPES.ociManifest, b.body)

      await r.deleteManifest(REPO, 'b2')
      expect((await r.listTags(REPO, {})).items).toEqual(['a', 'a2', 'b'])
      expect((await r.getManifest(REPO, b.digest)).digest).toBe(b.digest)

      await r.deleteManifest(REPO, a.digest)
      expect((await r.listTags(REPO, {})).items).toEqual(['b'])
      await expect(r.getManifest(REPO, a.digest)).rejects.toMatchObject({ name: 'ManifestUnknownError' })
      await expect(r.getManifest(REPO, 'a')).rejects.toMatchObject({ name: 'ManifestUnknownError' })

      await expect(r.deleteManifest(REPO, a.digest)).rejects.toMatchObject({ name: 'ManifestUnknownError' })
      await expect(r.deleteManifest(REPO, 'nope')).rejects.toMatchObject({ name: 'ManifestUnknownError' })
    })
  })

  describe('cached manifests (pull-through)', () => {
    const config = descriptorOf(MEDIA_TYPES.ociConfig, Buffer.from('{"os":"linux"}'))
    const layer = descriptorOf(MEDIA_TYPES.ociLayerGzip, blobFixture(50, 3).bytes)
    const amd64 = imageManifest(config, [layer])
    const arm64 = imageManifest(config, [layer], { annotations: { arch: 'arm64' } })
    const index = imageIndex([
      descriptorOf(MEDIA_TYPES.ociManifest, amd64),
      descriptorOf(MEDIA_TYPES.ociManifest, arm64),
    ])

    it('stores an index and a manifest whose content is absent, which putManifest refuses', async () => {
      await expect(r.putManifest(REPO, 'multi', MEDIA_TYPES.ociIndex, index)).rejects.toMatchObject({
        name: 'ManifestBlobUnknownError',
      })
      await expect(r.putManifest(REPO, digestOf(amd64), undefined, amd64)).rejects.toMatchObject({
        name: 'ManifestBlobUnknownError',
      })
      expect(await r.cacheManifest(REPO, 'multi', MEDIA_TYPES.ociIndex, index)).toEqual({
        digest: digestOf(index),
      })
      expect(await r.cacheManifest(REPO, digestOf(amd64), undefined, amd64)).toEqual({
        digest: digestOf(amd64),
      })
      const byTag = await r.getManifest(REPO, 'multi')
      expect(byTag).toMatchObject({ digest: digestOf(index), mediaType: MEDIA_TYPES.ociIndex })
      expect(Buffer.from(byTag.body).equals(index)).toBe(true)
      expect((await r.getManifest(REPO, digestOf(amd64))).digest).toBe(digestOf(amd64))
      await expect(r.getManifest(REPO, digestOf(arm64))).rejects.toMatchObject({
        name: 'ManifestUnknownError',
      })
      await expect(r.statBlob(REPO, layer.digest)).rejects.toMatchObject({ name: 'BlobUnknownError' })
      expect((await r.listTags(REPO, {})).items).toEqual(['multi'])
    })

    it('still validates the body, its size and its digest', async () => {
      await expect(
        r.cacheManifest(REPO, 'bad', MEDIA_TYPES.ociManifest, Buffer.from('not json')),
      ).rejects.toMatchObject({ name: 'ManifestInvalidError' })
      await expect(r.cacheManifest(REPO, 'bad', MEDIA_TYPES.ociIndex, amd64)).rejects.toMatchObject({
        name: 'ManifestInvalidError',
      })
      await expect(r.cacheManifest(REPO, digestOf('x'), undefined, amd64)).rejects.toMatchObject({
        name: 'DigestMismatchError',
      })
      const small = open({ maxManifestBytes: 64 })
      await expect(small.cacheManifest(REPO, 'big', undefined, amd64)).rejects.toMatchObject({
        name: 'ManifestTooLargeError',
      })
      await expect(r.cacheManifest('Bad Name', 'v1', undefined, amd64)).rejects.toMatchObject({
        name: 'NameInvalidError',
      })
      await expect(r.getManifest(REPO, 'bad')).rejects.toMatchObject({ name: 'ManifestUnknownError' })
    })

    it('records when a tag was confirmed, and forgets it when the tag moves or is deleted', async () => {
      expect(await r.cachedTag(REPO, 'multi')).toBeUndefined()
      await r.cacheManifest(REPO, 'multi', undefined, index, { checkedAt: 1234 })
      expect(await r.cachedTag(REPO, 'multi')).toEqual({ digest: digestOf(index), checkedAt: 1234 })
      await r.cacheManifest(REPO, 'multi', undefined, index, { checkedAt: 5678 })
      expect(await r.cachedTag(REPO, 'multi')).toEqual({ digest: digestOf(index), checkedAt: 5678 })
      // By digest: no tag record is touched.
      await r.cacheManifest(REPO, digestOf(amd64), undefined, amd64, { checkedAt: 9999 })
      expect((await r.cachedTag(REPO, 'multi'))?.checkedAt).toBe(5678)

      // A push that moves the tag leaves it unconfirmed.
      const pushed = await pushImage(r, REPO, 'multi')
      expect(await r.cachedTag(REPO, 'multi')).toEqual({ digest: pushed.digest })
      await r.deleteManifest(REPO, 'multi')
      expect(await r.cachedTag(REPO, 'multi')).toBeUndefined()
      expect((await r.listTags(REPO, {})).items).toEqual([])

      const before = Date.now()
      await r.cacheManifest(REPO, 'now', undefined, index)
      expect((await r.cachedTag(REPO, 'now'))?.checkedAt).toBeGreaterThanOrEqual(before)
      await expect(r.cachedTag(REPO, 'bad:tag')).rejects.toMatchObject({ name: 'TagInvalidError' })
    })
  })

  describe('listing', () => {
    it('lists tags sorted with n/last pagination', async () => {
      const img = await pushImage(r, REPO, 'b')
      for (const t of ['a', 'C', 'c', '1.0', 'latest'])
        await r.putManifest(REPO, t, MEDIA_TYPES.ociManifest, img.body)
      expect((await r.listTags(REPO, {})).items).toEqual(['1.0', 'C', 'a', 'b', 'c', 'latest'])
      const p1 = await r.listTags(REPO, { n: 2 })
      expect(p1).toEqual({ items: ['1.0', 'C'], next: { n: 2, last: 'C' } })
      const p2 = await r.listTags(REPO, { n: 2, last: 'C' })
      expect(p2).toEqual({ items: ['a', 'b'], next: { n: 2, last: 'b' } })
      const p3 = await r.listTags(REPO, { n: 2, last: 'b' })
      expect(p3).toEqual({ items: ['c', 'latest'] })
      expect(await r.listTags(REPO, { n: 10, last: 'latest' })).toEqual({ items: [] })
      expect(await r.listTags(REPO, { n: 0 })).toEqual({ items: [] })
      expect(await r.listTags(REPO, { last: 'b' })).toEqual({ items: ['c', 'latest'] })
    })

    it('answers NameUnknownError for the tags of an unknown repository', async () => {
      await expect(r.listTags('no/such', {})).rejects.toMatchObject({ name: 'NameUnknownError' })
      await pushBlob(r, 'only/blobs', new Uint8Array(1))
      expect(await r.listTags('only/blobs', {})).toEqual({ items: [] })
    })

    it('lists the catalog sorted with pagination, including nested names', async () => {
      for (const name of ['library/alpine', 'b', 'library', 'a/b/c', 'x-y', 'library/alpine/extra']) {
        await pushBlob(r, name, new Uint8Array(1))
      }
      await r.startUpload('upload/only')
      const all = ['a/b/c', 'b', 'library', 'library/alpine', 'library/alpine/extra', 'x-y']
      expect((await r.catalog({})).items).toEqual(all)
      expect(await r.catalog({ n: 4 })).toEqual({
        items: all.slice(0, 4),
        next: { n: 4, last: 'library/alpine' },
      })
      expect(await r.catalog({ n: 4, last: 'library/alpine' })).toEqual({ items: all.slice(4) })
    })
  })

  describe('validation', () => {
    const badNames = [
      '',
      'UPPER',
      '../etc',
      'a//b',
      '/abs',
      'a/',
      '-lead',
      'a/../b',
      'a\0b',
      '%2e%2e',
      '_layers',
    ]
    const digest = digestOf('x')

    it('rejects invalid repository names everywhere (NameInvalidError)', async () => {
      const calls: Array<(name: string) => Promise<unknown>> = [
        (n) => r.statBlob(n, digest),
        (n) => r.getBlob(n, digest),
        (n) => r.deleteBlob(n, digest),
        (n) => r.mountBlob(n, digest),
        (n) => r.startUpload(n),
        (n) => r.getUpload(n, 'id'),
        (n) => r.appendUpload(n, 'id', bodyOf()),
        (n) => r.completeUpload(n, 'id', digest),
        (n) => r.cancelUpload(n, 'id'),
        (n) => r.getManifest(n, 'latest'),
        (n) => r.statManifest(n, 'latest'),
        (n) => r.putManifest(n, 'latest', undefined, Buffer.from('{}')),
        (n) => r.deleteManifest(n, 'latest'),
        (n) => r.listTags(n, {}),
        (n) => r.referrers(n, digest),
      ]
      for (const name of badNames) {
        for (const call of calls) {
          await expect(call(name), `${JSON.stringify(name)} ${call}`).rejects.toMatchObject({
            name: 'NameInvalidError',
          })
        }
      }
      expect(await driver.list('/')).toEqual([])
    })

    it('rejects invalid tags (TagInvalidError) and digests (DigestInvalidError)', async () => {
      for (const tag of ['-x', '.x', 'a b', 'x'.repeat(129), '..', 'a/b']) {
        await expect(r.getManifest(REPO, tag), tag).rejects.toMatchObject({ name: 'TagInvalidError' })
        await expect(r.putManifest(REPO, tag, undefined, Buffer.from('{}')), tag).rejects.toMatchObject({
          name: 'TagInvalidError',
        })
        await expect(r.deleteManifest(REPO, tag), tag).rejects.toMatchObject({ name: 'TagInvalidError' })
      }
      for (const d of [
        'sha256:short',
        'sha1:0000000000000000000000000000000000000000',
        'sha256:../../x',
        'a:b:c',
      ]) {
        await expect(r.statBlob(REPO, d), d).rejects.toMatchObject({ name: 'DigestInvalidError' })
        await expect(r.getManifest(REPO, d), d).rejects.toMatchObject({ name: 'DigestInvalidError' })
        await expect(r.referrers(REPO, d), d).rejects.toMatchObject({ name: 'DigestInvalidError' })
        await expect(r.mountBlob(REPO, d), d).rejects.toMatchObject({ name: 'DigestInvalidError' })
      }
    })
  })

  it('calls the commit hook through vi.fn', async () => {
    const hook = vi.fn()
    r = open({ onBlobCommitted: hook })
    const { bytes, digest } = blobFixture(9)
    await pushBlob(r, REPO, bytes)
    expect(hook).toHaveBeenCalledWith({ digest, size: 9 } satisfies { digest: Digest; size: number })
  })
})
