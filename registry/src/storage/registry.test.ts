import { describe, expect, it } from 'vitest'
import { MEDIA_TYPES } from '../../../protocol/src/index.js'
import { createMemoryDriver, createStorageRegistry } from './index.js'
import { blobFixture, bodyOf, descriptorOf, drain, imageManifest } from './testing.js'

describe('storage registry (smoke)', () => {
  it('pushes a blob and a manifest and reads them back', async () => {
    const r = createStorageRegistry({ driver: createMemoryDriver() })
    const layer = blobFixture(1000)
    const config = Buffer.from('{}')
    const u = await r.startUpload('library/alpine')
    await r.appendUpload('library/alpine', u.id, bodyOf(layer.bytes.subarray(0, 500)), {
      start: 0,
      length: 500,
    })
    const info = await r.completeUpload(
      'library/alpine',
      u.id,
      layer.digest,
      bodyOf(layer.bytes.subarray(500)),
    )
    expect(info).toEqual({ digest: layer.digest, size: 1000 })
    const u2 = await r.startUpload('library/alpine')
    await r.completeUpload(
      'library/alpine',
      u2.id,
      descriptorOf(MEDIA_TYPES.ociEmpty, config).digest,
      bodyOf(config),
    )
    const body = imageManifest(descriptorOf(MEDIA_TYPES.ociEmpty, config), [
      descriptorOf(MEDIA_TYPES.ociLayerTar, layer.bytes),
    ])
    const put = await r.putManifest('library/alpine', 'latest', MEDIA_TYPES.ociManifest, body)
    expect((await r.getManifest('library/alpine', 'latest')).digest).toBe(put.digest)
    const reader = await r.getBlob('library/alpine', layer.digest)
    expect((await drain(reader.stream)).equals(layer.bytes)).toBe(true)
  })
})
