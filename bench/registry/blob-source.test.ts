import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type BlobVariant, createBlobSource } from './blob-source.js'

async function readRange(blob: BlobVariant, start: number, end: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of blob.read(start, end)) chunks.push(chunk)
  return Buffer.concat(chunks)
}

describe('createBlobSource', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-blob-source-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('gives variants of the exact size whose digest matches their bytes', async () => {
    const source = await createBlobSource({ dir, sizeBytes: 3 * 1024 * 1024 + 7 })
    const a = source.variant('a')
    const b = source.variant('b')
    const bytesA = await readRange(a, 0, a.size)
    expect(bytesA.length).toBe(source.size)
    expect('sha256:' + createHash('sha256').update(bytesA).digest('hex')).toBe(a.digest)
    expect(b.digest).not.toBe(a.digest)
    expect(source.variant('a').digest).toBe(a.digest)
  })

  it('reads any range, including ones that straddle the variant suffix', async () => {
    const source = await createBlobSource({ dir, sizeBytes: 1000 })
    const blob = source.variant('x')
    const whole = await readRange(blob, 0, 1000)
    const parts = [
      await readRange(blob, 0, 400),
      await readRange(blob, 400, 980),
      await readRange(blob, 980, 1000),
    ]
    expect(Buffer.concat(parts).equals(whole)).toBe(true)
    expect((await readRange(blob, 990, 995)).equals(whole.subarray(990, 995))).toBe(true)
    await expect(readRange(blob, 0, 1001)).rejects.toThrow(RangeError)
  })

  it('keeps two sources of the same size in one folder apart', async () => {
    const first = await createBlobSource({ dir, sizeBytes: 4096 })
    await createBlobSource({ dir, sizeBytes: 4096 })
    const blob = first.variant('a')
    const bytes = await readRange(blob, 0, blob.size)
    expect('sha256:' + createHash('sha256').update(bytes).digest('hex')).toBe(blob.digest)
  })
})
