import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { Bitfield } from '../../../protocol/src/bitfield.js'
import { TrackerUnavailableError } from '../../../protocol/src/errors.js'
import type { Digest } from '../../../protocol/src/index.js'
import type { AnnounceRequestInput, AnnounceResponse } from '../../../protocol/src/tracker-api.js'
import { type CombinedRouterInit, createCombinedRouter } from './combined.js'
import { createDhtRouter } from './dht.js'
import { createTrackerRouter } from './tracker.js'

const DIGEST = `sha256:${'a'.repeat(64)}` as Digest
const SELF = '12D3KooWSelf'

function fakeTracker(answer: Partial<AnnounceResponse> = {}) {
  const announces: AnnounceRequestInput[] = []
  let down = false
  const client = {
    announce: vi.fn(async (request: AnnounceRequestInput): Promise<AnnounceResponse> => {
      if (down) throw new TrackerUnavailableError('tracker down')
      announces.push(request)
      return { peers: [], seeds: [], intervalMs: 60_000, allowOrigin: false, ...answer }
    }),
    reportBadPeer: vi.fn(async () => ({ dropped: true, reporters: 1 })),
  }
  return {
    client,
    announces,
    setDown(value: boolean) {
      down = value
    },
  }
}

function trackerRouter(tracker: ReturnType<typeof fakeTracker>, held = 0) {
  return createTrackerRouter(
    {
      client: tracker.client,
      self: { peerId: SELF, multiaddrs: () => ['/ip4/127.0.0.1/tcp/1/p2p/12D3KooWSelf'] },
      holding: (digest) => ({
        digest,
        pieceCount: 8,
        piecesHeld: held,
        ...(held > 0 ? { bitfield: new Uint8Array([0x80]) } : {}),
      }),
      uploadLoad: () => 3,
    },
    { zone: 'z1', minQueryIntervalMs: 0 },
  )
}

/** A combined router over `tracker` and a DHT whose provides are counted. */
function combinedWithDht(tracker: ReturnType<typeof fakeTracker>, init: CombinedRouterInit = {}, held = 0) {
  const provide = vi.fn(async () => {})
  const dht = createDhtRouter({ node: { findProviders: async () => [], provide } })
  return { provide, router: createCombinedRouter({ tracker: trackerRouter(tracker, held), dht }, init) }
}

describe('tracker router', () => {
  it('announces started with the upload load and zone, then returns peers and seeds only with an origin slot', async () => {
    const tracker = fakeTracker({
      peers: [{ peerId: 'PeerA', multiaddrs: ['/ip4/127.0.0.1/tcp/2'], complete: true }],
      seeds: [{ peerId: 'Seed', multiaddrs: ['/ip4/127.0.0.1/tcp/3'], complete: true }],
      allowOrigin: true,
    })
    const router = trackerRouter(tracker)
    const found = await router.findPeers(DIGEST, { pieceCount: 8 })
    expect(tracker.announces[0]).toMatchObject({
      peerId: SELF,
      digest: DIGEST,
      event: 'started',
      state: 'partial',
      uploadLoad: 3,
      zone: 'z1',
      pieceCount: 8,
    })
    expect(found.map((p) => [p.peerId, p.seed === true])).toEqual([
      ['PeerA', false],
      ['Seed', true],
    ])
    expect(found[0]?.bitfield?.isComplete()).toBe(true)
    expect(router.originAllowed(DIGEST)).toBe(true)
    await router.stop?.()
    expect(tracker.announces.at(-1)?.event).toBe('stopped')
  })

  it('hides seeds and refuses the origin without allowOrigin; sends the bitfield of a partial blob', async () => {
    const tracker = fakeTracker({
      seeds: [{ peerId: 'Seed', multiaddrs: [], complete: true }],
      allowOrigin: false,
    })
    const router = trackerRouter(tracker, 1)
    expect(await router.findPeers(DIGEST)).toEqual([])
    expect(router.originAllowed(DIGEST)).toBe(false)
    expect(tracker.announces[0]?.bitfield).toBe(Bitfield.decode(new Uint8Array([0x80]), 8).toBase64())
    await router.stop?.()
  })

  it('reuses an answer within the tracker interval when it offered peers', async () => {
    const tracker = fakeTracker({ peers: [{ peerId: 'PeerA', multiaddrs: [], complete: false }] })
    const router = trackerRouter(tracker)
    await router.findPeers(DIGEST)
    await router.findPeers(DIGEST)
    expect(tracker.client.announce).toHaveBeenCalledTimes(1)
    await router.stop?.()
  })
})

describe('combined router', () => {
  it('falls back to the DHT when the tracker is unavailable, and lets the origin be used then', async () => {
    const tracker = fakeTracker({ allowOrigin: false })
    const findProviders = vi.fn(async () => [])
    const provide = vi.fn(async () => {})
    const dht = createDhtRouter({ node: { findProviders, provide }, seedPeerId: () => 'Seed' })
    const onFallback = vi.fn()
    const router = createCombinedRouter(
      { tracker: trackerRouter(tracker), dht, onFallback },
      { originAfterOutageMs: 50 },
    )
    await router.findPeers(DIGEST)
    expect(findProviders).not.toHaveBeenCalled()
    expect(router.originAllowed(DIGEST)).toBe(false)
    tracker.setDown(true)
    await router.findPeers(DIGEST)
    expect(findProviders).toHaveBeenCalledTimes(1)
    expect(onFallback).toHaveBeenCalledTimes(1)
    expect(router.trackerDown()).toBe(true)
    // A short outage is not a reason to use the origin without a slot; a long one is.
    expect(router.originAllowed(DIGEST)).toBe(false)
    await new Promise((r) => setTimeout(r, 60))
    expect(router.originAllowed(DIGEST)).toBe(true)
    // Announces reach the DHT (a provide once a piece is held) even with the tracker down.
    await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 0 })
    expect(provide).not.toHaveBeenCalled()
    await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 1 })
    await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 2 })
    expect(provide).toHaveBeenCalledTimes(1)
    await router.stop?.()
  })

  it('provides only complete blobs in the DHT while the tracker answers', async () => {
    const tracker = fakeTracker()
    const provide = vi.fn(async () => {})
    const dht = createDhtRouter({ node: { findProviders: async () => [], provide } })
    const router = createCombinedRouter({ tracker: trackerRouter(tracker), dht }, { dhtProvideDelayMs: 0 })
    await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 3 })
    expect(provide).not.toHaveBeenCalled()
    expect(tracker.client.announce).toHaveBeenCalledTimes(1)
    await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 8, event: 'completed' })
    expect(provide).toHaveBeenCalledTimes(1)
    await router.stop?.()
  })

  describe('with the tracker answering, DHT provides wait', () => {
    beforeEach(() => {
      vi.useFakeTimers()
    })
    afterEach(() => {
      vi.useRealTimers()
    })

    it('while the tracker answers, provides complete blobs after a random wait, one at a time', async () => {
      const tracker = fakeTracker()
      let running = 0
      let most = 0
      const provide = vi.fn(async () => {
        running++
        most = Math.max(most, running)
        await new Promise((resolve) => setTimeout(resolve, 1_000))
        running--
      })
      const dht = createDhtRouter({ node: { findProviders: async () => [], provide } })
      const router = createCombinedRouter(
        { tracker: trackerRouter(tracker), dht },
        { dhtProvideDelayMs: 30_000 },
      )
      const other = `sha256:${'b'.repeat(64)}` as Digest
      await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 8, event: 'completed' })
      await router.announce({ digest: other, pieceCount: 8, piecesHeld: 8, event: 'completed' })
      // Announced again while waiting: still one provide per blob.
      await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 8 })
      expect(provide).not.toHaveBeenCalled()
      await vi.advanceTimersByTimeAsync(30_000 + 2_000)
      expect(provide).toHaveBeenCalledTimes(2)
      expect(most).toBe(1)
      await router.stop?.()
    })

    it('leaves a blob out of the DHT while the tracker names enough complete holders, until it goes away', async () => {
      const holders = Array.from({ length: 3 }, (_, i) => ({
        peerId: `Peer${i}`,
        multiaddrs: [`/ip4/127.0.0.1/tcp/${10 + i}`],
        complete: true,
      }))
      const tracker = fakeTracker({ peers: holders })
      const provide = vi.fn(async () => {})
      const dht = createDhtRouter({ node: { findProviders: async () => [], provide } })
      const router = createCombinedRouter(
        { tracker: trackerRouter(tracker), dht },
        { dhtProvideDelayMs: 10_000, dhtProvidersPerBlob: 3 },
      )
      await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 8, event: 'completed' })
      await vi.advanceTimersByTimeAsync(20_000)
      expect(provide).not.toHaveBeenCalled()
      // With one holder fewer than the limit it is provided.
      const fewer = fakeTracker({ peers: holders.slice(0, 2) })
      const other = createCombinedRouter(
        { tracker: trackerRouter(fewer), dht },
        { dhtProvideDelayMs: 10_000, dhtProvidersPerBlob: 3 },
      )
      const otherDigest = `sha256:${'c'.repeat(64)}` as Digest
      await other.announce({ digest: otherDigest, pieceCount: 8, piecesHeld: 8, event: 'completed' })
      await vi.advanceTimersByTimeAsync(10_000)
      expect(provide).toHaveBeenCalledTimes(1)
      // The tracker goes away: the skipped blob is provided within the delay.
      tracker.setDown(true)
      await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 8 })
      expect(router.trackerDown()).toBe(true)
      await vi.advanceTimersByTimeAsync(10_000)
      expect(provide).toHaveBeenCalledTimes(2)
      await router.stop?.()
      await other.stop?.()
    })

    it('provides what waits at once when the tracker goes away, and nothing after stop', async () => {
      const tracker = fakeTracker()
      const { provide, router } = combinedWithDht(tracker, { dhtProvideDelayMs: 60_000 })
      const dht = createDhtRouter({ node: { findProviders: async () => [], provide } })
      await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 8, event: 'completed' })
      expect(provide).not.toHaveBeenCalled()
      tracker.setDown(true)
      await router.findPeers(DIGEST)
      expect(router.trackerDown()).toBe(true)
      expect(provide).toHaveBeenCalledTimes(1)

      const other = `sha256:${'b'.repeat(64)}` as Digest
      tracker.setDown(false)
      const second = createCombinedRouter(
        { tracker: trackerRouter(tracker), dht },
        { dhtProvideDelayMs: 60_000 },
      )
      await second.announce({ digest: other, pieceCount: 8, piecesHeld: 8, event: 'completed' })
      await second.stop?.()
      await vi.advanceTimersByTimeAsync(60_000)
      expect(provide).toHaveBeenCalledTimes(1)
      await router.stop?.()
    })
  })

  it('provides a blob in the DHT when the tracker fails the announce itself', async () => {
    const tracker = fakeTracker()
    const { provide, router } = combinedWithDht(tracker, { dhtProvideDelayMs: 60_000 })
    await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 1 })
    expect(provide).not.toHaveBeenCalled()
    // The first call to find the tracker gone is this announce: a partial holder is
    // provided at once, or agents pulling later would not find it.
    tracker.setDown(true)
    await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 8, event: 'completed' })
    expect(router.trackerDown()).toBe(true)
    expect(provide).toHaveBeenCalledTimes(1)
    await router.stop?.()
  })

  it('learns of an outage from a failed periodic announce and provides what waits; comes back up with the tracker', async () => {
    vi.useFakeTimers()
    try {
      const tracker = fakeTracker({ intervalMs: 1_000 })
      const { provide, router } = combinedWithDht(tracker, { dhtProvideDelayMs: 600_000 }, 8)
      await router.announce({ digest: DIGEST, pieceCount: 8, piecesHeld: 8, event: 'completed' })
      expect(provide).not.toHaveBeenCalled()
      // The agent makes no call of its own; only its periodic announce meets the outage.
      tracker.setDown(true)
      await vi.advanceTimersByTimeAsync(1_100)
      expect(router.trackerDown()).toBe(true)
      expect(provide).toHaveBeenCalledTimes(1)
      tracker.setDown(false)
      await vi.advanceTimersByTimeAsync(1_100)
      expect(router.trackerDown()).toBe(false)
      await router.stop?.()
    } finally {
      vi.useRealTimers()
    }
  })

  it('passes a rejection that is not an outage through', async () => {
    const tracker = fakeTracker()
    tracker.client.announce.mockRejectedValueOnce(new Error('boom'))
    const dht = createDhtRouter({ node: { findProviders: async () => [], provide: async () => {} } })
    const router = createCombinedRouter({ tracker: trackerRouter(tracker), dht })
    await expect(router.findPeers(DIGEST)).rejects.toThrow('boom')
    await router.stop?.()
  })
})
