import { createHash, randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { createPieceBufferPool } from './piece-buffers.js'
import { createPieceHasher, MIN_WORKER_PIECE_BYTES, type PieceHasher } from './piece-hasher.js'

const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

/** `data` copied into `piece` in runs of `run` bytes, each reported as it lands. */
async function fill(hasher: PieceHasher, piece: Uint8Array, data: Uint8Array, run: number): Promise<string> {
  const hash = hasher.begin(piece)
  for (let at = 0; at < data.byteLength; at += run) {
    const end = Math.min(data.byteLength, at + run)
    piece.set(data.subarray(at, end), at)
    hash.update(end)
  }
  return hash.digest()
}

describe('piece hasher', () => {
  let hasher: PieceHasher | undefined
  afterEach(async () => {
    await hasher?.close()
    hasher = undefined
  })

  it('hashes a shared piece on the worker, run by run, to the same sha256', async () => {
    hasher = createPieceHasher({ minWorkerBytes: 1024, runBytes: 64 * 1024 })
    const pool = createPieceBufferPool({ maxBuffers: 2, shared: true })
    const data = randomBytes(1024 * 1024 + 17)
    const piece = pool.take(data.byteLength)
    expect(piece.buffer).toBeInstanceOf(SharedArrayBuffer)
    // Odd runs, so the worker sees runs that do not line up with runBytes.
    expect(await fill(hasher, piece, data, 100_003)).toBe(sha(data))
    expect(hasher.stats()).toMatchObject({ worker: 1, inline: 0, pending: 0 })
  })

  it('hashes several pieces at once, each to its own sha256', async () => {
    hasher = createPieceHasher({ minWorkerBytes: 1, runBytes: 4096 })
    const pool = createPieceBufferPool({ maxBuffers: 4, shared: true })
    const datas = [randomBytes(300_000), randomBytes(200_000), randomBytes(100_000)]
    const hashes = await Promise.all(datas.map((d) => fill(hasher!, pool.take(d.byteLength), d, 7_000)))
    expect(hashes).toEqual(datas.map(sha))
    expect(hasher.stats().worker).toBe(3)
  })

  it('hashes small pieces and unshared memory on the calling thread', async () => {
    hasher = createPieceHasher({ minWorkerBytes: 64 * 1024 })
    const shared = createPieceBufferPool({ maxBuffers: 1, shared: true })
    const small = randomBytes(1000)
    expect(await fill(hasher, shared.take(small.byteLength), small, 333)).toBe(sha(small))
    const big = randomBytes(128 * 1024)
    expect(await fill(hasher, Buffer.allocUnsafe(big.byteLength), big, 5000)).toBe(sha(big))
    expect(hasher.stats()).toMatchObject({ worker: 0, inline: 2 })
  })

  it('by default hashes shared pieces on the worker from MIN_WORKER_PIECE_BYTES up', async () => {
    hasher = createPieceHasher()
    const pool = createPieceBufferPool({ maxBuffers: 2, shared: true })
    const below = randomBytes(MIN_WORKER_PIECE_BYTES / 2)
    expect(await fill(hasher, pool.take(below.byteLength), below, 64 * 1024)).toBe(sha(below))
    expect(hasher.stats()).toMatchObject({ worker: 0, inline: 1 })
    const at = randomBytes(MIN_WORKER_PIECE_BYTES)
    expect(await fill(hasher, pool.take(at.byteLength), at, 64 * 1024)).toBe(sha(at))
    expect(hasher.stats()).toMatchObject({ worker: 1, inline: 1 })
  })

  it('fails pending digests on close, and works again after', async () => {
    hasher = createPieceHasher({ minWorkerBytes: 1 })
    const pool = createPieceBufferPool({ maxBuffers: 2, shared: true })
    const data = randomBytes(4 * 1024 * 1024)
    const piece = pool.take(data.byteLength)
    piece.set(data)
    const hash = hasher.begin(piece)
    hash.update(data.byteLength)
    const pending = expect(hash.digest()).rejects.toThrow(/closed/)
    await hasher.close()
    await pending
    expect(await fill(hasher, pool.take(1000), data.subarray(0, 1000), 1000)).toBe(
      sha(data.subarray(0, 1000)),
    )
  })

  it('does not keep the process alive once idle', async () => {
    const { spawnSync } = await import('node:child_process')
    // A hasher used once and never closed: the process still exits on its own.
    const script = `
      const { createPieceHasher } = await import(${JSON.stringify(new URL('./piece-hasher.ts', import.meta.url).pathname)})
      const h = createPieceHasher({ minWorkerBytes: 1 })
      const piece = Buffer.from(new SharedArrayBuffer(1 << 20)).fill(1)
      const hash = h.begin(piece)
      hash.update(piece.byteLength)
      console.log((await hash.digest()).slice(0, 8))
    `
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      timeout: 20_000,
      encoding: 'utf8',
    })
    expect(run.signal).toBeNull()
    expect(run.status).toBe(0)
    expect(run.stdout.trim()).toBe(sha(Buffer.alloc(1 << 20, 1)).slice(0, 8))
  })
})
