import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import { createManifestCache } from './manifest-cache.js'

describe('createManifestCache', () => {
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-manifest-cache-'))
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('stores by digest, survives a restart, and drops an entry whose bytes were damaged', async () => {
    const body = Buffer.from('{"schemaVersion":2}')
    const digest = digestOf(body)
    const first = createManifestCache({ root: dir })
    await first.start()
    expect(await first.get(digest)).toBeUndefined()
    await first.put({ digest, mediaType: MEDIA_TYPES.ociManifest, size: body.byteLength, body })

    const second = createManifestCache({ root: dir })
    await second.start()
    const got = await second.get(digest)
    expect(got?.mediaType).toBe(MEDIA_TYPES.ociManifest)
    expect(Buffer.from(got?.body ?? []).equals(body)).toBe(true)

    await writeFile(join(dir, 'sha256', digest.slice(7)), '{"schemaVersion":3}')
    expect(await second.get(digest)).toBeUndefined()
    expect((await readdir(join(dir, 'sha256'))).length).toBe(0)
  })

  it('refuses a body that does not hash to its digest', async () => {
    const cache = createManifestCache({ root: dir })
    await cache.start()
    const digest = digestOf('a')
    await expect(
      cache.put({ digest, mediaType: MEDIA_TYPES.ociManifest, size: 1, body: Buffer.from('b') }),
    ).rejects.toMatchObject({ name: 'DigestMismatchError' })
  })
})
