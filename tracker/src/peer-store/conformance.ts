/**
 * The one conformance suite every PeerStore implementation runs (memory, Redis). Each
 * test gets a fresh store from the factory; time is passed explicitly, so expiry is
 * checked without sleeping.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type Digest, digestOf } from '../../../protocol/src/index.js'
import type { PeerRecord, PeerStore } from './index.js'

/** Makes a fresh, started store; `cleanup` stops it and removes its state. */
export type PeerStoreFactory = () => Promise<{ store: PeerStore; cleanup(): Promise<void> }>

const T0 = 1_700_000_000_000

/** A peer record for tests. */
export function peerRecord(peerId: string, over: Partial<PeerRecord> = {}): PeerRecord {
  return {
    peerId,
    multiaddrs: [`/ip4/127.0.0.1/tcp/4001/p2p/${peerId}`],
    role: 'peer',
    complete: false,
    uploadLoad: 0,
    lastSeenMs: T0,
    ...over,
  }
}

/** Registers the conformance suite for one implementation. */
export function describePeerStoreConformance(name: string, factory: PeerStoreFactory): void {
  describe(`PeerStore conformance: ${name}`, () => {
    let store: PeerStore
    let cleanup: () => Promise<void>
    const a: Digest = digestOf('swarm a')
    const b: Digest = digestOf('swarm b')

    beforeEach(async () => {
      ;({ store, cleanup } = await factory())
    })
    afterEach(async () => {
      await cleanup()
    })

    it('stores, refreshes and lists peers per swarm', async () => {
      await store.upsertPeer(a, peerRecord('p1', { zone: 'z1', bitfield: 'gA==', pieceCount: 2 }), 1000)
      await store.upsertPeer(a, peerRecord('p2', { complete: true }), 1000)
      await store.upsertPeer(b, peerRecord('p3'), 1000)
      await store.upsertPeer(a, peerRecord('p1', { zone: 'z2', uploadLoad: 3 }), 1000)
      const peers = (await store.listPeers(a, T0)).sort((x, y) => x.peerId.localeCompare(y.peerId))
      expect(peers.map((p) => p.peerId)).toEqual(['p1', 'p2'])
      expect(peers[0]).toEqual(peerRecord('p1', { zone: 'z2', uploadLoad: 3 }))
      expect((await store.listPeers(b, T0)).map((p) => p.peerId)).toEqual(['p3'])
      expect(await store.listPeers(digestOf('none'), T0)).toEqual([])
    })

    it('expires peers that stop announcing and keeps those that do', async () => {
      await store.upsertPeer(a, peerRecord('old'), 1000)
      await store.upsertPeer(a, peerRecord('fresh'), 1000)
      await store.upsertPeer(a, peerRecord('fresh', { lastSeenMs: T0 + 900 }), 1000)
      expect((await store.listPeers(a, T0 + 999)).length).toBe(2)
      expect((await store.listPeers(a, T0 + 1000)).map((p) => p.peerId)).toEqual(['fresh'])
      expect(await store.listPeers(a, T0 + 1900)).toEqual([])
      expect(await store.listSwarms(T0 + 1900)).toEqual([])
    })

    it('removes peers and their origin slots', async () => {
      await store.upsertPeer(a, peerRecord('p1'), 1000)
      expect(await store.acquireOriginSlot(a, 'p1', 1, T0, 1000)).toBe(true)
      await store.removePeer(a, 'p1')
      await store.removePeer(a, 'absent')
      expect(await store.listPeers(a, T0)).toEqual([])
      expect(await store.listOriginSlots(a, T0)).toEqual([])
    })

    it('rations origin slots, renews a holder, frees on release and expiry', async () => {
      expect(await store.acquireOriginSlot(a, 'p1', 2, T0, 1000)).toBe(true)
      expect(await store.acquireOriginSlot(a, 'p2', 2, T0, 1000)).toBe(true)
      expect(await store.acquireOriginSlot(a, 'p3', 2, T0, 1000)).toBe(false)
      expect(await store.acquireOriginSlot(b, 'p3', 2, T0, 1000)).toBe(true)
      expect(await store.acquireOriginSlot(a, 'p1', 2, T0 + 500, 1000)).toBe(true)
      expect((await store.listOriginSlots(a, T0)).sort()).toEqual(['p1', 'p2'])
      await store.releaseOriginSlot(a, 'p2')
      expect(await store.acquireOriginSlot(a, 'p3', 2, T0, 1000)).toBe(true)
      // p3 lease ends at T0+1000, p1's at T0+1500.
      expect(await store.acquireOriginSlot(a, 'p4', 2, T0 + 1000, 1000)).toBe(true)
      expect((await store.listOriginSlots(a, T0 + 1000)).sort()).toEqual(['p1', 'p4'])
      expect(await store.acquireOriginSlot(a, 'p5', 0, T0 + 1000, 1000)).toBe(false)
    })

    it('grants an exclusive slot only to a peer holding none of another swarm', async () => {
      const c: Digest = digestOf('swarm c')
      // What the tracker passes for an exclusive slot with exclusiveOriginSlots on.
      const trackerExclusive = { exclusive: true, recordHolder: true }
      // A slot taken without `recordHolder` is not recorded under its peer: it counts for
      // nothing elsewhere (the tracker with exclusive slots off), exclusive or not.
      expect(await store.acquireOriginSlot(c, 'p9', 4, T0, 1000)).toBe(true)
      expect(await store.acquireOriginSlot(a, 'p9', 4, T0, 1000, trackerExclusive)).toBe(true)
      expect(await store.acquireOriginSlot(a, 'p1', 4, T0, 1000, { recordHolder: true })).toBe(true)
      // p1 holds a's slot: none of b for it, exclusive; p2 holds none, so it takes one.
      expect(await store.acquireOriginSlot(b, 'p1', 4, T0, 1000, trackerExclusive)).toBe(false)
      expect(await store.acquireOriginSlot(b, 'p2', 4, T0, 1000, trackerExclusive)).toBe(true)
      // Its own slot it keeps (renewed), exclusive or not; a's it still holds too.
      expect(await store.acquireOriginSlot(a, 'p1', 4, T0 + 100, 1000, trackerExclusive)).toBe(true)
      // Not exclusive (a lone agent's later announce): a second slot is granted.
      expect(await store.acquireOriginSlot(c, 'p1', 4, T0, 1000, { recordHolder: true })).toBe(true)
      expect((await store.listOriginSlots(b, T0)).sort()).toEqual(['p2'])
      // Once its other slots are released, or have expired, the peer may take one.
      await store.releaseOriginSlot(c, 'p1')
      await store.releaseOriginSlot(a, 'p1')
      expect(await store.acquireOriginSlot(b, 'p1', 4, T0 + 200, 1000, trackerExclusive)).toBe(true)
      expect(await store.acquireOriginSlot(c, 'p2', 4, T0 + 200, 1000, trackerExclusive)).toBe(false)
      expect(await store.acquireOriginSlot(c, 'p2', 4, T0 + 1000, 1000, trackerExclusive)).toBe(true)
      // A slot that went with its peer counts no more either.
      await store.upsertPeer(a, peerRecord('p3'), 1000)
      expect(await store.acquireOriginSlot(a, 'p3', 4, T0, 1000, { recordHolder: true })).toBe(true)
      await store.removePeer(a, 'p3')
      expect(await store.acquireOriginSlot(c, 'p3', 4, T0, 1000, trackerExclusive)).toBe(true)
    })

    it('grants no more than the limit under concurrent acquisition', async () => {
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => store.acquireOriginSlot(a, `p${i}`, 3, T0, 1000)),
      )
      expect(results.filter(Boolean).length).toBe(3)
    })

    it('counts distinct unexpired reporters', async () => {
      expect(await store.addReport(a, 'bad', 'r1', T0, 1000)).toBe(1)
      expect(await store.addReport(a, 'bad', 'r1', T0 + 10, 1000)).toBe(1)
      expect(await store.addReport(a, 'bad', 'r2', T0 + 20, 1000)).toBe(2)
      expect(await store.addReport(b, 'bad', 'r3', T0 + 20, 1000)).toBe(1)
      expect(await store.addReport(a, 'other', 'r3', T0 + 20, 1000)).toBe(1)
      // r1's report (renewed at T0+10) ends at T0+1010; r2's at T0+1020.
      expect(await store.addReport(a, 'bad', 'r3', T0 + 1015, 1000)).toBe(2)
    })

    it('bans: removes the peer, its slot and reports, until the ban ends', async () => {
      await store.upsertPeer(a, peerRecord('bad'), 100_000)
      await store.upsertPeer(a, peerRecord('good'), 100_000)
      await store.acquireOriginSlot(a, 'bad', 3, T0, 100_000)
      await store.addReport(a, 'bad', 'r1', T0, 100_000)
      await store.ban(a, 'bad', T0 + 5000)
      expect((await store.listPeers(a, T0)).map((p) => p.peerId)).toEqual(['good'])
      expect(await store.listOriginSlots(a, T0)).toEqual([])
      expect(await store.isBanned(a, 'bad', T0 + 4999)).toBe(true)
      expect(await store.isBanned(b, 'bad', T0)).toBe(false)
      expect(await store.isBanned(a, 'good', T0)).toBe(false)
      expect(await store.listBanned(a, T0)).toEqual(['bad'])
      expect(await store.addReport(a, 'bad', 'r2', T0, 100_000)).toBe(1)
      expect(await store.isBanned(a, 'bad', T0 + 5000)).toBe(false)
      expect(await store.listBanned(a, T0 + 5000)).toEqual([])
    })

    it('lists swarms with counts and totals stats', async () => {
      await store.upsertPeer(a, peerRecord('seed', { role: 'seed', complete: true }), 1000)
      await store.upsertPeer(a, peerRecord('c1', { complete: true }), 1000)
      await store.upsertPeer(a, peerRecord('p1'), 1000)
      await store.upsertPeer(b, peerRecord('p2'), 2000)
      await store.acquireOriginSlot(a, 'p1', 3, T0, 1000)
      const swarms = await store.listSwarms(T0)
      const expected = [
        { digest: a, peers: 3, complete: 1, seeds: 1, originSlotsInUse: 1 },
        { digest: b, peers: 1, complete: 0, seeds: 0, originSlotsInUse: 0 },
      ].sort((x, y) => (x.digest < y.digest ? -1 : 1))
      expect(swarms).toEqual(expected)
      expect(await store.stats(T0)).toEqual({ swarms: 2, complete: 1, partial: 2, seeds: 1 })
      expect(await store.stats(T0 + 1500)).toEqual({ swarms: 1, complete: 0, partial: 1, seeds: 0 })
    })
  })
}
