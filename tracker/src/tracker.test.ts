import { beforeEach, describe, expect, it } from 'vitest'
import {
  type AnnounceRequest,
  announceRequestSchema,
  type AnnounceRequestInput,
  Bitfield,
  digestOf,
} from '../../protocol/src/index.js'
import { createMemoryPeerStore } from './peer-store/memory.js'
import { createTracker, spreadPieces, type Tracker } from './tracker.js'

const digest = digestOf('blob')
const TTL = 30_000
let clock = 1_000_000
let tracker: Tracker

function announce(peerId: string, over: Partial<AnnounceRequestInput> = {}): AnnounceRequest {
  return announceRequestSchema.parse({
    peerId,
    multiaddrs: [`/ip4/127.0.0.1/tcp/1/p2p/${peerId}`],
    digest,
    state: 'partial',
    ...over,
  })
}

function createTestTracker(over: { exclusiveOriginSlots?: boolean } = {}): Tracker {
  return createTracker(
    { store: createMemoryPeerStore(), now: () => clock },
    {
      announceIntervalMs: 10_000,
      peerTtlMs: TTL,
      maxPeersPerAnswer: 5,
      originSlotsPerSwarm: 2,
      badPeerReporters: 2,
      badPeerBanMs: 60_000,
      ...over,
    },
  )
}

/** A tracker with exclusive origin slots (one per node across swarms). */
function exclusiveTracker(): Tracker {
  return createTestTracker({ exclusiveOriginSlots: true })
}

beforeEach(() => {
  clock = 1_000_000
  tracker = createTestTracker()
})

describe('tracker announce', () => {
  it('hands out other peers, complete first, never the asker, up to the maximum', async () => {
    await tracker.announce(announce('c1', { state: 'complete' }))
    for (let i = 0; i < 8; i++) await tracker.announce(announce(`p${i}`, { piecesHeld: 1, pieceCount: 4 }))
    const res = await tracker.announce(announce('me'))
    expect(res.intervalMs).toBe(10_000)
    expect(res.peers).toHaveLength(5)
    expect(res.peers[0]).toMatchObject({ peerId: 'c1', complete: true })
    expect(res.peers.map((p) => p.peerId)).not.toContain('me')
    expect((await tracker.announce(announce('me', { numWant: 2 }))).peers).toHaveLength(2)
  })
  it('rations the origin: K slots, seeds only with a slot, freed on completion', async () => {
    await tracker.announce(announce('seed', { role: 'seed', state: 'complete' }))
    const a = await tracker.announce(announce('a'))
    const b = await tracker.announce(announce('b'))
    const c = await tracker.announce(announce('c'))
    expect([a.allowOrigin, b.allowOrigin, c.allowOrigin]).toEqual([true, true, false])
    expect(a.seeds.map((s) => s.peerId)).toEqual(['seed'])
    expect(c.seeds).toEqual([])
    expect(c.peers.map((p) => p.peerId)).not.toContain('seed')
    expect((await tracker.announce(announce('a'))).allowOrigin).toBe(true)
    expect((await tracker.announce(announce('d', { wantsSeed: false }))).allowOrigin).toBe(false)
    await tracker.announce(announce('a', { state: 'complete', event: 'completed' }))
    expect((await tracker.announce(announce('c'))).allowOrigin).toBe(true)
    const detail = await tracker.swarm(digest)
    expect(detail.peers.filter((p) => p.originSlot).map((p) => p.peerId)).toEqual(['b', 'c'])
  })
  it('gives a node an origin slot in each swarm by default', async () => {
    const layer2 = digestOf('layer 2')
    expect((await tracker.announce(announce('a', { event: 'started' }))).allowOrigin).toBe(true)
    expect((await tracker.announce(announce('b', { digest: layer2, event: 'started' }))).allowOrigin).toBe(
      true,
    )
    expect((await tracker.announce(announce('a', { digest: layer2, event: 'started' }))).allowOrigin).toBe(
      true,
    )
  })
  it('gives a node one origin slot across swarms while others of the swarm want one', async () => {
    tracker = exclusiveTracker()
    const layer2 = digestOf('layer 2')
    const inLayer2 = (peerId: string, over: Partial<AnnounceRequestInput> = {}): AnnounceRequest =>
      announce(peerId, { digest: layer2, ...over })
    // A cluster-wide pull: a and b take the first layer's slots, then ask for the second's.
    expect((await tracker.announce(announce('a', { event: 'started' }))).allowOrigin).toBe(true)
    expect((await tracker.announce(announce('b', { event: 'started' }))).allowOrigin).toBe(true)
    expect((await tracker.announce(inLayer2('a', { event: 'started' }))).allowOrigin).toBe(false)
    expect((await tracker.announce(inLayer2('b', { event: 'started' }))).allowOrigin).toBe(false)
    // The second layer's slots go to nodes that hold none elsewhere.
    expect((await tracker.announce(inLayer2('c', { event: 'started' }))).allowOrigin).toBe(true)
    expect((await tracker.announce(inLayer2('d', { event: 'started' }))).allowOrigin).toBe(true)
    // Later announces of a and b: others of the swarm still pull, so still none.
    expect((await tracker.announce(inLayer2('a'))).allowOrigin).toBe(false)
    // Once a's first layer is done, its slot there is freed and it may take one here.
    await tracker.announce(announce('a', { state: 'complete', event: 'completed' }))
    await tracker.announce(inLayer2('c', { state: 'complete', event: 'completed' }))
    expect((await tracker.announce(inLayer2('a'))).allowOrigin).toBe(true)
  })
  it("lets a lone node take a second swarm's origin slot from its second announce on", async () => {
    tracker = exclusiveTracker()
    const layer2 = digestOf('layer 2')
    expect((await tracker.announce(announce('a', { event: 'started' }))).allowOrigin).toBe(true)
    expect((await tracker.announce(announce('a', { digest: layer2, event: 'started' }))).allowOrigin).toBe(
      false,
    )
    expect((await tracker.announce(announce('a', { digest: layer2 }))).allowOrigin).toBe(true)
    // A complete agent of the swarm does not want a slot: the node is still alone.
    const layer3 = digestOf('layer 3')
    await tracker.announce(announce('done', { digest: layer3, state: 'complete' }))
    await tracker.announce(announce('a', { digest: layer3, event: 'started' }))
    expect((await tracker.announce(announce('a', { digest: layer3 }))).allowOrigin).toBe(true)
  })
  it('expires peers that stop announcing, and their origin slots', async () => {
    await tracker.announce(announce('a'))
    await tracker.announce(announce('b'))
    clock += TTL / 2
    await tracker.announce(announce('b'))
    clock += TTL / 2
    const res = await tracker.announce(announce('c'))
    expect(res.peers.map((p) => p.peerId)).toEqual(['b'])
    expect(res.allowOrigin).toBe(true)
    clock += TTL
    expect((await tracker.swarms()).swarms).toEqual([])
  })
  it('tells a seed, and only a seed, which pieces two agents hold', async () => {
    const bits = (...held: number[]): string => {
      const b = new Bitfield(4)
      for (const i of held) b.set(i)
      return b.toBase64()
    }
    const seed = (): Promise<Awaited<ReturnType<Tracker['announce']>>> =>
      tracker.announce(announce('seed', { role: 'seed', state: 'complete', piecesHeld: 4, pieceCount: 4 }))
    // Nothing held twice yet: no spread.
    expect((await seed()).spread).toBeUndefined()
    await tracker.announce(announce('a', { piecesHeld: 2, pieceCount: 4, bitfield: bits(0, 1) }))
    await tracker.announce(announce('b', { piecesHeld: 1, pieceCount: 4, bitfield: bits(2) }))
    expect((await seed()).spread).toBeUndefined()
    await tracker.announce(announce('c', { piecesHeld: 2, pieceCount: 4, bitfield: bits(1, 2) }))
    const spread = (await seed()).spread
    expect(spread).toBeDefined()
    expect([...Bitfield.fromBase64(spread ?? '', 4).indexes()]).toEqual([1, 2])
    // An agent's answer carries none.
    expect((await tracker.announce(announce('d'))).spread).toBeUndefined()
    // A complete agent holds every piece: with one, every piece one other agent holds is spread.
    await tracker.announce(announce('e', { state: 'complete', pieceCount: 4 }))
    expect([...Bitfield.fromBase64((await seed()).spread ?? '', 4).indexes()]).toEqual([0, 1, 2])
  })
  it('counts complete agents and decodable bitfields of the same piece count as holders', () => {
    const rec = (peerId: string, over: object) => ({
      peerId,
      multiaddrs: [],
      role: 'peer' as const,
      uploadLoad: 0,
      lastSeenMs: 0,
      complete: false,
      ...over,
    })
    const two = new Bitfield(3)
    two.set(2)
    expect(spreadPieces([rec('a', { complete: true }), rec('b', { complete: true })], 3)).toBe(
      Bitfield.full(3).toBase64(),
    )
    // Another piece count and a bitfield that does not decode are left out.
    expect(
      spreadPieces(
        [
          rec('a', { pieceCount: 3, bitfield: two.toBase64() }),
          rec('b', { pieceCount: 4, bitfield: two.toBase64() }),
          rec('c', { pieceCount: 3, bitfield: '!!' }),
        ],
        3,
      ),
    ).toBeUndefined()
    expect(
      spreadPieces([rec('a', { pieceCount: 3, bitfield: two.toBase64() }), rec('b', { complete: true })], 3),
    ).toBe(two.toBase64())
  })
  it('removes a peer that stops', async () => {
    await tracker.announce(announce('a'))
    const stopped = await tracker.announce(announce('a', { event: 'stopped' }))
    expect(stopped).toMatchObject({ peers: [], allowOrigin: false })
    expect((await tracker.announce(announce('b'))).peers).toEqual([])
  })
})

describe('trusted seeds', () => {
  it('refuses seed announces from peers not on the list', async () => {
    const strict = createTracker(
      { store: createMemoryPeerStore(), now: () => clock },
      {
        announceIntervalMs: 10_000,
        peerTtlMs: TTL,
        maxPeersPerAnswer: 5,
        originSlotsPerSwarm: 2,
        badPeerReporters: 2,
        badPeerBanMs: 60_000,
        seedPeerIds: ['realSeed'],
      },
    )
    await expect(
      strict.announce(announce('fake', { role: 'seed', state: 'complete' })),
    ).rejects.toMatchObject({
      name: 'DeniedError',
    })
    await strict.announce(announce('realSeed', { role: 'seed', state: 'complete' }))
    expect((await strict.announce(announce('a'))).seeds.map((s) => s.peerId)).toEqual(['realSeed'])
  })
})

describe('tracker reports', () => {
  it('drops a peer reported by enough distinct members and refuses it for a while', async () => {
    for (const p of ['bad', 'r1', 'r2']) await tracker.announce(announce(p))
    expect(await tracker.report({ reporter: 'r1', peerId: 'bad', digest })).toEqual({
      dropped: false,
      reporters: 1,
    })
    expect(await tracker.report({ reporter: 'r1', peerId: 'bad', digest })).toEqual({
      dropped: false,
      reporters: 1,
    })
    expect(await tracker.report({ reporter: 'r2', peerId: 'bad', digest })).toEqual({
      dropped: true,
      reporters: 2,
    })
    expect((await tracker.announce(announce('r1'))).peers.map((p) => p.peerId)).toEqual(['r2'])
    await expect(tracker.announce(announce('bad'))).rejects.toMatchObject({ name: 'DeniedError' })
    expect((await tracker.swarm(digest)).banned).toEqual(['bad'])
    clock += 60_000
    await tracker.announce(announce('r1'))
    expect((await tracker.announce(announce('bad'))).peers.map((p) => p.peerId)).toEqual(['r1'])
  })
  it('drops at once on a seed report, ignores reports against seeds and from strangers', async () => {
    await tracker.announce(announce('seed', { role: 'seed', state: 'complete' }))
    await tracker.announce(announce('bad'))
    await tracker.announce(announce('r1'))
    await expect(tracker.report({ reporter: 'stranger', peerId: 'bad', digest })).rejects.toMatchObject({
      name: 'DeniedError',
    })
    await expect(tracker.report({ reporter: 'r1', peerId: 'r1', digest })).rejects.toMatchObject({
      name: 'ParameterInvalidError',
    })
    expect(await tracker.report({ reporter: 'r1', peerId: 'seed', digest })).toEqual({
      dropped: false,
      reporters: 0,
    })
    expect(await tracker.report({ reporter: 'seed', peerId: 'bad', digest })).toMatchObject({ dropped: true })
    expect((await tracker.swarm(digest)).peers.map((p) => p.peerId)).toEqual(['r1', 'seed'])
  })
})
