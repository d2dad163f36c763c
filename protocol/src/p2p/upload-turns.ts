/**
 * Turns at a node's upload slots. A download that holds one of a sender's slots asks
 * that sender for its next piece the moment its piece is done, so the freed slot goes
 * straight back to it; a peer that was answered busy asks again only when its back-off
 * ends, and finds the slot taken again. Slots stick to whoever got them first, and a
 * node that got few early is starved while every peer it asks answers busy (the
 * simulator's slowest node at N = 25 was refused 97-99% of the time for 160 s;
 * docs/BENCHMARKS.md, simulator, session 25).
 *
 * The sender therefore remembers, for `holdMs`, the peers it answered busy. A free slot
 * goes to one of them first: a peer that is waiting always gets a free slot, any other
 * peer only a slot beyond those the waiting peers may come back for. A peer just served
 * that asks again is answered busy and waits its turn like the rest. A slot kept for a
 * peer that does not come back is given to anyone once `holdMs` has passed; meanwhile
 * the uploads running share the uplink it leaves.
 */

/** Options of the upload turns. */
export interface UploadTurnsInit {
  /**
   * How long a peer answered busy keeps its claim on the next free slot: its back-off
   * and the time its request takes to come back. 0 turns the rule off (first come,
   * first served).
   */
  holdMs: number
  /** Clock in ms, for tests. @default performance.now */
  now?: () => number
}

/** The turns at one node's upload slots, by peer. */
export interface UploadTurns<P> {
  /**
   * Whether `peer` may start an upload now, with `active` uploads running and `cap`
   * allowed. A peer refused is remembered as waiting; a waiting peer let in is not.
   */
  admit(peer: P, active: number, cap: number): boolean
  /** Peers waiting for a slot now. */
  waiting(): number
}

/**
 * Default holdMs: the agent's 1 s busy back-off and a request's way back. In the
 * simulator the turns brought the last node of N = 25 and 50 12-21% sooner, within 5-12%
 * of the median; on the 2-core testbed, where RTTs of up to seconds and the CPU's delays
 * already shuffle who asks first, N = 50 came at 214.1-222.6 s with them and
 * 217.2-220.3 s without (docs/BENCHMARKS.md, simulator and cluster, session 25).
 */
export const UPLOAD_TURN_HOLD_MS = 2_000

/** Creates the upload turns of one node. */
export function createUploadTurns<P>(init: UploadTurnsInit): UploadTurns<P> {
  const holdMs = init.holdMs
  const now = init.now ?? (() => performance.now())
  if (!(holdMs >= 0)) throw new RangeError('invalid upload turn hold')
  /** Peers answered busy and until when they keep their claim, in the order they were first refused. */
  const waiting = new Map<P, number>()

  /** Whether `peer` is among the first `free` waiting peers whose claim holds at `t` (dropping lapsed ones on the way), or fewer than `free` wait. */
  function hasTurn(peer: P, free: number, t: number): boolean {
    let ahead = 0
    for (const [p, until] of waiting) {
      if (until <= t) {
        waiting.delete(p)
        continue
      }
      if (p === peer) return true
      if (++ahead >= free) return false
    }
    return true
  }

  return {
    admit(peer, active, cap) {
      if (holdMs === 0) return active < cap
      const t = now()
      if (active < cap && hasTurn(peer, cap - active, t)) {
        waiting.delete(peer)
        return true
      }
      // Refused: the peer waits, keeping its place in the queue if it had one.
      const place = waiting.get(peer)
      if (place !== undefined && place > t) waiting.set(peer, t + holdMs)
      else {
        waiting.delete(peer)
        waiting.set(peer, t + holdMs)
      }
      return false
    },
    waiting() {
      const t = now()
      for (const [p, until] of waiting) if (until <= t) waiting.delete(p)
      return waiting.size
    },
  }
}
