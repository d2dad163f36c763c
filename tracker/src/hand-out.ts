/**
 * The tracker's hand-out policy, pure (no I/O, randomness injected) so the cluster
 * simulator can import it: which peers an asking peer is given, whether it may go back
 * to the origin, and which pieces enough agents hold that the seed need not send them
 * again.
 *
 * Order: complete peers first; then partial peers that hold something (in-flight
 * peers serve what they hold); then partial peers that hold nothing yet. Within each
 * tier, peers in the asker's zone first, then the least loaded; random among equals,
 * so the swarm graph stays well mixed. The asker itself is never handed out.
 */
import { Bitfield, SPREAD_HOLDERS } from '../../protocol/src/index.js'

/** What the policy needs to know of a candidate peer. */
export interface HandOutCandidate {
  peerId: string
  complete: boolean
  zone?: string
  uploadLoad: number
  /** Pieces held, when announced; 0 puts a partial peer last. */
  piecesHeld?: number
}

/** The asking peer. */
export interface HandOutAsker {
  peerId: string
  zone?: string
}

/** Options of handOut. */
export interface HandOutOptions {
  /** Most peers to return. */
  max: number
  /** Uniform random numbers in [0, 1). @default Math.random */
  random?: () => number
}

function tier(p: HandOutCandidate): number {
  if (p.complete) return 0
  return p.piecesHeld === 0 ? 2 : 1
}

/**
 * Picks up to `max` peers from `candidates` for `asker`, best first (see the module
 * comment). Does not modify `candidates`.
 */
export function handOut<T extends HandOutCandidate>(
  candidates: readonly T[],
  asker: HandOutAsker,
  options: HandOutOptions,
): T[] {
  const random = options.random ?? Math.random
  const max = Math.max(0, Math.floor(options.max))
  const pool = candidates.filter((p) => p.peerId !== asker.peerId)
  // Shuffle first, then a stable sort: peers equal on every criterion stay in random order.
  for (let i = pool.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = pool[i]!
    pool[i] = pool[j]!
    pool[j] = t
  }
  const sameZone = (p: HandOutCandidate): number =>
    asker.zone !== undefined && asker.zone !== '' && p.zone === asker.zone ? 0 : 1
  pool.sort((a, b) => tier(a) - tier(b) || sameZone(a) - sameZone(b) || a.uploadLoad - b.uploadLoad)
  return pool.slice(0, max)
}

/** The parts of an announce that decide whether a peer asks for an origin slot. */
export interface OriginWish {
  role: 'peer' | 'seed'
  state: 'complete' | 'partial'
  event?: 'started' | 'completed' | 'stopped'
  wantsSeed?: boolean
}

/**
 * True when the announcing peer wants to fetch from the origin: an ordinary peer that
 * is still partial and has not said otherwise (`wantsSeed` defaults to true).
 */
export function wantsOrigin(a: OriginWish): boolean {
  if (a.role === 'seed' || a.state === 'complete') return false
  if (a.event === 'completed' || a.event === 'stopped') return false
  return a.wantsSeed ?? true
}

/**
 * Back-to-origin rationing: whether a peer that wants the origin (wantsOrigin) gets an
 * origin slot of its swarm. A peer keeps the slot it holds; otherwise it takes one while
 * fewer than `limit` are held (expired slots not counted), unless the slot is
 * `exclusive` (originSlotExclusive) and the peer holds one of another swarm already.
 * The in-memory peer store and the simulator call this; the Redis store's Lua script
 * (shoalAcquireOrigin) states the same rule, and the stores' conformance tests hold the
 * two together.
 */
export function grantsOriginSlot(
  holdsSlot: boolean,
  slotsInUse: number,
  limit: number,
  holdsSlotElsewhere = false,
  exclusive = false,
): boolean {
  if (holdsSlot) return true
  return !(exclusive && holdsSlotElsewhere) && slotsInUse < limit
}

/**
 * Whether an origin slot goes only to a peer that holds none of another swarm (the
 * tracker's `exclusiveOriginSlots`, off by default). A node pulls an image's layers at
 * once, one swarm each, and the first nodes to ask take the slots of every layer: in the
 * simulator at 50 nodes of 2 Mbit/s and two layers the seed's 16 uploads went to 8
 * nodes, two into each downlink beside the other peers' streams, and the seed ran at
 * under half its uplink for its first 30 s. One slot per node spreads them over 16 and
 * brings the median node 8-12% sooner at every bandwidth tried, but on fast links the
 * first nodes to ask then get their second layer last, and the last node came later
 * (docs/BENCHMARKS.md, simulator, session 22). A node that is the swarm's only partial
 * agent may still take a second slot, from its second announce on (its first comes with
 * the others' in a cluster-wide pull, before they show up): else a lone node pulling two
 * layers would wait for the first before the seed sent it the second, and stall into
 * its HTTP fallback.
 */
export function originSlotExclusive(a: {
  event?: OriginWish['event']
  otherPartialAgents: boolean
}): boolean {
  return a.event === 'started' || a.otherPartialAgents
}

/**
 * The pieces at least SPREAD_HOLDERS agents hold, given how many partial agents hold
 * each piece (`holders`, one count per piece) and how many complete agents hold every
 * piece (`complete`); undefined when no piece is held that widely. The tracker tells the
 * seed this in its announce answers (spreadPieces in tracker.ts), and the simulator's
 * origin hears it from its exact counts.
 */
export function spreadBitfield(holders: ArrayLike<number>, complete = 0): Bitfield | undefined {
  if (complete >= SPREAD_HOLDERS) return Bitfield.full(holders.length)
  const spread = new Bitfield(holders.length)
  let any = false
  for (let i = 0; i < holders.length; i++) {
    if (holders[i]! + complete >= SPREAD_HOLDERS) {
      spread.set(i)
      any = true
    }
  }
  return any ? spread : undefined
}
