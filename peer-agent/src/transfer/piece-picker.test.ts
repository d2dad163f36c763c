import { describe, expect, it } from 'vitest'
import {
  admitsPeer,
  BUSY_EXTRA_PEERS,
  createRng,
  crowdedByBusy,
  inFlightCap,
  isAheadOfPeers,
  isEndgame,
  MAX_REQUESTS_PER_PEER,
  type PickPieceInput,
  pickPiece,
  pieceSetOf,
  countsTowardPeerLimit,
  peerLimit,
  STARTING_PEERS,
  STARTING_PIECES,
  startingPeerLimit,
  requestSlots,
  sourceOrder,
  SOUGHT_EXTRA_PEERS,
  sourcePickRules,
  wantsMorePeers,
} from './piece-picker.js'

const ALL: PickPieceInput['peerHas'] = { has: () => true }

function input(over: Partial<PickPieceInput> & { pieceCount: number }): PickPieceInput {
  return {
    have: pieceSetOf([]),
    peerHas: ALL,
    inFlight: [],
    availability: new Array(over.pieceCount).fill(1),
    rng: createRng(1),
    ...over,
  }
}

describe('pickPiece', () => {
  it('takes the streaming window in order, skipping held, in-flight and missing-at-peer pieces', () => {
    const base = input({
      pieceCount: 20,
      readPosition: 5,
      windowSize: 4,
      availability: new Array(20).fill(3),
    })
    base.availability = Object.assign(new Array(20).fill(3), { 0: 1 })
    expect(pickPiece(base)).toEqual({ index: 5, reason: 'window' })
    expect(pickPiece({ ...base, have: pieceSetOf([5]) })).toEqual({ index: 6, reason: 'window' })
    const inFlight = Object.assign(new Array(20).fill(0), { 5: 1, 6: 1 })
    expect(pickPiece({ ...base, inFlight, peerHas: pieceSetOf([7, 8, 0]) })).toEqual({
      index: 7,
      reason: 'window',
    })
    // Nothing the peer has inside the window: rarest first takes over.
    expect(pickPiece({ ...base, peerHas: pieceSetOf([0, 15]) })).toEqual({ index: 0, reason: 'rarest' })
    // The window stops at the end of the blob.
    expect(pickPiece({ ...base, readPosition: 19 })).toEqual({ index: 19, reason: 'window' })
  })

  it('picks the rarest piece, breaking ties at random but deterministically per seed', () => {
    const availability = [5, 2, 9, 2, 2, 7, 3, 2]
    const picks = new Map<number, number>()
    for (let seed = 0; seed < 400; seed++) {
      const a = pickPiece(input({ pieceCount: 8, availability, rng: createRng(seed) }))
      const b = pickPiece(input({ pieceCount: 8, availability, rng: createRng(seed) }))
      expect(a).toEqual(b)
      expect(a?.reason).toBe('rarest')
      picks.set(a!.index, (picks.get(a!.index) ?? 0) + 1)
    }
    expect([...picks.keys()].sort()).toEqual([1, 3, 4, 7])
    for (const n of picks.values()) expect(n).toBeGreaterThan(60)
  })

  it('never picks a held piece, a piece the peer lacks, or one already asked of this peer', () => {
    const rng = createRng(7)
    for (let round = 0; round < 200; round++) {
      const have = new Set<number>()
      const peer = new Set<number>()
      const asked = new Set<number>()
      const inFlight: number[] = []
      for (let i = 0; i < 16; i++) {
        if (rng() < 0.3) have.add(i)
        if (rng() < 0.5) peer.add(i)
        if (rng() < 0.2) asked.add(i)
        inFlight[i] = asked.has(i) ? 1 : rng() < 0.2 ? 1 : 0
      }
      const picked = pickPiece(
        input({
          pieceCount: 16,
          have: pieceSetOf(have),
          peerHas: pieceSetOf(peer),
          requestedFromPeer: pieceSetOf(asked),
          inFlight,
          readPosition: Math.floor(rng() * 16),
          endgameThreshold: 16,
          rng,
        }),
      )
      if (picked) {
        expect(have.has(picked.index)).toBe(false)
        expect(peer.has(picked.index)).toBe(true)
        expect(asked.has(picked.index)).toBe(false)
      }
    }
  })

  it('duplicates in-flight pieces to other peers only in endgame, up to maxDuplicates', () => {
    const pieceCount = 24
    const held = Array.from({ length: 18 }, (_, i) => i)
    const have = pieceSetOf(held)
    const zeros = (): number[] => new Array(pieceCount).fill(0)
    // Six missing (18..23), three in flight elsewhere, the other three held only by other peers.
    const inFlight = zeros()
    for (const i of [18, 19, 20]) inFlight[i] = 1
    const peerHas = pieceSetOf([18, 19, 20])
    const base = input({ pieceCount, have, inFlight, peerHas, endgameThreshold: 4 })
    expect(isEndgame(base)).toBe(false)
    expect(pickPiece(base)).toBeUndefined()

    // Everything missing is requested, but more than endgameThreshold pieces are
    // missing: not endgame, so nothing is fetched twice (a second copy of a quarter of
    // the blob costs the uplinks more than the stragglers it saves).
    const allAsked = zeros()
    for (const [i, n] of [
      [18, 2],
      [19, 1],
      [20, 2],
      [21, 1],
      [22, 1],
      [23, 1],
    ] as const)
      allAsked[i] = n
    expect(isEndgame(base)).toBe(false)
    expect(pickPiece({ ...base, inFlight: allAsked })).toBeUndefined()

    // Four missing, all requested: endgame, least duplicated piece first, at most
    // maxDuplicates requests per piece.
    const last4 = input({
      pieceCount,
      have: pieceSetOf(Array.from({ length: 20 }, (_, i) => i)),
      inFlight: [...zeros().slice(0, 20), 2, 1, 2, 2],
      peerHas: pieceSetOf([20, 21, 22, 23]),
      endgameThreshold: 4,
    })
    expect(isEndgame(last4)).toBe(true)
    expect(pickPiece(last4)).toEqual({ index: 21, reason: 'endgame' })
    expect(pickPiece({ ...last4, requestedFromPeer: pieceSetOf([21]) })).toBeUndefined()
    expect(pickPiece({ ...last4, maxDuplicates: 3, requestedFromPeer: pieceSetOf([21]) })).toEqual({
      index: expect.any(Number),
      reason: 'endgame',
    })

    // Few pieces missing: endgame even though some are unrequested elsewhere.
    const few = input({
      pieceCount: 10,
      have: pieceSetOf([0, 1, 2, 3, 4, 5, 6]),
      inFlight: [0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
      peerHas: pieceSetOf([7]),
      endgameThreshold: 4,
    })
    expect(pickPiece(few)).toEqual({ index: 7, reason: 'endgame' })
  })

  it('returns nothing once every piece is held', () => {
    const p = input({ pieceCount: 3, have: pieceSetOf([0, 1, 2]), readPosition: 0 })
    expect(pickPiece(p)).toBeUndefined()
    expect(isEndgame(p)).toBe(false)
  })
})

describe('createRng', () => {
  it('repeats per seed and stays in [0, 1)', () => {
    const a = createRng(42)
    const b = createRng(42)
    const c = createRng(43)
    const xs = Array.from({ length: 100 }, () => a())
    expect(Array.from({ length: 100 }, () => b())).toEqual(xs)
    expect(Array.from({ length: 100 }, () => c())).not.toEqual(xs)
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true)
  })
})

describe('requestSlots', () => {
  const base = { requestsPerPeer: 1, originRequests: 1, minInFlight: 4 }

  it('gives each of many peers the configured number', () => {
    expect(requestSlots({ ...base, origin: false, sources: 16 })).toBe(1)
    expect(requestSlots({ ...base, origin: true, sources: 16 })).toBe(1)
    expect(requestSlots({ ...base, requestsPerPeer: 3, origin: false, sources: 16 })).toBe(3)
  })

  it('raises the number while sources are few, so the download keeps minInFlight requests going', () => {
    expect(requestSlots({ ...base, origin: true, sources: 1 })).toBe(4)
    expect(requestSlots({ ...base, origin: false, sources: 2 })).toBe(2)
    expect(requestSlots({ ...base, origin: false, sources: 3 })).toBe(2)
    expect(requestSlots({ ...base, origin: false, sources: 4 })).toBe(1)
    // No sources counted yet behaves as one.
    expect(requestSlots({ ...base, origin: false, sources: 0 })).toBe(4)
  })

  it('never goes above MAX_REQUESTS_PER_PEER for the floor, and a floor of 1 switches it off', () => {
    expect(requestSlots({ ...base, minInFlight: 64, origin: false, sources: 1 })).toBe(MAX_REQUESTS_PER_PEER)
    expect(requestSlots({ ...base, minInFlight: 1, origin: true, sources: 1 })).toBe(1)
  })
})

describe('sourceOrder and sourcePickRules', () => {
  it('puts every agent before the origin and keeps the agents in their order', () => {
    const sources = [
      { id: 'a' },
      { id: 'origin', origin: true },
      { id: 'b', origin: false },
      { id: 'c', origin: undefined },
    ]
    expect([...sources].sort(sourceOrder).map((s) => s.id)).toEqual(['a', 'b', 'c', 'origin'])
  })

  it('asks the origin rarest first, never in reading order, and never twice for a piece in endgame', () => {
    const origin = { origin: true }
    expect(sourcePickRules(origin, 3)).toEqual({ maxDuplicates: 1 })
    expect(sourcePickRules(origin, undefined)).toEqual({ maxDuplicates: 1 })
    // What that does in pickPiece: piece 0 is next to read but rarest is piece 3, and
    // in endgame the one piece in flight is not asked of the origin again.
    const common = input({
      pieceCount: 4,
      availability: [5, 5, 5, 1],
      rng: createRng(1),
    })
    expect(pickPiece({ ...common, ...sourcePickRules(origin, 0) })?.index).toBe(3)
    expect(pickPiece({ ...common, ...sourcePickRules({}, 0) })).toEqual({ index: 0, reason: 'window' })
    const endgame = input({ pieceCount: 2, have: pieceSetOf([0]), inFlight: [0, 1], rng: createRng(1) })
    expect(pickPiece({ ...endgame, ...sourcePickRules(origin, undefined) })).toBeUndefined()
    expect(pickPiece({ ...endgame, ...sourcePickRules({}, undefined) })).toEqual({
      index: 1,
      reason: 'endgame',
    })
  })

  it('passes an agent the reading position and leaves the duplicates at their default', () => {
    expect(sourcePickRules({}, 7)).toEqual({ readPosition: 7 })
    expect(sourcePickRules({ origin: false }, undefined)).toEqual({})
  })
})

describe('peerLimit and countsTowardPeerLimit', () => {
  it('gives a crowded download its extra agents, and counts every agent but not the origin', () => {
    expect(peerLimit(16, false)).toBe(16)
    expect(peerLimit(16, true)).toBe(16 + BUSY_EXTRA_PEERS)
    expect(peerLimit(16, true, 0)).toBe(16)
    expect(countsTowardPeerLimit({})).toBe(true)
    expect(countsTowardPeerLimit({ origin: false })).toBe(true)
    expect(countsTowardPeerLimit({ origin: true })).toBe(false)
  })
})

describe('startingPeerLimit', () => {
  it('holds a download to STARTING_PEERS peers until it holds STARTING_PIECES pieces', () => {
    expect(startingPeerLimit(16, 0)).toBe(STARTING_PEERS)
    expect(startingPeerLimit(16, STARTING_PIECES - 1)).toBe(STARTING_PEERS)
    expect(startingPeerLimit(16, STARTING_PIECES)).toBe(16)
    expect(startingPeerLimit(24, STARTING_PIECES + 5)).toBe(24)
    // Never above the limit it is given, and 0 switches it off.
    expect(startingPeerLimit(4, 0)).toBe(4)
    expect(startingPeerLimit(16, 0, 0)).toBe(16)
    expect(startingPeerLimit(16, 0, 12)).toBe(12)
  })
})

describe('wantsMorePeers and admitsPeer', () => {
  it('look for agents up to the limit, and beyond it only while sought pieces are missing', () => {
    expect(wantsMorePeers(15, 16, 0)).toBe(true)
    expect(wantsMorePeers(16, 16, 0)).toBe(false)
    expect(wantsMorePeers(16, 16, 1)).toBe(true)
    expect(wantsMorePeers(16 + SOUGHT_EXTRA_PEERS - 1, 16, 3)).toBe(true)
    expect(wantsMorePeers(16 + SOUGHT_EXTRA_PEERS, 16, 3)).toBe(false)
    expect(wantsMorePeers(16, 16, 3, 0)).toBe(false)
  })

  it('take any agent below the limit, beyond it only one holding a sought piece', () => {
    expect(admitsPeer(15, 16, false)).toBe(true)
    expect(admitsPeer(16, 16, false)).toBe(false)
    expect(admitsPeer(16, 16, true)).toBe(true)
    expect(admitsPeer(16 + SOUGHT_EXTRA_PEERS - 1, 16, true)).toBe(true)
    expect(admitsPeer(16 + SOUGHT_EXTRA_PEERS, 16, true)).toBe(false)
    expect(admitsPeer(16, 16, true, 0)).toBe(false)
  })
})

describe('isAheadOfPeers', () => {
  it('is true only above the peers average, and never without known peers', () => {
    expect(isAheadOfPeers(26, 100, 4)).toBe(true)
    expect(isAheadOfPeers(25, 100, 4)).toBe(false)
    expect(isAheadOfPeers(0, 0, 3)).toBe(false)
    expect(isAheadOfPeers(10, 0, 0)).toBe(false)
  })
})

describe('inFlightCap', () => {
  it('caps requests in flight at maxInFlight, and lower while the download is ahead of its peers', () => {
    expect(inFlightCap({ maxInFlight: 8, aheadMaxInFlight: 0, ahead: true })).toBe(8)
    expect(inFlightCap({ maxInFlight: 8, aheadMaxInFlight: 3, ahead: true })).toBe(3)
    expect(inFlightCap({ maxInFlight: 8, aheadMaxInFlight: 3, ahead: false })).toBe(8)
    expect(inFlightCap({ maxInFlight: 2, aheadMaxInFlight: 6, ahead: true })).toBe(2)
    expect(inFlightCap({ maxInFlight: 0, aheadMaxInFlight: 0, ahead: true })).toBe(Number.POSITIVE_INFINITY)
    expect(inFlightCap({ maxInFlight: 0, aheadMaxInFlight: 6, ahead: true })).toBe(6)
  })
})

describe('crowdedByBusy', () => {
  it('needs maxPeers peers in use and half of them busy', () => {
    expect(crowdedByBusy(16, 8, 16)).toBe(true)
    expect(crowdedByBusy(16, 7, 16)).toBe(false)
    // A download that can still add peers up to maxPeers does that first.
    expect(crowdedByBusy(8, 8, 16)).toBe(false)
    expect(crowdedByBusy(0, 0, 0)).toBe(false)
  })
})
