import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { afterEach, describe, expect, it } from 'vitest'
import { digestOf } from '../digest.js'
import { createMessageReader, encodeMessage } from '../messages/index.js'
import {
  type PieceMap,
  pieceMatches,
  pieceRange,
  type SignedPieceMap,
  signPieceMap,
  verifyPieceMap,
} from '../piece-map.js'
import { HAVE_PROTOCOL, PIECES_PROTOCOL } from '../protocols.js'
import type { PieceHashMismatchError } from './errors.js'
import { createMemoryPieceSource, type MemoryPieceSource } from './memory-piece-source.js'
import { createP2PNode, type P2PNode } from './node.js'
import { createPieceBufferPool } from './piece-buffers.js'
import { createPieceClient, type PieceClient } from './piece-client.js'
import { createPieceHasher } from './piece-hasher.js'
import { createPieceServer, type PieceServer, type PieceServerInit } from './piece-server.js'

const PIECE = 64 * 1024

function blob(size: number, pieceSize = PIECE): { bytes: Buffer; map: PieceMap } {
  const bytes = randomBytes(size)
  const pieces: string[] = []
  for (let off = 0; off < Math.max(size, 1); off += pieceSize) {
    pieces.push(digestOf(bytes.subarray(off, off + pieceSize)).slice('sha256:'.length))
  }
  return { bytes, map: { digest: digestOf(bytes), size, pieceSize, pieces } }
}

interface Peer {
  node: P2PNode
  source: MemoryPieceSource
  server: PieceServer
  client: PieceClient
}

// Every exchange runs over libp2p streams and over the piece lane (lane.ts).
describe.each(['libp2p', 'lane'] as const)('piece exchange over %s', (transport) => {
  const cleanups: Array<() => Promise<void>> = []

  async function peer(
    init: PieceServerInit = {},
    extra: { privateKey?: PrivateKey; pieceMaps?: SignedPieceMap[] } = {},
  ): Promise<Peer> {
    const source = createMemoryPieceSource()
    for (const signed of extra.pieceMaps ?? []) source.putPieceMap(signed)
    // A source without signedPieceMap does not serve the piece map protocol.
    const served = extra.pieceMaps ? source : { ...source, signedPieceMap: undefined }
    const node = await createP2PNode({}, extra.privateKey ? { privateKey: extra.privateKey } : {})
    await node.start()
    const server = createPieceServer(
      { libp2p: node.libp2p, source: served },
      transport === 'lane' ? { lane: { host: '127.0.0.1' }, ...init } : init,
    )
    await server.start()
    const client = createPieceClient(
      { libp2p: node.libp2p },
      { timeoutMs: 10_000, lane: transport === 'lane' },
    )
    cleanups.push(async () => {
      await server.stop()
      await node.stop()
    })
    return { node, source, server, client }
  }

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('exchanges pieces and bitfields among three nodes, serving partial blobs too', async () => {
    const [seed, middle, leecher] = [await peer(), await peer(), await peer()]
    const { bytes, map } = blob(5 * PIECE + 1000)
    const digest = map.digest
    seed.source.putBlob(digest, bytes, PIECE)
    const got = new Map<number, Uint8Array>()
    const seedAddr = seed.node.getMultiaddrs()
    const middleAddr = middle.node.getMultiaddrs()

    // The middle peer fetches two pieces from the seed, checks them and stores them.
    for (const index of [1, 4]) {
      // onProgress says how many bytes came each time: together, the piece.
      let progressed = 0
      const piece = await middle.client.fetchPiece(seedAddr, digest, index, {
        expectedLength: pieceRange(map, index).length,
        onProgress: (n) => {
          progressed += n
        },
      })
      expect(pieceMatches(map, index, piece)).toBe(true)
      expect(progressed).toBe(pieceRange(map, index).length)
      middle.source.putPiece(digest, map, index, piece)
    }
    expect((await leecher.client.fetchHave(middleAddr, digest))?.encode()).toEqual(Uint8Array.of(0b0100_1000))
    expect((await leecher.client.fetchHave(seedAddr, digest))?.count()).toBe(6)
    expect(await leecher.client.fetchHave(seedAddr, digestOf('unknown'))).toBeUndefined()
    await expect(leecher.client.fetchPiece(middleAddr, digest, 0)).rejects.toMatchObject({
      name: 'PieceUnavailableError',
      status: 'not-held',
    })
    await expect(leecher.client.fetchPiece(seedAddr, digestOf('unknown'), 0)).rejects.toMatchObject({
      name: 'PieceUnavailableError',
      status: 'not-found',
    })

    // The leecher takes what the middle peer holds from it and the rest from the seed.
    const fromMiddle = leecher.client.fetchPieces(middleAddr, digest, [
      { index: 1 },
      { index: 4 },
      { index: 2 },
    ])
    const results = []
    for await (const r of fromMiddle) results.push(r)
    expect(results.map((r) => r.bytes === undefined)).toEqual([false, false, true])
    expect(results[2]).toMatchObject({ index: 2, status: 'not-held' })
    for (const r of results) if (r.bytes) got.set(r.index, r.bytes)
    for await (const r of leecher.client.fetchPieces(
      seedAddr,
      digest,
      [0, 2, 3, 5].map((index) => ({ index })),
    )) {
      expect(pieceMatches(map, r.index, r.bytes!)).toBe(true)
      got.set(r.index, r.bytes!)
    }
    const whole = Buffer.concat([0, 1, 2, 3, 4, 5].map((i) => got.get(i)!))
    expect(digestOf(whole)).toBe(digest)
    expect(seed.server.bytesSent()).toBe(2 * PIECE + 3 * PIECE + 1000)
    expect(middle.server.bytesSent()).toBe(2 * PIECE)
    // Over the lane when both ends speak it, not a silent fall-back to libp2p streams.
    if (transport === 'lane') {
      expect(seed.server.laneStreamsServed()).toBeGreaterThanOrEqual(3)
      expect(middle.server.laneStreamsServed()).toBeGreaterThanOrEqual(2)
    } else {
      expect(seed.server.laneStreamsServed()).toBe(0)
    }
    // A length other than the map's is refused before the bytes are read.
    await expect(leecher.client.fetchPiece(seedAddr, digest, 0, { expectedLength: 5 })).rejects.toMatchObject(
      {
        name: 'DecodeError',
      },
    )
  })

  it('hands out signed piece maps that the receiver verifies against the seed', async () => {
    const key = await generateKeyPair('Ed25519')
    const { map } = blob(3 * PIECE)
    const signed = await signPieceMap(map, key)
    const maps = new Map<string, SignedPieceMap>([[map.digest, signed]])
    const seed = await peer({}, { privateKey: key, pieceMaps: [...maps.values()] })
    const plain = await peer()
    const leecher = await peer()
    const got = await leecher.client.fetchPieceMap(seed.node.getMultiaddrs(), map.digest)
    expect(await verifyPieceMap(got, seed.node.peerId)).toEqual(map)
    await expect(verifyPieceMap(got, leecher.node.peerId)).rejects.toMatchObject({
      name: 'SignatureInvalidError',
    })
    expect(await leecher.client.fetchPieceMap(seed.node.getMultiaddrs(), digestOf('unknown'))).toBeUndefined()
    // A node given no piece maps does not speak the protocol at all.
    await expect(leecher.client.fetchPieceMap(plain.node.getMultiaddrs(), map.digest)).rejects.toThrow()
  })

  it('leaves a corrupted piece to be caught by the caller hash check', async () => {
    const [bad, good, leecher] = [await peer(), await peer(), await peer()]
    const { bytes, map } = blob(2 * PIECE)
    // The source trusts its caller, so a broken peer can hold and serve wrong bytes.
    bad.source.putPiece(map.digest, map, 1, Buffer.alloc(PIECE, 0xee))
    good.source.putBlob(map.digest, bytes, PIECE)
    const corrupt = await leecher.client.fetchPiece(bad.node.getMultiaddrs(), map.digest, 1, {
      expectedLength: PIECE,
    })
    expect(corrupt.byteLength).toBe(PIECE)
    expect(pieceMatches(map, 1, corrupt)).toBe(false)
    const fine = await leecher.client.fetchPiece(good.node.getMultiaddrs(), map.digest, 1, {
      expectedLength: PIECE,
    })
    expect(pieceMatches(map, 1, fine)).toBe(true)
  })

  it('checks a piece against expectedSha256 on the hasher worker, and a lying peer gets PieceHashMismatchError', async () => {
    const [bad, good, leecher] = [await peer(), await peer(), await peer()]
    const pieceSize = 1024 * 1024
    const { bytes, map } = blob(3 * pieceSize, pieceSize)
    good.source.putBlob(map.digest, bytes, pieceSize)
    const altered = Buffer.from(bytes)
    altered[pieceSize + 700_000] = (altered[pieceSize + 700_000] as number) ^ 0x01
    bad.source.putBlob(map.digest, altered, pieceSize)
    const hasher = createPieceHasher({ minWorkerBytes: 1, runBytes: 64 * 1024 })
    const client = createPieceClient({ libp2p: leecher.node.libp2p }, { lane: transport === 'lane', hasher })
    cleanups.push(async () => {
      client.close()
      await hasher.close()
    })
    const pool = createPieceBufferPool({ maxBuffers: 2, shared: true })
    const allocate = (length: number): Uint8Array => pool.take(length)
    const expect1 = { expectedLength: pieceSize, expectedSha256: map.pieces[1]!, allocate }
    const fine = await client.fetchPiece(good.node.getMultiaddrs(), map.digest, 1, expect1)
    expect(fine.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(pieceMatches(map, 1, fine)).toBe(true)
    const lie = client.fetchPiece(bad.node.getMultiaddrs(), map.digest, 1, expect1)
    await expect(lie).rejects.toMatchObject({ name: 'PieceHashMismatchError', index: 1 })
    // The error hands back the memory the piece was read into.
    const err = (await lie.catch((e: unknown) => e)) as PieceHashMismatchError
    expect(err.bytes.buffer).toBeInstanceOf(SharedArrayBuffer)
    expect(Buffer.from(err.bytes).equals(altered.subarray(pieceSize, 2 * pieceSize))).toBe(true)
    // Pieces the liar did not alter pass; the same check on the calling thread without a hasher.
    expect(
      pieceMatches(
        map,
        0,
        await client.fetchPiece(bad.node.getMultiaddrs(), map.digest, 0, {
          expectedSha256: map.pieces[0]!,
          allocate,
        }),
      ),
    ).toBe(true)
    await expect(
      leecher.client.fetchPiece(bad.node.getMultiaddrs(), map.digest, 1, { expectedSha256: map.pieces[1]! }),
    ).rejects.toMatchObject({ name: 'PieceHashMismatchError' })
    expect(hasher.stats()).toMatchObject({ worker: 3, inline: 0, pending: 0 })
  })

  it('hashes pieces as they arrive when asked, and a corrupted piece gets a digest that does not match', async () => {
    const [bad, good, leecher] = [await peer(), await peer(), await peer()]
    const pieceSize = 1024 * 1024
    const { bytes, map } = blob(3 * pieceSize + 1000, pieceSize)
    good.source.putBlob(map.digest, bytes, pieceSize)
    // One byte off in the middle of piece 1, the rest of the blob intact.
    const altered = Buffer.from(bytes)
    altered[pieceSize + 500_000] = (altered[pieceSize + 500_000] as number) ^ 0x01
    bad.source.putBlob(map.digest, altered, pieceSize)
    const wants = [0, 1, 2, 3].map((index) => ({ index }))
    const fine = []
    for await (const r of leecher.client.fetchPieces(good.node.getMultiaddrs(), map.digest, wants, {
      sha256: true,
    })) {
      fine.push(r)
    }
    expect(fine.map((r) => r.sha256)).toEqual(map.pieces)
    for (const r of fine) expect(pieceMatches(map, r.index, r.bytes!)).toBe(true)
    const corrupt = []
    for await (const r of leecher.client.fetchPieces(bad.node.getMultiaddrs(), map.digest, wants, {
      sha256: true,
    })) {
      corrupt.push(r)
    }
    expect(corrupt.map((r) => r.sha256 === map.pieces[r.index])).toEqual([true, false, true, true])
    // The digest is that of the bytes received, not of the piece map's entry.
    expect(corrupt[1]?.sha256).toBe(digestOf(altered.subarray(pieceSize, 2 * pieceSize)).slice(7))
    // Without the option, no digest comes with the piece.
    for await (const r of leecher.client.fetchPieces(good.node.getMultiaddrs(), map.digest, [{ index: 0 }])) {
      expect(r.sha256).toBeUndefined()
    }
  })

  it('reads lane uploads into reused send buffers and keeps every piece intact', async () => {
    // Given piece maps (none), the server reads the source object itself, patched below.
    const [seed, leecher] = [await peer({}, { pieceMaps: [] }), await peer()]
    const pieceSize = 4 * 1024 * 1024
    const { bytes, map } = blob(8 * pieceSize, pieceSize)
    seed.source.putBlob(map.digest, bytes, pieceSize)
    // Count the memory the server supplies to the source, and what of it is reused.
    const supplied: Uint8Array[] = []
    const readRange = seed.source.readRange.bind(seed.source)
    seed.source.readRange = (digest, start, end, options = {}) => {
      const { allocate } = options
      return readRange(
        digest,
        start,
        end,
        allocate === undefined
          ? options
          : {
              ...options,
              allocate: (length) => {
                const buffer = allocate(length)
                supplied.push(buffer)
                return buffer
              },
            },
      )
    }
    const addr = seed.node.getMultiaddrs()
    // Two requests at once, so two uploads draw on the pool together.
    const halves = [
      [0, 1, 2, 3],
      [4, 5, 6, 7],
    ]
    const results = await Promise.all(
      halves.map(async (indexes) => {
        const got = []
        for await (const r of leecher.client.fetchPieces(
          addr,
          map.digest,
          indexes.map((index) => ({ index })),
        ))
          got.push(r)
        return got
      }),
    )
    for (const r of results.flat()) expect(pieceMatches(map, r.index, r.bytes!)).toBe(true)
    if (transport === 'lane') {
      // 128 chunks of 256 KiB (the memory source's reads) in far fewer buffers.
      expect(supplied).toHaveLength(128)
      expect(new Set(supplied).size).toBeLessThanOrEqual(8)
    } else {
      // A muxer may still hold what was sent: libp2p streams get no reused memory.
      expect(supplied).toHaveLength(0)
    }
  })

  it('answers garbage with an error or a closed stream and keeps serving', async () => {
    const [seed, attacker] = [await peer(), await peer()]
    const { bytes, map } = blob(PIECE + 10)
    seed.source.putBlob(map.digest, bytes, PIECE)
    const target = seed.node.getMultiaddrs()
    const oversized = Buffer.alloc(8)
    oversized.writeUInt32BE(0xffffffff, 0)
    const wrongType = encodeMessage({ type: 'have-request', digest: map.digest })
    const truncated = encodeMessage({ type: 'piece-request', digest: map.digest, indexes: [0] }).subarray(
      0,
      10,
    )
    const garbage: Array<[string, Uint8Array]> = [
      [PIECES_PROTOCOL, randomBytes(4096)],
      [PIECES_PROTOCOL, oversized],
      [PIECES_PROTOCOL, wrongType],
      [PIECES_PROTOCOL, truncated],
      [PIECES_PROTOCOL, Buffer.from([0, 0, 0, 3, 1, 9, 9])],
      [HAVE_PROTOCOL, randomBytes(100)],
      [HAVE_PROTOCOL, encodeMessage({ type: 'piece-request', digest: map.digest, indexes: [0] })],
    ]
    let answered = 0
    for (const [protocol, junk] of garbage) {
      const stream = await attacker.node.libp2p.dialProtocol(target, protocol, {
        signal: AbortSignal.timeout(5_000),
      })
      stream.send(junk)
      await stream.close()
      const replies = []
      try {
        const reader = createMessageReader(stream)
        for (let m = await reader.read(); m !== undefined; m = await reader.read()) replies.push(m)
      } catch {
        // A reset stream is an acceptable answer to garbage.
      }
      for (const reply of replies) expect(reply).toMatchObject({ type: 'error', code: 'bad-request' })
      answered += replies.length
    }
    // Well-framed but wrong messages at least are answered with an error.
    expect(answered).toBeGreaterThanOrEqual(2)
    const piece = await attacker.client.fetchPiece(target, map.digest, 1, { expectedLength: 10 })
    expect(Buffer.from(piece)).toEqual(bytes.subarray(PIECE))
    expect((await attacker.client.fetchHave(target, map.digest))?.count()).toBe(2)
  })

  /** Waits until the server has no upload running (it counts one down after its last byte is sent). */
  async function uploadsDone(server: PieceServer): Promise<void> {
    const deadline = Date.now() + 10_000
    while (server.activeUploads() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(server.activeUploads()).toBe(0)
  }

  /**
   * A seed with one upload slot at 64 KiB/s (with a 64 KiB bucket the first piece goes
   * at once, the next ones crawl), and a leecher whose slow request for `indexes` holds
   * that slot.
   */
  async function slotTaken(indexes: number[], init: PieceServerInit = {}) {
    const seed = await peer({ maxConcurrentUploads: 1, uploadBytesPerSecond: PIECE, ...init })
    const leecher = await peer()
    const { bytes, map } = blob(4 * PIECE)
    seed.source.putBlob(map.digest, bytes, PIECE)
    const target = seed.node.getMultiaddrs()
    const controller = new AbortController()
    const slow = leecher.client.fetchPieces(
      target,
      map.digest,
      indexes.map((index) => ({ index })),
      { signal: controller.signal },
    )
    expect((await slow.next()).value).toMatchObject({ index: indexes[0] })
    expect(seed.server.activeUploads()).toBe(1)
    return { seed, leecher, map, target, controller, slow }
  }

  it('answers busy beyond the upload cap', async () => {
    const { seed, leecher, map, target, controller, slow } = await slotTaken([0, 1, 2, 3])
    await expect(leecher.client.fetchPiece(target, map.digest, 3)).rejects.toMatchObject({
      name: 'PieceUnavailableError',
      status: 'busy',
    })
    controller.abort(new Error('done'))
    await expect(slow.next()).rejects.toThrow('done')
    await uploadsDone(seed.server)
    // The abandoned piece's read was ended, not left open.
    expect(seed.source.openReads()).toBe(0)
  })

  /** Ends the slow request of slotTaken and waits until its slot is free. */
  async function freeSlot(taken: Awaited<ReturnType<typeof slotTaken>>): Promise<void> {
    taken.controller.abort(new Error('done'))
    await expect(taken.slow.next()).rejects.toThrow('done')
    await uploadsDone(taken.seed.server)
  }

  it('gives a freed upload slot to the peer it answered busy before the peer it served', async () => {
    const taken = await slotTaken([0, 1, 2, 3])
    const { leecher, map, target } = taken
    const other = await peer()
    // Slots are kept for waiting peers only where uploads take the hold (2 s) or more:
    // the slow request holds its slot that long before it is ended.
    await new Promise((r) => setTimeout(r, 2_100))
    await expect(other.client.fetchPiece(target, map.digest, 3)).rejects.toMatchObject({ status: 'busy' })
    expect(taken.seed.server.waitingPeers()).toBe(1)
    await freeSlot(taken)
    // The peer that held the slot asks again at once: the slot is kept for the other.
    await expect(leecher.client.fetchPiece(target, map.digest, 2)).rejects.toMatchObject({ status: 'busy' })
    expect(pieceMatches(map, 3, await other.client.fetchPiece(target, map.digest, 3))).toBe(true)
    // Its turn taken, the other no longer waits; the first one does, and is served next.
    expect(taken.seed.server.waitingPeers()).toBe(1)
    await uploadsDone(taken.seed.server)
    expect(pieceMatches(map, 2, await leecher.client.fetchPiece(target, map.digest, 2))).toBe(true)
    expect(taken.seed.server.waitingPeers()).toBe(0)
  })

  it('serves whoever asks first with uploadTurnHoldMs 0', async () => {
    const taken = await slotTaken([0, 1], { uploadTurnHoldMs: 0 })
    const { leecher, map, target } = taken
    const other = await peer()
    await expect(other.client.fetchPiece(target, map.digest, 3)).rejects.toMatchObject({ status: 'busy' })
    expect(taken.seed.server.waitingPeers()).toBe(0)
    await freeSlot(taken)
    expect(pieceMatches(map, 2, await leecher.client.fetchPiece(target, map.digest, 2))).toBe(true)
  })

  it('sizes its upload cap by the rate its uploads reached', async () => {
    // Eight slots, but an uplink of 64 KiB/s that sends one piece in 1 s: with a target
    // of 500 ms per piece, one upload at a time is all it can carry.
    const seed = await peer({
      maxConcurrentUploads: 8,
      minConcurrentUploads: 1,
      uploadPieceTargetMs: 500,
      uploadBytesPerSecond: PIECE,
    })
    const [first, second] = [await peer(), await peer()]
    const { bytes, map } = blob(4 * PIECE)
    seed.source.putBlob(map.digest, bytes, PIECE)
    const target = seed.node.getMultiaddrs()
    // Nothing sent yet: two requests at once are both served.
    const [a, b] = await Promise.all([
      first.client.fetchPiece(target, map.digest, 0),
      second.client.fetchPiece(target, map.digest, 1),
    ])
    expect(pieceMatches(map, 0, a) && pieceMatches(map, 1, b)).toBe(true)
    // Now one slow upload takes the only slot the rate leaves, and the next asker hears busy.
    const controller = new AbortController()
    const slow = first.client.fetchPieces(target, map.digest, [{ index: 2 }, { index: 3 }], {
      signal: controller.signal,
    })
    const next = slow.next()
    const deadline = Date.now() + 5_000
    while (seed.server.activeUploads() === 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10))
    expect(seed.server.activeUploads()).toBe(1)
    await expect(second.client.fetchPiece(target, map.digest, 3)).rejects.toMatchObject({ status: 'busy' })
    expect((await next).value).toMatchObject({ index: 2 })
    controller.abort(new Error('done'))
    await expect(slow.next()).rejects.toThrow('done')
  })

  it('serves pieces it names as priority beyond the upload cap, and only those', async () => {
    const starting: number[] = []
    const sent: number[] = []
    const { leecher, map, target, controller, slow } = await slotTaken([0, 1, 3], {
      priority: { isPriority: (_digest, index) => index === 2, extraUploads: 1 },
      onPieceStarting: (e) => starting.push(e.index),
      onPieceSent: (e) => sent.push(e.index),
    })
    // Piece 1 of the slow request is on its way: its send has started, not ended.
    const deadline = Date.now() + 5_000
    while (!starting.includes(1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    expect(starting).toEqual([0, 1])
    expect(sent).toEqual([0])
    // The cap is taken: piece 3 is turned away, piece 2 (priority) is served.
    await expect(leecher.client.fetchPiece(target, map.digest, 3)).rejects.toMatchObject({ status: 'busy' })
    expect(pieceMatches(map, 2, await leecher.client.fetchPiece(target, map.digest, 2))).toBe(true)
    controller.abort(new Error('done'))
    await expect(slow.next()).rejects.toThrow('done')
  })

  it('sends at most maxUploadsPerPiece copies of one piece at once; other pieces still go', async () => {
    // Slots to spare and one copy per piece; the slow request's piece 0 is through and
    // its piece 1 crawls (64 KiB/s), so piece 1 is going out once.
    const { seed, leecher, map, target, controller, slow } = await slotTaken([0, 1], {
      maxConcurrentUploads: 4,
      maxUploadsPerPiece: 1,
    })
    const other = await peer()
    // Piece 1 is going out once already: a second asker hears busy, for it alone or with another.
    await expect(other.client.fetchPiece(target, map.digest, 1)).rejects.toMatchObject({ status: 'busy' })
    const both = []
    for await (const r of other.client.fetchPieces(target, map.digest, [{ index: 2 }, { index: 1 }]))
      both.push(r)
    expect(both).toEqual([
      { index: 2, status: 'busy' },
      { index: 1, status: 'busy' },
    ])
    // A piece that is not going out is served meanwhile.
    expect(pieceMatches(map, 3, await other.client.fetchPiece(target, map.digest, 3))).toBe(true)
    controller.abort(new Error('done'))
    await expect(slow.next()).rejects.toThrow('done')
    // Once the slow copy is cancelled, piece 1 may go out again.
    await uploadsDone(seed.server)
    expect(pieceMatches(map, 1, await leecher.client.fetchPiece(target, map.digest, 1))).toBe(true)
  })

  it('moves 64 MiB between two nodes over one stream', async () => {
    const [seed, leecher] = [await peer(), await peer()]
    const { bytes, map } = blob(64 * 1024 * 1024, 4 * 1024 * 1024)
    seed.source.putBlob(map.digest, bytes, map.pieceSize)
    const wants = map.pieces.map((_, index) => ({ index, length: pieceRange(map, index).length }))
    const started = performance.now()
    let received = 0
    let allMatch = true
    for await (const r of leecher.client.fetchPieces(seed.node.getMultiaddrs(), map.digest, wants)) {
      received += r.bytes?.byteLength ?? 0
      allMatch &&= r.bytes !== undefined && pieceMatches(map, r.index, r.bytes)
    }
    const seconds = (performance.now() - started) / 1000
    console.log(`piece transfer: ${(received / 1e6 / seconds).toFixed(0)} MB/s over ${seconds.toFixed(2)} s`)
    expect(received).toBe(map.size)
    expect(allMatch).toBe(true)
  })

  it('reads pieces into the memory the caller supplies, and allocates when it does not fit', async () => {
    const [seed, leecher] = [await peer(), await peer()]
    const { bytes, map } = blob(3 * PIECE + 1000)
    seed.source.putBlob(map.digest, bytes, PIECE)
    const addr = seed.node.getMultiaddrs()
    const pool = createPieceBufferPool({ maxBuffers: 2 })
    const asked: number[] = []
    const supplied: Uint8Array[] = []
    const allocate = (length: number): Uint8Array => {
      asked.push(length)
      const buffer = pool.take(length)
      supplied.push(buffer)
      return buffer
    }
    const wants = [0, 1, 2, 3].map((index) => ({ index }))
    for await (const r of leecher.client.fetchPieces(addr, map.digest, wants, { allocate })) {
      expect(r.bytes).toBe(supplied.at(-1))
      expect(pieceMatches(map, r.index, r.bytes!)).toBe(true)
      // Given back at once: the next piece of the same length is read into it.
      pool.give(r.bytes!)
    }
    expect(asked).toEqual([PIECE, PIECE, PIECE, 1000])
    expect(supplied[1]).toBe(supplied[0])
    expect(supplied[2]).toBe(supplied[0])
    expect(pool.stats()).toMatchObject({ reused: 2, allocated: 2 })
    const one = await leecher.client.fetchPiece(addr, map.digest, 1, { allocate })
    expect(one).toBe(supplied.at(-1))
    expect(pieceMatches(map, 1, one)).toBe(true)

    // Memory of the wrong size (or not memory at all) is not used: the client allocates.
    for (const wrong of [
      () => new Uint8Array(PIECE - 1),
      () => new Uint8Array(PIECE + 1),
      () => undefined as unknown as Uint8Array,
    ]) {
      const got = await leecher.client.fetchPiece(addr, map.digest, 2, { allocate: wrong })
      expect(got.byteLength).toBe(PIECE)
      expect(pieceMatches(map, 2, got)).toBe(true)
    }
  })

  it('reuses an idle stream for the next request and opens a new one when the server closed it', async () => {
    const seed = await peer({ requestTimeoutMs: 300 })
    const leecher = await peer()
    const { bytes, map } = blob(4 * PIECE)
    seed.source.putBlob(map.digest, bytes, PIECE)
    const dials: string[] = []
    const counting = {
      dialProtocol: ((...args: Parameters<P2PNode['libp2p']['dialProtocol']>) => {
        dials.push(String(args[1]))
        return leecher.node.libp2p.dialProtocol(...args)
      }) as P2PNode['libp2p']['dialProtocol'],
    }
    const client = createPieceClient({ libp2p: counting }, { idleStreamMs: 60_000 })
    const seedAddr = seed.node.getMultiaddrs()
    for (const index of [0, 1, 2]) {
      expect(pieceMatches(map, index, await client.fetchPiece(seedAddr, map.digest, index))).toBe(true)
    }
    expect((await client.fetchHave(seedAddr, map.digest))?.count()).toBe(4)
    expect((await client.fetchHave(seedAddr, map.digest))?.count()).toBe(4)
    // One stream per protocol carried all the requests.
    expect(dials).toEqual([PIECES_PROTOCOL, HAVE_PROTOCOL])

    // The server closes streams idle for 300 ms; the client notices and opens a new one.
    const connection = leecher.node.libp2p.getConnections(seed.node.peerId)[0]!
    const serverClosed = (): boolean => connection.streams.every((s) => s.remoteWriteStatus === 'closed')
    const deadline = Date.now() + 5_000
    while (!serverClosed() && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    expect(serverClosed()).toBe(true)
    expect(pieceMatches(map, 3, await client.fetchPiece(seedAddr, map.digest, 3))).toBe(true)
    expect(dials).toEqual([PIECES_PROTOCOL, HAVE_PROTOCOL, PIECES_PROTOCOL])

    // A request abandoned half way resets its stream rather than returning it.
    const stopped = new AbortController()
    stopped.abort(new Error('caller gave up'))
    await expect(client.fetchPiece(seedAddr, map.digest, 0, { signal: stopped.signal })).rejects.toThrow(
      'caller gave up',
    )
    expect(pieceMatches(map, 0, await client.fetchPiece(seedAddr, map.digest, 0))).toBe(true)
  })

  it('sends a request again on a new stream when a kept one ends unanswered, once', async () => {
    // A server that answers the first request on each stream and ends the stream at
    // the second without a reply: the close of an idle stream crossing a new request.
    const [server, leecher] = [await peer(), await peer()]
    const { bytes, map } = blob(2 * PIECE)
    let streamsOpened = 0
    let answerNone = false
    await server.node.libp2p.handle(
      'shoal-test/kept-stream-closes',
      async (stream) => {
        streamsOpened++
        const reader = createMessageReader(stream)
        for (let n = 0; ; n++) {
          const msg = await reader.read()
          if (msg === undefined || msg.type !== 'piece-request' || n > 0 || answerNone) break
          const index = msg.indexes[0]!
          stream.send(encodeMessage({ type: 'piece-header', index, length: PIECE, status: 'ok' }))
          stream.send(bytes.subarray(index * PIECE, (index + 1) * PIECE))
        }
        await stream.close()
      },
      { force: true },
    )
    const dialled: string[] = []
    const client = createPieceClient(
      {
        libp2p: {
          dialProtocol: ((target: Parameters<P2PNode['libp2p']['dialProtocol']>[0], _p: unknown, options) => {
            dialled.push('dial')
            return leecher.node.libp2p.dialProtocol(target, 'shoal-test/kept-stream-closes', options)
          }) as P2PNode['libp2p']['dialProtocol'],
        },
      },
      { idleStreamMs: 60_000 },
    )
    const target = server.node.getMultiaddrs()
    expect(pieceMatches(map, 0, await client.fetchPiece(target, map.digest, 0))).toBe(true)
    // The kept stream is ended unanswered; the request goes out again on a new one.
    expect(pieceMatches(map, 1, await client.fetchPiece(target, map.digest, 1))).toBe(true)
    expect(dialled).toHaveLength(2)
    expect(streamsOpened).toBe(2)
    // Ended unanswered on the kept stream and again on the new one: an error, and the
    // request is not sent a third time.
    answerNone = true
    await expect(client.fetchPiece(target, map.digest, 0)).rejects.toThrow(
      'stream ended before the piece header',
    )
    expect(dialled).toHaveLength(3)
    expect(streamsOpened).toBe(3)
  })

  it('opens a stream per request when idle streams are turned off', async () => {
    const [seed, leecher] = [await peer(), await peer()]
    const { bytes, map } = blob(2 * PIECE)
    seed.source.putBlob(map.digest, bytes, PIECE)
    let dials = 0
    const counting = {
      dialProtocol: ((...args: Parameters<P2PNode['libp2p']['dialProtocol']>) => {
        dials++
        return leecher.node.libp2p.dialProtocol(...args)
      }) as P2PNode['libp2p']['dialProtocol'],
    }
    const client = createPieceClient({ libp2p: counting }, { idleStreamMs: 0 })
    for (const index of [0, 1, 0]) await client.fetchPiece(seed.node.getMultiaddrs(), map.digest, index)
    expect(dials).toBe(3)
  })
})
