/**
 * The seed's first-copy rule: while a swarm is pulling a blob, the seed sends each piece
 * once and lets the agents pass it on, instead of sending the same piece to every agent
 * that holds an origin slot. Agents that start together ask for the same pieces at the
 * same moment (their clients all read from byte 0); without this rule the origin sends
 * a blob once per slot holder.
 *
 * A piece already sent to another peer is refused (the piece server answers not-held,
 * and the agent asks its peers or the seed for another piece) while some piece of the
 * blob has not been sent at all, and in any case for `repeatAfterMs` after it was sent;
 * after that it is served again. A piece whose last recipient is no longer connected
 * to the seed (stopped, restarted, crashed) is served at once: the swarm may have lost
 * its only copy. The peer that got it may always ask again (a retry). The rule is in memory and per seed process: a restarted seed serves each
 * piece once more.
 */
import type { Digest } from '../../../protocol/src/index.js'

/** Options for createFirstCopyRule. */
export interface FirstCopyInit {
  /** How long after sending a piece the seed refuses to send it again; 0 disables the rule. */
  repeatAfterMs: number
  /** Blobs tracked at once; the least recently asked are forgotten beyond it. @default 1024 */
  maxBlobs?: number
  /** Called on every refusal (metrics). */
  onRefused?: () => void
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
   * `peer` now, and records it as sent; false when it went to another peer less than
   * `repeatAfterMs` ago, or at all while other pieces were never sent.
   */
  admit(digest: Digest, index: number, pieceCount: number, peer?: string): boolean
  /** Pieces refused since start. */
  refused(): number
}

/** Creates the rule; with `repeatAfterMs` 0 it admits everything. */
export function createFirstCopyRule(init: FirstCopyInit): FirstCopyRule {
  const repeatAfterMs = init.repeatAfterMs
  const maxBlobs = init.maxBlobs ?? 1024
  const now = init.now ?? Date.now
  /** Last send of each piece, by blob; Map order is least recently asked first. */
  const sentAt = new Map<Digest, Map<number, { at: number; peer: string | undefined }>>()
  let refusals = 0

  return {
    admit(digest, index, pieceCount, peer) {
      if (repeatAfterMs <= 0) return true
      const t = now()
      let pieces = sentAt.get(digest)
      if (pieces === undefined) {
        pieces = new Map()
        if (sentAt.size >= maxBlobs) {
          const oldest = sentAt.keys().next().value
          if (oldest !== undefined) sentAt.delete(oldest)
        }
      } else {
        sentAt.delete(digest)
      }
      sentAt.set(digest, pieces)
      const last = pieces.get(index)
      const again =
        last !== undefined &&
        (peer === undefined || peer !== last.peer) &&
        (last.peer === undefined || init.isConnected?.(last.peer) !== false)
      if (again && (t - last.at < repeatAfterMs || pieces.size < pieceCount)) {
        refusals++
        init.onRefused?.()
        return false
      }
      pieces.set(index, { at: t, peer })
      return true
    },

    refused() {
      return refusals
    },
  }
}
