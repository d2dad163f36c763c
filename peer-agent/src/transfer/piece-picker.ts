/**
 * Piece choice, as a pure function of the download's state (no I/O, no clock, no
 * global randomness), so the scheduler and the simulator share it:
 *
 * 1. pieces inside the client's streaming window, in order;
 * 2. otherwise the rarest piece among the known peers, ties broken at random;
 * 3. in endgame (only a few pieces missing), a piece already requested from other
 *    peers, so a slow peer cannot hold up the end.
 */

/** Membership of piece indexes (a Bitfield, a Set wrapper, ...). */
export interface PieceSet {
  has(index: number): boolean
}

/** The state the picker looks at. */
export interface PickPieceInput {
  /** Number of pieces in the blob's piece map. */
  pieceCount: number
  /** Pieces held (verified) locally. */
  have: PieceSet
  /** Pieces the peer we are picking for holds. */
  peerHas: PieceSet
  /** Outstanding requests per piece, across all peers (missing entries count as 0). */
  inFlight: ArrayLike<number>
  /** Pieces already requested from this peer: never requested from it twice. */
  requestedFromPeer?: PieceSet
  /** How many known peers hold each piece (missing entries count as 0). */
  availability: ArrayLike<number>
  /** Piece index the local client will read next; undefined when nobody is streaming. */
  readPosition?: number
  /**
   * Pieces from `readPosition` on that are fetched in order before anything else.
   * @default 4
   */
  windowSize?: number
  /**
   * Endgame starts when at most this many pieces are missing (it also starts once
   * every missing piece is in flight).
   * @default 4
   */
  endgameThreshold?: number
  /**
   * In endgame, the most outstanding requests one piece may have.
   * @default 2
   */
  maxDuplicates?: number
  /** Uniform random numbers in [0, 1) for tie-breaks; seed it in tests (createRng). */
  rng: () => number
}

/** What was picked and why. */
export interface PickedPiece {
  index: number
  reason: 'window' | 'rarest' | 'endgame'
}

const EMPTY: PieceSet = { has: () => false }

function count(values: ArrayLike<number>, index: number): number {
  return values[index] ?? 0
}

/**
 * True when the download is in endgame: at most `endgameThreshold` pieces missing.
 *
 * Not, as in BitTorrent, whenever every missing piece is requested: with pieces of
 * 256 KiB and more on links of a few Mbit/s, that second copy of up to a quarter of the
 * blob costs the uplinks seconds of sending per piece, most of it cancelled when the
 * first copy lands. The simulator measured 4–5% of all bytes sent that way, and was
 * faster at every N without it; a straggling request is what cutSlowRequests is for.
 */
export function isEndgame(input: Pick<PickPieceInput, 'pieceCount' | 'have' | 'endgameThreshold'>): boolean {
  const threshold = input.endgameThreshold ?? 4
  let missing = 0
  for (let i = 0; i < input.pieceCount; i++) {
    if (!input.have.has(i) && ++missing > threshold) return false
  }
  return missing > 0
}

/**
 * Picks the next piece to request from a peer, or undefined when the peer has nothing
 * we should ask it for now. Never returns a held piece, a piece the peer lacks, or a
 * piece already requested from this peer.
 */
export function pickPiece(input: PickPieceInput): PickedPiece | undefined {
  const { pieceCount, have, peerHas, inFlight, availability, rng } = input
  const fromPeer = input.requestedFromPeer ?? EMPTY
  const windowSize = input.windowSize ?? 4
  const maxDuplicates = input.maxDuplicates ?? 2

  const wanted = (i: number): boolean => !have.has(i) && peerHas.has(i) && !fromPeer.has(i)

  // 1. The streaming window, in order.
  if (input.readPosition !== undefined && windowSize > 0) {
    const end = Math.min(pieceCount, input.readPosition + windowSize)
    for (let i = Math.max(0, input.readPosition); i < end; i++) {
      if (wanted(i) && count(inFlight, i) === 0) return { index: i, reason: 'window' }
    }
  }

  // 2. Rarest first among pieces nobody is fetching; reservoir sampling breaks ties.
  let best = -1
  let bestAvailability = Number.POSITIVE_INFINITY
  let ties = 0
  for (let i = 0; i < pieceCount; i++) {
    if (!wanted(i) || count(inFlight, i) > 0) continue
    const a = count(availability, i)
    if (a < bestAvailability) {
      best = i
      bestAvailability = a
      ties = 1
    } else if (a === bestAvailability) {
      ties++
      if (rng() * ties < 1) best = i
    }
  }
  if (best >= 0) return { index: best, reason: 'rarest' }

  // 3. Endgame: duplicate a request that another peer is serving, window pieces
  // first, then the least duplicated, then the rarest, ties at random.
  if (!isEndgame(input)) return undefined
  if (input.readPosition !== undefined && windowSize > 0) {
    const end = Math.min(pieceCount, input.readPosition + windowSize)
    for (let i = Math.max(0, input.readPosition); i < end; i++) {
      if (wanted(i) && count(inFlight, i) < maxDuplicates) return { index: i, reason: 'endgame' }
    }
  }
  best = -1
  let bestLoad = Number.POSITIVE_INFINITY
  bestAvailability = Number.POSITIVE_INFINITY
  ties = 0
  for (let i = 0; i < pieceCount; i++) {
    const load = count(inFlight, i)
    if (!wanted(i) || load >= maxDuplicates) continue
    const a = count(availability, i)
    if (load < bestLoad || (load === bestLoad && a < bestAvailability)) {
      best = i
      bestLoad = load
      bestAvailability = a
      ties = 1
    } else if (load === bestLoad && a === bestAvailability) {
      ties++
      if (rng() * ties < 1) best = i
    }
  }
  return best >= 0 ? { index: best, reason: 'endgame' } : undefined
}

/**
 * A small seedable PRNG (mulberry32) returning numbers in [0, 1); the same seed gives
 * the same sequence, for tests and the simulator.
 */
export function createRng(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A PieceSet over a plain set or array of indexes. */
export function pieceSetOf(indexes: Iterable<number>): PieceSet {
  const set = new Set(indexes)
  return { has: (i) => set.has(i) }
}

/** A source of pieces as the per-source rules below see it. */
export interface PieceSource {
  /** The source is the origin (the seed). */
  origin?: boolean | undefined
}

/**
 * The order in which one scheduling pass offers requests to a download's sources, as a
 * sort comparator: other agents first, the origin last, so the origin only gets what
 * they cannot give. Sources of one kind compare equal (a stable sort keeps their order).
 */
export function sourceOrder(a: PieceSource, b: PieceSource): number {
  return Number(a.origin ?? false) - Number(b.origin ?? false)
}

/** The part of pickPiece's input that sourcePickRules sets. */
export type SourcePickRules = Pick<PickPieceInput, 'readPosition' | 'maxDuplicates'>

const ORIGIN_RULES: SourcePickRules = Object.freeze({ maxDuplicates: 1 })
const NOT_READING: SourcePickRules = Object.freeze({})

/**
 * What pickPiece is told differently for the origin than for an agent:
 *
 * - The origin is asked rarest first, never in reading order: agents that start together
 *   read the same bytes first and would all ask it for the same pieces.
 * - The origin never gets a second request for a piece already in flight (endgame's
 *   duplicates come from agents): a copy the origin sends twice is origin egress the
 *   cluster pays for, and the first copy is usually on its way.
 *
 * For an agent, `readPosition` (the piece the local client reads next, if any) passes
 * through and endgame keeps pickPiece's default duplicates. Returns shared frozen
 * objects where it can, for callers that pick in a hot loop (the simulator).
 */
export function sourcePickRules(source: PieceSource, readPosition: number | undefined): SourcePickRules {
  if (source.origin === true) return ORIGIN_RULES
  return readPosition === undefined ? NOT_READING : { readPosition }
}

/** Inputs of requestSlots. */
export interface RequestSlotsInput {
  /** The peer is the origin (the seed). */
  origin: boolean
  /** Peers of this download in use (not dropped), the origin included. */
  sources: number
  /** Requests in flight per agent, and to the origin, when there are sources enough. */
  requestsPerPeer: number
  originRequests: number
  /**
   * Requests the download keeps in flight in all, at least, while it has few sources:
   * one request per peer pays a round trip per piece, which many peers hide and one or
   * two do not.
   */
  minInFlight: number
}

/** Most requests per peer that the floor for few sources may give. */
export const MAX_REQUESTS_PER_PEER = 4

/**
 * How many piece requests a download keeps in flight to one peer: the configured number
 * (one by default: a second request to a busy uplink only splits it further or earns a
 * busy answer), raised while the download has so few sources that one request each
 * would leave its link idle for a round trip per piece.
 */
export function requestSlots(input: RequestSlotsInput): number {
  const base = input.origin ? input.originRequests : input.requestsPerPeer
  const floor = Math.min(MAX_REQUESTS_PER_PEER, Math.ceil(input.minInFlight / Math.max(1, input.sources)))
  return Math.max(base, floor)
}

/**
 * Piece requests one download may keep in flight in all, the origin's included; 0 (the
 * default) is no cap. Each request is a TCP stream into the node's downlink: a download
 * with a request to each of 16-24 peers, two layers at once, runs 30-50 streams into
 * the link. On the 2 Mbit/s testbed at N = 50, where the agents are CPU-bound, a cap of
 * 8 cut the requests that timed out (280 and 1,034 per pull against 1,202) and the
 * uploads wasted (60 MB less), with the last node no sooner; at N = 25, where they are
 * not, the last node came 53-56 s later (256.9 and 253.9 s against 200.8 s): fewer
 * requests left the downlinks a fifth idle. The simulator, which has no losses, sees
 * neither (N = 25: 207.6 s against 205.9 s; N = 50: 233.3 s against 232.2 s); see
 * docs/BENCHMARKS.md, cluster, nineteenth round.
 */
export const MAX_IN_FLIGHT = 0

/**
 * Requests the download may have in flight in all: `maxInFlight` (0: no cap), and no
 * more than `aheadMaxInFlight` while it is `ahead` of its peers (0: that rule off).
 */
export function inFlightCap(input: {
  maxInFlight: number
  aheadMaxInFlight: number
  ahead: boolean
}): number {
  const cap = input.maxInFlight > 0 ? input.maxInFlight : Number.POSITIVE_INFINITY
  return input.aheadMaxInFlight > 0 && input.ahead ? Math.min(cap, input.aheadMaxInFlight) : cap
}

/**
 * Requests in flight, in all, that a download ahead of its peers keeps (see
 * isAheadOfPeers); 0 switches the rule off, and off is the default. Uplinks are shared by
 * everyone who asks, so a download that takes more than its share leaves less for the
 * ones behind, and the last node of a rollout is the one that got the least all along.
 * With 6, the simulator's last node at N = 50 came 5-10% sooner on top of
 * BUSY_EXTRA_PEERS; on the CPU-bound testbed, where what peers hold is known late, the
 * pulls were slower (docs/BENCHMARKS.md, cluster, eighth round).
 */
export const AHEAD_MAX_IN_FLIGHT = 0

/**
 * True when a download holds more pieces than its peers do on average (`peersHeld` is
 * the sum of the pieces its `peers` are known to hold, the origin not counted). Such a
 * download keeps at most AHEAD_MAX_IN_FLIGHT requests in flight, so the uplinks it would
 * otherwise crowd serve the downloads behind it.
 */
export function isAheadOfPeers(held: number, peersHeld: number, peers: number): boolean {
  return peers > 0 && held * peers > peersHeld
}

/**
 * Peers a download may add beyond `maxPeers` while half of its peers answer busy: their
 * uplinks are full, and the tracker hands out the least loaded peers first, so more
 * peers means uplinks with room. Without it, a download whose peers all happened to be
 * crowded stays behind for the whole pull.
 */
export const BUSY_EXTRA_PEERS = 8

/**
 * The most agents a download uses at once: `maxPeers`, and `extra` (BUSY_EXTRA_PEERS)
 * more once it is crowded by busy answers (crowdedByBusy). Only sources for which
 * countsTowardPeerLimit is true count.
 */
export function peerLimit(maxPeers: number, crowded: boolean, extra: number = BUSY_EXTRA_PEERS): number {
  return crowded ? maxPeers + extra : maxPeers
}

/**
 * Agents a download uses while it holds fewer than STARTING_PIECES pieces. At the start
 * of a pull every node sets up its peers at once: a libp2p connection to those it is not
 * connected to yet, a lane session, a have watch (a TLS socket each) and the first piece
 * sockets. On the 2-core N = 50 testbed that set-up kept the machine 100% busy for the
 * first 25-40 s while the nodes' links carried a few MB/s. A download that starts with 8
 * peers and takes the rest once it holds a few pieces (and has something to give) moved
 * twice as many bytes in the first minute, and its last node came sooner
 * (docs/BENCHMARKS.md, cluster, twenty-fourth round).
 */
export const STARTING_PEERS = 8

/** Pieces a download holds before it uses more than STARTING_PEERS agents. */
export const STARTING_PIECES = 8

/**
 * The peer limit of a download holding `held` pieces: `limit` (peerLimit), at most
 * `startingPeers` (STARTING_PEERS; 0: no starting limit) while it holds fewer than
 * STARTING_PIECES.
 */
export function startingPeerLimit(
  limit: number,
  held: number,
  startingPeers: number = STARTING_PEERS,
): number {
  return startingPeers > 0 && held < STARTING_PIECES ? Math.min(limit, startingPeers) : limit
}

/**
 * Whether a source takes one of a download's peerLimit places: every agent does, the
 * origin does not (it is asked last, and only for what the agents cannot give).
 */
export function countsTowardPeerLimit(source: PieceSource): boolean {
  return source.origin !== true
}

/**
 * Agents a download may use beyond its peerLimit to reach pieces the origin declined
 * (another agent holds them) that no agent in use holds: the holder is among the agents
 * the download does not use, and without it the origin would in the end send the piece
 * again.
 */
export const SOUGHT_EXTRA_PEERS = 4

/**
 * Whether a download looks for more agents: while it uses fewer than `limit`
 * (peerLimit), or fewer than `limit` + `extra` (SOUGHT_EXTRA_PEERS) while `sought`
 * pieces (the origin declined them and no agent in use holds them) are missing. `live`
 * counts the sources for which countsTowardPeerLimit is true.
 */
export function wantsMorePeers(
  live: number,
  limit: number,
  sought: number,
  extra: number = SOUGHT_EXTRA_PEERS,
): boolean {
  return live < limit || (sought > 0 && live < limit + extra)
}

/**
 * Whether a download that uses `live` agents takes on one more that a peer search
 * found: below `limit` any agent, beyond it (up to `extra`, SOUGHT_EXTRA_PEERS, more)
 * only one that holds a sought piece.
 */
export function admitsPeer(
  live: number,
  limit: number,
  holdsSought: boolean,
  extra: number = SOUGHT_EXTRA_PEERS,
): boolean {
  return live < limit || (holdsSought && live < limit + extra)
}

/**
 * How long a download leaves a piece the origin declined (another agent holds it)
 * before asking the origin for it again.
 */
export const ORIGIN_DEFER_MS = 2_000

/** True when at least half of a download's `live` peers (it has `maxPeers` or more) answered busy. */
export function crowdedByBusy(live: number, busy: number, maxPeers: number): boolean {
  return live >= maxPeers && live > 0 && busy * 2 >= live
}
