import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, readFile, readlink, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type Digest, digestOf } from '../../../protocol/src/index.js'
import { MIN_PIECE_SIZE } from '../../../protocol/src/piece-map.js'
import { type BlobCache, type BlobCacheInit, createBlobCache } from './blob-cache.js'
import { runCommand } from '../../../test/helpers/processes.js'
import { blobPaths } from './paths.js'

const PIECE = 16 * 1024

interface Fixture {
  bytes: Buffer
  digest: Digest
  pieces: Buffer[]
}

function fixture(size: number, pieceSize = PIECE): Fixture {
  const bytes = randomBytes(size)
  const pieces: Buffer[] = []
  for (let off = 0; off < size; off += pieceSize) pieces.push(bytes.subarray(off, off + pieceSize))
  return { bytes, digest: digestOf(bytes), pieces }
}

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c))
  return Buffer.concat(chunks)
}

/** Opens `f` in `cache` and writes every piece, leaving the blob to be completed. */
async function writeEveryPiece(cache: BlobCache, f: Fixture): Promise<void> {
  await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
  for (const [i, piece] of f.pieces.entries()) await cache.writePiece(f.digest, i, piece)
}

/** This process's open file descriptors on `files` (from /proc/self/fd; Linux only). */
async function openDescriptors(files: string[]): Promise<number> {
  let n = 0
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(join('/proc/self/fd', fd)).catch(() => '')
    if (files.some((f) => target === f || target === `${f} (deleted)`)) n++
  }
  return n
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes
}

describe('blob cache', () => {
  let root: string
  const caches: BlobCache[] = []

  async function makeCache(init: Partial<BlobCacheInit> = {}): Promise<BlobCache> {
    const cache = createBlobCache({}, { root, quotaBytes: 1 << 30, readChunkBytes: 8 * 1024, ...init })
    await cache.start()
    caches.push(cache)
    return cache
  }

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'shoal-cache-'))
  })

  afterEach(async () => {
    for (const c of caches.splice(0)) await c.stop()
    await rm(root, { recursive: true, force: true })
  })

  it('reads a blob whose partial file was renamed into place before the entry was marked complete', async () => {
    const cache = await makeCache()
    const f = fixture(3 * PIECE + 100)
    await writeEveryPiece(cache, f)
    // Completion renames the data file, then syncs and cleans up before it marks the
    // entry complete: a reader opening in between finds neither name it expects.
    const paths = blobPaths(root, f.digest)
    await mkdir(dirname(paths.blob), { recursive: true })
    await rename(paths.partialData, paths.blob)
    expect(cache.stat(f.digest)).toMatchObject({ complete: false })
    expect(await readAll(cache.readRange(f.digest, 0, f.bytes.length))).toEqual(f.bytes)
    expect(await readAll(cache.readRange(f.digest, PIECE + 5, 2 * PIECE))).toEqual(
      f.bytes.subarray(PIECE + 5, 2 * PIECE),
    )
  })

  it('shares one read handle among the readers of a blob and closes it once they are done', async () => {
    const cache = await makeCache({ readHandleIdleMs: 1_000 })
    const f = fixture(4 * PIECE)
    await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    for (const i of [0, 1, 2]) await cache.writePiece(f.digest, i, f.pieces[i]!)
    const paths = blobPaths(root, f.digest)
    const files = [paths.partialData, paths.blob]
    // The write handle is open while the download runs; readers add one handle between them.
    const writing = await openDescriptors(files)
    const readers = [0, 1, 2, 0, 1].map((i) => readAll(cache.readRange(f.digest, i * PIECE, (i + 1) * PIECE)))
    const got = await Promise.all(readers)
    for (const [k, i] of [0, 1, 2, 0, 1].entries()) expect(got[k]).toEqual(f.pieces[i])
    expect(await openDescriptors(files)).toBe(writing + 1)
    // A reader that waits for a piece holds the handle across the completion's rename.
    const waiting = readAll(cache.readRange(f.digest, 2 * PIECE, 4 * PIECE, { wait: true }))
    await cache.writePiece(f.digest, 3, f.pieces[3]!)
    await cache.complete(f.digest)
    expect(await waiting).toEqual(f.bytes.subarray(2 * PIECE))
    expect(await openDescriptors(files)).toBe(1)
    expect(await readAll(cache.readRange(f.digest, 0, f.bytes.length))).toEqual(f.bytes)
    await new Promise((resolve) => setTimeout(resolve, 1_500))
    expect(await openDescriptors(files)).toBe(0)
    // Deleted while a reader waits on it: the handle goes when that reader does.
    const paused = cache.readRange(f.digest, 0, f.bytes.length)[Symbol.asyncIterator]()
    expect((await paused.next()).done).toBe(false)
    await cache.delete(f.digest)
    expect(await openDescriptors(files)).toBe(1)
    await paused.return?.(undefined)
    await new Promise((resolve) => setImmediate(resolve))
    expect(await openDescriptors(files)).toBe(0)
  })

  it('reads range chunks into the memory the caller supplies, when it fits', async () => {
    const cache = await makeCache()
    const f = fixture(3 * PIECE + 100)
    await writeEveryPiece(cache, f)
    await cache.complete(f.digest)
    const supplied: Buffer[] = []
    const allocate = (length: number): Uint8Array => {
      // 8 KiB chunks: the last one (100 bytes) gets memory of the wrong length.
      const buffer = Buffer.alloc(length === 100 ? 99 : length)
      supplied.push(buffer)
      return buffer
    }
    const chunks: Uint8Array[] = []
    for await (const chunk of cache.readRange(f.digest, 0, f.bytes.length, { allocate })) chunks.push(chunk)
    expect(Buffer.concat(chunks)).toEqual(f.bytes)
    expect(chunks).toHaveLength(7)
    // Every chunk that fit is the very memory supplied; the misfit was allocated by the reader.
    for (let i = 0; i < 6; i++) expect(chunks[i]).toBe(supplied[i])
    expect(chunks[6]).not.toBe(supplied[6])
    expect(chunks[6]?.byteLength).toBe(100)
  })

  it('stores pieces, serves ranges and completes after the digest check', async () => {
    const cache = await makeCache()
    const f = fixture(5 * PIECE + 100)
    const st = await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    expect(st).toMatchObject({ complete: false, pieceCount: 6, piecesHeld: 0 })
    await cache.writePiece(f.digest, 1, f.pieces[1]!)
    expect(cache.hasPiece(f.digest, 1)).toBe(true)
    expect(cache.hasPiece(f.digest, 0)).toBe(false)
    expect(await readAll(cache.readRange(f.digest, PIECE + 10, PIECE + 5000))).toEqual(
      f.bytes.subarray(PIECE + 10, PIECE + 5000),
    )
    await expect(readAll(cache.readRange(f.digest, 0, 10))).rejects.toMatchObject({
      name: 'BlobUnknownError',
    })
    await expect(cache.complete(f.digest)).rejects.toMatchObject({ name: 'BlobUploadInvalidError' })
    await expect(cache.writePiece(f.digest, 5, f.pieces[0]!)).rejects.toMatchObject({
      name: 'SizeInvalidError',
    })
    await expect(cache.writePiece(f.digest, 6, f.pieces[5]!)).rejects.toMatchObject({
      name: 'RangeInvalidError',
    })
    for (const i of [0, 2, 3, 4, 5]) await cache.writePiece(f.digest, i, f.pieces[i]!)
    await cache.complete(f.digest)
    expect(cache.has(f.digest)).toBe(true)
    expect(cache.stat(f.digest)).toMatchObject({ complete: true, pieceCount: 6, piecesHeld: 6 })
    expect(await readAll(cache.readRange(f.digest, 0, f.bytes.length))).toEqual(f.bytes)
    expect(cache.list()).toEqual([
      expect.objectContaining({ digest: f.digest, complete: true, piecesHeld: 6 }),
    ])
    expect(() => cache.readRange(f.digest, 0, f.bytes.length + 1)).toThrow(
      expect.objectContaining({ name: 'RangeInvalidError' }),
    )
  })

  it('keeps no reference to a piece once writePiece settled, so the caller can reuse the buffer', async () => {
    const cache = await makeCache()
    const f = fixture(6 * PIECE)
    await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    // A reader waiting for the pieces and a listener of piece events, before any write.
    const streamed = readAll(cache.readRange(f.digest, 0, f.bytes.length, { wait: true }))
    const events: unknown[] = []
    cache.events.on('piece', (e) => events.push(e))
    const scratch = [Buffer.alloc(PIECE), Buffer.alloc(PIECE)]
    for (const i of [3, 0, 5, 1, 4, 2]) {
      // The same piece twice at once, from two buffers: the writes fold into one.
      const [a, b] = scratch as [Buffer, Buffer]
      f.pieces[i]!.copy(a)
      f.pieces[i]!.copy(b)
      const results = await Promise.allSettled([
        cache.writePiece(f.digest, i, a),
        cache.writePiece(f.digest, i, b),
      ])
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled'])
      // Reused for the next piece at once, as the scheduler's buffer pool does.
      a.fill(0xee)
      b.fill(0xdd)
      // A held piece is a no-op and reads nothing of the buffer.
      await cache.writePiece(f.digest, i, a)
    }
    expect(events).toHaveLength(6)
    expect(JSON.stringify(events)).not.toContain('data')
    expect((await streamed).equals(f.bytes)).toBe(true)
    expect((await readAll(cache.readRange(f.digest, 0, f.bytes.length))).equals(f.bytes)).toBe(true)
    await cache.complete(f.digest)
    expect(cache.has(f.digest)).toBe(true)
  })

  it('checks sha512 blobs with sha512', async () => {
    const cache = await makeCache()
    const bytes = randomBytes(PIECE + 5)
    const digest = digestOf(bytes, 'sha512')
    await cache.open(digest, { size: bytes.length, pieceSize: PIECE })
    await cache.writePiece(digest, 0, bytes.subarray(0, PIECE))
    await cache.writePiece(digest, 1, bytes.subarray(PIECE))
    await cache.complete(digest)
    expect(cache.has(digest)).toBe(true)
  })

  it('resumes a partial download after a restart, trusting only the persisted bitfield', async () => {
    const f = fixture(4 * PIECE)
    const layout = { size: f.bytes.length, pieceSize: PIECE }
    const first = await makeCache()
    await first.open(f.digest, layout)
    await first.writePiece(f.digest, 0, f.pieces[0]!)
    await first.writePiece(f.digest, 2, f.pieces[2]!)
    await first.stop()
    // Bytes that reached the data file without their bit (a crash before the bit was
    // persisted) must not count as held.
    const paths = blobPaths(root, f.digest)
    const data = await readFile(paths.partialData)
    f.pieces[3]!.copy(data, 3 * PIECE)
    await writeFile(paths.partialData, data)

    const second = await makeCache()
    expect(second.stat(f.digest)).toMatchObject({ complete: false, piecesHeld: 2, pieceCount: 4 })
    expect([0, 1, 2, 3].map((i) => second.hasPiece(f.digest, i))).toEqual([true, false, true, false])
    const again = await second.open(f.digest, layout)
    expect(again.piecesHeld).toBe(2)
    expect(second.list()[0]!.bitfield).toEqual(Uint8Array.of(0b1010_0000))
    await second.writePiece(f.digest, 1, f.pieces[1]!)
    await second.writePiece(f.digest, 3, f.pieces[3]!)
    await second.complete(f.digest)
    expect(await readAll(second.readRange(f.digest, 0, f.bytes.length))).toEqual(f.bytes)
    await second.stop()

    const third = await makeCache()
    expect(third.has(f.digest)).toBe(true)
    expect(third.stat(f.digest)).toMatchObject({ pieceSize: PIECE, pieceCount: 4 })
  })

  it('starts over when the persisted bitfield does not fit the layout', async () => {
    const f = fixture(3 * PIECE)
    const first = await makeCache()
    await first.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    await first.writePiece(f.digest, 0, f.pieces[0]!)
    await first.stop()
    await writeFile(blobPaths(root, f.digest).partialBits, Buffer.from([0xff, 0xff, 0xff]))
    const second = await makeCache()
    expect(second.stat(f.digest)).toMatchObject({ piecesHeld: 0 })
    await second.stop()
    // Of a bitfield of the right length, bits beyond the last piece are ignored.
    await writeFile(blobPaths(root, f.digest).partialBits, Buffer.from([0b1011_1111]))
    const third = await makeCache()
    expect(third.stat(f.digest)).toMatchObject({ piecesHeld: 2 })
    expect(third.bitfield(f.digest)).toEqual(Uint8Array.of(0b1010_0000))
  })

  it('evicts the least recently used blob to stay under the quota', async () => {
    const cache = await makeCache({ quotaBytes: 3 * PIECE })
    const [a, b, c, d] = [fixture(PIECE), fixture(PIECE), fixture(PIECE), fixture(PIECE)]
    for (const f of [a!, b!, c!]) await cache.putBlob(f.digest, f.bytes.length, once(f.bytes))
    await readAll(cache.readRange(a!.digest, 0, 10))
    const evicted: string[] = []
    cache.events.on('evicted', (e) => evicted.push(e.digest))
    await cache.putBlob(d!.digest, d!.bytes.length, once(d!.bytes))
    expect(evicted).toEqual([b!.digest])
    // Blobs stored whole get the default piece layout for their size.
    expect(cache.stat(d!.digest)).toMatchObject({ pieceSize: MIN_PIECE_SIZE, pieceCount: 1, piecesHeld: 1 })
    expect([a, b, c, d].map((f) => cache.has(f!.digest))).toEqual([true, false, true, true])
    expect(cache.usage().usedBytes).toBe(3 * PIECE)
    // A partial download reserves its full size up front.
    const e = fixture(2 * PIECE)
    await cache.open(e.digest, { size: e.bytes.length, pieceSize: PIECE })
    expect([a, c, d].map((f) => cache.has(f!.digest))).toEqual([false, false, true])
    expect(cache.usage().usedBytes).toBe(3 * PIECE)
  })

  it('never evicts pinned blobs and refuses without corrupting anything when nothing can be evicted', async () => {
    const cache = await makeCache({ quotaBytes: 2 * PIECE })
    const [a, b, c] = [fixture(PIECE), fixture(PIECE), fixture(2 * PIECE)]
    await cache.putBlob(a!.digest, PIECE, once(a!.bytes))
    await cache.putBlob(b!.digest, PIECE, once(b!.bytes))
    cache.pin(a!.digest)
    // A reader being served also pins its blob.
    const reader = cache.readRange(b!.digest, 0, PIECE)
    await expect(cache.open(c!.digest, { size: 2 * PIECE, pieceSize: PIECE })).rejects.toMatchObject({
      name: 'InsufficientStorageError',
    })
    await expect(cache.putBlob(c!.digest, 2 * PIECE, once(c!.bytes))).rejects.toMatchObject({
      name: 'InsufficientStorageError',
    })
    expect(cache.has(a!.digest) && cache.has(b!.digest)).toBe(true)
    expect(await readAll(reader)).toEqual(b!.bytes)
    expect(await readAll(cache.readRange(a!.digest, 0, PIECE))).toEqual(a!.bytes)
    // Once the reader is done only the unpinned blob goes.
    const small = fixture(PIECE)
    await cache.putBlob(small.digest, PIECE, once(small.bytes))
    expect([cache.has(a!.digest), cache.has(b!.digest), cache.has(small.digest)]).toEqual([true, false, true])
    cache.unpin(a!.digest)
    await cache.open(c!.digest, { size: 2 * PIECE, pieceSize: PIECE })
    expect(cache.has(a!.digest)).toBe(false)
  })

  it('detects a corrupted blob at completion and discards it', async () => {
    const cache = await makeCache()
    const f = fixture(2 * PIECE)
    await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    const discarded: string[] = []
    cache.events.on('discarded', (e) => discarded.push(e.digest))
    await cache.writePiece(f.digest, 0, f.pieces[0]!)
    await cache.writePiece(f.digest, 1, Buffer.alloc(PIECE, 1))
    await expect(cache.complete(f.digest)).rejects.toMatchObject({ name: 'DigestMismatchError' })
    expect(cache.stat(f.digest)).toBeUndefined()
    expect(discarded).toEqual([f.digest])
    expect(cache.usage().usedBytes).toBe(0)
    await expect(readFile(blobPaths(root, f.digest).partialData)).rejects.toMatchObject({ code: 'ENOENT' })
    // A whole blob that does not hash to its digest is never stored.
    await expect(
      cache.putBlob(f.digest, f.bytes.length, once(Buffer.alloc(f.bytes.length))),
    ).rejects.toMatchObject({
      name: 'DigestMismatchError',
    })
    expect(cache.has(f.digest)).toBe(false)
  })

  it('streams to concurrent readers while pieces arrive in any order and the blob completes', async () => {
    const cache = await makeCache()
    const f = fixture(8 * PIECE + 123)
    await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    const readers = [
      readAll(cache.readRange(f.digest, 0, f.bytes.length, { wait: true })),
      readAll(cache.readRange(f.digest, 3 * PIECE + 7, 7 * PIECE + 1, { wait: true })),
    ]
    const order = [8, 3, 0, 5, 1, 7, 2, 6, 4]
    await Promise.all(order.map((i) => cache.writePiece(f.digest, i, f.pieces[i]!)))
    await cache.complete(f.digest)
    const [whole, part] = await Promise.all(readers)
    expect(whole).toEqual(f.bytes)
    expect(part).toEqual(f.bytes.subarray(3 * PIECE + 7, 7 * PIECE + 1))
  })

  it('fails waiting readers when the download is discarded or the reader aborts', async () => {
    const cache = await makeCache()
    const f = fixture(2 * PIECE)
    await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    const waiting = readAll(cache.readRange(f.digest, 0, f.bytes.length, { wait: true }))
    const controller = new AbortController()
    const aborted = cache.waitForPiece(f.digest, 1, { signal: controller.signal })
    controller.abort(new Error('client went away'))
    await expect(aborted).rejects.toThrow('client went away')
    await cache.delete(f.digest)
    await expect(waiting).rejects.toMatchObject({ name: 'BlobUnknownError' })
  })

  it('releases the pin of a reader destroyed while it waits for a piece', async () => {
    const cache = await makeCache({ quotaBytes: 2 * PIECE })
    const [f, g] = [fixture(2 * PIECE), fixture(2 * PIECE)]
    await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    const reader = cache.readRange(f.digest, 0, f.bytes.length, { wait: true })
    reader.resume()
    // While the reader waits the partial blob is pinned and cannot make way for g.
    await expect(cache.open(g.digest, { size: g.bytes.length, pieceSize: PIECE })).rejects.toMatchObject({
      name: 'InsufficientStorageError',
    })
    const closed = new Promise((resolve) => reader.once('close', resolve))
    reader.destroy()
    await closed
    const deadline = Date.now() + 5_000
    let opened = false
    while (!opened && Date.now() < deadline) {
      opened = await cache.open(g.digest, { size: g.bytes.length, pieceSize: PIECE }).then(
        () => true,
        () => false,
      )
      if (!opened) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    expect(opened).toBe(true)
    expect(cache.stat(f.digest)).toBeUndefined()
  })

  it('reports a full disk as InsufficientStorageError and keeps what was held', async () => {
    // A real full file system: a tmpfs of 8 pages. The bitfield and the layout take a
    // page each and piece 0 four, so piece 1 runs out of space half way.
    const mountPoint = join(root, 'small')
    await mkdir(mountPoint)
    await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=32k', 'tmpfs', mountPoint])
    try {
      const f = fixture(3 * PIECE)
      const layout = { size: f.bytes.length, pieceSize: PIECE }
      const cache = await makeCache({ root: mountPoint })
      await cache.open(f.digest, layout)
      await cache.writePiece(f.digest, 0, f.pieces[0]!)
      await expect(cache.writePiece(f.digest, 1, f.pieces[1]!)).rejects.toMatchObject({
        name: 'InsufficientStorageError',
      })
      expect(cache.hasPiece(f.digest, 1)).toBe(false)
      await cache.stop()
      await runCommand('mount', ['-o', 'remount,size=1m', mountPoint])

      const again = await makeCache({ root: mountPoint })
      expect([0, 1, 2].map((i) => again.hasPiece(f.digest, i))).toEqual([true, false, false])
      await again.writePiece(f.digest, 1, f.pieces[1]!)
      await again.writePiece(f.digest, 2, f.pieces[2]!)
      await again.complete(f.digest)
      expect(await readAll(again.readRange(f.digest, 0, f.bytes.length))).toEqual(f.bytes)
      await again.stop()
    } finally {
      await runCommand('umount', ['-l', mountPoint], { allowFailure: true })
    }
  })

  it('serves a stored piece at once and writes its bit at the next flush', async () => {
    const f = fixture(2 * PIECE)
    const cache = await makeCache({ flushIntervalMs: 3_600_000 })
    await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    await cache.writePiece(f.digest, 0, f.pieces[0]!)
    expect(cache.hasPiece(f.digest, 0)).toBe(true)
    expect(await readAll(cache.readRange(f.digest, 0, PIECE))).toEqual(f.pieces[0])
    const { partialBits } = blobPaths(root, f.digest)
    // Not flushed yet: a process that died now would fetch piece 0 again.
    expect([...(await readFile(partialBits))]).toEqual([0])
    await cache.stop()
    expect([...(await readFile(partialBits))]).toEqual([0x80])
  })

  it('flushes stored pieces within the flush interval', async () => {
    const f = fixture(2 * PIECE)
    const cache = await makeCache({ flushIntervalMs: 20 })
    await cache.open(f.digest, { size: f.bytes.length, pieceSize: PIECE })
    await cache.writePiece(f.digest, 1, f.pieces[1]!)
    const { partialBits } = blobPaths(root, f.digest)
    const deadline = Date.now() + 5_000
    let bits = [...(await readFile(partialBits))]
    while (bits[0] !== 0x40 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10))
      bits = [...(await readFile(partialBits))]
    }
    expect(bits).toEqual([0x40])
  })
})
