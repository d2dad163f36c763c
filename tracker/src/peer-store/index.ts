/**
 * Where the tracker keeps swarm state. The tracker itself is stateless over a PeerStore,
 * so several tracker replicas can share one Redis store. Every method takes the current
 * time `nowMs` from the caller (the tracker's clock), so expiry is deterministic in tests
 * and identical across implementations; every implementation passes the conformance
 * suite in conformance.ts.
 */
import type { Digest } from '../../../protocol/src/index.js'

/** One peer of one swarm as stored. */
export interface PeerRecord {
  peerId: string
  multiaddrs: string[]
  role: 'peer' | 'seed'
  complete: boolean
  piecesHeld?: number
  pieceCount?: number
  /** Base64 bitfield of held pieces, as announced. */
  bitfield?: string
  uploadLoad: number
  zone?: string
  rack?: string
  /** When the peer last announced. */
  lastSeenMs: number
}

/** Counts over the whole store (for metrics). */
export interface PeerStoreStats {
  swarms: number
  complete: number
  partial: number
  seeds: number
}

/** Per-swarm counts. */
export interface SwarmCounts {
  digest: Digest
  peers: number
  complete: number
  seeds: number
  originSlotsInUse: number
}

/** Options shared by store calls. */
export interface StoreOptions {
  signal?: AbortSignal
}

/** Options of PeerStore.acquireOriginSlot. */
export interface AcquireOriginOptions extends StoreOptions {
  /**
   * Grant no slot to a peer holding one of another swarm (hand-out.ts,
   * originSlotExclusive): only slots recorded with `recordHolder` count. @default false
   */
  exclusive?: boolean
  /**
   * Also record a slot granted under its peer, where `exclusive` acquisitions of other
   * swarms look. The tracker records only with its exclusiveOriginSlots on: otherwise
   * nothing reads the record. @default false
   */
  recordHolder?: boolean
}

/** Swarm state: peers, origin slots, bad-peer reports and bans, all with expiry. */
export interface PeerStore {
  /** Inserts or refreshes a peer; it expires `ttlMs` after `peer.lastSeenMs` unless refreshed. */
  upsertPeer(digest: Digest, peer: PeerRecord, ttlMs: number, options?: StoreOptions): Promise<void>
  /** Removes a peer and any origin slot it holds. Removing an absent peer is not an error. */
  removePeer(digest: Digest, peerId: string, options?: StoreOptions): Promise<void>
  /** The peers of a swarm that have not expired at `nowMs`, in no particular order. */
  listPeers(digest: Digest, nowMs: number, options?: StoreOptions): Promise<PeerRecord[]>
  /**
   * Atomically grants an origin slot: true when `peerId` already holds one (its lease is
   * renewed until `nowMs + ttlMs`) or fewer than `limit` unexpired slots are held (it
   * takes one); false otherwise. With `exclusive`, a peer that holds an unexpired slot of
   * another swarm takes none here (one it holds here it keeps): hand-out.ts's
   * grantsOriginSlot. Whether it holds one elsewhere is read just before, not in the
   * same atomic step (the swarms may live on different Redis nodes).
   */
  acquireOriginSlot(
    digest: Digest,
    peerId: string,
    limit: number,
    nowMs: number,
    ttlMs: number,
    options?: AcquireOriginOptions,
  ): Promise<boolean>
  /** Frees a peer's origin slot, if it holds one. */
  releaseOriginSlot(digest: Digest, peerId: string, options?: StoreOptions): Promise<void>
  /** The peer ids holding unexpired origin slots at `nowMs`. */
  listOriginSlots(digest: Digest, nowMs: number, options?: StoreOptions): Promise<string[]>
  /**
   * Records that `reporter` reported `peerId` (a report lasts `ttlMs`) and returns the
   * number of distinct unexpired reporters of that peer in that swarm, atomically.
   */
  addReport(
    digest: Digest,
    peerId: string,
    reporter: string,
    nowMs: number,
    ttlMs: number,
    options?: StoreOptions,
  ): Promise<number>
  /** Bans a peer from a swarm until `untilMs`: removes it, its origin slot and its reports, atomically. */
  ban(digest: Digest, peerId: string, untilMs: number, options?: StoreOptions): Promise<void>
  /** True when the peer is banned from the swarm at `nowMs`. */
  isBanned(digest: Digest, peerId: string, nowMs: number, options?: StoreOptions): Promise<boolean>
  /** Peer ids banned from the swarm at `nowMs`. */
  listBanned(digest: Digest, nowMs: number, options?: StoreOptions): Promise<string[]>
  /** Swarms with at least one unexpired peer at `nowMs`, with counts, sorted by digest. */
  listSwarms(nowMs: number, options?: StoreOptions): Promise<SwarmCounts[]>
  /** Counts for metrics at `nowMs`. */
  stats(nowMs: number, options?: StoreOptions): Promise<PeerStoreStats>
  start(): Promise<void>
  /** Releases connections and timers; safe to call twice. */
  stop(): Promise<void>
}
