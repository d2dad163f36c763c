import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Bitfield } from '../../../protocol/src/bitfield.js'
import { pieceRange } from '../../../protocol/src/piece-map.js'
import { type BlobCache, createBlobCache } from '../cache/index.js'
import {
  createMemoryPieceSource,
  createP2PNode,
  createPieceClient,
  createPieceHasher,
  createPieceServer,
} from '../../../protocol/src/p2p/index.js'
import { cachePieceSource } from '../p2p-adapter.js'
import { STARTING_PEERS, STARTING_PIECES } from './piece-picker.js'
import { type DownloadInit, downloadBlob, type SwarmPeer } from './scheduler.js'
import { blob, fakeSwarm, PIECE, poisoningPool } from './testing/fake-swarm.js'

describe('downloadBlob', () => {
  const cleanups: Array<() => Promise<void>> = []

  async function cache(): Promise<BlobCache> {
    const root = await mkdtemp(join(tmpdir(), 'shoal-sched-'))
    const c = createBlobCache({}, { root, quotaBytes: 1 << 30, durable: false })
    await c.start()
    cleanups.push(async () => {
      await c.stop()
      await rm(root, { recursive: true, force: true })
    })
    return c
  }

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('assembles a blob from peers holding different parts', async () => {
    const { bytes, map } = blob(12)
    const swarm = fakeSwarm(bytes, map)
    const peers = [
      swarm.peer('a', [0, 1, 2, 3, 4, 5]),
      swarm.peer('b', [4, 5, 6, 7, 8]),
      swarm.peer('c', [8, 9, 10, 11]),
    ]
    const c = await cache()
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => peers, seed: 1 },
    )
    expect(c.has(map.digest)).toBe(true)
    expect([...result.bytesByPeer.values()].reduce((a, b) => a + b, 0)).toBe(map.size)
    for (const p of peers) expect(result.bytesByPeer.get(p.id)).toBeGreaterThan(0)
  })

  it('bans a peer that sends a bad piece and still finishes with the right bytes', async () => {
    const { bytes, map } = blob(8)
    const swarm = fakeSwarm(bytes, map)
    const liar = swarm.peer('liar', map.pieces.keys(), 'corrupt')
    const honest = swarm.peer('honest', map.pieces.keys())
    const reported: string[] = []
    const c = await cache()
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [liar, honest], onBadPiece: (p) => reported.push(p.id), seed: 2 },
    )
    expect(result.bannedPeers).toEqual(['liar'])
    expect(reported).toEqual(['liar'])
    expect(result.bytesByPeer.get('liar')).toBeUndefined()
    expect(c.has(map.digest)).toBe(true)
    expect(liar.requests.length).toBeLessThanOrEqual(2)
  })

  it('leaves the sha256 check of every piece to the client, which hashes as the bytes arrive', async () => {
    const { bytes, map } = blob(8)
    const swarm = fakeSwarm(bytes, map)
    const honest = swarm.peer('honest', map.pieces.keys())
    const c = await cache()
    await downloadBlob({ cache: c, client: swarm.client }, { map, findPeers: async () => [honest], seed: 3 })
    expect(c.has(map.digest)).toBe(true)
    // Every request carried the piece's sha256 from the map, so the client checked it.
    expect(honest.requests.length).toBe(map.pieces.length)
    expect(swarm.checked).toBe(map.pieces.length)
  })

  it('drops a failing peer and resumes without refetching held pieces', async () => {
    const { bytes, map } = blob(6)
    const swarm = fakeSwarm(bytes, map)
    const broken = swarm.peer('broken', map.pieces.keys(), 'fail')
    const good = swarm.peer('good', map.pieces.keys())
    const c = await cache()
    await c.open(map.digest, map)
    for (const i of [0, 3]) {
      const { offset, length } = pieceRange(map, i)
      await c.writePiece(map.digest, i, bytes.subarray(offset, offset + length))
    }
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [broken, good], seed: 3 },
    )
    expect(result.resumedPieces).toBe(2)
    expect(good.requests.sort()).toEqual([1, 2, 4, 5])
    expect(c.has(map.digest)).toBe(true)
  })

  it('takes back a peer dropped for failures once it recovers', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map)
    // The only peer fails at first, as a peer whose handshakes time out on a busy node.
    const flaky = swarm.peer('flaky', map.pieces.keys(), 'fail')
    const c = await cache()
    const done = downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [flaky], peerRetryMs: 100, haveRefreshMs: 20, stallTimeoutMs: 5_000 },
    )
    const recovered = new Promise<void>((resolve) =>
      setTimeout(() => {
        flaky.behaviour = 'ok'
        resolve()
      }, 1_000),
    )
    const result = await done
    await recovered
    expect(result.droppedPeers).toContain('flaky')
    expect(flaky.requests.sort()).toEqual([0, 1, 2, 3])
    expect(c.has(map.digest)).toBe(true)
  })

  it('waits past the stall timeout for a dropped peer it will take back', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map)
    // Dropped after three failed have queries (about 400 ms: the scheduler's tick), as a
    // peer on a starved node; back to health at 700 ms, and taken back at about 1 s, past
    // the 500 ms stall timeout but within three.
    const flaky = swarm.peer('flaky', map.pieces.keys(), 'fail')
    setTimeout(() => {
      flaky.behaviour = 'ok'
    }, 700)
    const c = await cache()
    const started = Date.now()
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [flaky], peerRetryMs: 600, haveRefreshMs: 20, stallTimeoutMs: 500 },
    )
    // It cannot end before the peer recovers at 700 ms, past the 500 ms stall timeout
    // (less a timer's margin).
    expect(Date.now() - started).toBeGreaterThanOrEqual(650)
    expect(result.droppedPeers).toEqual(['flaky'])
    expect(c.has(map.digest)).toBe(true)
  })

  it('never takes back a peer that sent a bad piece', async () => {
    const { bytes, map } = blob(3)
    const swarm = fakeSwarm(bytes, map)
    const liar = swarm.peer('liar', map.pieces.keys(), 'corrupt')
    const c = await cache()
    await expect(
      downloadBlob(
        { cache: c, client: swarm.client },
        {
          map,
          findPeers: async () => [liar],
          minRequestsInFlight: 2,
          peerRetryMs: 20,
          haveRefreshMs: 20,
          stallTimeoutMs: 400,
        },
      ),
    ).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
    // The two requests in flight when the first bad piece came back, and none after.
    expect(liar.requests.length).toBeLessThanOrEqual(2)
  })

  it('asks the origin again only after a while for a piece it declined, and takes it from the agent that got it', async () => {
    const { bytes, map } = blob(6)
    const swarm = fakeSwarm(bytes, map)
    // The seed sent pieces 0 and 1 to agent b a moment ago (first-copy rule): it
    // declines them here, and b holds them shortly after.
    const seed = swarm.peer('origin', map.pieces.keys())
    seed.declines = new Set([0, 1])
    const origin = { ...seed, origin: true }
    const b = swarm.peer('b', [])
    const gained = setTimeout(() => {
      b.holds.add(0)
      b.holds.add(1)
    }, 300)
    const c = await cache()
    try {
      const result = await downloadBlob(
        { cache: c, client: swarm.client },
        { map, findPeers: async () => [origin, b], originDeferMs: 10_000, haveRefreshMs: 200, seed: 9 },
      )
      expect(c.has(map.digest)).toBe(true)
      expect(result.bytesByPeer.get('b')).toBe(2 * PIECE)
      expect(result.bytesByPeer.get('origin')).toBe(map.size - 2 * PIECE)
      // Each declined piece was asked of the origin at most once (then deferred).
      for (const i of [0, 1]) expect(origin.requests.filter((r) => r === i).length).toBeLessThanOrEqual(1)
    } finally {
      clearTimeout(gained)
    }
  })

  it('looks beyond maxPeers for a piece the origin declined and no peer in use holds', async () => {
    const { bytes, map } = blob(6)
    const swarm = fakeSwarm(bytes, map)
    // The seed sent piece 2 to x (first-copy rule) and declines it; x is not among the
    // peers this download uses (maxPeers 1, taken by a), but the tracker said what x holds.
    const seed = swarm.peer('origin', map.pieces.keys())
    seed.declines = new Set([2])
    const origin = { ...seed, origin: true }
    const a = swarm.peer('a', [0, 1, 3, 4, 5])
    const x = swarm.peer('x', [2])
    const bits = (held: number[]): Bitfield => {
      const b = new Bitfield(map.pieces.length)
      for (const i of held) b.set(i)
      return b
    }
    a.has = bits([0, 1, 3, 4, 5])
    x.has = bits([2])
    const c = await cache()
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      {
        map,
        findPeers: async () => [origin, a, x],
        maxPeers: 1,
        peerSearchIntervalMs: 50,
        stallTimeoutMs: 3_000,
        seed: 12,
      },
    )
    expect(c.has(map.digest)).toBe(true)
    expect(result.bytesByPeer.get('x')).toBe(PIECE)
    expect(result.bytesByPeer.get('origin')).toBeUndefined()
  })

  it('spares the origin: other peers first', async () => {
    const { bytes, map } = blob(8)
    const swarm = fakeSwarm(bytes, map)
    const origin = { ...swarm.peer('origin', map.pieces.keys()), origin: true }
    const agent = swarm.peer('agent', [0, 1, 2, 3, 4, 5])
    const c = await cache()
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [origin, agent], requestsPerPeer: 4, seed: 6 },
    )
    expect(c.has(map.digest)).toBe(true)
    expect(result.bytesByPeer.get('agent')).toBe(6 * PIECE)
    expect(origin.requests.sort()).toEqual([6, 7])
  })

  /**
   * A peer that never sends beside one that sends a piece every 20 ms (two at a time):
   * the download must finish from the quick one and drop the other.
   */
  async function withSilentPeer(
    options: Partial<Parameters<typeof downloadBlob>[1]>,
  ): Promise<Array<{ peer: string; reason: string }>> {
    const { bytes, map } = blob(60)
    const wasted: Array<{ peer: string; reason: string }> = []
    const swarm = fakeSwarm(bytes, map)
    const silent = swarm.peer('silent', map.pieces.keys(), 'slow')
    const quick = swarm.peer('quick', map.pieces.keys())
    quick.delayMs = 20
    const c = await cache()
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      {
        map,
        findPeers: async () => [silent, quick],
        maxPeerFailures: 2,
        onWaste: (peer, _index, reason) => wasted.push({ peer: peer.id, reason }),
        ...options,
      },
    )
    expect(c.has(map.digest)).toBe(true)
    expect(result.droppedPeers).toEqual(['silent'])
    expect(result.bytesByPeer.get('quick')).toBe(map.size)
    return wasted
  }

  it('abandons and drops a peer far slower than the rest', async () => {
    const wasted = await withSilentPeer({ slowPieceMinMs: 50, seed: 7 })
    // Each abandoned request counts as wasted upload of the silent peer, as too slow.
    expect(wasted.filter((w) => w.peer === 'silent' && w.reason === 'slow').length).toBeGreaterThanOrEqual(2)
    expect(wasted.filter((w) => w.reason === 'timeout')).toEqual([])
  })

  it('counts what a request cut as slow had taken, so a link that fills up does not get every request cut', async () => {
    const { bytes, map } = blob(24)
    const swarm = fakeSwarm(bytes, map)
    const holders = [swarm.peer('a', map.pieces.keys()), swarm.peer('b', map.pieces.keys())]
    for (const p of holders) p.delayMs = 2
    let stored = 0
    const reasons: string[] = []
    const c = await cache()
    await downloadBlob(
      { cache: c, client: swarm.client },
      {
        map,
        findPeers: async () => holders,
        slowPieceMinMs: 20,
        maxPeerFailures: 1_000,
        stallTimeoutMs: 1_000,
        seed: 9,
        // The first eight pieces come at once; from then on every piece takes 600 ms,
        // many times the median of those first ones.
        onPiece: () => {
          if (++stored === 8) for (const p of holders) p.delayMs = 600
        },
        onWaste: (_peer, _index, reason) => reasons.push(reason),
      },
    )
    expect(c.has(map.digest)).toBe(true)
    // A few requests are cut while the median catches up, not every one after the eighth
    // piece (which ends in SwarmUnavailableError once nothing arrives for 3 s).
    const cut = reasons.filter((r) => r === 'slow').length
    expect(cut).toBeGreaterThan(0)
    expect(cut).toBeLessThan(40)
  })

  it('counts a request past its deadline as a failure of the peer', async () => {
    // Never cut as slow: only the 150 ms deadline ends the silent peer's requests.
    const wasted = await withSilentPeer({ slowPieceMinMs: 600_000, pieceTimeoutMs: 150, seed: 8 })
    expect(wasted.filter((w) => w.peer === 'silent' && w.reason === 'timeout').length).toBeGreaterThanOrEqual(
      2,
    )
    expect(wasted.filter((w) => w.reason === 'slow')).toEqual([])
  })

  it('asks one more peer for an endgame piece whose requests went silent, without waiting for their deadline', async () => {
    const { bytes, map } = blob(1)
    for (const endgameStallMs of [100, 0]) {
      const swarm = fakeSwarm(bytes, map)
      // Both silent peers come first, so the one piece's two endgame requests go to them.
      const silent = [swarm.peer('silent-1', [0], 'slow'), swarm.peer('silent-2', [0], 'slow')]
      const quick = swarm.peer('quick', [0])
      const wasted: Array<{ peer: string; reason: string }> = []
      const c = await cache()
      const started = Date.now()
      const result = await downloadBlob(
        { cache: c, client: swarm.client },
        {
          map,
          findPeers: async () => [...silent, quick],
          endgameStallMs,
          pieceTimeoutMs: 1_500,
          maxPeerFailures: 10,
          seed: 5,
          onWaste: (peer, _index, reason) => wasted.push({ peer: peer.id, reason }),
        },
      )
      const took = Date.now() - started
      expect(c.has(map.digest)).toBe(true)
      expect(result.bytesByPeer.get('quick')).toBe(map.size)
      if (endgameStallMs > 0) {
        // Asked of the third peer once the two went silent for 100 ms; they are cancelled.
        expect(silent.map((p) => p.requests)).toEqual([[0], [0]])
        expect(took).toBeLessThan(1_200)
        expect(wasted.map((w) => w.reason)).toEqual(['superseded', 'superseded'])
      } else {
        // Switched off: the silent peers hold the piece's two requests until their
        // deadline, and are asked again first after it.
        expect(took).toBeGreaterThanOrEqual(1_500)
        expect(wasted.map((w) => w.reason)).toContain('timeout')
      }
    }
  })

  it('reports the endgame duplicates it cancels or receives twice as wasted upload', async () => {
    const { bytes, map } = blob(3)
    const swarm = fakeSwarm(bytes, map)
    const lagging = swarm.peer('lagging', map.pieces.keys())
    lagging.delayMs = 300
    const quick = swarm.peer('quick', map.pieces.keys())
    quick.delayMs = 20
    const wasted: Array<{ peer: string; index: number; reason: string; bytes: number }> = []
    const c = await cache()
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      {
        map,
        findPeers: async () => [lagging, quick],
        seed: 3,
        onWaste: (peer, index, reason, bytes) => wasted.push({ peer: peer.id, index, reason, bytes }),
      },
    )
    expect(c.has(map.digest)).toBe(true)
    // A piece received twice counts whole.
    for (const w of wasted.filter((x) => x.reason === 'duplicate')) {
      expect(w.bytes).toBe(pieceRange(map, w.index).length)
    }
    // Three pieces are all endgame: both peers are asked for the same pieces, and every
    // request that did not bring a stored piece is reported, none as slow or timed out.
    const stored = [...result.bytesByPeer.values()].reduce((a, b) => a + b, 0)
    expect(stored).toBe(map.size)
    const requests = lagging.requests.length + quick.requests.length
    expect(requests).toBeGreaterThan(3)
    expect(wasted.length).toBe(requests - 3)
    for (const w of wasted) expect(['duplicate', 'superseded']).toContain(w.reason)
  })

  it('reports what a request it gave up had brought, and a duplicate as the whole piece', async () => {
    const { bytes, map } = blob(1)
    const swarm = fakeSwarm(bytes, map)
    // Both are asked for the one piece at once (endgame). The lagging one says 10 bytes
    // came every 20 ms until the quick one's piece lands at 200 ms and it is cancelled.
    const lagging = swarm.peer('lagging', [0])
    lagging.delayMs = 5_000
    lagging.progressEveryMs = 20
    lagging.progressBytes = 10
    const quick = swarm.peer('quick', [0])
    quick.delayMs = 200
    const wasted: Array<{ peer: string; reason: string; bytes: number }> = []
    const c = await cache()
    await downloadBlob(
      { cache: c, client: swarm.client },
      {
        map,
        findPeers: async () => [lagging, quick],
        seed: 3,
        onWaste: (peer, _index, reason, bytes) => wasted.push({ peer: peer.id, reason, bytes }),
      },
    )
    expect(c.has(map.digest)).toBe(true)
    expect(lagging.requests).toEqual([0])
    expect(wasted).toHaveLength(1)
    const [w] = wasted
    expect(w).toMatchObject({ peer: 'lagging', reason: 'superseded' })
    // About ten reports of 10 bytes before the cancel (timers run late on a busy machine).
    expect(w!.bytes % 10).toBe(0)
    expect(w!.bytes).toBeGreaterThanOrEqual(30)
    expect(w!.bytes).toBeLessThanOrEqual(100)
  })

  it('reads pieces into pooled buffers and gives each back only once nothing reads it', async () => {
    const { bytes, map } = blob(24)
    const swarm = fakeSwarm(bytes, map)
    // A liar (bad pieces), and endgame duplicates from a lagging and a quick peer.
    const liar = swarm.peer('liar', map.pieces.keys(), 'corrupt')
    const lagging = swarm.peer('lagging', map.pieces.keys())
    lagging.delayMs = 40
    const quick = swarm.peer('quick', map.pieces.keys())
    quick.delayMs = 5
    const pool = poisoningPool({ maxBuffers: 2 })
    const c = await cache()
    await c.open(map.digest, map)
    // A client streaming the blob as pieces land reads what the cache holds.
    const streamed = (async () => {
      const chunks: Buffer[] = []
      for await (const chunk of c.readRange(map.digest, 0, map.size, { wait: true }))
        chunks.push(Buffer.from(chunk as Uint8Array))
      return Buffer.concat(chunks)
    })()
    const wasted: string[] = []
    await downloadBlob(
      { cache: c, client: swarm.client, pieceBuffers: pool },
      {
        map,
        findPeers: async () => [liar, lagging, quick],
        seed: 4,
        onWaste: (_peer, _index, reason) => wasted.push(reason),
      },
    )
    // Every buffer given back was overwritten at once: had the cache or a reader still
    // used one, the whole-blob digest check or the streamed bytes would show it.
    expect(c.has(map.digest)).toBe(true)
    expect((await streamed).equals(bytes)).toBe(true)
    expect(pool.counts.unexpected).toBe(0)
    expect(pool.counts.given).toBeGreaterThanOrEqual(map.pieces.length)
    expect(pool.stats().reused).toBeGreaterThan(0)
  })

  it('waits for a piece that keeps coming past the deadline, and gives up on one that stops', async () => {
    const { bytes, map } = blob(2)
    for (const trickles of [true, false]) {
      const wasted: string[] = []
      // Each piece takes 400 ms, over twice the 150 ms deadline.
      const { c, run } = await slowDownload(bytes, map, 400, trickles ? 50 : undefined, {
        pieceTimeoutMs: 150,
        maxPeerFailures: 100,
        stallTimeoutMs: 1_500,
        onWaste: (_peer, _index, reason) => wasted.push(reason),
      })
      if (trickles) {
        await run
        expect(c.has(map.digest)).toBe(true)
        expect(wasted).toEqual([])
      } else {
        // Every request is cut at 150 ms, before its piece could come: nothing arrives.
        await expect(run).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
        expect(wasted.length).toBeGreaterThan(0)
        expect(new Set(wasted)).toEqual(new Set(['timeout']))
      }
    }
  })

  it('fetches the streaming window first, in order', async () => {
    const { bytes, map } = blob(10)
    const swarm = fakeSwarm(bytes, map)
    const only = swarm.peer('only', map.pieces.keys())
    const c = await cache()
    await downloadBlob(
      { cache: c, client: swarm.client },
      {
        map,
        findPeers: async () => [only],
        readPosition: () => 6,
        windowSize: 3,
        requestsPerPeer: 1,
        seed: 4,
      },
    )
    expect(only.requests.slice(0, 3)).toEqual([6, 7, 8])
  })

  it('says where a piece came from before it is written, where a reader could get it', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map)
    const a = swarm.peer('a', map.pieces.keys())
    const c = await cache()
    const verified = new Set<number>()
    const unreported: number[] = []
    const watched = {
      ...c,
      open: c.open.bind(c),
      hasPiece: c.hasPiece.bind(c),
      complete: c.complete.bind(c),
      pin: c.pin.bind(c),
      unpin: c.unpin.bind(c),
      async writePiece(...args: Parameters<BlobCache['writePiece']>) {
        if (!verified.has(args[1])) unreported.push(args[1])
        return c.writePiece(...args)
      },
    }
    await downloadBlob(
      { cache: watched, client: swarm.client },
      { map, findPeers: async () => [a], onVerified: (_peer, index) => verified.add(index), seed: 13 },
    )
    expect(c.has(map.digest)).toBe(true)
    expect(unreported).toEqual([])
    expect([...verified].sort()).toEqual([0, 1, 2, 3])
  })

  it('trusts a bitfield handed out with the peer until it refreshes it', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map)
    const handedOut = swarm.peer('tracked', [0, 1, 2, 3])
    const c = await cache()
    await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [{ ...handedOut, has: Bitfield.full(4) }], seed: 8 },
    )
    expect(c.has(map.digest)).toBe(true)
    expect(swarm.haveQueries).toBe(0)
  })

  it('picks up pieces a downloading peer gains later', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map)
    const growing = swarm.peer('growing', [0])
    const c = await cache()
    const done = downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [growing], haveRefreshMs: 50, seed: 5 },
    )
    const deadline = Date.now() + 5_000
    while (!c.hasPiece(map.digest, 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    for (const i of [1, 2, 3]) growing.holds.add(i)
    await done
    expect(c.has(map.digest)).toBe(true)
  })

  it('follows what a downloading peer gains over a have watch, without asking it again', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map, { watch: true })
    const growing = swarm.peer('growing', [0])
    const complete = swarm.peer('complete', [0, 1, 2, 3])
    const c = await cache()
    const done = downloadBlob(
      { cache: c, client: swarm.client },
      {
        map,
        // A have query would come a minute late: only the watch can tell of pieces 1-3.
        findPeers: async () => [growing, { ...complete, has: Bitfield.full(4) }],
        haveRefreshMs: 60_000,
        seed: 5,
      },
    )
    complete.busy = true
    const deadline = Date.now() + 5_000
    while (!c.hasPiece(map.digest, 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    for (const i of [1, 2, 3]) growing.holds.add(i)
    await done
    expect(c.has(map.digest)).toBe(true)
    expect(growing.requests.sort()).toEqual([0, 1, 2, 3])
    expect(swarm.haveQueries).toBe(0)
    // Watched: the growing peer; not the one handed out complete.
    expect(swarm.watches).toBe(1)
    expect(swarm.openWatches).toBe(0)
  })

  it('asks a peer that cannot be watched what it holds instead', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map, { watch: true })
    const old = swarm.peer('old', [0])
    old.watch = 'unsupported'
    const c = await cache()
    const done = downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [old], haveRefreshMs: 50, seed: 6 },
    )
    const deadline = Date.now() + 5_000
    while (!c.hasPiece(map.digest, 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    for (const i of [1, 2, 3]) old.holds.add(i)
    const result = await done
    expect(c.has(map.digest)).toBe(true)
    expect(result.droppedPeers).toEqual([])
    expect(swarm.watches).toBe(1)
    expect(swarm.haveQueries).toBeGreaterThan(0)
  })

  it('watches a peer again that held nothing yet when first watched', async () => {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map, { watch: true })
    const late = swarm.peer('late', [])
    const c = await cache()
    const done = downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [late], haveRefreshMs: 50, seed: 9 },
    )
    while (swarm.watches === 0) await new Promise((r) => setTimeout(r, 10))
    for (const i of [0, 1, 2, 3]) late.holds.add(i)
    await done
    expect(c.has(map.digest)).toBe(true)
    expect(swarm.watches).toBeGreaterThanOrEqual(2)
    expect(swarm.haveQueries).toBe(0)
  })

  it('drops a peer whose watch answers the bitfield of another layout', async () => {
    const { bytes, map } = blob(6)
    const swarm = fakeSwarm(bytes, map, { watch: true })
    const odd = swarm.peer('odd', map.pieces.keys())
    odd.watch = 'wrong-length'
    const honest = swarm.peer('honest', map.pieces.keys())
    const c = await cache()
    const result = await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [odd, honest], seed: 7 },
    )
    expect(c.has(map.digest)).toBe(true)
    expect(result.droppedPeers).toContain('odd')
    expect(odd.requests).toEqual([])
    expect(swarm.openWatches).toBe(0)
  })

  /**
   * A download that holds 25 of 40 pieces, with ten peers that hold 20 each (pieces
   * 20..39) and answer one request at a time after 20 ms: it is ahead of its peers.
   */
  async function aheadOfTenPeers(aheadMaxInFlight: number): Promise<number> {
    const { bytes, map } = blob(40)
    const swarm = fakeSwarm(bytes, map)
    const peers = Array.from({ length: 10 }, (_, k) => {
      const p = swarm.peer(
        `p${k}`,
        Array.from({ length: 20 }, (_, i) => 20 + i),
      )
      p.delayMs = 20
      return p
    })
    const c = await cache()
    await c.open(map.digest, map)
    for (let i = 0; i < 25; i++) {
      const { offset, length } = pieceRange(map, i)
      await c.writePiece(map.digest, i, bytes.subarray(offset, offset + length))
    }
    await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => peers, aheadMaxInFlight, maxInFlight: 0, seed: 13 },
    )
    expect(c.has(map.digest)).toBe(true)
    return swarm.maxInFlight
  }

  it('keeps few requests in flight while it holds more than its peers, leaving their uplinks to the ones behind', async () => {
    expect(await aheadOfTenPeers(3)).toBeLessThanOrEqual(3)
    // Without the rule it asks every peer at once.
    expect(await aheadOfTenPeers(0)).toBeGreaterThanOrEqual(8)
  })

  /** Twelve peers holding all 40 pieces of a blob, each answering after 20 ms. */
  function twelvePeers() {
    const { bytes, map } = blob(40)
    const swarm = fakeSwarm(bytes, map)
    const peers = Array.from({ length: 12 }, (_, k) => {
      const p = swarm.peer(`p${k}`, map.pieces.keys())
      p.delayMs = 20
      return p
    })
    return { map, swarm, peers }
  }

  /** Most requests in flight at once while twelve peers (twelvePeers) answer. */
  async function fromTwelvePeers(maxInFlight: number | undefined): Promise<number> {
    const { map, swarm, peers } = twelvePeers()
    const c = await cache()
    await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => peers, ...(maxInFlight === undefined ? {} : { maxInFlight }), seed: 21 },
    )
    expect(c.has(map.digest)).toBe(true)
    return swarm.maxInFlight
  }

  it('keeps at most maxInFlight requests in flight in all, however many peers could take one', async () => {
    expect(await fromTwelvePeers(5)).toBe(5)
    expect(await fromTwelvePeers(8)).toBe(8)
    // No cap (0, the default): every peer is asked at once (all twelve once the download
    // holds STARTING_PIECES pieces).
    expect(await fromTwelvePeers(0)).toBe(12)
    expect(await fromTwelvePeers(undefined)).toBe(12)
  })

  /**
   * Which of twelve peers (twelvePeers) the download asked before it held STARTING_PIECES
   * pieces, and how many it asked in all.
   */
  async function startingFromTwelve(startingPeers: number | undefined) {
    const { map, swarm, peers } = twelvePeers()
    const c = await cache()
    const early = new Set<string>()
    const all = new Set<string>()
    const fetchPiece = swarm.client.fetchPiece
    const client: typeof swarm.client = {
      ...swarm.client,
      fetchPiece(target, digest, index, options) {
        const peer = peers.find((p) => p.target === target)?.id ?? '?'
        all.add(peer)
        if ((c.stat(digest)?.piecesHeld ?? 0) < STARTING_PIECES) early.add(peer)
        return fetchPiece(target, digest, index, options)
      },
    }
    await downloadBlob(
      { cache: c, client },
      {
        map,
        findPeers: async () => peers,
        ...(startingPeers === undefined ? {} : { startingPeers }),
        seed: 22,
      },
    )
    expect(c.has(map.digest)).toBe(true)
    return { early: early.size, all: all.size }
  }

  it('starts with STARTING_PEERS peers and takes the others once it holds a few pieces', async () => {
    expect(STARTING_PEERS).toBeLessThan(12)
    expect(await startingFromTwelve(undefined)).toEqual({ early: STARTING_PEERS, all: 12 })
    expect(await startingFromTwelve(4)).toEqual({ early: 4, all: 12 })
    // 0: no starting limit, every peer is asked from the start.
    expect(await startingFromTwelve(0)).toEqual({ early: 12, all: 12 })
  })

  /** Two peers in use (maxPeers 2) that answer busy, and a third the tracker also handed out. */
  async function crowdedOut(busyExtraPeers: number) {
    const { bytes, map } = blob(6)
    const swarm = fakeSwarm(bytes, map)
    const busy = [swarm.peer('busy1', map.pieces.keys()), swarm.peer('busy2', map.pieces.keys())]
    for (const p of busy) p.busy = true
    const free = swarm.peer('free', map.pieces.keys())
    const c = await cache()
    return downloadBlob(
      { cache: c, client: swarm.client },
      {
        map,
        findPeers: async () => [...busy, free],
        maxPeers: 2,
        busyExtraPeers,
        peerSearchIntervalMs: 50,
        busyBackoffMs: 100,
        stallTimeoutMs: 300,
        seed: 14,
      },
    )
  }

  it('asks a peer that answered busy again when its backoff ends, not at the next tick', async () => {
    const { bytes, map } = blob(1)
    const swarm = fakeSwarm(bytes, map)
    const peer = swarm.peer('p', map.pieces.keys())
    // Busy for its first four requests (fetch counts a request before it answers).
    Object.defineProperty(peer, 'busy', { get: () => peer.requests.length <= 4 })
    const c = await cache()
    const started = Date.now()
    await downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [peer], busyBackoffMs: 20, stallTimeoutMs: 5_000, seed: 16 },
    )
    expect(peer.requests).toHaveLength(5)
    // Four backoffs of 20 ms. Waiting for the scheduler's 200 ms tick after each would
    // take at least 800 ms.
    expect(Date.now() - started).toBeLessThan(650)
  })

  it('adds peers beyond maxPeers once half of its peers answer busy', async () => {
    const result = await crowdedOut(8)
    expect(result.bytesByPeer.get('free')).toBe(6 * PIECE - 100)
    // Without the rule it waits on the busy pair until it gives up.
    await expect(crowdedOut(0)).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
  })

  it('asks a peer what it holds less often while what it is known to hold leaves work to ask for', async () => {
    const { bytes, map } = blob(40)
    const swarm = fakeSwarm(bytes, map)
    // Holds all but the last piece, which it gains once the download has the rest.
    const peer = swarm.peer(
      'p',
      Array.from({ length: 39 }, (_, i) => i),
    )
    peer.delayMs = 100
    const c = await cache()
    const started = Date.now()
    let spareQueries = -1
    let spareMs = 0
    const done = downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [peer], haveRefreshMs: 50, seed: 15 },
    )
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      if (Array.from({ length: 39 }, (_, i) => c.hasPiece(map.digest, i)).every(Boolean)) break
      await new Promise((r) => setTimeout(r, 5))
    }
    spareQueries = swarm.haveQueries
    spareMs = Date.now() - started
    peer.holds.add(39)
    await done
    expect(c.has(map.digest)).toBe(true)
    // Every 200 ms (4 x 50) while it had spare pieces, where every 50 ms would be four times as many.
    expect(spareQueries).toBeLessThanOrEqual(Math.ceil(spareMs / 200) + 2)
    expect(spareMs).toBeGreaterThan(300)
  })

  it('waits past three stall timeouts while piece bytes keep coming, but not forever', async () => {
    const { bytes, map } = blob(2)
    for (const endless of [false, true]) {
      const started = Date.now()
      // Each piece takes 900 ms (endless: a minute) of bytes trickling in every 50 ms,
      // longer than three 200 ms stall timeouts.
      const { c, run } = await slowDownload(bytes, map, endless ? 60_000 : 900, 50, {
        stallTimeoutMs: 200,
        pieceTimeoutMs: 120_000,
      })
      if (!endless) {
        await run
        expect(Date.now() - started).toBeGreaterThan(600)
        expect(c.has(map.digest)).toBe(true)
      } else {
        // No whole piece for ten stall timeouts: given up, bytes or not.
        await expect(run).rejects.toThrow(/no piece of .* arrived for/)
        // Ten stall timeouts are 2 s; timers run on the event loop's cached clock and may
        // fire a little before Date.now() says, hence the margin.
        expect(Date.now() - started).toBeGreaterThanOrEqual(1_900)
        expect(Date.now() - started).toBeLessThan(10_000)
      }
    }
  })

  it('gives up with SwarmUnavailableError when nobody can serve', async () => {
    const { bytes, map } = blob(3)
    const swarm = fakeSwarm(bytes, map)
    const partial = swarm.peer('partial', [0])
    const c = await cache()
    await expect(
      downloadBlob(
        { cache: c, client: swarm.client },
        { map, findPeers: async () => [partial], stallTimeoutMs: 600, haveRefreshMs: 100 },
      ),
    ).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
    // What did arrive stays for a later attempt.
    expect(c.hasPiece(map.digest, 0)).toBe(true)
  })

  it('waits past the stall timeout while a peer search is still running', async () => {
    const { bytes, map } = blob(3)
    const swarm = fakeSwarm(bytes, map)
    const good = swarm.peer('good', map.pieces.keys())
    const c = await cache()
    let searches = 0
    // The first search answers only after twice the stall timeout, as a tracker request
    // from a starved node does.
    const findPeers = async () => {
      searches++
      if (searches === 1) await new Promise((resolve) => setTimeout(resolve, 800))
      return [good]
    }
    const started = Date.now()
    await downloadBlob({ cache: c, client: swarm.client }, { map, findPeers, stallTimeoutMs: 400 })
    // Not given up at 400 ms: it waited for the 800 ms search (less a timer's margin).
    expect(Date.now() - started).toBeGreaterThanOrEqual(750)
    expect(c.has(map.digest)).toBe(true)
  })

  /**
   * A download from one peer that holds every piece and takes `delayMs` for each,
   * reporting bytes every `progressEveryMs` (never when undefined); never cut as slow.
   */
  async function slowDownload(
    bytes: Parameters<typeof fakeSwarm>[0],
    map: DownloadInit['map'],
    delayMs: number,
    progressEveryMs: number | undefined,
    init: Omit<DownloadInit, 'map' | 'findPeers'>,
  ) {
    const swarm = fakeSwarm(bytes, map)
    const slow = swarm.peer('slow', map.pieces.keys())
    slow.delayMs = delayMs
    if (progressEveryMs !== undefined) slow.progressEveryMs = progressEveryMs
    const c = await cache()
    const run = downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [slow], slowPieceMinMs: 600_000, ...init },
    )
    return { c, run }
  }

  /** A download from one peer that holds every piece and answers busy until told otherwise. */
  async function crowdedDownload(stallTimeoutMs: number) {
    const { bytes, map } = blob(4)
    const swarm = fakeSwarm(bytes, map)
    const crowded = swarm.peer('crowded', map.pieces.keys())
    crowded.busy = true
    const c = await cache()
    const done = downloadBlob(
      { cache: c, client: swarm.client },
      { map, findPeers: async () => [crowded], stallTimeoutMs, busyBackoffMs: 20 },
    )
    return { crowded, c, map, done, started: Date.now() }
  }

  it('waits past the stall timeout while a peer that holds the pieces answers busy', async () => {
    const { crowded, c, map, done, started } = await crowdedDownload(500)
    // Over twice the stall timeout of busy answers, then a slot frees up. The download
    // must end after that, not give up before it (a flag, not a clock comparison: timers
    // and Date.now() may disagree by a millisecond).
    let freed = false
    setTimeout(() => {
      crowded.busy = false
      freed = true
    }, 1_200)
    await done
    expect(freed).toBe(true)
    expect(Date.now() - started).toBeGreaterThan(1_000)
    expect(c.has(map.digest)).toBe(true)
  })

  it('waits past three stall timeouts while its busy peers keep gaining pieces, with watches or queries', async () => {
    for (const watch of [true, false]) {
      const { bytes, map } = blob(40)
      const swarm = fakeSwarm(bytes, map, { watch })
      // The peer gains a piece every 100 ms from others (as a cold swarm fills up from a
      // rationed origin) and has no upload slot for this download until 1.6 s, more than
      // three 400 ms stall timeouts.
      const growing = swarm.peer('growing', [0])
      growing.busy = true
      const gain = setInterval(() => growing.holds.add(growing.holds.size), 100)
      let freed = false
      const started = Date.now()
      setTimeout(() => {
        growing.busy = false
        freed = true
        clearInterval(gain)
        for (let i = 0; i < 40; i++) growing.holds.add(i)
      }, 1_600)
      const c = await cache()
      await downloadBlob(
        { cache: c, client: swarm.client },
        {
          map,
          findPeers: async () => [growing],
          stallTimeoutMs: 400,
          busyBackoffMs: 20,
          haveRefreshMs: 50,
        },
      )
      // Finished only after the slot freed up, so it waited past three stall timeouts.
      expect(freed).toBe(true)
      expect(Date.now() - started).toBeGreaterThan(1_200)
      expect(c.has(map.digest)).toBe(true)
    }
  })

  it('gives up after three stall timeouts even while peers answer busy', async () => {
    const { done, started } = await crowdedDownload(400)
    await expect(done).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
    // Three 400 ms stall timeouts, less a timer's margin.
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_100)
  })
})

describe('downloadBlob over libp2p', () => {
  const cleanups: Array<() => Promise<void>> = []

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('bans a lying peer whose pieces the client hashed on its worker thread, and still finishes', async () => {
    const { bytes, map } = blob(16)
    const root = await mkdtemp(join(tmpdir(), 'shoal-sched-p2p-'))
    const cache = createBlobCache({}, { root, quotaBytes: 1 << 30, durable: false })
    await cache.start()
    const hasher = createPieceHasher({ minWorkerBytes: 1 })
    const servers: SwarmPeer[] = []
    for (const lying of [true, false]) {
      const source = createMemoryPieceSource()
      const held = Buffer.from(bytes)
      // The liar holds every piece with its first byte flipped.
      if (lying) for (let off = 0; off < held.length; off += PIECE) held[off] = held[off]! ^ 0xff
      source.putBlob(map.digest, held, PIECE)
      const node = await createP2PNode({})
      await node.start()
      const server = createPieceServer({
        libp2p: node.libp2p,
        source: { ...source, signedPieceMap: undefined },
      })
      await server.start()
      cleanups.push(async () => {
        await server.stop()
        await node.stop()
      })
      servers.push({ id: lying ? 'liar' : 'honest', target: node.getMultiaddrs() })
    }
    const node = await createP2PNode({})
    await node.start()
    const client = createPieceClient({ libp2p: node.libp2p }, { hasher })
    cleanups.push(async () => {
      client.close()
      await node.stop()
      await hasher.close()
      await cache.stop()
      await rm(root, { recursive: true, force: true })
    })
    // Shared buffers, so the hasher's worker reads the pieces where they land.
    const pool = poisoningPool({ maxBuffers: 4, shared: true })
    const reported: string[] = []
    const result = await downloadBlob(
      { cache, client, pieceBuffers: pool },
      { map, findPeers: async () => servers, onBadPiece: (p) => reported.push(p.id), seed: 4 },
    )
    expect(result.bannedPeers).toEqual(['liar'])
    expect(reported).toEqual(['liar'])
    expect(result.droppedPeers).toContain('liar')
    expect(result.bytesByPeer.get('liar')).toBeUndefined()
    expect(result.bytesByPeer.get('honest')).toBe(map.size)
    expect(cache.has(map.digest)).toBe(true)
    // Every piece that came, the liar's included, was hashed on the worker.
    expect(hasher.stats().worker).toBeGreaterThanOrEqual(map.pieces.length + 1)
    expect(hasher.stats().inline).toBe(0)
    // The liar's piece went back to the pool too, once.
    expect(pool.counts.unexpected).toBe(0)
    expect(pool.counts.given).toBe(pool.counts.taken)
  })

  // With have queries every 100 ms, and with only the have watches (a query would come
  // ten minutes late).
  it.each([100, 600_000])(
    'lets two leechers share pieces while both are still downloading (have queries every %i ms)',
    async (haveRefreshMs) => {
      const { bytes, map } = blob(48)
      const nodes = []
      for (let n = 0; n < 3; n++) {
        const root = await mkdtemp(join(tmpdir(), 'shoal-sched-p2p-'))
        const cache = createBlobCache({}, { root, quotaBytes: 1 << 30, durable: false })
        await cache.start()
        const node = await createP2PNode({})
        await node.start()
        // The seed is slow, so the leechers have reason to ask each other.
        const server = createPieceServer(
          { libp2p: node.libp2p, source: cachePieceSource(cache) },
          n === 0 ? { uploadBytesPerSecond: 256 * 1024 } : {},
        )
        await server.start()
        const client = createPieceClient({ libp2p: node.libp2p })
        cleanups.push(async () => {
          await server.stop()
          await node.stop()
          await cache.stop()
          await rm(root, { recursive: true, force: true })
        })
        nodes.push({
          cache,
          node,
          server,
          client,
          peer: { id: node.peerId.toString(), target: node.getMultiaddrs() },
        })
      }
      const [seed, one, two] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]]
      await seed.cache.putBlob(map.digest, map.size, [bytes] as unknown as AsyncIterable<Uint8Array>, {
        layout: map,
      })
      const pools = [poisoningPool(), poisoningPool()]
      const results = await Promise.all(
        [one, two].map((me, k) =>
          downloadBlob(
            // Real piece client, real cache, pooled buffers overwritten when given back.
            { cache: me.cache, client: me.client, pieceBuffers: pools[k] },
            {
              map,
              findPeers: async () => [seed.peer, k === 0 ? two.peer : one.peer],
              haveRefreshMs,
              seed: 10 + k,
            },
          ),
        ),
      )
      expect(one.cache.has(map.digest) && two.cache.has(map.digest)).toBe(true)
      const fromSeed = results.reduce((sum, r) => sum + (r.bytesByPeer.get(seed.peer.id) ?? 0), 0)
      const fromLeechers = results.reduce(
        (sum, r, k) => sum + (r.bytesByPeer.get((k === 0 ? two : one).peer.id) ?? 0),
        0,
      )
      expect(fromSeed + fromLeechers).toBe(2 * map.size)
      expect(fromLeechers).toBeGreaterThan(0)
      for (const pool of pools) {
        expect(pool.counts.unexpected).toBe(0)
        expect(pool.counts.given).toBeGreaterThan(0)
      }
    },
  )
})
