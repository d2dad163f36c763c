/**
 * Downloads one blob from the swarm into the cache: watches what peers hold (or asks
 * them again and again, when they cannot be watched), keeps a
 * few piece requests in flight per peer (choice by the piece picker: streaming window,
 * rarest first, endgame), checks every piece's sha256 against the piece map before it
 * is stored, bans a peer that sends a bad piece, drops peers that keep failing, and
 * finally checks the whole blob. Pieces already in the cache (a resumed download) are
 * not fetched again. The caller owns peer discovery (`findPeers`) and the fallback to
 * the seed or upstream when this throws SwarmUnavailableError.
 */
import type { Logger } from 'pino'
import { deadlineSignal, sharedSignal } from '../../../protocol/src/abort.js'
import { Bitfield } from '../../../protocol/src/bitfield.js'
import { type PieceMap, pieceRange } from '../../../protocol/src/piece-map.js'
import type { BlobCache } from '../cache/index.js'
import type { PeerTarget, PieceBufferPool, PieceClient } from '../../../protocol/src/p2p/index.js'
import { PieceHashMismatchError, PieceUnavailableError } from '../../../protocol/src/p2p/index.js'
import { SwarmUnavailableError } from './errors.js'
import {
  AHEAD_MAX_IN_FLIGHT,
  BUSY_EXTRA_PEERS,
  countsTowardPeerLimit,
  createRng,
  crowdedByBusy,
  isAheadOfPeers,
  inFlightCap,
  isEndgame,
  MAX_IN_FLIGHT,
  pickPiece,
  ORIGIN_DEFER_MS,
  peerLimit,
  STARTING_PEERS,
  startingPeerLimit,
  admitsPeer,
  requestSlots,
  sourceOrder,
  sourcePickRules,
  wantsMorePeers,
} from './piece-picker.js'

/** A peer that may hold the blob. */
export interface SwarmPeer {
  /** Stable key (the peer id string). */
  id: string
  /** How to reach it. */
  target: PeerTarget
  /**
   * The seed (origin) rather than another agent: it is asked last, for what no other
   * peer can give, with `originRequests` slots and no endgame duplicates, to spare it.
   */
  origin?: boolean
  /**
   * What the peer holds, when known (a tracker hand-out); watched over
   * HAVE_WATCH_PROTOCOL (or asked over HAVE_PROTOCOL) otherwise.
   */
  has?: Bitfield
}

/** What a finished download obtained. */
export interface DownloadResult {
  /** Bytes received and stored, by peer id (duplicates from endgame not counted). */
  bytesByPeer: Map<string, number>
  /** Pieces that were already in the cache when the download started. */
  resumedPieces: number
  /** Peers banned for sending a bad piece. */
  bannedPeers: string[]
  /** Peers dropped for failing or being too slow (banned ones included). */
  droppedPeers: string[]
}

/** The collaborators of a download. */
export interface DownloadComponents {
  cache: Pick<BlobCache, 'open' | 'writePiece' | 'hasPiece' | 'complete' | 'pin' | 'unpin'>
  /**
   * `watchHave`, when given, keeps each agent's bitfield up to date as it gains pieces
   * (one stream per peer for the whole download) instead of `fetchHave` asked every
   * `haveRefreshMs`; a peer whose watch fails or ends early (an older agent, a lost
   * blob) is asked with `fetchHave` from then on. `fetchPiece` checks each piece against
   * the sha256 the download passes (`expectedSha256`, PieceHashMismatchError when it
   * differs): the download does not hash pieces again.
   */
  client: Pick<PieceClient, 'fetchPiece' | 'fetchHave'> & Partial<Pick<PieceClient, 'watchHave'>>
  /**
   * Buffers pieces are read into, each given back once nothing can read it any more:
   * after its sha256 check failed, after it turned out a duplicate, or after
   * `cache.writePiece` settled (the cache keeps no reference to a piece's bytes past
   * that; see BlobCache.writePiece). Without it every piece is a new buffer.
   */
  pieceBuffers?: Pick<PieceBufferPool, 'take' | 'give'>
  logger?: Logger
}

/** Options of one download. */
export interface DownloadInit {
  /** The verified piece map of the blob. */
  map: PieceMap
  /**
   * Returns peers that may hold the blob (tracker, DHT); called at start and again when
   * fewer than `maxPeers` are usable. Errors are logged and retried later.
   */
  findPeers(options: { signal: AbortSignal }): Promise<SwarmPeer[]>
  /** The piece index the local client reads next, for the streaming window. */
  readPosition?: () => number | undefined
  /** Agents used at once (the origin is not counted). @default 16 */
  maxPeers?: number
  /**
   * Agents used at once while the download holds fewer than STARTING_PIECES pieces
   * (startingPeerLimit in piece-picker.ts); 0: maxPeers from the start.
   * @default STARTING_PEERS (8)
   */
  startingPeers?: number
  /**
   * Piece requests in flight per peer. One: a second request to the same peer splits
   * its uplink further and, when that uplink is full, only earns a busy answer
   * (docs/BENCHMARKS.md, simulator, session 7). @default 1
   */
  requestsPerPeer?: number
  /**
   * Piece requests in flight to an origin peer. One: the seed's uploads then go to as
   * many agents as it has slots, so its first copies start out spread over many holders
   * instead of piling up at a few (docs/BENCHMARKS.md, simulator, session 7). @default 1
   */
  originRequests?: number
  /**
   * How long a piece the origin answered not-held (its first-copy rule: it just sent
   * that piece to another agent) is not asked of the origin again. @default 2000
   */
  originDeferMs?: number
  /**
   * Requests the download keeps in flight in all while it has few peers: each peer gets
   * at least ceil(this / peers in use), up to 4 (requestSlots in piece-picker.ts).
   * @default 4
   */
  minRequestsInFlight?: number
  /**
   * Requests in flight, in all, the origin's included (each is a TCP stream into this
   * node's downlink; see MAX_IN_FLIGHT in piece-picker.ts). 0: no cap.
   * @default MAX_IN_FLIGHT (0)
   */
  maxInFlight?: number
  /**
   * Requests in flight, in all, while the download holds more pieces than its peers do
   * on average (isAheadOfPeers in piece-picker.ts): the uplinks it would crowd serve the
   * downloads behind it instead. 0 (the default) switches the rule off: the simulator
   * liked 6, the testbed did not (docs/BENCHMARKS.md, cluster, eighth round).
   * @default 0
   */
  aheadMaxInFlight?: number
  /**
   * Peers the download may add beyond `maxPeers` once half of its peers answer busy
   * (crowdedByBusy in piece-picker.ts); the tracker hands out the least loaded first.
   * 0 switches the rule off. @default 8
   */
  busyExtraPeers?: number
  /** Streaming window in pieces. @default 4 */
  windowSize?: number
  /** Endgame threshold in missing pieces. @default 4 */
  endgameThreshold?: number
  /**
   * A piece request is given up when no byte of it arrived for this long (counted from
   * the request until its first byte, then from the last byte). Through a crowded link
   * a piece may take longer than this and still be worth its wait: cancelling it throws
   * away what the sender's uplink already spent on it; too slow a peer is cut by
   * `slowFactor` instead.
   * @default 30000
   */
  pieceTimeoutMs?: number
  /**
   * In endgame, a request that has brought no byte for this long (since it was sent, or
   * since its last byte), and for at least the swarm's median time for a whole piece of
   * its size, stops counting against its piece's limit of duplicates, so the piece is
   * asked of one more peer that holds it; the silent request keeps its place and may
   * still come first. Through a sender's crowded uplink a TCP connection can go silent
   * for tens of seconds (retransmission back-off), and the last piece of a layer then
   * waited for the whole `pieceTimeoutMs` (docs/BENCHMARKS.md, cluster, twelfth round).
   * A request queued behind others at its sender is silent too, for up to about a piece
   * time: hence the median. At most ENDGAME_MAX_REQUESTS requests per piece. 0 switches
   * it off.
   * @default 5000
   */
  endgameStallMs?: number
  /**
   * A request running this many times longer than the swarm's median piece time (per
   * byte) is abandoned and counted as a failure, so slow peers end up dropped. In a
   * swarm whose uplinks are all busy a piece simply takes its share of time, and an
   * abandoned request wastes what was already sent, so the factor is generous.
   * @default 8
   */
  slowFactor?: number
  /** Requests younger than this are never called slow. @default 5000 */
  slowPieceMinMs?: number
  /** Failed requests (timeouts, resets, too slow) after which a peer is dropped. @default 3 */
  maxPeerFailures?: number
  /** How long to leave a peer alone after it answered busy. @default 1000 */
  busyBackoffMs?: number
  /**
   * How often to re-ask a peer with an incomplete bitfield what it holds, when it cannot
   * be watched (DownloadComponents.client.watchHave). A peer known to
   * hold at least HAVE_REFRESH_SPARE pieces not yet held or asked of it is re-asked only
   * every HAVE_REFRESH_SLOW_FACTOR times this: there is work to ask it for already, and
   * have exchanges are a tenth of an agent's CPU during a pull (docs/BENCHMARKS.md).
   * @default 1000
   */
  haveRefreshMs?: number
  /** How often at most to ask findPeers for more peers. @default 2000 */
  peerSearchIntervalMs?: number
  /**
   * Throw SwarmUnavailableError after this long without a byte of a piece while no peer
   * shows it could send one: no request, peer search or have query in flight, no peer
   * answering busy (it holds pieces we lack but its upload slots are full) and none
   * dropped for failures it may recover from and waiting to be taken back. A swarm that
   * is merely crowded, as when a whole cluster starts at once, is waited for, up to three
   * times this long, and longer while its peers are seen gaining pieces (the swarm moves,
   * this download's turn has not come: giving up would send the client to the origin
   * over HTTP, around the tracker's rationing of it). Bytes that keep coming keep the
   * download going (on a slow downlink shared by a few dozen piece streams each piece
   * can take minutes). Whatever comes, the download ends without a whole piece for
   * PIECE_GAP_FACTOR times this long.
   * @default 20000
   */
  stallTimeoutMs?: number
  /**
   * A peer dropped for failures it may recover from (connections that could not be set
   * up, requests that failed or timed out) is taken back after this long, doubling with
   * each drop up to a minute; a peer that sent a bad piece never is. When a whole
   * cluster starts at once, noise handshakes on a busy node can miss their deadline,
   * and a download that dropped every peer for good would stall and fall back to HTTP.
   * @default 5000
   */
  peerRetryMs?: number
  /** Seed for the picker's tie-breaks. @default random */
  seed?: number
  /** Called when a peer sent a piece that fails its sha256 (report it to the tracker). */
  onBadPiece?: (peer: SwarmPeer, index: number) => void
  /**
   * Called when a piece passed its check, just before it is written to the cache: from
   * then on a reader of the blob may get it, so what says where a piece came from must
   * be recorded here, not in onPiece.
   */
  onVerified?: (peer: SwarmPeer, index: number) => void
  /** Called after each piece is stored. */
  onPiece?: (peer: SwarmPeer, index: number, bytes: number) => void
  /**
   * Called when a request's upload was spent for nothing: the piece arrived from another
   * peer first ('duplicate': it came in full anyway; 'superseded': it was cancelled), or
   * the request was abandoned as too slow or timed out. The peer's uplink carried what
   * it sent of it, so a swarm that wastes much of its upload is asking too much at once.
   * `bytes` is what had arrived of the piece when it was given up (the whole piece for a
   * duplicate); bytes still on their way then are not counted.
   */
  onWaste?: (peer: SwarmPeer, index: number, reason: WasteReason, bytes: number) => void
  /**
   * Called when a have watch ends: 'followed' when it ran until the peer held every
   * piece or the download or the peer was done with it, 'fell-back' when it failed or
   * the peer ended it early and the peer is asked with have queries instead.
   */
  onHaveWatch?: (outcome: 'followed' | 'fell-back') => void
}

/** Why a piece request's upload was wasted (DownloadOptions.onWaste). */
export type WasteReason = 'duplicate' | 'superseded' | 'slow' | 'timeout'

interface PendingRequest {
  state: PeerState
  controller: AbortController
  index: number
  startedAt: number
  /** When its last byte came; startedAt until the first. */
  lastByteAt: number
  /** Bytes of the piece that have arrived so far. */
  bytes: number
  /** Aborted by its own deadline (a failure of the peer), not by the download. */
  timedOut: boolean
  /** Reported to onWaste already (a cancelled request may still bring its piece). */
  wasted: boolean
}

interface PeerState {
  peer: SwarmPeer
  has: Bitfield | undefined
  requested: Set<number>
  failures: number
  dropped: boolean
  busyUntil: number
  lastHaveAt: number
  /** A have query, or a watch's first reply, is awaited. */
  refreshing: boolean
  /** Ends the peer's have watch; set while one runs. */
  watch: AbortController | undefined
  /** Its watch failed or ended early: it is asked with fetchHave instead. */
  unwatchable: boolean
  addedAt: number
  /** When a peer dropped for recoverable failures may be taken back; 0 when never. */
  retryAt: number
  /** Recoverable drops so far (the wait doubles with each). */
  drops: number
}

/** Longest wait before a dropped peer is taken back. */
const MAX_PEER_RETRY_MS = 60_000

const TICK_MS = 200
/** Requests one endgame piece may have at once, silent ones included (see endgameStallMs). */
const ENDGAME_MAX_REQUESTS = 4
/** Pieces a peer must still offer for its have refresh to slow down (see haveRefreshMs). */
const HAVE_REFRESH_SPARE = 4
/** How much slower such a peer's have refresh is. */
const HAVE_REFRESH_SLOW_FACTOR = 4
/**
 * How long the origin waits for other peers' first have replies before it is asked
 * (peers the tracker handed out with a bitfield need no reply).
 */
const ORIGIN_HOLD_MS = 500
/**
 * How many stall timeouts a download may go without a whole piece while bytes still
 * come (see DownloadInit.stallTimeoutMs). A node of the 2 Mbit testbed, N = 25, went 60 s
 * without a whole piece of one layer while 17 peers' streams shared its downlink, and
 * gave the layer up to the seed's HTTP (15 MB more from the origin, 1.73x the bound).
 */
const PIECE_GAP_FACTOR = 10

/**
 * Downloads `init.map`'s blob into the cache and marks it complete. Throws
 * SwarmUnavailableError when nothing arrives for `stallTimeoutMs` (see there), DigestMismatchError
 * when the assembled blob does not match its digest (the partial is discarded),
 * InsufficientStorageError from the cache, or the signal's reason.
 */
export async function downloadBlob(
  components: DownloadComponents,
  init: DownloadInit,
  options: { signal?: AbortSignal } = {},
): Promise<DownloadResult> {
  const { cache, client, pieceBuffers } = components
  const allocate =
    pieceBuffers === undefined ? undefined : (length: number): Uint8Array => pieceBuffers.take(length)
  const log = components.logger
  const { map } = init
  const digest = map.digest
  const count = map.pieces.length
  const maxPeers = init.maxPeers ?? 16
  const startingPeers = init.startingPeers ?? STARTING_PEERS
  const requestsPerPeer = init.requestsPerPeer ?? 1
  const originRequests = init.originRequests ?? 1
  const minRequestsInFlight = init.minRequestsInFlight ?? 4
  const maxInFlight = init.maxInFlight ?? MAX_IN_FLIGHT
  const aheadMaxInFlight = init.aheadMaxInFlight ?? AHEAD_MAX_IN_FLIGHT
  const busyExtraPeers = init.busyExtraPeers ?? BUSY_EXTRA_PEERS
  const originDeferMs = init.originDeferMs ?? ORIGIN_DEFER_MS
  const pieceTimeoutMs = init.pieceTimeoutMs ?? 30_000
  const endgameStallMs = init.endgameStallMs ?? 5_000
  const maxPeerFailures = init.maxPeerFailures ?? 3
  const slowFactor = init.slowFactor ?? 8
  const slowPieceMinMs = init.slowPieceMinMs ?? 5_000
  const busyBackoffMs = init.busyBackoffMs ?? 1_000
  const haveRefreshMs = init.haveRefreshMs ?? 1_000
  const peerSearchIntervalMs = init.peerSearchIntervalMs ?? 2_000
  const stallTimeoutMs = init.stallTimeoutMs ?? 20_000
  const peerRetryMs = init.peerRetryMs ?? 5_000
  const rng = createRng(init.seed ?? Math.floor(Math.random() * 2 ** 32))

  const lifetime = new AbortController()
  // Followed by every have query, watch and peer search of the download at once.
  const signal = sharedSignal(
    options.signal ? AbortSignal.any([options.signal, lifetime.signal]) : lifetime.signal,
  )
  const peers = new Map<string, PeerState>()
  const have = new Bitfield(count)
  const haveSet = { has: (i: number) => have.get(i) }
  const inFlight = new Int32Array(count)
  const availability = new Int32Array(count)
  /** Until when the origin is not asked for each piece (it sent it to someone else). */
  const originDeferredUntil = new Float64Array(count)
  /**
   * Pieces the origin declined (another agent has them) that no peer in use holds: the
   * holder is among the peers this download does not use. A peer search then looks for
   * it beyond `maxPeers` (up to SOUGHT_EXTRA_PEERS more), or the origin would in the end send
   * the piece again.
   */
  const sought = new Set<number>()
  const requests = new Map<number, Set<PendingRequest>>()
  /** The download ended (finished, failed or aborted): every request still running stops. */
  const onEnd = (): void => {
    for (const set of requests.values()) for (const r of set) r.controller.abort(signal.reason)
  }
  signal.addEventListener('abort', onEnd, { once: true })
  /**
   * Recent piece times in ms per byte, for spotting slow peers: of pieces that came, and
   * of requests cut as slow (what they had taken when cut).
   */
  const msPerByte: number[] = []
  const result: DownloadResult = {
    bytesByPeer: new Map(),
    resumedPieces: 0,
    bannedPeers: [],
    droppedPeers: [],
  }
  let fatal: unknown
  let lastProgress = Date.now()
  /** When the last byte of any piece came (requests report it as it comes). */
  let lastByte = 0
  /** When a peer last answered busy: it has what we lack, just no free upload slot. */
  let lastBusy = 0
  /** When a peer in use was last seen holding more pieces than before (see stallTimeoutMs). */
  let lastSwarmGain = 0
  let lastSearch = 0
  /** The peer limit when the last peer search began: a higher one now searches at once. */
  let searchedLimit = 0
  let searching = false
  /** Half of the peers answered busy at some point: up to busyExtraPeers more may be added. */
  let busyCrowded = false
  let wake: (() => void) | undefined
  let dirty = false

  /** Wakes the scheduling loop (or makes its next wait return at once). */
  const notify = (): void => {
    dirty = true
    wake?.()
  }

  function setHas(state: PeerState, bits: Bitfield | undefined): void {
    if (bits !== undefined && bits.count() > (state.has?.count() ?? 0)) lastSwarmGain = Date.now()
    if (state.has) for (const i of state.has.indexes()) availability[i]!--
    state.has = bits
    if (bits) for (const i of bits.indexes()) availability[i]!++
  }

  /** Drops a peer; one dropped for a `recoverable` failure is taken back later (see peerRetryMs). */
  function drop(state: PeerState, why: string, recoverable = false): void {
    if (state.dropped) return
    state.dropped = true
    state.watch?.abort(new Error('peer dropped'))
    state.retryAt = recoverable ? Date.now() + Math.min(peerRetryMs * 2 ** state.drops, MAX_PEER_RETRY_MS) : 0
    if (recoverable) state.drops++
    result.droppedPeers.push(state.peer.id)
    setHas(state, undefined)
    for (const i of state.requested) {
      for (const r of requests.get(i) ?? [])
        if (r.state === state) r.controller.abort(new Error('peer dropped'))
    }
    log?.debug({ peer: state.peer.id, digest, why }, 'dropped peer')
  }

  /**
   * Agents this download may use: maxPeers, more once its peers crowded it out
   * (busyCrowded), fewer while it starts (startingPeerLimit).
   */
  function limit(): number {
    return startingPeerLimit(peerLimit(maxPeers, busyCrowded, busyExtraPeers), have.count(), startingPeers)
  }

  /** Usable agents, the origin not counted: it is asked last and only for what they lack. */
  function usableAgents(): number {
    let n = 0
    for (const p of peers.values()) if (!p.dropped && countsTowardPeerLimit(p.peer)) n++
    return n
  }
  /**
   * True when a usable agent (not the origin) is known to hold piece `index`. Such a
   * piece is never the origin's, even while that agent's request slots are full or it
   * answered busy: the origin gets only what no other peer can give.
   */
  function agentHolds(index: number): boolean {
    for (const p of peers.values())
      if (!p.peer.origin && !p.dropped && p.has?.get(index) === true) return true
    return false
  }

  /** Whether `state`'s peer could take one more request now (as schedule counts its slots). */
  function hasFreeSlot(state: PeerState): boolean {
    if (state.dropped || state.busyUntil > Date.now()) return false
    let sources = 0
    for (const p of peers.values()) if (!p.dropped) sources++
    return state.requested.size < slotsFor(state, sources)
  }

  /** Requests `state`'s peer may have in flight while `sources` peers (the origin too) are in use. */
  function slotsFor(state: PeerState, sources: number): number {
    return requestSlots({
      origin: state.peer.origin === true,
      sources,
      requestsPerPeer,
      originRequests,
      minInFlight: minRequestsInFlight,
    })
  }

  /** Whether it is time to ask `state`'s peer again what it holds (see haveRefreshMs). */
  function haveRefreshDue(state: PeerState, now: number): boolean {
    const age = now - state.lastHaveAt
    if (age < haveRefreshMs) return false
    if (age >= HAVE_REFRESH_SLOW_FACTOR * haveRefreshMs || state.has === undefined) return true
    let spare = 0
    for (let i = 0; i < count && spare < HAVE_REFRESH_SPARE; i++) {
      if (state.has.get(i) && !have.get(i) && !state.requested.has(i)) spare++
    }
    return spare < HAVE_REFRESH_SPARE
  }

  async function refreshHave(state: PeerState): Promise<void> {
    state.refreshing = true
    const deadline = deadlineSignal(signal, pieceTimeoutMs)
    try {
      const bits = await client.fetchHave(state.peer.target, digest, { signal: deadline.signal })
      if (state.dropped) return
      if (bits !== undefined && bits.length !== count) {
        drop(state, `bitfield of ${bits.length} pieces for a map of ${count}`)
        return
      }
      setHas(state, bits)
    } catch (err) {
      if (signal.aborted) return
      state.failures++
      if (state.failures >= maxPeerFailures) drop(state, `have query failed: ${String(err)}`, true)
    } finally {
      deadline.dispose()
      state.lastHaveAt = Date.now()
      state.refreshing = false
      notify()
    }
  }

  /**
   * Follows what `state`'s peer holds over a have watch until the peer holds every
   * piece, the watch fails, or the peer is dropped or the download ends; from a watch
   * that failed or ended early on, the peer is asked with fetchHave (refreshHave).
   */
  async function watch(state: PeerState): Promise<void> {
    const watchHave = client.watchHave
    if (watchHave === undefined) return
    const controller = new AbortController()
    state.watch = controller
    state.refreshing = true
    let answered = false
    try {
      const events = watchHave(state.peer.target, digest, {
        signal: AbortSignal.any([signal, controller.signal]),
      })
      for await (const event of events) {
        if (state.dropped) break
        // A first answer or a whole bitfield always wakes the loop; a gain of a piece
        // this download lacks only when the peer can take a request now (see below).
        let urgent = false
        let useful = false
        if ('bitfield' in event) {
          const bits = event.bitfield
          if (bits !== undefined && bits.length !== count) {
            drop(state, `bitfield of ${bits.length} pieces for a map of ${count}`)
            break
          }
          setHas(state, bits)
          urgent = true
        } else if (state.has !== undefined) {
          for (const index of event.gained) {
            if (state.has.get(index)) continue
            state.has.set(index)
            availability[index]!++
            lastSwarmGain = Date.now()
            if (!have.get(index)) useful = true
          }
        }
        if (!answered) {
          answered = true
          state.refreshing = false
          urgent = true
        }
        state.lastHaveAt = Date.now()
        // A gain matters at once only to a peer with a free request slot; otherwise the
        // next tick or the end of one of its requests picks it up. (A watched peer sends
        // about one update per piece it gains, and a download watches up to maxPeers of
        // them: waking the loop for each ran the whole schedule once per update.)
        if (urgent || (useful && hasFreeSlot(state))) notify()
      }
      // Ended by the peer with part of the blob: it cannot follow it (a source that
      // cannot be watched, or it lost the blob). One that holds none of it yet (a peer
      // that announced itself before it began) is watched again later.
      if (!state.dropped && state.has !== undefined && !state.has.isComplete()) state.unwatchable = true
    } catch (err) {
      if (!signal.aborted && !controller.signal.aborted) {
        state.unwatchable = true
        log?.debug({ err, peer: state.peer.id, digest }, 'have watch failed: asking the peer instead')
      }
    } finally {
      init.onHaveWatch?.(state.unwatchable ? 'fell-back' : 'followed')
      if (state.watch === controller) state.watch = undefined
      state.refreshing = false
      // A watch that never answered counts as a have query that did not: the next one
      // waits haveRefreshMs.
      if (!answered) state.lastHaveAt = Date.now()
      notify()
    }
  }

  /**
   * Learns what `state`'s peer holds: a have watch where it can, a have query otherwise;
   * nothing while a watch runs or a query (or a watch's first reply) is awaited.
   */
  function askHave(state: PeerState): void {
    if (state.watch !== undefined || state.refreshing) return
    if (client.watchHave !== undefined && !state.unwatchable && !state.peer.origin) void watch(state)
    else void refreshHave(state)
  }

  async function searchPeers(): Promise<void> {
    searching = true
    lastSearch = Date.now()
    searchedLimit = limit()
    try {
      const found = await init.findPeers({ signal })
      for (const peer of found) {
        if (peers.has(peer.id)) continue
        if (countsTowardPeerLimit(peer) && usableAgents() >= limit()) {
          const holdsSought = [...sought].some((i) => peer.has?.get(i) === true)
          if (!admitsPeer(usableAgents(), limit(), holdsSought)) continue
          log?.debug(
            { peer: peer.id, digest, sought: sought.size },
            'added a peer that holds a piece no other peer in use has',
          )
        }
        const state: PeerState = {
          peer,
          has: undefined,
          requested: new Set(),
          failures: 0,
          dropped: false,
          busyUntil: 0,
          lastHaveAt: 0,
          refreshing: false,
          watch: undefined,
          unwatchable: false,
          addedAt: Date.now(),
          retryAt: 0,
          drops: 0,
        }
        peers.set(peer.id, state)
        if (peer.has !== undefined && peer.has.length === count) {
          // What the tracker said the peer holds saves a round trip; it is refreshed later.
          setHas(state, peer.has.clone())
          state.lastHaveAt = Date.now()
          // Kept up to date from here on by a watch (its first reply replaces this).
          if (!state.has?.isComplete()) askHave(state)
        } else {
          askHave(state)
        }
      }
    } catch (err) {
      if (!signal.aborted) log?.warn({ err, digest }, 'finding peers failed')
    } finally {
      searching = false
      notify()
    }
  }

  function wasted(r: PendingRequest, reason: WasteReason): void {
    if (r.wasted) return
    r.wasted = true
    init.onWaste?.(r.state.peer, r.index, reason, r.bytes)
  }

  async function request(state: PeerState, index: number): Promise<void> {
    const controller = new AbortController()
    const now = Date.now()
    const pending: PendingRequest = {
      state,
      controller,
      index,
      startedAt: now,
      lastByteAt: now,
      bytes: 0,
      timedOut: false,
      wasted: false,
    }
    // One controller and one timer per request; the download's end aborts every pending
    // controller (see onEnd), so no combined signal is built per request.
    const deadline = setTimeout(() => {
      pending.timedOut = true
      wasted(pending, 'timeout')
      controller.abort(new DOMException(`no byte of the piece came for ${pieceTimeoutMs} ms`, 'TimeoutError'))
    }, pieceTimeoutMs)
    const set = requests.get(index) ?? new Set<PendingRequest>()
    requests.set(index, set)
    set.add(pending)
    inFlight[index]!++
    state.requested.add(index)
    // The piece's bytes, given back to the pool in `finally`: every path below either
    // ends before the write or awaits writePiece to its end, so nothing holds them then.
    let bytes: Uint8Array | undefined
    try {
      if (signal.aborted) return
      const fetched = await client
        .fetchPiece(state.peer.target, digest, index, {
          expectedLength: pieceRange(map, index).length,
          // Checked by the client as the bytes arrive (on its hasher's worker thread when
          // it has one); a piece that does not match comes back as PieceHashMismatchError.
          expectedSha256: map.pieces[index] ?? '',
          signal: controller.signal,
          // The deadline counts from the last byte that arrived, not from the request.
          onProgress: (received) => {
            pending.bytes += received
            deadline.refresh()
            lastByte = Date.now()
            pending.lastByteAt = lastByte
          },
          ...(allocate === undefined ? {} : { allocate }),
        })
        .catch((err: unknown) => {
          if (err instanceof PieceHashMismatchError) return err
          throw err
        })
      if (fetched instanceof PieceHashMismatchError) {
        bytes = fetched.bytes
        if (!result.bannedPeers.includes(state.peer.id)) {
          log?.warn({ peer: state.peer.id, digest, index }, 'peer sent a bad piece: banned')
          result.bannedPeers.push(state.peer.id)
          drop(state, 'bad piece')
          init.onBadPiece?.(state.peer, index)
        }
        return
      }
      bytes = fetched
      state.failures = 0
      if (bytes.byteLength > 0) recordPieceTime((Date.now() - pending.startedAt) / bytes.byteLength)
      if (have.get(index)) {
        pending.bytes = bytes.byteLength
        wasted(pending, 'duplicate')
        return
      }
      init.onVerified?.(state.peer, index)
      await cache.writePiece(digest, index, bytes, { signal })
      if (!have.get(index)) {
        have.set(index)
        lastProgress = Date.now()
        result.bytesByPeer.set(state.peer.id, (result.bytesByPeer.get(state.peer.id) ?? 0) + bytes.byteLength)
        init.onPiece?.(state.peer, index, bytes.byteLength)
      }
      // Endgame duplicates of this piece are no longer needed.
      for (const other of requests.get(index) ?? []) {
        if (other === pending) continue
        wasted(other, 'superseded')
        other.controller.abort(new Error('piece arrived'))
      }
    } catch (err) {
      if (signal.aborted || (controller.signal.aborted && !pending.timedOut)) return
      if (err instanceof PieceUnavailableError) {
        if (err.status === 'busy') {
          state.busyUntil = Date.now() + busyBackoffMs
          lastBusy = Date.now()
        } else if (err.status === 'not-found') {
          // The peer lost the blob: a watch of it is over, what it holds is asked anew.
          state.watch?.abort(new Error('peer lost the blob'))
          setHas(state, undefined)
        } else if (state.peer.origin) {
          // The origin holds everything; not-held means another agent got this piece
          // from it moments ago and will pass it on.
          originDeferredUntil[index] = Date.now() + originDeferMs
          if (!agentHolds(index)) sought.add(index)
        } else if (state.has?.get(index)) {
          state.has.unset(index)
          availability[index]!--
        }
        return
      }
      if ((err as Error).name === 'InsufficientStorageError' || (err as Error).name === 'BlobUnknownError') {
        fatal ??= err
        return
      }
      state.failures++
      log?.debug({ err, peer: state.peer.id, digest, index }, 'piece request failed')
      if (state.failures >= maxPeerFailures) drop(state, `${state.failures} failed requests`, true)
    } finally {
      if (bytes !== undefined) pieceBuffers?.give(bytes)
      clearTimeout(deadline)
      set.delete(pending)
      if (set.size === 0) requests.delete(index)
      inFlight[index]!--
      state.requested.delete(index)
      notify()
    }
  }

  /** Keeps a piece time in ms per byte among the recent ones (the last 32). */
  function recordPieceTime(value: number): void {
    msPerByte.push(value)
    if (msPerByte.length > 32) msPerByte.shift()
  }

  /** The median of the recent piece times in ms per byte; undefined before three pieces. */
  function medianMsPerByte(): number | undefined {
    if (msPerByte.length < 3) return undefined
    return [...msPerByte].sort((a, b) => a - b)[msPerByte.length >> 1]
  }

  /** Abandons requests far slower than the swarm's median when another peer has the piece. */
  function cutSlowRequests(now: number, median: number | undefined): void {
    if (median === undefined) return
    for (const set of requests.values()) {
      for (const r of set) {
        const elapsed = now - r.startedAt
        const limit = Math.max(slowPieceMinMs, slowFactor * median * pieceRange(map, r.index).length)
        if (elapsed <= limit || r.controller.signal.aborted) continue
        const elsewhere = [...peers.values()].some((p) => p !== r.state && !p.dropped && p.has?.get(r.index))
        if (!elsewhere) continue
        r.state.failures++
        log?.debug(
          { peer: r.state.peer.id, digest, index: r.index, elapsed },
          'abandoned a slow piece request',
        )
        wasted(r, 'slow')
        r.controller.abort(new Error('too slow'))
        // What it took so far is a piece time too, and a lower bound of its own: kept out,
        // only the pieces that came quickly would count, and once the download's link
        // fills up every request would be cut by a median of its first, quick pieces.
        recordPieceTime(elapsed / pieceRange(map, r.index).length)
        if (r.state.failures >= maxPeerFailures) drop(r.state, 'too slow', true)
      }
    }
  }

  /**
   * Whether something may still bring a piece: a request, a peer search or a have query
   * in flight (on a starved node each can take many seconds), a peer that said busy, or
   * a peer dropped for failures it may recover from that will be taken back (on a
   * starved node every peer's requests can time out at once: giving up then sends the
   * client to the origin). Asked only once the download has gone stallTimeoutMs without
   * a byte of a piece; three times that ends it whatever this says.
   */
  function crowded(now: number): boolean {
    if (requests.size > 0 || searching || now - lastBusy <= stallTimeoutMs) return true
    for (const p of peers.values()) {
      if (p.dropped ? p.retryAt > 0 : p.refreshing) return true
    }
    return false
  }

  /** Takes back peers whose recoverable drop has waited long enough, while there is room. */
  function readmit(now: number): void {
    for (const state of peers.values()) {
      if (!state.dropped || state.retryAt === 0 || now < state.retryAt) continue
      if (countsTowardPeerLimit(state.peer) && usableAgents() >= limit()) return
      state.dropped = false
      state.retryAt = 0
      state.failures = 0
      state.lastHaveAt = 0
      state.unwatchable = false
      state.addedAt = now
      log?.debug({ peer: state.peer.id, digest, drops: state.drops }, 'took a dropped peer back')
    }
  }

  /**
   * Requests per piece as endgame's duplicate limit counts them: in endgame, those that
   * went silent (endgameStallMs, and the median piece time) are left out (see there), up
   * to ENDGAME_MAX_REQUESTS per piece. `inFlight` itself when nothing is left out;
   * otherwise a copy, which the caller keeps up to date with the requests it adds.
   */
  function countedInFlight(now: number, median: number | undefined): Int32Array {
    if (endgameStallMs <= 0 || requests.size === 0) return inFlight
    if (!isEndgame({ pieceCount: count, have: haveSet, endgameThreshold: init.endgameThreshold }))
      return inFlight
    let counted: Int32Array | undefined
    for (const [index, set] of requests) {
      if (set.size >= ENDGAME_MAX_REQUESTS) continue
      const limit = Math.max(endgameStallMs, (median ?? 0) * pieceRange(map, index).length)
      let silent = 0
      for (const r of set) if (now - r.lastByteAt >= limit && !r.controller.signal.aborted) silent++
      if (silent === 0) continue
      counted ??= Int32Array.from(inFlight)
      counted[index] = set.size - silent
    }
    return counted ?? inFlight
  }

  function schedule(): void {
    const now = Date.now()
    readmit(now)
    const median = medianMsPerByte()
    cutSlowRequests(now, median)
    const counted = countedInFlight(now, median)
    const readPosition = init.readPosition?.()
    // Other agents first: the origin only gets what they cannot give.
    const ordered = [...peers.values()].sort((a, b) => sourceOrder(a.peer, b.peer))
    let sources = 0
    // What the peers hold on average, how many answered busy, and what is in flight.
    let peersHeld = 0
    let known = 0
    let busy = 0
    let live = 0
    let inFlightTotal = 0
    for (const p of ordered) {
      inFlightTotal += p.requested.size
      if (p.dropped) continue
      sources++
      if (p.peer.origin) continue
      live++
      if (p.busyUntil > now) busy++
      if (p.has !== undefined) {
        peersHeld += p.has.count()
        known++
      }
    }
    const cap = inFlightCap({
      maxInFlight,
      aheadMaxInFlight,
      ahead: isAheadOfPeers(have.count(), peersHeld, known),
    })
    if (busyExtraPeers > 0 && !busyCrowded && crowdedByBusy(live, busy, maxPeers)) {
      busyCrowded = true
      log?.debug({ digest, peers: live, busy }, 'half of the peers answered busy: looking for more')
    }
    // Until every other peer has said what it holds, the origin waits.
    const othersPending = ordered.some(
      (p) => !p.peer.origin && !p.dropped && p.lastHaveAt === 0 && now - p.addedAt < ORIGIN_HOLD_MS,
    )
    for (const state of ordered) {
      if (state.dropped || state.busyUntil > now) continue
      if (state.peer.origin && othersPending) continue
      if (state.has === undefined) {
        if (now - state.lastHaveAt >= haveRefreshMs) askHave(state)
        continue
      }
      const peerHas = state.has
      const slots = slotsFor(state, sources)
      const rules = sourcePickRules(state.peer, readPosition)
      while (state.requested.size < slots && inFlightTotal < cap) {
        const next = pickPiece({
          pieceCount: count,
          have: haveSet,
          peerHas: state.peer.origin
            ? { has: (i) => peerHas.get(i) && !agentHolds(i) && originDeferredUntil[i]! <= now }
            : { has: (i) => peerHas.get(i) },
          inFlight: counted,
          requestedFromPeer: state.requested,
          availability,
          windowSize: init.windowSize,
          endgameThreshold: init.endgameThreshold,
          // The origin: rarest first, never in reading order, no duplicates.
          ...rules,
          rng,
        })
        if (next === undefined) break
        inFlightTotal++
        if (counted !== inFlight) {
          if (counted[next.index]! < inFlight[next.index]!)
            log?.debug(
              { peer: state.peer.id, digest, index: next.index },
              'asked one more peer for an endgame piece whose requests went silent',
            )
          counted[next.index]!++
        }
        void request(state, next.index)
      }
      // A peer still downloading gains pieces all the time: ask again what it holds,
      // also while we are fetching from it, or the pieces it gained stay unknown here
      // (fewer requests in flight, and the origin asked for what the swarm has); less
      // often while what it is known to hold still leaves work to ask it for.
      // (A watched peer is skipped before haveRefreshDue's walk over the pieces.)
      if (
        state.watch === undefined &&
        !state.refreshing &&
        !state.has.isComplete() &&
        haveRefreshDue(state, now)
      )
        askHave(state)
    }
    for (const index of sought) if (have.get(index) || agentHolds(index)) sought.delete(index)
    const interval = live === 0 ? Math.min(1_000, peerSearchIntervalMs) : peerSearchIntervalMs
    const current = limit()
    const wanted = wantsMorePeers(live, current, sought.size)
    // A limit that just rose (the download left its start, or its peers crowded it out)
    // takes the peers the tracker's answer already names without waiting for the interval.
    if (!searching && wanted && (now - lastSearch >= interval || current > searchedLimit)) void searchPeers()
  }

  cache.pin(digest)
  try {
    await cache.open(digest, { size: map.size, pieceSize: map.pieceSize }, { signal })
    for (let i = 0; i < count; i++) if (cache.hasPiece(digest, i)) have.set(i)
    result.resumedPieces = have.count()
    // The stall clock starts with the swarm work, not with the cache's set-up (on a
    // starved node opening the partial file can wait seconds behind other disk work).
    lastProgress = Date.now()
    while (!have.isComplete()) {
      signal.throwIfAborted()
      if (fatal !== undefined) throw fatal
      dirty = false
      // Scheduling first: a peer search or have answer that just came in starts its
      // requests before the stall check looks at what is in flight.
      schedule()
      const now = Date.now()
      const sincePiece = now - lastProgress
      const sinceByte = now - Math.max(lastProgress, lastByte)
      // Past three stall timeouts a crowded download waits on only while its peers gain
      // pieces: the swarm moves and its turn will come (see stallTimeoutMs).
      const moving = now - lastSwarmGain <= stallTimeoutMs
      const stalled =
        sinceByte > stallTimeoutMs && (!crowded(now) || (sinceByte > 3 * stallTimeoutMs && !moving))
      if (stalled || sincePiece > PIECE_GAP_FACTOR * stallTimeoutMs) {
        const what = stalled
          ? `nothing of ${digest} arrived for ${sinceByte} ms`
          : `no piece of ${digest} arrived for ${sincePiece} ms`
        throw new SwarmUnavailableError(what, {
          digest,
          held: have.count(),
          pieces: count,
          peers: [...peers.values()].filter((p) => !p.dropped).length,
        })
      }
      if (!dirty) {
        // A peer that answered busy can be asked again when its backoff ends: the loop
        // wakes then, not at the next tick. (Have gains used to wake it often enough to
        // hide this; without them, the in-process swarm's pulls took 18-41% longer.)
        let sleepMs = TICK_MS
        for (const p of peers.values()) {
          if (!p.dropped && p.busyUntil > now) sleepMs = Math.min(sleepMs, p.busyUntil - now + 1)
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, sleepMs)
          wake = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        wake = undefined
      }
    }
    lifetime.abort(new Error('download finished'))
    await cache.complete(digest, options)
    return result
  } finally {
    lifetime.abort(new Error('download ended'))
    cache.unpin(digest)
  }
}
