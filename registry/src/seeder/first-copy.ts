/**
 * The seed's first-copy rule: while a swarm is pulling a blob, the seed sends each piece
 * once and lets the agents pass it on, instead of sending the same piece to every agent
 * that holds an origin slot. Agents that start together ask for the same pieces at the
 * same moment (their clients all read from byte 0); without this rule the origin sends
 * a blob once per slot holder.
 *
 * A piece already sent to another peer is refused (the piece server answers not-held,
 * and the agent asks its peers or the seed for another piece) while some piece of the
 * blob has not been sent at all, while its send is still running, and for a hold after
 * the send finished; after that it is served again. The hold counts from the end of the
 * send, not its start: on slow or crowded links one piece can take longer than a fixed
 * hold to arrive, and a hold counted from the start let the seed send such pieces a
 * second time (1.4x the image at 5 Mbit per node). The hold is `repeatAfterMs`, or as
 * long as the blob's swarm had been pulling when the send finished if that is longer: a
 * swarm that needs two minutes to spread its pieces gets two minutes per piece, while
 * a holder that never passes a piece on is still bypassed in the end. A send that
 * broke off frees the piece at once, and so does a last recipient that is no longer
 * connected to the seed (stopped, restarted, crashed): the swarm may have lost its only
 * copy. The peer that got it may always ask again (a retry). The rule is in memory and
 * per seed process: a restarted seed serves each piece once more.
 *
 * The hold is a time only while the seed does not know better. The tracker tells the
 * seed, in its answers to the seed's announces, which pieces at least two agents hold
 * (`spread`); such a piece is not sent again while that word is fresh (SPREAD_FRESH_MS),
 * whatever the hold and whether its last recipient is still connected: the swarm has it,
 * and an agent that asks the seed for it learns that it must look among its peers (the
 * scheduler's `sought` pieces). Without it a pull slower than the hold had the seed send
 * its early pieces again: 1.13-1.24x the image at N = 50 on the 2-core testbed
 * (docs/BENCHMARKS.md, cluster, nineteenth and twentieth rounds).
 */
import type { Bitfield, Digest } from '../../../protocol/src/index.js'

/**
 * How long the tracker's word that a piece is spread is taken: three of its default
 * 10 s announce intervals, so one late announce does not end it, and a swarm that lost
 * its holders since (stopped agents) gets the piece from the seed again within 30 s.
 */
export const SPREAD_FRESH_MS = 30_000

/**
 * The shortest hold, by default (`seed.repeatPieceAfterMs`). It was 60 s: at 2 Mbit per
 * node a piece sent early in a pull had not spread through the swarm by then and the
 * seed sent it again (testbed N = 50: 1.55x the image; simulator: 1.28x at N = 10,
 * 1.62-1.73x at N = 50). With 3 minutes the simulator's seed sends 1.00x at 2, 5 and
 * 20 Mbit, with the same completion times. A holder that stays connected but never
 * passes a piece on delays the others' copy of it by as long. Past the hold, a piece
 * the tracker says is spread stays held (see the file comment).
 */
export const DEFAULT_REPEAT_AFTER_MS = 180_000

/** Options for createFirstCopyRule. */
export interface FirstCopyInit {
  /**
   * Shortest hold after a piece's send finished before the seed sends it to another peer
   * (longer while the blob's swarm has been pulling longer); 0 disables the rule.
   */
  repeatAfterMs: number
  /** Blobs tracked at once; the least recently asked are forgotten beyond it. @default 1024 */
  maxBlobs?: number
  /** Called on every refusal (metrics). */
  onRefused?: () => void
  /**
   * Called when a piece already sent to another peer is sent again (metrics): `expired`
   * after its hold ran out, `gone` because its last recipient left the seed.
   */
  onRepeated?: (reason: 'expired' | 'gone') => void
  /**
   * True while `peer` is connected to the seed; a piece sent to a peer that is gone is
   * not held back. @default every peer counts as connected
   */
  isConnected?: (peer: string) => boolean
  /** Clock (tests). @default Date.now */
  now?: () => number
}

/** Decides whether the seed sends a piece now. */
export interface FirstCopyRule {
  /**
   * True when piece `index` of `digest` (a blob of `pieceCount` pieces) may be sent to
   * `peer` now, and records it as sent; false when it went to another peer and its send
   * is still running or its hold has not run out, or at all while other pieces were
   * never sent.
   */
  admit(digest: Digest, index: number, pieceCount: number, peer?: string): boolean
  /** The send of piece `index` of `digest` admitted last has finished: its hold starts now. */
  delivered(digest: Digest, index: number): void
  /** The send of piece `index` of `digest` admitted last broke off: the piece is free again. */
  failed(digest: Digest, index: number): void
  /**
   * The tracker's word on `digest`: the pieces at least two agents hold (undefined:
   * none). Kept for SPREAD_FRESH_MS; a blob the rule does not track yet is ignored.
   */
  spread(digest: Digest, pieces: Bitfield | undefined): void
  /** Pieces refused since start. */
  refused(): number
}

/** The last send of one piece: to whom, and until when it is held (undefined while it runs). */
interface Sent {
  peer: string | undefined
  heldUntil: number | undefined
}

/** The sends of one blob and when its first piece went out. */
interface BlobSends {
  since: number
  pieces: Map<number, Sent>
  /** The tracker's last word on which pieces are spread, and when it came. */
  spread?: { pieces: Bitfield; at: number }
}

/** Creates the rule; with `repeatAfterMs` 0 it admits everything. */
export function createFirstCopyRule(init: FirstCopyInit): FirstCopyRule {
  const repeatAfterMs = init.repeatAfterMs
  const maxBlobs = init.maxBlobs ?? 1024
  const now = init.now ?? Date.now
  /** The sends of each blob; Map order is least recently asked first. */
  const sentAt = new Map<Digest, BlobSends>()
  let refusals = 0

  return {
    admit(digest, index, pieceCount, peer) {
      if (repeatAfterMs <= 0) return true
      const t = now()
      let blob = sentAt.get(digest)
      if (blob === undefined) {
        blob = { since: t, pieces: new Map() }
        if (sentAt.size >= maxBlobs) {
          const oldest = sentAt.keys().next().value
          if (oldest !== undefined) sentAt.delete(oldest)
        }
      } else {
        sentAt.delete(digest)
      }
      sentAt.set(digest, blob)
      const { pieces } = blob
      const last = pieces.get(index)
      const other = last !== undefined && (peer === undefined || peer !== last.peer)
      const gone = other && last.peer !== undefined && init.isConnected?.(last.peer) === false
      const held = last?.heldUntil === undefined || t < last.heldUntil || pieces.size < pieceCount
      const spread =
        blob.spread !== undefined &&
        t - blob.spread.at <= SPREAD_FRESH_MS &&
        index < blob.spread.pieces.length &&
        blob.spread.pieces.get(index)
      if (other && ((!gone && held) || spread)) {
        refusals++
        init.onRefused?.()
        return false
      }
      if (other) init.onRepeated?.(gone ? 'gone' : 'expired')
      pieces.set(index, { peer, heldUntil: undefined })
      return true
    },

    delivered(digest, index) {
      const blob = sentAt.get(digest)
      const last = blob?.pieces.get(index)
      if (blob === undefined || last === undefined || last.heldUntil !== undefined) return
      const t = now()
      last.heldUntil = t + Math.max(repeatAfterMs, t - blob.since)
    },

    failed(digest, index) {
      const pieces = sentAt.get(digest)?.pieces
      if (pieces?.get(index)?.heldUntil === undefined) pieces?.delete(index)
    },

    spread(digest, spread) {
      const blob = sentAt.get(digest)
      if (blob === undefined) return
      if (spread === undefined) delete blob.spread
      else blob.spread = { pieces: spread, at: now() }
    },

    refused() {
      return refusals
    },
  }
}
