/**
 * A discrete-event simulation of one image pulled by a whole cluster at once, running
 * shoal's own policy code: the tracker's hand-out and origin wish (tracker/src/hand-out.ts)
 * and the agent's piece picker (peer-agent/src/transfer/piece-picker.ts), imported, over
 * a flow-level network (flow-network.ts).
 *
 * What is modelled, and how it maps to the real parts:
 * - Every node pulls every layer at t = 0 (plus an optional start jitter); a layer is a
 *   blob with its own swarm, and the node is done when its last layer is.
 * - Announces reach the tracker after one latency and the answer comes back after
 *   another. The tracker keeps the record of each announce (complete, pieces held,
 *   upload load) and answers with `handOut` over the swarm's members; `wantsOrigin`
 *   decides whether the peer asks for an origin slot, and `grantsOriginSlot` lets at
 *   most `originSlots` peers of a swarm hold one at once (the rationing of the tracker's
 *   peer store: a slot is kept until the peer announces completion). As in the agent's
 *   tracker router, a node announces at start, on its first piece, on completion and
 *   every `announceIntervalMs`; the scheduler looks for peers every 2 s (1 s with none) while
 *   it has fewer than `maxPeers`, and gets the router's cached answer, which is renewed
 *   early only when it held nothing (no peers, no origin) and is `barrenRetryMs` old.
 * - The scheduler's pure rules: at most `maxPeers` peers per download (`startingPeers`
 *   while it holds fewer than STARTING_PIECES pieces; up to
 *   `busyExtraPeers` more once half of them answered busy: crowdedByBusy), `requestsPerPeer`
 *   requests in flight per peer and `originRequests` to the origin, at most `maxInFlight`
 *   in all and `aheadMaxInFlight` while the download holds more than its peers do on
 *   average (inFlightCap, isAheadOfPeers), the origin asked
 *   last (only for what the other peers cannot give) and without endgame duplicates,
 *   duplicates cancelled when a piece arrives. The piece itself is chosen by pickPiece
 *   (streaming window at the first missing piece, rarest first, endgame).
 * - A request reaches the sender after one latency; a sender with
 *   `maxConcurrentUploads` uploads running answers busy and is left alone for
 *   `busyBackoffMs` (the piece server's cap), and while its uploads take
 *   `uploadTurnHoldMs` or more gives a freed slot first to the peers it answered busy
 *   in that time, in the order it refused them (protocol/src/p2p/upload-turns.ts),
 *   except for a piece it took from the origin
 *   and has sent fewer than `firstCopyPriority` times (up to PRIORITY_EXTRA_UPLOADS
 *   uploads over the cap, as the agent's piece server). The piece flows at the rate the
 *   network gives it and arrives one latency after its last byte left.
 * - The origin runs the seed's first-copy rule (registry/src/seeder/first-copy.ts): a
 *   piece sent to one node is declined to others for its hold, and beyond it while the
 *   tracker's last word (heard every SEED_ANNOUNCE_MS, exact otherwise) says two nodes
 *   hold it; a declined node leaves the piece at the origin for `originDeferMs`.
 * - In-flight seeding: a piece is servable as soon as it is received; other peers learn
 *   of it `haveDelayMs` later (have-messages; the real agent polls every second when a
 *   peer had nothing for it, so 1000 is the pessimistic setting).
 *
 * Not modelled: CPU, disk, hashing, slow-peer cut-off and failures (nothing fails here),
 * the DHT, zones. For 10,000 nodes the hand-out runs over a uniform random sample of
 * `trackerSample` members of the swarm (0 = all) to keep it O(sample) per announce.
 */
import { choosePieceSize, pieceCountFor } from '../../protocol/src/piece-map.js'
import {
  type PieceSet,
  admitsPeer,
  AHEAD_MAX_IN_FLIGHT,
  BUSY_EXTRA_PEERS,
  countsTowardPeerLimit,
  createRng,
  crowdedByBusy,
  inFlightCap,
  isAheadOfPeers,
  MAX_IN_FLIGHT,
  ORIGIN_DEFER_MS,
  peerLimit,
  pickPiece,
  requestSlots,
  type SourcePickRules,
  sourceOrder,
  SOUGHT_EXTRA_PEERS,
  sourcePickRules,
  STARTING_PEERS,
  startingPeerLimit,
  wantsMorePeers,
} from '../../peer-agent/src/transfer/piece-picker.js'
import { FIRST_COPY_UPLOADS } from '../../peer-agent/src/swarm/swarm-source.js'
import {
  MAX_CONCURRENT_UPLOADS,
  MAX_UPLOADS_PER_PIECE,
  PRIORITY_EXTRA_UPLOADS,
} from '../../protocol/src/p2p/piece-server.js'
import { createUploadCap, type UploadCap } from '../../protocol/src/p2p/upload-cap.js'
import {
  createUploadTurns,
  UPLOAD_TURN_HOLD_MS,
  type UploadTurns,
} from '../../protocol/src/p2p/upload-turns.js'
import { createFirstCopyRule, DEFAULT_REPEAT_AFTER_MS } from '../../registry/src/seeder/first-copy.js'
import type { Digest } from '../../protocol/src/index.js'
import {
  grantsOriginSlot,
  type HandOutCandidate,
  handOut,
  originSlotExclusive,
  spreadBitfield,
  wantsOrigin,
} from '../../tracker/src/hand-out.js'
import { EventQueue } from './event-queue.js'
import { type Flow, FlowNetwork, type Sharing } from './flow-network.js'

/** Inputs of one simulation. */
export interface SimConfig {
  nodes: number
  imageBytes: number
  layers: number
  /** Piece size of every layer; default choosePieceSize(layer size). */
  pieceSize?: number
  nodeUpMbit: number
  /** @default nodeUpMbit */
  nodeDownMbit?: number
  originMbit: number
  /** One-way latency of every link (and to the tracker), ms. */
  latencyMs: number
  /** How flows share links (flow-network.ts). @default 'proportional' */
  sharing?: Sharing
  seed: number
  /** @default latencyMs */
  haveDelayMs?: number
  /** Nodes start uniformly within this many ms. @default 0 */
  startJitterMs?: number
  /** Tracker: peers that may fetch from the origin at once, per swarm. @default 8 */
  originSlots?: number
  /**
   * Tracker: at most one origin slot per node across swarms while others of a swarm want
   * one (originSlotExclusive; the tracker's `exclusiveOriginSlots`). @default false
   */
  exclusiveOriginSlots?: boolean
  /** @default 30 */
  maxPeersPerAnswer?: number
  /** @default 10000 */
  announceIntervalMs?: number
  /** Re-announce delay after an answer with no peers and no origin. @default 1000 */
  barrenRetryMs?: number
  /** Members the hand-out looks at; 0 = all. @default 200 */
  trackerSample?: number
  /** Agent scheduler settings (defaults as in peer-agent/src/transfer/scheduler.ts). */
  maxPeers?: number
  /** Peers while a download holds fewer than STARTING_PIECES pieces (0: maxPeers). @default STARTING_PEERS */
  startingPeers?: number
  /** @default 2000 */
  peerSearchIntervalMs?: number
  requestsPerPeer?: number
  originRequests?: number
  /** The scheduler's floor of requests in flight with few peers (requestSlots). @default 4 */
  minRequestsInFlight?: number
  /** The scheduler's cap on requests in flight in all (0 = off). @default MAX_IN_FLIGHT */
  maxInFlight?: number
  /** The scheduler's cap on requests in flight while ahead of its peers (0 = off). @default AHEAD_MAX_IN_FLIGHT */
  aheadMaxInFlight?: number
  /**
   * The scheduler's extra peers for pieces the origin declined that no peer in use
   * holds (0 = off). @default SOUGHT_EXTRA_PEERS
   */
  soughtExtraPeers?: number
  /** The scheduler's extra peers once half of them answered busy (0 = off). @default BUSY_EXTRA_PEERS */
  busyExtraPeers?: number
  windowSize?: number
  /**
   * Give the picker a read position (the first missing piece), as when the client
   * streams the blob while it downloads. The agent's scheduler takes a readPosition
   * but the swarm source does not pass one yet, so the default mirrors today's agent.
   * @default false
   */
  streaming?: boolean
  endgameThreshold?: number
  /** Uploads a node runs at once (the agent's maxConcurrentUploads). @default MAX_CONCURRENT_UPLOADS */
  maxConcurrentUploads?: number
  /**
   * Size each node's upload cap by the rate its uploads reached (the agent's
   * `uploadPieceTargetMs`, protocol/src/p2p/upload-cap.ts, imported): 0 keeps it at
   * maxConcurrentUploads. The rate counts each piece when it lands. @default 0
   */
  uploadPieceTargetMs?: number
  /** Fewest uploads a cap sized by the uplink goes down to. @default 4 */
  minConcurrentUploads?: number
  /** Uploads the origin serves at once. @default 16 */
  originMaxConcurrentUploads?: number
  /**
   * Copies of one piece a node sends at once (the agent's `maxUploadsPerPiece`, the
   * piece server's rule); a request beyond it is answered busy. Not applied to the
   * origin, whose first-copy rule sends a piece once. 0: no limit. @default MAX_UPLOADS_PER_PIECE
   */
  maxUploadsPerPiece?: number
  /**
   * The seed's first-copy rule (registry/src/seeder/first-copy.ts, imported): a piece
   * already sent to another node is declined while some piece of the layer was never
   * sent, while its send runs, and for this many ms after that send ended; 0 switches it
   * off. @default DEFAULT_REPEAT_AFTER_MS (180000)
   */
  repeatPieceAfterMs?: number
  /** How long a node leaves a piece the origin declined before asking it again. @default 2000 */
  originDeferMs?: number
  busyBackoffMs?: number
  /**
   * Turns at the upload slots (protocol/src/p2p/upload-turns.ts, imported; the piece
   * server's `uploadTurnHoldMs`): while its uploads take this many ms or more, a sender
   * keeps a free slot for the peers it answered busy in the last this many ms, in the
   * order it refused them. 0: first come, first served. @default UPLOAD_TURN_HOLD_MS
   */
  uploadTurnHoldMs?: number
  /**
   * The agent's first-copy priority (peer-agent/src/swarm/swarm-source.ts; the piece
   * server's `priority`): a node at its upload cap still serves a piece it got from the
   * origin until it has started this many uploads of it, up to PRIORITY_EXTRA_UPLOADS
   * uploads over the cap. 0 switches it off. @default FIRST_COPY_UPLOADS
   */
  firstCopyPriority?: number
  /** Uploads over the cap that first copies may take. @default PRIORITY_EXTRA_UPLOADS */
  priorityExtraUploads?: number
  /**
   * Sample how busy the links are every this many simulated ms into SimResult.timeline
   * (0: no timeline). @default 0
   */
  timelineMs?: number
  /**
   * Unless the streaming window is in play, hand pickPiece only the pieces it may pick,
   * in index order, instead of every piece: outside endgame those the peer holds that
   * nobody is fetching, in endgame those the download lacks. It skips every other piece
   * without drawing a random number, so it picks the same piece with the same draws, in
   * a fraction of the time. false gives pickPiece the whole download, so that a test can
   * check that the two agree. @default true
   */
  narrowPicks?: boolean
  /** Called for every piece a node stores: who sent it (nodes = the origin), when. */
  onPiece?: (node: number, layer: number, index: number, from: number, simMs: number) => void
  /** Called now and then with nodes done and the simulated time. */
  onProgress?: (done: number, simMs: number, events: number) => void
}

/** The links at one instant of a run (SimConfig.timelineMs). */
export interface TimelinePoint {
  /** Simulated seconds. */
  t: number
  /** Nodes still pulling. */
  pulling: number
  /** Share of the pulling nodes' downlinks in use (0..1). */
  downBusy: number
  /** Share of all nodes' uplinks in use (0..1). */
  upBusy: number
  /** Share of the origin's uplink in use (0..1). */
  originBusy: number
  /**
   * Pulling nodes whose downlink is under 30% busy while every peer that holds a piece
   * they lack has answered busy and is being left alone (the busy back-off).
   */
  idleOnBusy: number
}

/** What a simulation produced. */
export interface SimResult {
  /** Per node, ms from its start to its last layer complete. */
  completionMs: number[]
  /** Simulated ms until the last node was done. */
  lastDoneMs: number
  originBytes: number
  imageBytes: number
  pieceSize: number[]
  pieces: number
  events: number
  deliveredPieces: number
  duplicatePieces: number
  /**
   * Bytes sent for nothing: duplicates that arrived in full, and what cancelled
   * duplicates had sent before the cancel (all bytes sent, less one copy of each
   * delivered piece).
   */
  wastedBytes: number
  busyAnswers: number
  /** Piece requests the origin declined under its first-copy rule. */
  declinedAnswers: number
  wallMs: number
  /** Present when SimConfig.timelineMs was set. */
  timeline?: TimelinePoint[]
}

const NO_PIECES: PieceSet = { has: () => false }
const ALL_PIECES: PieceSet = { has: () => true }
const NO_COUNTS = new Int32Array(0)

/** Numbers per link in the simulation's linkState, and where each sits. */
const LINK_STATE = 4
const BUSY_UNTIL = 0
const USEFUL = 1
const ASKED = 2
const FREE = 3

/** Numbers per download in the simulation's dlState, and where each sits. */
const DL_STATE = 2
const DL_LINKS = 0
const DL_MISSING = 1

/** Where each number of a piece's record sits in the simulation's pieceState. */
const P_HAVE = 0
const P_IN_FLIGHT = 1
const P_AVAIL = 2
/**
 * 0 when the node did not get the piece from the origin, else 1 + the uploads of it
 * started (the first-copy priority looks at those).
 */
const P_FIRST_COPY = 3
/**
 * The first word of the mask of peer links whose peer has shown the piece; the mask of
 * links it is asked of follows.
 */
const P_SHOWN_BY = 4

/**
 * The event queue's lanes: one per fixed delay after the current time that events are
 * scheduled at (event-queue.ts), so that those need no place in the heap.
 */
const LANE_LATENCY = 0
const LANE_HAVE = 1
const LANE_BUSY = 2
const LANE_DEFER = 3
const LANE_NOW = 4
const LANE_INTERVAL = 5
const LANE_FIND_NONE = 6
const LANE_FIND = 7

const EV_FLOW_DONE = 1
const EV_ANNOUNCE = 2
/** How often the seed announces a blob, and so hears which pieces are spread (the tracker's default announce interval). */
const SEED_ANNOUNCE_MS = 10_000
const EV_ANSWER = 3
const EV_REQ_ARRIVE = 4
const EV_DELIVER = 5
const EV_HAVE = 6
const EV_WAKE = 7
const EV_START = 8
const EV_FIND = 9
const EV_TRACKER = 10

/**
 * One peer (or the origin) a download asks for pieces. What changes on every request,
 * answer and have (how long it is left alone, what it can give, what is asked of it)
 * sits in the simulation's dense per-link arrays at `slot`, not here: the scheduler
 * looks at every link of a download after each busy answer, and reading a few
 * neighbouring numbers is much cheaper than visiting an object per link.
 */
interface Link {
  peer: number
  origin: boolean
  /** The download this link belongs to. */
  dl: Download
  /** Index of the link's state in the per-link arrays (linkState, ...). */
  slot: number
  /** The link's bit in the download's per-piece masks (shown by, asked of): word and bit. */
  word: number
  bit: number
  /** Origin links: until when each piece is not asked of it (it declined it). */
  deferredUntil?: Float64Array
  /** Pieces asked of this peer and not answered yet (the pieces' asked-of masks). */
  requested: PieceSet
  peerHas: PieceSet
}

interface Download {
  /** layer * nodes + node */
  id: number
  node: number
  layer: number
  pc: number
  /** What other peers have been told this node holds, and how many pieces that is. */
  shown: Uint8Array
  shownCount: number
  /**
   * Where the download's bit sets (32 pieces a word, `bitWords` words) start in the
   * simulation's shownBits (`shown` as bits), freeBits (pieces neither held nor in
   * flight: the origin link's `unclaimed` of them) and missingBits (pieces not held).
   */
  bits: number
  bitWords: number
  /** Half of its peers answered busy once: it may use busyExtraPeers more. */
  busyCrowded: boolean
  /**
   * Pieces the origin declined that no peer in use had shown (the scheduler's `sought`):
   * a peer search may then add up to SOUGHT_EXTRA_PEERS more peers that hold one.
   * Made on first use.
   */
  sought: Set<number> | undefined
  held: number
  /** Pieces neither held nor in flight: the origin link's upper bound of what pickPiece may give. */
  unclaimed: number
  /**
   * Where the download's piece 0 sits in the simulation's pieceState: piece i's record
   * (held, requests in flight, availability, and a bit per peer link whose peer has
   * shown it) is the `pieceStride` numbers from `pieces + i * pieceStride` on.
   */
  pieces: number
  /**
   * The links in the order the scheduler offers its sources requests (sourceOrder:
   * peer links in the order they were added, then the origin's).
   */
  links: Link[]
  /**
   * Links that take a place under the peer limit (countsTowardPeerLimit: peer links, not
   * the origin's), and the origin's link, if any.
   */
  peerLinks: number
  originLink: Link | undefined
  /** Where this download's links start in the per-link arrays. */
  slotBase: number
  linked: Set<number>
  readPos: number
  complete: boolean
  /** Requests per piece in the order made (a list through Req.next), for cancelling endgame duplicates. */
  pending: Array<Req | undefined>
  haveSet: PieceSet
  candidate: HandOutCandidate & { idx: number }
  announceVersion: number
  announcedHolding: boolean
  /** The router's cached answer and when it came. */
  answer: Answer | undefined
  answerAt: number
  /** The scheduler waits for an announce it asked for (findPeers on a barren answer). */
  awaitingAnswer: boolean
  findScheduled: boolean
}

interface Req {
  dl: Download
  link: Link
  index: number
  flow: Flow | undefined
  /** When the sender let it in (its upload's start). */
  admittedAt: number
  cancelled: boolean
  /** The next request for the same piece of the same download. */
  next: Req | undefined
}

interface Answer {
  dl: Download
  peers: number[]
  allowOrigin: boolean
}

/** Bytes per millisecond of `mbit` megabit per second. */
export function mbitToBytesPerMs(mbit: number): number {
  return (mbit * 1e6) / 8 / 1000
}

/** Layer sizes of an image of `imageBytes` in `layers` nearly equal layers. */
export function layerSizes(imageBytes: number, layers: number): number[] {
  const base = Math.floor(imageBytes / layers)
  return Array.from({ length: layers }, (_, i) =>
    i === layers - 1 ? imageBytes - base * (layers - 1) : base,
  )
}

/** Runs one simulation to the end (every node done). */
export function simulate(config: SimConfig): SimResult {
  const wallStart = performance.now()
  const N = config.nodes
  const ORIGIN = N
  const L = config.layers
  const lat = config.latencyMs
  const haveDelay = config.haveDelayMs ?? lat
  const originSlots = config.originSlots ?? 8
  const exclusiveOriginSlots = config.exclusiveOriginSlots ?? false
  const maxPerAnswer = config.maxPeersPerAnswer ?? 30
  const announceInterval = config.announceIntervalMs ?? 10_000
  const barrenRetry = config.barrenRetryMs ?? 1_000
  const sampleSize = config.trackerSample ?? 200
  const maxPeers = config.maxPeers ?? 16
  const peerSearchInterval = config.peerSearchIntervalMs ?? 2_000
  const requestsPerPeer = config.requestsPerPeer ?? 1
  const originRequests = config.originRequests ?? 1
  const minInFlight = config.minRequestsInFlight ?? 4
  const maxInFlight = config.maxInFlight ?? MAX_IN_FLIGHT
  const aheadMaxInFlight = config.aheadMaxInFlight ?? AHEAD_MAX_IN_FLIGHT
  const busyExtraPeers = config.busyExtraPeers ?? BUSY_EXTRA_PEERS
  const soughtExtraPeers = Math.max(0, config.soughtExtraPeers ?? SOUGHT_EXTRA_PEERS)
  const startingPeers = config.startingPeers ?? STARTING_PEERS
  const limitOf = (dl: Download): number =>
    startingPeerLimit(peerLimit(maxPeers, dl.busyCrowded, busyExtraPeers), dl.held, startingPeers)
  const originDefer = config.originDeferMs ?? ORIGIN_DEFER_MS
  const firstCopy = createFirstCopyRule({
    repeatAfterMs: config.repeatPieceAfterMs ?? DEFAULT_REPEAT_AFTER_MS,
    now: () => now,
  })
  const layerDigest = (l: number): Digest => `sha256:${l.toString(16).padStart(64, '0')}` as Digest
  let declinedAnswers = 0
  const windowSize = config.windowSize ?? 4
  const streaming = config.streaming ?? false
  const endgameThreshold = config.endgameThreshold ?? 4
  const maxUploads = config.maxConcurrentUploads ?? MAX_CONCURRENT_UPLOADS
  const originMaxUploads = config.originMaxConcurrentUploads ?? 16
  const uploadPieceTargetMs = config.uploadPieceTargetMs ?? 0
  /** Each node's upload cap, when it is sized by the uplink. */
  const uploadCaps: UploadCap[] | undefined =
    uploadPieceTargetMs > 0
      ? Array.from({ length: N }, () =>
          createUploadCap({
            max: maxUploads,
            min: config.minConcurrentUploads ?? 4,
            targetPieceMs: uploadPieceTargetMs,
            now: () => now,
          }),
        )
      : undefined
  const busyBackoff = config.busyBackoffMs ?? 1_000
  const turnHold = config.uploadTurnHoldMs ?? UPLOAD_TURN_HOLD_MS
  /** Each sender's upload turns (the origin's is ORIGIN's), made when it is first asked. */
  const uploadTurns: Array<UploadTurns<number> | undefined> = new Array(N + 1)
  const turnsOf = (sender: number): UploadTurns<number> =>
    (uploadTurns[sender] ??= createUploadTurns({ holdMs: turnHold, now: () => now }))
  const maxUploadsPerPiece = config.maxUploadsPerPiece ?? MAX_UPLOADS_PER_PIECE
  /** Copies of a piece a node is sending now, by uploadKey (only with maxUploadsPerPiece). */
  const uploadsOfPiece = new Map<number, number>()
  const firstCopyPriority = config.firstCopyPriority ?? FIRST_COPY_UPLOADS
  const priorityExtra = config.priorityExtraUploads ?? PRIORITY_EXTRA_UPLOADS
  const rng = createRng(config.seed)
  const narrowPicks = config.narrowPicks ?? true

  const sizes = layerSizes(config.imageBytes, L)
  const pieceSizes = sizes.map((s) => config.pieceSize ?? choosePieceSize(s))
  const pieceCounts = sizes.map((s, l) => pieceCountFor(s, pieceSizes[l]!))
  const maxPieceCount = Math.max(...pieceCounts)
  /**
   * Nodes holding each piece of each layer, and when the seed last heard from the tracker
   * which pieces are spread (spreadBitfield): the seed announces every SEED_ANNOUNCE_MS,
   * and its first-copy rule reads the answer (registry/src/seeder).
   */
  const holders = pieceCounts.map((pc) => new Uint32Array(pc))
  const spreadHeardAt = pieceCounts.map(() => Number.NEGATIVE_INFINITY)
  const pieceBytes = (l: number, i: number): number =>
    Math.min(pieceSizes[l]!, sizes[l]! - i * pieceSizes[l]!)
  /** Scratch for the pieces handed to pickPiece (gatherFree). */
  const pickIndex = new Int32Array(Math.max(...pieceCounts))
  const pickAvail = new Int32Array(Math.max(...pieceCounts))
  const pickInFlight = new Int32Array(Math.max(...pieceCounts))

  const queue = new EventQueue()
  const up = new Float64Array(N + 1).fill(mbitToBytesPerMs(config.nodeUpMbit))
  const down = new Float64Array(N + 1).fill(mbitToBytesPerMs(config.nodeDownMbit ?? config.nodeUpMbit))
  up[ORIGIN] = mbitToBytesPerMs(config.originMbit)
  down[ORIGIN] = Number.POSITIVE_INFINITY
  const net = new FlowNetwork(queue, EV_FLOW_DONE, up, down, config.sharing ?? 'proportional')

  // Per layer: every node's download, the swarm members (in announce order), who links to whom.
  const downloads: Download[][] = []
  const members: number[][] = []
  const memberSet: Uint8Array[] = []
  /** Per layer: members the tracker has seen complete. */
  const completeMembers: number[] = []
  /**
   * Per layer and node: the links of the downloads that use that node as a peer, by their
   * slot in the per-link arrays (the download is slot / linksPer, the link slot % linksPer).
   */
  const watchers: number[][][] = []
  const slots: Set<number>[] = []
  // Per-link state, `linksPer` slots per download: its peers in the order they were added
  // (never more than peerLimit and the sought extras can reach), and the origin in the
  // last slot.
  const peerSlots = maxPeers + Math.max(0, busyExtraPeers) + soughtExtraPeers
  const linksPer = peerSlots + 1
  const words = Math.ceil(linksPer / 32)
  const linkCount = N * L * linksPer
  /** The link in each slot of the per-link arrays, once added. */
  const linkAt: Array<Link | undefined> = new Array(linkCount)
  /**
   * The per-link state, four numbers per link side by side (LINK_STATE), so that the one
   * cache line a have-message or a pass over a download's links loads holds all four:
   * - BUSY_UNTIL: until when the peer is left alone after a busy answer;
   * - USEFUL: pieces the peer is known to hold that we lack. When it does not exceed the
   *   requests already made to this peer (ASKED), pickPiece has nothing to give for it
   *   and is not called (a shortcut with the same outcome, for speed);
   * - ASKED: requests in flight to the peer;
   * - FREE (peer links): pieces the peer is known to hold that we lack and nobody is
   *   fetching. While it is 0 and the download is not in endgame, pickPiece has nothing
   *   to give for this link (it only picks such pieces outside endgame) and is not
   *   called. (The origin link's count is the download's `unclaimed`.)
   */
  const linkState = new Float64Array(linkCount * LINK_STATE)
  // Per-piece state of every download, one record of `pieceStride` numbers per piece
  // (P_HAVE, P_IN_FLIGHT, P_AVAIL, P_FIRST_COPY, then the shown-by and the asked-of
  // masks, `words` words each): one have-message touches the same piece of some twenty
  // downloads, and finds all it reads of each in one place, not in one array per field.
  let totalPieces = 0
  for (let l = 0; l < L; l++) totalPieces += N * pieceCounts[l]!
  const pieceStride = P_SHOWN_BY + 2 * words
  const pAskedOf = P_SHOWN_BY + words
  const pieceState = new Int32Array(totalPieces * pieceStride)
  /** Scratch for pickPiece over the whole download: in-flight counts and availability. */
  const allInFlight = new Int32Array(Math.max(...pieceCounts))
  const allAvail = new Int32Array(Math.max(...pieceCounts))
  // Per download, bit sets of its pieces (32 a word): shown to its peers, and free.
  let totalBitWords = 0
  for (let l = 0; l < L; l++) totalBitWords += N * Math.ceil(pieceCounts[l]! / 32)
  const shownBits = new Int32Array(totalBitWords)
  const freeBits = new Int32Array(totalBitWords)
  const missingBits = new Int32Array(totalBitWords)
  /** Per layer: where its downloads' bit sets start (node n's at layerBitBase[l] + n * words of the layer). */
  const layerBitBase = new Float64Array(L)
  /**
   * Per download (layer * N + node), side by side as a have-message reads them: at
   * DL_LINKS its links (dl.links.length), -1 once it is complete; at DL_MISSING the
   * pieces it still lacks.
   */
  const dlState = new Int32Array(N * L * DL_STATE)
  /**
   * requestSlots of a peer link, and of the origin's, by the download's number of links,
   * worked out once: a link with that many requests in flight gets no more.
   */
  const peerRequestSlots = Float64Array.from({ length: linksPer + 1 }, (_, sources) =>
    requestSlots({ origin: false, sources, requestsPerPeer, originRequests, minInFlight }),
  )
  const originRequestSlots = Float64Array.from({ length: linksPer + 1 }, (_, sources) =>
    requestSlots({ origin: true, sources, requestsPerPeer, originRequests, minInFlight }),
  )
  /**
   * Per layer: where its downloads' pieces start in the per-piece arrays (node n's at
   * layerPieceBase[l] + n * pieceCounts[l]).
   */
  const layerPieceBase = new Float64Array(L)
  const byId: Download[] = []
  let pieceBase = 0
  let bitBase = 0
  for (let l = 0; l < L; l++) {
    const pc = pieceCounts[l]!
    const bitWords = Math.ceil(pc / 32)
    const row: Download[] = []
    layerPieceBase[l] = pieceBase
    layerBitBase[l] = bitBase
    for (let n = 0; n < N; n++) {
      const pieces = pieceBase * pieceStride
      // Every piece is free, and missing, at first.
      for (let i = 0; i < pc; i++) {
        freeBits[bitBase + (i >>> 5)]! |= 1 << (i & 31)
        missingBits[bitBase + (i >>> 5)]! |= 1 << (i & 31)
      }
      dlState[(l * N + n) * DL_STATE + DL_MISSING] = pc
      row.push({
        id: l * N + n,
        node: n,
        layer: l,
        pc,
        pieces,
        shown: new Uint8Array(pc),
        shownCount: 0,
        bits: bitBase,
        bitWords,
        busyCrowded: false,
        sought: undefined,
        held: 0,
        unclaimed: pc,
        links: [],
        peerLinks: 0,
        originLink: undefined,
        slotBase: (l * N + n) * linksPer,
        linked: new Set(),
        readPos: 0,
        complete: false,
        pending: new Array<Req | undefined>(pc).fill(undefined),
        haveSet: { has: (i) => pieceState[pieces + i * pieceStride + P_HAVE] === 1 },
        candidate: { peerId: String(n), idx: n, complete: false, uploadLoad: 0, piecesHeld: 0 },
        announceVersion: 0,
        announcedHolding: false,
        answer: undefined,
        answerAt: 0,
        awaitingAnswer: true,
        findScheduled: false,
      })
      byId.push(row[n]!)
      pieceBase += pc
      bitBase += bitWords
    }
    downloads.push(row)
    members.push([])
    memberSet.push(new Uint8Array(N))
    completeMembers.push(0)
    watchers.push(Array.from({ length: N }, () => []))
    slots.push(new Set())
  }

  const startMs = new Float64Array(N)
  const completionMs = new Float64Array(N).fill(-1)
  const layersLeft = new Int32Array(N).fill(L)
  let done = 0
  let events = 0
  let delivered = 0
  let duplicates = 0
  let usefulBytes = 0
  let busyAnswers = 0
  let now = 0

  const jitter = config.startJitterMs ?? 0
  for (let n = 0; n < N; n++) {
    startMs[n] = jitter > 0 ? rng() * jitter : 0
    queue.push(startMs[n]!, EV_START, n)
  }

  /** Per node: the announce whose tracker sample last drew it (sampleStamp). */
  const sampledAt = new Int32Array(N)
  let sampleStamp = 0

  function announce(dl: Download, delay: number): void {
    dl.announceVersion++
    const lane = delay === 0 ? LANE_NOW : delay === announceInterval ? LANE_INTERVAL : -1
    queue.push(now + delay, EV_ANNOUNCE, dl, dl.announceVersion, lane)
  }

  /** The tracker's side of an announce, at the tracker. */
  function trackerAnnounce(dl: Download): void {
    const l = dl.layer
    const n = dl.node
    const c = dl.candidate
    if (dl.complete && !c.complete) completeMembers[l]!++
    c.complete = dl.complete
    c.piecesHeld = dl.held
    c.uploadLoad = net.outFlows(n)
    // A download's first announce is its 'started' one (the agent's tracker router).
    const started = memberSet[l]![n] === 0
    if (started) {
      memberSet[l]![n] = 1
      members[l]!.push(n)
    }
    let allowOrigin = false
    const wish = wantsOrigin({
      role: 'peer',
      state: dl.complete ? 'complete' : 'partial',
      ...(dl.complete ? { event: 'completed' as const } : {}),
    })
    if (wish) {
      const exclusive =
        exclusiveOriginSlots &&
        originSlotExclusive({
          ...(started ? { event: 'started' as const } : {}),
          // Partial members other than this one (it is partial: it wants the origin).
          otherPartialAgents: members[l]!.length - completeMembers[l]! > 1,
        })
      let elsewhere = false
      for (let k = 0; exclusive && k < L; k++) if (k !== l && slots[k]!.has(n)) elsewhere = true
      if (grantsOriginSlot(slots[l]!.has(n), slots[l]!.size, originSlots, elsewhere, exclusive)) {
        slots[l]!.add(n)
        allowOrigin = true
      }
    } else {
      slots[l]!.delete(n)
    }
    let peers: number[] = []
    if (!dl.complete) {
      const all = members[l]!
      let pool: HandOutCandidate[]
      if (sampleSize <= 0 || all.length <= sampleSize) {
        pool = all.map((m) => downloads[l]![m]!.candidate)
      } else {
        // A uniform sample without replacement: draw members, skipping those drawn already
        // (marked with this announce's stamp in a reused array, not a Set per announce).
        pool = []
        const stamp = ++sampleStamp
        const row = downloads[l]!
        while (pool.length < sampleSize) {
          const m = all[Math.floor(rng() * all.length)]!
          if (sampledAt[m] === stamp) continue
          sampledAt[m] = stamp
          pool.push(row[m]!.candidate)
        }
      }
      const chosen = handOut(pool, { peerId: c.peerId }, { max: maxPerAnswer, random: rng })
      peers = chosen.map((p) => (p as HandOutCandidate & { idx: number }).idx)
    }
    const answer: Answer = { dl, peers, allowOrigin }
    queue.push(now + lat, EV_ANSWER, answer, 0, LANE_LATENCY)
  }

  function addLink(dl: Download, peer: number): void {
    if (dl.linked.has(peer)) return
    dl.linked.add(peer)
    const origin = peer === ORIGIN
    const k = origin ? peerSlots : dl.peerLinks
    if (k > peerSlots) throw new Error(`download of node ${dl.node} has more than ${peerSlots} peers`)
    const slot = dl.slotBase + k
    const word = k >>> 5
    const bit = 1 << (k & 31)
    const asked = dl.pieces + pAskedOf + word
    const requested: PieceSet = { has: (i) => (pieceState[asked + i * pieceStride]! & bit) !== 0 }
    let peerHas: PieceSet
    let deferred: Float64Array | undefined
    let useful = 0
    let free = 0
    if (!origin) {
      const peerShown = downloads[dl.layer]![peer]!.shown
      peerHas = { has: (i) => peerShown[i] === 1 }
      for (let i = 0; i < dl.pc; i++) {
        if (peerShown[i] !== 1) continue
        const r = dl.pieces + i * pieceStride
        pieceState[r + P_AVAIL]!++
        pieceState[r + P_SHOWN_BY + word]! |= bit
        if (pieceState[r + P_HAVE] !== 1) {
          useful++
          if (pieceState[r + P_IN_FLIGHT] === 0) free++
        }
      }
    } else {
      for (let i = 0; i < dl.pc; i++) pieceState[dl.pieces + i * pieceStride + P_AVAIL]!++
      useful = dl.pc - dl.held
      // As the scheduler does: never ask the origin for a piece it declined a moment ago.
      const until = new Float64Array(dl.pc)
      deferred = until
      peerHas = { has: (i) => until[i]! <= now }
    }
    linkState[slot * LINK_STATE + USEFUL] = useful
    linkState[slot * LINK_STATE + FREE] = free
    const link: Link = { peer, origin, dl, slot, word, bit, requested, peerHas }
    if (origin) {
      link.deferredUntil = deferred
      dl.originLink = link
    } else {
      watchers[dl.layer]![peer]!.push(slot)
    }
    // The places the scheduler counts against its peer limit: the origin takes none.
    if (countsTowardPeerLimit(link)) dl.peerLinks++
    linkAt[slot] = link
    // In the scheduler's order: the origin is asked only for what the others cannot give.
    let at = dl.links.length
    while (at > 0 && sourceOrder(link, dl.links[at - 1]!) < 0) at--
    if (at === dl.links.length) dl.links.push(link)
    else dl.links.splice(at, 0, link)
    if (!dl.complete) dlState[dl.id * DL_STATE + DL_LINKS] = dl.links.length
  }

  /** True when a peer link of `dl` has shown piece `index` (the scheduler's agentHolds). */
  function agentShows(dl: Download, index: number): boolean {
    // The origin's link counts towards every piece's availability.
    return pieceState[dl.pieces + index * pieceStride + P_AVAIL]! > (dl.originLink === undefined ? 0 : 1)
  }

  /** The sought pieces still missing that no peer link has shown (the scheduler prunes them each pass). */
  function soughtCount(dl: Download): number {
    const sought = dl.sought
    if (sought === undefined) return 0
    for (const i of sought)
      if (pieceState[dl.pieces + i * pieceStride + P_HAVE] === 1 || agentShows(dl, i)) sought.delete(i)
    return sought.size
  }

  /** True when `peer` has shown a piece `dl` seeks. */
  function holdsSought(dl: Download, peer: number): boolean {
    if (dl.sought === undefined || dl.sought.size === 0) return false
    const shown = downloads[dl.layer]![peer]!.shown
    for (const i of dl.sought) if (shown[i] === 1) return true
    return false
  }

  /** Whether the scheduler would look for more peers (wantsMorePeers over the live agents). */
  function wantsPeers(dl: Download): boolean {
    return wantsMorePeers(
      dl.peerLinks,
      limitOf(dl),
      dl.peerLinks < limitOf(dl) ? 0 : soughtCount(dl),
      soughtExtraPeers,
    )
  }

  /**
   * The scheduler's searchPeers: adds peers of the cached answer up to the peer limit,
   * and beyond it those that hold a sought piece (admitsPeer).
   */
  function applyAnswer(dl: Download, a: Answer): void {
    let live = dl.peerLinks
    const limit = limitOf(dl)
    if (live >= limit) soughtCount(dl)
    for (const p of a.peers) {
      if (dl.linked.has(p)) continue
      if (!admitsPeer(live, limit, live >= limit && holdsSought(dl, p), soughtExtraPeers)) {
        if (live >= limit + soughtExtraPeers) break
        continue
      }
      addLink(dl, p)
      live++
    }
    if (a.allowOrigin && !dl.linked.has(ORIGIN)) addLink(dl, ORIGIN)
    scheduleAll(dl)
  }

  function scheduleFind(dl: Download): void {
    if (dl.findScheduled || dl.complete || !wantsPeers(dl)) return
    dl.findScheduled = true
    if (dl.peerLinks === 0) queue.push(now + 1_000, EV_FIND, dl, 0, LANE_FIND_NONE)
    else queue.push(now + peerSearchInterval, EV_FIND, dl, 0, LANE_FIND)
  }

  /**
   * The scheduler searches at once when its peer limit rises (the download left its
   * start, or half of its peers answered busy) rather than at the next interval.
   */
  function findNow(dl: Download): void {
    if (dl.complete || !wantsPeers(dl)) return
    queue.push(now, EV_FIND, dl, 0, LANE_FIND)
  }

  function onFind(dl: Download): void {
    dl.findScheduled = false
    if (dl.complete || !wantsPeers(dl) || dl.awaitingAnswer) return
    const a = dl.answer
    const barren = a === undefined || (a.peers.length === 0 && !a.allowOrigin)
    if (barren && now - dl.answerAt >= barrenRetry) {
      dl.awaitingAnswer = true
      announce(dl, 0)
      return
    }
    if (a !== undefined) applyAnswer(dl, a)
    scheduleFind(dl)
  }

  function onAnswer(a: Answer): void {
    const dl = a.dl
    if (dl.complete) return
    dl.answer = a
    dl.answerAt = now
    // The router re-announces every interval the tracker asked for.
    announce(dl, announceInterval)
    if (dl.awaitingAnswer) {
      dl.awaitingAnswer = false
      applyAnswer(dl, a)
      scheduleFind(dl)
    }
  }

  /** Requests the download may still start under the scheduler's caps (inFlightCap). */
  function inFlightRoom(dl: Download): number {
    if (maxInFlight <= 0 && aheadMaxInFlight <= 0) return Number.POSITIVE_INFINITY
    let peersHeld = 0
    let peers = 0
    let inFlight = 0
    for (const l of dl.links) {
      inFlight += linkState[l.slot * LINK_STATE + ASKED]!
      if (l.origin || aheadMaxInFlight <= 0) continue
      peersHeld += downloads[dl.layer]![l.peer]!.shownCount
      peers++
    }
    const ahead = aheadMaxInFlight > 0 && isAheadOfPeers(dl.held, peersHeld, peers)
    return inFlightCap({ maxInFlight, aheadMaxInFlight, ahead }) - inFlight
  }

  /**
   * pickPiece over the `k` pieces gathered in pickIndex (see SimConfig.narrowPicks), as
   * a piece index of the download; undefined when it picks none.
   */
  function pickGathered(
    k: number,
    rules: SourcePickRules,
    peerHas: PieceSet,
    inFlight: ArrayLike<number>,
    requested: PieceSet,
  ): number | undefined {
    const next = pickPiece({
      pieceCount: k,
      have: NO_PIECES,
      peerHas,
      inFlight,
      requestedFromPeer: requested,
      availability: pickAvail,
      windowSize,
      endgameThreshold,
      // Outside the streaming window: a readPosition never reaches here.
      maxDuplicates: rules.maxDuplicates,
      rng,
    })
    return next === undefined ? undefined : pickIndex[next.index]
  }

  function scheduleLink(dl: Download, link: Link): void {
    const at = link.slot * LINK_STATE
    if (dl.complete || linkState[at + BUSY_UNTIL]! > now || linkState[at + USEFUL]! <= linkState[at + ASKED]!)
      return
    // Outside endgame pickPiece only picks pieces nobody is fetching: none, nothing to call it for.
    if ((link.origin ? dl.unclaimed : linkState[at + FREE]) === 0 && dl.pc - dl.held > endgameThreshold)
      return
    let room = inFlightRoom(dl)
    const slotsFor = (link.origin ? originRequestSlots : peerRequestSlots)[dl.links.length]!
    // What pickPiece is told for this source (the scheduler's sourcePickRules).
    const rules = sourcePickRules(link, streaming && dl.readPos < dl.pc ? dl.readPos : undefined)
    while (linkState[at + ASKED]! < slotsFor && room > 0) {
      const reading = rules.readPosition !== undefined
      if (narrowPicks && !reading) {
        let index: number | undefined
        if (dl.pc - dl.held > endgameThreshold) {
          // Only the pieces pickPiece may pick here (see SimConfig.narrowPicks).
          const k = gatherFree(dl, link)
          if (k === 0) return
          index = pickGathered(k, rules, ALL_PIECES, NO_COUNTS, NO_PIECES)
        } else {
          // Endgame: only the pieces still missing (see SimConfig.narrowPicks).
          const k = gatherMissing(dl)
          const { peerHas, requested } = link
          index = pickGathered(k, rules, { has: (j) => peerHas.has(pickIndex[j]!) }, pickInFlight, {
            has: (j) => requested.has(pickIndex[j]!),
          })
        }
        if (index === undefined) return
        room--
        request(dl, link, index)
        continue
      }
      for (let i = 0, r = dl.pieces; i < dl.pc; i++, r += pieceStride) {
        allInFlight[i] = pieceState[r + P_IN_FLIGHT]!
        allAvail[i] = pieceState[r + P_AVAIL]!
      }
      const next = pickPiece({
        pieceCount: dl.pc,
        have: dl.haveSet,
        peerHas: link.peerHas,
        inFlight: allInFlight,
        requestedFromPeer: link.requested,
        availability: allAvail,
        windowSize,
        endgameThreshold,
        ...rules,
        rng,
      })
      if (next === undefined) return
      room--
      request(dl, link, next.index)
    }
  }

  /**
   * The pieces pickPiece may pick for `link` outside endgame and the streaming window:
   * those the peer has shown (for the origin: not declined a moment ago) that are
   * neither held nor in flight, in index order, into pickIndex, and their availability
   * into pickAvail. Returns how many.
   */
  function gatherFree(dl: Download, link: Link): number {
    const free = dl.bits
    const bitWords = dl.bitWords
    const avail = dl.pieces + P_AVAIL
    let k = 0
    if (link.origin) {
      const deferred = link.deferredUntil!
      for (let w = 0; w < bitWords; w++) {
        let mask = freeBits[free + w]!
        while (mask !== 0) {
          const low = mask & -mask
          mask ^= low
          const i = (w << 5) + 31 - Math.clz32(low)
          if (deferred[i]! > now) continue
          pickIndex[k] = i
          pickAvail[k++] = pieceState[avail + i * pieceStride]!
        }
      }
      return k
    }
    // The peer's download of the same layer: its bits are found without visiting it.
    const shown = layerBitBase[dl.layer]! + link.peer * bitWords
    for (let w = 0; w < bitWords; w++) {
      let mask = freeBits[free + w]! & shownBits[shown + w]!
      while (mask !== 0) {
        const low = mask & -mask
        mask ^= low
        const i = (w << 5) + 31 - Math.clz32(low)
        pickIndex[k] = i
        pickAvail[k++] = pieceState[avail + i * pieceStride]!
      }
    }
    return k
  }

  /**
   * The pieces the download still lacks, in index order, into pickIndex, with their
   * requests in flight into pickInFlight and their availability into pickAvail.
   * Returns how many.
   */
  function gatherMissing(dl: Download): number {
    const missing = dl.bits
    const bitWords = dl.bitWords
    let k = 0
    for (let w = 0; w < bitWords; w++) {
      let mask = missingBits[missing + w]!
      while (mask !== 0) {
        const low = mask & -mask
        mask ^= low
        const i = (w << 5) + 31 - Math.clz32(low)
        const r = dl.pieces + i * pieceStride
        pickIndex[k] = i
        pickInFlight[k] = pieceState[r + P_IN_FLIGHT]!
        pickAvail[k++] = pieceState[r + P_AVAIL]!
      }
    }
    return k
  }

  /**
   * scheduleLink for every link of the download, in the scheduler's order. A link that
   * is left alone after a busy answer, or whose peer holds nothing beyond what is asked
   * of it already, is passed over here from the per-link arrays alone (scheduleLink
   * would return at once for it; nothing a link's requests change makes another link of
   * the download able to take one).
   */
  function scheduleAll(dl: Download): void {
    if (dl.complete) return
    const links = dl.links
    const most = peerRequestSlots[links.length]!
    for (let k = 0; k < links.length; k++) {
      const link = links[k]!
      if (!link.origin) {
        const at = link.slot * LINK_STATE
        const asked = linkState[at + ASKED]!
        if (asked >= most || linkState[at + BUSY_UNTIL]! > now || linkState[at + USEFUL]! <= asked) continue
        if (linkState[at + FREE] === 0 && dl.pc - dl.held > endgameThreshold) continue
      }
      scheduleLink(dl, link)
    }
  }

  function request(dl: Download, link: Link, index: number): void {
    const req: Req = { dl, link, index, flow: undefined, admittedAt: 0, cancelled: false, next: undefined }
    linkState[link.slot * LINK_STATE + ASKED]!++
    const r = dl.pieces + index * pieceStride
    pieceState[r + pAskedOf + link.word]! |= link.bit
    if (pieceState[r + P_IN_FLIGHT]!++ === 0) claim(dl, index, -1)
    const first = dl.pending[index]
    if (first === undefined) dl.pending[index] = req
    else {
      let last = first
      while (last.next !== undefined) last = last.next
      last.next = req
    }
    queue.push(now + lat, EV_REQ_ARRIVE, req, 0, LANE_LATENCY)
  }

  /**
   * A piece not held became free (delta 1) or stopped being free (-1): the counts of the
   * peer links whose peer has shown it follow.
   */
  function claim(dl: Download, index: number, delta: number): void {
    dl.unclaimed += delta
    if (delta < 0) freeBits[dl.bits + (index >>> 5)]! &= ~(1 << (index & 31))
    else freeBits[dl.bits + (index >>> 5)]! |= 1 << (index & 31)
    const at = dl.pieces + index * pieceStride + P_SHOWN_BY
    for (let w = 0; w < words; w++) {
      let mask = pieceState[at + w]!
      const base = dl.slotBase + (w << 5)
      while (mask !== 0) {
        const low = mask & -mask
        linkState[(base + 31 - Math.clz32(low)) * LINK_STATE + FREE]! += delta
        mask ^= low
      }
    }
  }

  function release(req: Req): void {
    const { dl, link, index } = req
    linkState[link.slot * LINK_STATE + ASKED]!--
    const r = dl.pieces + index * pieceStride
    pieceState[r + pAskedOf + link.word]! &= ~link.bit
    if (--pieceState[r + P_IN_FLIGHT]! === 0 && pieceState[r + P_HAVE] === 0) claim(dl, index, 1)
    const first = dl.pending[index]
    if (first === req) dl.pending[index] = req.next
    else {
      let before = first
      while (before !== undefined && before.next !== req) before = before.next
      if (before !== undefined) before.next = req.next
    }
    req.next = undefined
  }

  /** One number per (sender, layer, piece), for uploadsOfPiece. */
  function uploadKey(req: Req): number {
    return (req.link.peer * L + req.dl.layer) * maxPieceCount + req.index
  }

  /** Whether copies of `req`'s piece are counted: the per-piece rule is on and the sender is a node. */
  function countsCopies(req: Req): boolean {
    return maxUploadsPerPiece > 0 && req.link.peer !== ORIGIN
  }

  /** A sender's upload of `req`'s piece starts. */
  function uploadStarted(req: Req): void {
    req.admittedAt = now
    if (!countsCopies(req)) return
    const key = uploadKey(req)
    uploadsOfPiece.set(key, (uploadsOfPiece.get(key) ?? 0) + 1)
  }

  /** A sender's upload of `req`'s piece ended (landed or cancelled). */
  function uploadEnded(req: Req): void {
    turnsOf(req.link.peer).ended(now - req.admittedAt)
    if (!countsCopies(req)) return
    const key = uploadKey(req)
    const left = (uploadsOfPiece.get(key) ?? 1) - 1
    if (left <= 0) uploadsOfPiece.delete(key)
    else uploadsOfPiece.set(key, left)
  }

  function onRequestArrive(req: Req): void {
    if (req.cancelled) return
    const sender = req.link.peer
    const cap =
      sender === ORIGIN
        ? originMaxUploads
        : uploadCaps === undefined
          ? maxUploads
          : uploadCaps[sender]!.current()
    // The sender's record of the piece (a node's; -1 for the origin).
    const dl = req.dl
    const held =
      sender === ORIGIN ? -1 : (layerPieceBase[dl.layer]! + sender * dl.pc + req.index) * pieceStride
    const uploading = net.outFlows(sender)
    // The piece server's per-piece rule: a copy beyond maxUploadsPerPiece is busy too.
    const copiesFull = countsCopies(req) && (uploadsOfPiece.get(uploadKey(req)) ?? 0) >= maxUploadsPerPiece
    // Only a sender at its cap looks at the first-copy priority: a piece it got from the
    // origin and has started fewer than firstCopyPriority uploads of.
    const atCap =
      copiesFull ||
      (!turnsOf(sender).admit(dl.node, uploading, cap) &&
        !(
          held >= 0 &&
          firstCopyPriority > 0 &&
          pieceState[held + P_FIRST_COPY]! >= 1 &&
          pieceState[held + P_FIRST_COPY]! - 1 < firstCopyPriority &&
          uploading < cap + priorityExtra
        ))
    if (atCap) {
      // Busy: the answer travels back, then the peer is left alone for a while.
      busyAnswers++
      release(req)
      const until = now + lat + busyBackoff
      linkState[req.link.slot * LINK_STATE + BUSY_UNTIL] = until
      if (busyExtraPeers > 0 && !dl.busyCrowded) {
        let live = 0
        let busy = 0
        for (const l of dl.links) {
          if (l.origin) continue
          live++
          if (linkState[l.slot * LINK_STATE + BUSY_UNTIL]! > now) busy++
        }
        if (crowdedByBusy(live, busy, maxPeers)) {
          dl.busyCrowded = true
          findNow(dl)
        }
      }
      queue.push(until, EV_WAKE, dl, 0, LANE_BUSY)
      // Another peer may take the piece meanwhile.
      scheduleAll(dl)
      return
    }
    if (sender === ORIGIN) hearSpread(req.dl.layer)
    if (
      sender === ORIGIN &&
      !firstCopy.admit(layerDigest(req.dl.layer), req.index, req.dl.pc, String(req.dl.node))
    ) {
      // Declined (not-held): the node leaves this piece at the origin for a while.
      declinedAnswers++
      release(req)
      const deferred = req.link.deferredUntil
      if (deferred !== undefined) deferred[req.index] = now + lat + originDefer
      // Nobody the download uses has shown it: its holder is sought among other peers.
      if (soughtExtraPeers > 0 && !agentShows(req.dl, req.index)) {
        req.dl.sought ??= new Set()
        req.dl.sought.add(req.index)
        scheduleFind(req.dl)
      }
      queue.push(now + lat + originDefer, EV_WAKE, req.dl, 0, LANE_DEFER)
      queue.push(now + lat, EV_WAKE, req.dl, 0, LANE_LATENCY)
      return
    }
    if (held >= 0 && pieceState[held + P_FIRST_COPY]! >= 1) pieceState[held + P_FIRST_COPY]!++
    uploadStarted(req)
    req.flow = net.start(sender, req.dl.node, pieceBytes(req.dl.layer, req.index), now, req)
  }

  /** The seed's announce answer for layer `l`, at most every SEED_ANNOUNCE_MS. */
  function hearSpread(l: number): void {
    if (now - spreadHeardAt[l]! < SEED_ANNOUNCE_MS) return
    spreadHeardAt[l] = now
    firstCopy.spread(layerDigest(l), spreadBitfield(holders[l]!))
  }

  function onDeliver(req: Req): void {
    if (req.cancelled) return
    const { dl, index } = req
    if (uploadCaps !== undefined && req.link.peer !== ORIGIN) {
      const bytes = pieceBytes(dl.layer, index)
      uploadCaps[req.link.peer]!.sent(bytes, bytes)
    }
    release(req)
    // The seed's first-copy hold of a piece starts when its send has ended.
    if (req.link.peer === ORIGIN) firstCopy.delivered(layerDigest(dl.layer), index)
    const r = dl.pieces + index * pieceStride
    if (pieceState[r + P_HAVE] === 1) {
      duplicates++
      scheduleLink(dl, req.link)
      return
    }
    delivered++
    holders[dl.layer]![index]!++
    usefulBytes += pieceBytes(dl.layer, index)
    if (req.link.peer === ORIGIN) pieceState[r + P_FIRST_COPY] = 1
    config.onPiece?.(dl.node, dl.layer, index, req.link.peer, now)
    pieceState[r + P_HAVE] = 1
    missingBits[dl.bits + (index >>> 5)]! &= ~(1 << (index & 31))
    const limitBefore = limitOf(dl)
    dl.held++
    if (limitOf(dl) > limitBefore) findNow(dl)
    dlState[dl.id * DL_STATE + DL_MISSING]!--
    if (pieceState[r + P_IN_FLIGHT] === 0) claim(dl, index, -1)
    // Every link whose peer has it can give one piece less.
    for (let w = 0; w < words; w++) {
      let mask = pieceState[r + P_SHOWN_BY + w]!
      const base = dl.slotBase + (w << 5)
      while (mask !== 0) {
        const low = mask & -mask
        linkState[(base + 31 - Math.clz32(low)) * LINK_STATE + USEFUL]!--
        mask ^= low
      }
    }
    const o = dl.originLink
    if (o?.peerHas.has(index)) linkState[o.slot * LINK_STATE + USEFUL]!--
    while (dl.readPos < dl.pc && pieceState[dl.pieces + dl.readPos * pieceStride + P_HAVE] === 1) dl.readPos++
    // Endgame duplicates of this piece are no longer needed.
    for (let o = dl.pending[index]; o !== undefined; o = dl.pending[index]) {
      o.cancelled = true
      if (o.flow !== undefined) {
        net.remove(o.flow, now)
        uploadEnded(o)
      }
      // A send from the seed broken off frees the piece there.
      if (o.flow !== undefined && o.link.peer === ORIGIN) firstCopy.failed(layerDigest(dl.layer), index)
      release(o)
    }
    queue.push(now + haveDelay, EV_HAVE, dl, index, LANE_HAVE)
    if (!dl.announcedHolding) {
      dl.announcedHolding = true
      announce(dl, 0)
    }
    if (dl.held === dl.pc) {
      dl.complete = true
      dlState[dl.id * DL_STATE + DL_LINKS] = -1
      announce(dl, 0)
      const n = dl.node
      if (--layersLeft[n]! === 0) {
        completionMs[n] = now - startMs[n]!
        done++
      }
      return
    }
    scheduleAll(dl)
  }

  function onHave(dl: Download, index: number): void {
    dl.shown[index] = 1
    shownBits[dl.bits + (index >>> 5)]! |= 1 << (index & 31)
    dl.shownCount++
    const l = dl.layer
    const list = watchers[l]![dl.node]!
    // Every watcher is a download of the same layer: its pieces start at a known place.
    const firstId = l * N
    const pc = dl.pc
    const pieceAt = layerPieceBase[l]! + index
    for (let j = 0; j < list.length; j++) {
      const slot = list[j]!
      const id = (slot / linksPer) | 0
      const links = dlState[id * DL_STATE + DL_LINKS]!
      if (links < 0) continue
      const r = (pieceAt + (id - firstId) * pc) * pieceStride
      pieceState[r + P_AVAIL]!++
      const k = slot - id * linksPer
      pieceState[r + P_SHOWN_BY + (k >>> 5)]! |= 1 << (k & 31)
      if (pieceState[r + P_HAVE] === 1) continue
      const at = slot * LINK_STATE
      const useful = ++linkState[at + USEFUL]!
      if (pieceState[r + P_IN_FLIGHT] === 0) linkState[at + FREE]!++
      // Passed over when scheduleLink would return at once (see scheduleAll).
      const asked = linkState[at + ASKED]!
      if (asked >= peerRequestSlots[links]! || linkState[at + BUSY_UNTIL]! > now || useful <= asked) continue
      if (linkState[at + FREE] === 0 && dlState[id * DL_STATE + DL_MISSING]! > endgameThreshold) continue
      scheduleLink(byId[id]!, linkAt[slot]!)
    }
  }

  const timelineMs = config.timelineMs ?? 0
  const timeline: TimelinePoint[] = []
  /** Rates only change at events, so the rates as they stand before `ev` hold at `t`. */
  function sample(t: number): void {
    let downUse = 0
    let upUse = 0
    let pulling = 0
    let idleOnBusy = 0
    for (let n = 0; n < N; n++) {
      let u = 0
      for (const f of net.out[n]!) u += net.rateOf(f)
      upUse += u / up[n]!
      if (completionMs[n]! >= 0) continue
      pulling++
      let r = 0
      for (const f of net.in[n]!) r += net.rateOf(f)
      const busy = r / down[n]!
      downUse += busy
      if (busy >= 0.3) continue
      let useful = 0
      let waiting = 0
      for (let l = 0; l < L; l++) {
        const dl = downloads[l]![n]!
        if (dl.complete) continue
        for (const link of dl.links) {
          const at = link.slot * LINK_STATE
          if (linkState[at + USEFUL]! <= linkState[at + ASKED]!) continue
          if (linkState[at + BUSY_UNTIL]! > t) waiting++
          else useful++
        }
      }
      if (useful === 0 && waiting > 0) idleOnBusy++
    }
    let o = 0
    for (const f of net.out[ORIGIN]!) o += net.rateOf(f)
    timeline.push({
      t: t / 1000,
      pulling,
      downBusy: pulling > 0 ? downUse / pulling : 0,
      upBusy: upUse / N,
      originBusy: o / up[ORIGIN]!,
      idleOnBusy,
    })
  }
  let nextSample = timelineMs > 0 ? 0 : Number.POSITIVE_INFINITY
  let nextProgress = 0
  while (queue.next()) {
    const ev = queue
    while (ev.t >= nextSample) {
      sample(nextSample)
      nextSample += timelineMs
    }
    now = ev.t
    events++
    switch (ev.kind) {
      case EV_FLOW_DONE: {
        const flow = ev.ref as Flow
        if (!net.due(flow, ev.version, now)) break
        net.remove(flow, now)
        uploadEnded(flow.owner as Req)
        queue.push(now + lat, EV_DELIVER, flow.owner, 0, LANE_LATENCY)
        break
      }
      case EV_REQ_ARRIVE:
        onRequestArrive(ev.ref as Req)
        break
      case EV_DELIVER:
        onDeliver(ev.ref as Req)
        break
      case EV_HAVE:
        onHave(ev.ref as Download, ev.version)
        break
      case EV_ANNOUNCE: {
        const dl = ev.ref as Download
        if (ev.version !== dl.announceVersion) break
        // The announce travels to the tracker; the tracker acts on arrival.
        queue.push(now + lat, EV_TRACKER, dl, 0, LANE_LATENCY)
        break
      }
      case EV_TRACKER:
        trackerAnnounce(ev.ref as Download)
        break
      case EV_ANSWER:
        onAnswer(ev.ref as Answer)
        break
      case EV_FIND:
        onFind(ev.ref as Download)
        break
      case EV_WAKE: {
        scheduleAll(ev.ref as Download)
        break
      }
      case EV_START: {
        const n = ev.ref as number
        for (let l = 0; l < L; l++) announce(downloads[l]![n]!, 0)
        break
      }
    }
    if (done === N) break
    if (config.onProgress && events >= nextProgress) {
      nextProgress = events + 500_000
      config.onProgress(done, now, events)
    }
  }
  if (done < N) throw new Error(`simulation stalled: ${done} of ${N} nodes done at ${now} ms`)

  const completion = Array.from(completionMs)
  return {
    completionMs: completion,
    lastDoneMs: Math.max(...completion.map((c, n) => c + startMs[n]!)),
    originBytes: net.sent[ORIGIN]!,
    imageBytes: config.imageBytes,
    pieceSize: pieceSizes,
    pieces: pieceCounts.reduce((a, b) => a + b, 0),
    events,
    deliveredPieces: delivered,
    duplicatePieces: duplicates,
    wastedBytes: net.sent.reduce((a, b) => a + b, 0) - usefulBytes,
    busyAnswers,
    declinedAnswers,
    wallMs: performance.now() - wallStart,
    ...(timelineMs > 0 ? { timeline } : {}),
  }
}
