import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type Digest, digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import {
  createMemoryDriver,
  createStorageRegistry,
  type StorageDriver,
  type StorageRegistry,
} from './index.js'
import {
  blobFixture,
  descriptorOf,
  drain,
  imageIndex,
  imageManifest,
  pushBlob,
  pushImage,
} from './testing.js'

const REPO = 'library/app'
const GRACE = 60_000

/** Wraps a driver so the first `list(path)` waits until released (to freeze a GC mid-run). */
function gateList(inner: StorageDriver, path: string) {
  let reached!: () => void
  let release!: () => void
  const reachedP = new Promise<void>((r) => {
    reached = r
  })
  const releaseP = new Promise<void>((r) => {
    release = r
  })
  let armed = false
  const driver: StorageDriver = {
    ...inner,
    async list(p, options) {
      if (armed && p === path) {
        armed = false
        reached()
        await releaseP
      }
      return inner.list(p, options)
    },
  }
  return {
    driver,
    arm: () => {
      armed = true
    },
    reached: reachedP,
    release,
  }
}

async function exists(driver: StorageDriver, digest: Digest): Promise<boolean> {
  const hex = digest.split(':')[1]!
  return (await driver.stat(`/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`)) !== undefined
}

async function countBlobs(driver: StorageDriver): Promise<number> {
  let n = 0
  for (const prefix of await driver.list('/blobs/sha256')) {
    for (const hex of await driver.list(`/blobs/sha256/${prefix}`)) {
      if (await driver.stat(`/blobs/sha256/${prefix}/${hex}/data`)) n++
    }
  }
  return n
}

async function readable(r: StorageRegistry, repository: string, reference: string): Promise<void> {
  const m = await r.getManifest(repository, reference)
  const parsed = JSON.parse(Buffer.from(m.body).toString()) as {
    config?: { digest: string }
    layers?: Array<{ digest: string }>
    manifests?: Array<{ digest: string }>
  }
  if (parsed.config) await drain((await r.getBlob(repository, parsed.config.digest)).stream)
  for (const l of parsed.layers ?? []) await drain((await r.getBlob(repository, l.digest)).stream)
  for (const c of parsed.manifests ?? []) await readable(r, repository, c.digest)
}

describe('garbage collection', () => {
  let driver: StorageDriver
  let r: StorageRegistry
  let shift: number

  function open(d: StorageDriver): StorageRegistry {
    return createStorageRegistry({ driver: d }, { now: () => Date.now() + shift })
  }

  beforeEach(async () => {
    shift = 0
    driver = createMemoryDriver()
    r = open(driver)
    await r.start()
  })
  afterEach(async () => {
    await r.stop()
  })

  it('keeps unreferenced content through the grace period and removes it afterwards', async () => {
    const { bytes, digest } = blobFixture(123)
    await pushBlob(r, REPO, bytes)
    let report = await r.collectGarbage({ graceMs: GRACE })
    expect(report).toMatchObject({ blobsDeleted: 0, bytesFreed: 0, dryRun: false })
    expect(await exists(driver, digest)).toBe(true)

    shift = GRACE + 1000
    report = await r.collectGarbage({ graceMs: GRACE })
    expect(report).toMatchObject({ blobsDeleted: 1, bytesFreed: 123, linksDeleted: 1 })
    expect(await exists(driver, digest)).toBe(false)
    await expect(r.statBlob(REPO, digest)).rejects.toMatchObject({ name: 'BlobUnknownError' })
  })

  it('keeps everything a tag reaches and removes an untagged image once it is old', async () => {
    const kept = await pushImage(r, REPO, 'keep', { seed: 1 })
    const dropped = await pushImage(r, REPO, 'drop', { seed: 2 })
    await r.deleteManifest(REPO, 'drop')
    shift = GRACE + 1000
    const report = await r.collectGarbage({ graceMs: GRACE })
    expect(report).toMatchObject({ manifestsDeleted: 1, blobsDeleted: 3, manifestsMarked: 1 })
    await readable(r, REPO, 'keep')
    await expect(r.getManifest(REPO, dropped.digest)).rejects.toMatchObject({ name: 'ManifestUnknownError' })
    for (const d of [dropped.digest, dropped.config.digest, ...dropped.layers.map((l) => l.digest)]) {
      expect(await exists(driver, d)).toBe(false)
    }
    for (const d of [kept.digest, kept.config.digest, ...kept.layers.map((l) => l.digest)]) {
      expect(await exists(driver, d)).toBe(true)
    }
  })

  it('keeps untagged manifests younger than the grace period, and all of them with deleteUntagged: false', async () => {
    const img = await pushImage(r, REPO, 'x')
    await r.deleteManifest(REPO, 'x')
    expect((await r.collectGarbage({ graceMs: GRACE })).manifestsDeleted).toBe(0)
    shift = GRACE + 1000
    expect((await r.collectGarbage({ graceMs: GRACE, deleteUntagged: false })).manifestsDeleted).toBe(0)
    await readable(r, REPO, img.digest)
    expect((await r.collectGarbage({ graceMs: GRACE })).manifestsDeleted).toBe(1)
  })

  it('never removes a manifest an index still references, nor its blobs', async () => {
    const a = await pushImage(r, REPO, 'tmp', { seed: 1 })
    const b = await pushImage(r, REPO, 'tmp', { seed: 2 })
    const index = imageIndex([
      descriptorOf(MEDIA_TYPES.ociManifest, a.body),
      descriptorOf(MEDIA_TYPES.ociManifest, b.body),
    ])
    await r.putManifest(REPO, 'multi', MEDIA_TYPES.ociIndex, index)
    // Children pushed by digest only: no tag points at them.
    await r.deleteManifest(REPO, 'tmp')
    expect((await r.listTags(REPO, {})).items).toEqual(['multi'])

    shift = GRACE + 1000
    const report = await r.collectGarbage({ graceMs: GRACE })
    expect(report).toMatchObject({ manifestsDeleted: 0, blobsDeleted: 0, manifestsMarked: 3 })
    await readable(r, REPO, 'multi')

    await r.deleteManifest(REPO, 'multi')
    const after = await r.collectGarbage({ graceMs: GRACE })
    expect(after).toMatchObject({ manifestsDeleted: 3, blobsDeleted: 7 })
    expect(await countBlobs(driver)).toBe(0)
    expect(await driver.list('/blobs/sha256')).toEqual([])
  })

  it('keeps what a cached index reaches when most of its children were never fetched', async () => {
    // A pull-through cache stored the index and one platform; the other never came.
    const pulled = await pushImage(r, REPO, 'tmp', { seed: 1 })
    await r.deleteManifest(REPO, 'tmp')
    const configBytes = Buffer.from('{"architecture":"arm64"}')
    const unfetched = imageManifest(descriptorOf(MEDIA_TYPES.ociConfig, configBytes), [
      descriptorOf(MEDIA_TYPES.ociLayerGzip, blobFixture(99, 9).bytes),
    ])
    const index = imageIndex([
      descriptorOf(MEDIA_TYPES.ociManifest, pulled.body),
      descriptorOf(MEDIA_TYPES.ociManifest, unfetched),
    ])
    await r.cacheManifest(REPO, 'multi', MEDIA_TYPES.ociIndex, index)
    const untagged = imageIndex([descriptorOf(MEDIA_TYPES.ociManifest, unfetched)])
    await r.cacheManifest(REPO, digestOf(untagged), MEDIA_TYPES.ociIndex, untagged)

    shift = GRACE + 1000
    const report = await r.collectGarbage({ graceMs: GRACE })
    expect(report).toMatchObject({ manifestsDeleted: 1, blobsDeleted: 1 })
    await readable(r, REPO, pulled.digest)
    expect((await r.getManifest(REPO, 'multi')).digest).toBe(digestOf(index))
    for (const d of [
      digestOf(index),
      pulled.digest,
      pulled.config.digest,
      ...pulled.layers.map((l) => l.digest),
    ]) {
      expect(await exists(driver, d)).toBe(true)
    }
    expect(await exists(driver, digestOf(untagged))).toBe(false)
    await expect(r.getManifest(REPO, digestOf(untagged))).rejects.toMatchObject({
      name: 'ManifestUnknownError',
    })
  })

  it('keeps referrers of a live subject and drops them with it', async () => {
    const subject = await pushImage(r, REPO, 'v1')
    const empty = Buffer.from('{}')
    const sigBytes = Buffer.from('sig')
    await pushBlob(r, REPO, empty)
    await pushBlob(r, REPO, sigBytes)
    const sig = imageManifest(
      descriptorOf(MEDIA_TYPES.ociEmpty, empty),
      [descriptorOf('application/octet-stream', sigBytes)],
      {
        subject: descriptorOf(MEDIA_TYPES.ociManifest, subject.body),
        artifactType: 'application/vnd.example.sig',
      },
    )
    await r.putManifest(REPO, digestOf(sig), MEDIA_TYPES.ociManifest, sig)
    shift = GRACE + 1000
    expect((await r.collectGarbage({ graceMs: GRACE })).manifestsDeleted).toBe(0)
    await readable(r, REPO, digestOf(sig))
    expect((await r.referrers(REPO, subject.digest)).descriptors).toHaveLength(1)

    await r.deleteManifest(REPO, 'v1')
    const report = await r.collectGarbage({ graceMs: GRACE })
    expect(report.manifestsDeleted).toBe(2)
    expect((await r.referrers(REPO, subject.digest)).descriptors).toEqual([])
  })

  it('keeps content shared with a live image in another repository', async () => {
    const img = await pushImage(r, 'a', 'v1')
    await r.mountBlob('b', img.layers[0]!.digest, 'a')
    shift = GRACE + 1000
    expect((await r.collectGarbage({ graceMs: GRACE })).blobsDeleted).toBe(0)
    await drain((await r.getBlob('b', img.layers[0]!.digest)).stream)
  })

  it('reports without removing anything on a dry run', async () => {
    const img = await pushImage(r, REPO, 'x')
    await r.deleteManifest(REPO, 'x')
    await r.startUpload(REPO)
    shift = 2 * 24 * 3600 * 1000
    const report = await r.collectGarbage({ graceMs: GRACE, dryRun: true })
    expect(report).toMatchObject({ dryRun: true, manifestsDeleted: 1, blobsDeleted: 3, uploadsDeleted: 1 })
    expect(report.bytesFreed).toBeGreaterThan(0)
    await readable(r, REPO, img.digest)
    expect(await driver.list('/uploads')).toHaveLength(1)
  })

  it('shares one run between concurrent callers', async () => {
    const [x, y] = await Promise.all([r.collectGarbage({ graceMs: 0 }), r.collectGarbage({ graceMs: 0 })])
    expect(x).toBe(y)
  })

  it('stops at an aborted signal', async () => {
    await pushImage(r, REPO, 'x')
    await expect(r.collectGarbage({ graceMs: 0, signal: AbortSignal.abort() })).rejects.toThrow()
    await readable(r, REPO, 'x')
  })

  describe('while pushes go on', () => {
    it('does not delete an old blob that a manifest pushed during marking references', async () => {
      const gate = gateList(driver, '/blobs')
      await r.stop()
      r = open(gate.driver)
      const configBytes = Buffer.from('{"late":true}')
      const layer = blobFixture(500, 9)
      await pushBlob(r, REPO, configBytes)
      await pushBlob(r, REPO, layer.bytes)
      shift = GRACE + 1000 // both blobs are now old and unreferenced

      gate.arm()
      const gc = r.collectGarbage({ graceMs: GRACE })
      await gate.reached // marking is done; the GC is about to walk blobs/ and sweep
      const body = imageManifest(descriptorOf(MEDIA_TYPES.ociConfig, configBytes), [
        descriptorOf(MEDIA_TYPES.ociLayerGzip, layer.bytes),
      ])
      await r.putManifest(REPO, 'late', MEDIA_TYPES.ociManifest, body)
      gate.release()
      const report = await gc
      expect(report.blobsDeleted).toBe(0)
      await readable(r, REPO, 'late')
    })

    it('does not delete an old untagged child that an index pushed during marking references', async () => {
      const gate = gateList(driver, '/blobs')
      await r.stop()
      r = open(gate.driver)
      const child = await pushImage(r, REPO, 'child', { seed: 4 })
      await r.deleteManifest(REPO, 'child')
      shift = GRACE + 1000

      gate.arm()
      const gc = r.collectGarbage({ graceMs: GRACE })
      await gate.reached
      await r.putManifest(
        REPO,
        'idx',
        MEDIA_TYPES.ociIndex,
        imageIndex([descriptorOf(MEDIA_TYPES.ociManifest, child.body)]),
      )
      gate.release()
      const report = await gc
      expect(report).toMatchObject({ manifestsDeleted: 0, blobsDeleted: 0 })
      await readable(r, REPO, 'idx')
    })

    it('makes a push that starts after the sweep fail cleanly instead of linking deleted content', async () => {
      const layer = blobFixture(50, 3)
      const configBytes = Buffer.from('{}')
      await pushBlob(r, REPO, configBytes)
      await pushBlob(r, REPO, layer.bytes)
      shift = GRACE + 1000
      await r.collectGarbage({ graceMs: GRACE })
      const body = imageManifest(descriptorOf(MEDIA_TYPES.ociEmpty, configBytes), [
        descriptorOf(MEDIA_TYPES.ociLayerGzip, layer.bytes),
      ])
      await expect(r.putManifest(REPO, 'v', MEDIA_TYPES.ociManifest, body)).rejects.toMatchObject({
        name: 'ManifestBlobUnknownError',
      })
    })

    it('leaves every pushed image whole when pushes and collections interleave', async () => {
      const pushes: Promise<unknown>[] = []
      const gcs: Promise<unknown>[] = []
      for (let i = 0; i < 12; i++) {
        pushes.push(
          pushImage(r, `stress/r${i % 3}`, `t${i}`, {
            seed: i + 1,
            layers: [blobFixture(200 + i, i + 1).bytes, blobFixture(50, 1000 + i).bytes],
          }),
        )
        // Pushes in flight are protected by the grace period (their blobs precede their manifest).
        if (i % 3 === 0) gcs.push(r.collectGarbage({ graceMs: GRACE }))
      }
      await Promise.all([...pushes, ...gcs])
      shift = GRACE + 1000
      expect((await r.collectGarbage({ graceMs: GRACE })).blobsDeleted).toBe(0)
      for (let i = 0; i < 12; i++) await readable(r, `stress/r${i % 3}`, `t${i}`)
    })
  })
})
