import * as fs from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import { createFilesystemDriver, createStorageRegistry, type StorageRegistry } from './index.js'
import { blobFixture, bodyOf, drain, pushImage } from './testing.js'

const REPO = 'team/app'

describe('storage registry persistence on the filesystem', () => {
  let dir: string
  const open: StorageRegistry[] = []

  function registry(init: { now?: () => number; uploadTtlMs?: number } = {}): StorageRegistry {
    const r = createStorageRegistry({ driver: createFilesystemDriver({ root: dir }) }, init)
    open.push(r)
    return r
  }

  beforeEach(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'shoal-persist-'))
  })
  afterEach(async () => {
    for (const r of open.splice(0)) await r.stop()
    await fs.rm(dir, { recursive: true, force: true })
  })

  it('continues an upload after a restart and verifies the whole content', async () => {
    const { bytes, digest } = blobFixture(5000)
    const before = registry()
    const u = await before.startUpload(REPO)
    await before.appendUpload(REPO, u.id, bodyOf(bytes.subarray(0, 2000)), { start: 0, length: 2000 })
    await before.stop()

    const after = registry()
    expect(await after.getUpload(REPO, u.id)).toEqual({ ...u, offset: 2000 })
    await after.appendUpload(REPO, u.id, bodyOf(bytes.subarray(2000, 4000)), { start: 2000 })
    await expect(
      after.completeUpload(REPO, u.id, blobFixture(5000, 3).digest, bodyOf(bytes.subarray(4000))),
    ).rejects.toMatchObject({
      name: 'DigestMismatchError',
    })

    const again = await after.startUpload(REPO)
    await after.appendUpload(REPO, again.id, bodyOf(bytes.subarray(0, 2500)))
    const third = registry()
    expect(await third.completeUpload(REPO, again.id, digest, bodyOf(bytes.subarray(2500)))).toEqual({
      digest,
      size: 5000,
    })
    expect((await drain((await third.getBlob(REPO, digest)).stream)).equals(bytes)).toBe(true)
  })

  it('continues a sha512 upload after a restart', async () => {
    const { bytes } = blobFixture(1000)
    const digest = digestOf(bytes, 'sha512')
    const before = registry()
    const u = await before.startUpload(REPO)
    await before.appendUpload(REPO, u.id, bodyOf(bytes.subarray(0, 10)))
    const after = registry()
    expect(await after.completeUpload(REPO, u.id, digest, bodyOf(bytes.subarray(10)))).toEqual({
      digest,
      size: 1000,
    })
  })

  it('cuts off bytes written after the last acknowledged chunk (crash before the state was saved)', async () => {
    const { bytes, digest } = blobFixture(400)
    const before = registry()
    const u = await before.startUpload(REPO)
    await before.appendUpload(REPO, u.id, bodyOf(bytes.subarray(0, 100)))
    // A crash mid-chunk leaves unacknowledged bytes in the data file.
    await fs.appendFile(join(dir, 'uploads', u.id, 'data'), Buffer.alloc(77, 0xee))

    const after = registry()
    expect((await after.getUpload(REPO, u.id)).offset).toBe(100)
    await after.appendUpload(REPO, u.id, bodyOf(bytes.subarray(100, 300)), { start: 100 })
    expect(await after.completeUpload(REPO, u.id, digest, bodyOf(bytes.subarray(300)))).toEqual({
      digest,
      size: 400,
    })
  })

  it('refuses an upload whose acknowledged data has been lost', async () => {
    const r = registry()
    const u = await r.startUpload(REPO)
    await r.appendUpload(REPO, u.id, bodyOf(new Uint8Array(50)))
    await fs.truncate(join(dir, 'uploads', u.id, 'data'), 10)
    await expect(r.appendUpload(REPO, u.id, bodyOf(new Uint8Array(5)))).rejects.toMatchObject({
      name: 'BlobUploadInvalidError',
    })
  })

  it('keeps manifests, tags and referrers across restarts', async () => {
    const before = registry()
    const img = await pushImage(before, REPO, 'v1')
    const after = registry()
    expect((await after.getManifest(REPO, 'v1')).digest).toBe(img.digest)
    expect((await after.listTags(REPO, {})).items).toEqual(['v1'])
    expect((await after.catalog({})).items).toEqual([REPO])
    expect((await after.statManifest(REPO, img.digest)).mediaType).toBe(MEDIA_TYPES.ociManifest)
  })

  it('keeps cached manifests and the confirmation time of cached tags across restarts', async () => {
    const before = registry()
    const child = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociManifest,
        config: { mediaType: MEDIA_TYPES.ociConfig, digest: digestOf('absent config'), size: 13 },
        layers: [],
      }),
    )
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [{ mediaType: MEDIA_TYPES.ociManifest, digest: digestOf(child), size: child.byteLength }],
      }),
    )
    await before.cacheManifest(REPO, 'multi', MEDIA_TYPES.ociIndex, index, { checkedAt: 42 })
    await before.cacheManifest(REPO, digestOf(child), MEDIA_TYPES.ociManifest, child)
    const after = registry()
    expect(await after.cachedTag(REPO, 'multi')).toEqual({ digest: digestOf(index), checkedAt: 42 })
    expect((await after.getManifest(REPO, 'multi')).digest).toBe(digestOf(index))
    expect((await after.getManifest(REPO, digestOf(child))).digest).toBe(digestOf(child))
  })

  it('never exposes content under blobs/ before it is verified', async () => {
    const r = registry()
    const u = await r.startUpload(REPO)
    await r.appendUpload(REPO, u.id, bodyOf(blobFixture(100).bytes))
    await expect(fs.readdir(join(dir, 'blobs'))).rejects.toMatchObject({ code: 'ENOENT' })
    await r.completeUpload(REPO, u.id, blobFixture(100).digest)
    const hex = blobFixture(100).digest.slice('sha256:'.length)
    expect((await fs.stat(join(dir, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'))).size).toBe(100)
    expect(await fs.readdir(join(dir, 'uploads'))).toEqual([])
  })

  it('expires idle uploads and lets GC remove them', async () => {
    let shift = 0
    const r = registry({ now: () => Date.now() + shift, uploadTtlMs: 60_000 })
    const idle = await r.startUpload(REPO)
    await r.appendUpload(REPO, idle.id, bodyOf(new Uint8Array(10)))
    shift = 61_000
    const fresh = await r.startUpload(REPO)
    await expect(r.getUpload(REPO, idle.id)).rejects.toMatchObject({ name: 'BlobUploadUnknownError' })
    await expect(r.appendUpload(REPO, idle.id, bodyOf(new Uint8Array(1)))).rejects.toMatchObject({
      name: 'BlobUploadUnknownError',
    })
    const report = await r.collectGarbage({ graceMs: 0 })
    expect(report.uploadsDeleted).toBe(1)
    expect(await fs.readdir(join(dir, 'uploads'))).toEqual([fresh.id])
    expect((await r.getUpload(REPO, fresh.id)).offset).toBe(0)
  })

  it('removes upload directories whose state never got written, once they are old', async () => {
    let shift = 0
    const r = registry({ now: () => Date.now() + shift, uploadTtlMs: 60_000 })
    const orphan = '0f0f0f0f-0000-4000-8000-000000000000'
    await fs.mkdir(join(dir, 'uploads', orphan), { recursive: true })
    await fs.writeFile(join(dir, 'uploads', orphan, 'data'), 'partial')
    expect((await r.collectGarbage({ graceMs: 0 })).uploadsDeleted).toBe(0)
    shift = 61_000
    expect((await r.collectGarbage({ graceMs: 0 })).uploadsDeleted).toBe(1)
    expect(await fs.readdir(join(dir, 'uploads'))).toEqual([])
  })
})
