/**
 * The content-routing contract of the agent: where to find peers that hold (or are
 * fetching) a blob, and how to tell the world what this agent holds. Implemented by the
 * tracker (TrackerRouter), the DHT (DhtRouter) and their combination (CombinedRouter).
 */
import type { Bitfield } from '../../../protocol/src/bitfield.js'
import type { Digest } from '../../../protocol/src/index.js'

/** A peer that may serve pieces of a blob. */
export interface ProviderRecord {
  /** The peer id (string form). */
  peerId: string
  /** Where to reach it (may be empty when the libp2p peer store knows the addresses). */
  multiaddrs: string[]
  /** True when the peer holds the whole blob. */
  complete?: boolean
  /** What the peer holds, when the router knows it (tracker hand-outs). */
  bitfield?: Bitfield
  /**
   * The seed (origin) registry's peer. Routers only return seeds the agent may fetch
   * from now (the tracker's allowOrigin, or any seed when routing through the DHT).
   */
  seed?: boolean
}

/** What a download holds, for announces. */
export interface HoldingState {
  digest: Digest
  /** Number of pieces in the blob's piece map. */
  pieceCount: number
  /** Number of pieces held. */
  piecesHeld: number
  /** Held pieces, MSB first (protocol/src/bitfield.ts layout), when partial. */
  bitfield?: Uint8Array
  /** Lifecycle event, when this announce marks one. */
  event?: 'started' | 'completed' | 'stopped'
}

/** Options of findPeers. */
export interface FindPeersOptions {
  signal?: AbortSignal
  /**
   * Pieces in the blob, so routers can size bitfields; without it, bitfields the
   * router learns are not returned.
   */
  pieceCount?: number
}

/**
 * Finds and announces blob holders. Errors: TrackerUnavailableError from a router that
 * needs the tracker and cannot reach it; other routers return what they found.
 */
export interface ContentRouter {
  /** Peers that may serve pieces of `digest` (never this agent). */
  findPeers(digest: Digest, options?: FindPeersOptions): Promise<ProviderRecord[]>
  /** Tells the router what this agent holds of a blob. */
  announce(state: HoldingState, options?: { signal?: AbortSignal }): Promise<void>
  /** Reports a peer that sent a piece failing its sha256 (a no-op for routers without reports). */
  reportBadPeer?(
    report: { peerId: string; digest: Digest; pieceIndex?: number; reason?: string },
    options?: { signal?: AbortSignal },
  ): Promise<void>
  /** Stops periodic work and sends `stopped` announces where they apply; safe to call twice. */
  stop?(): Promise<void>
}
