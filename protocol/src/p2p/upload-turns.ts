/**
 * Turns at a node's upload slots. A download that holds one of a sender's slots asks
 * that sender for its next piece the moment its piece is done, so the freed slot goes
 * straight back to it; a peer that was answered busy asks again only when its back-off
 * ends, and finds the slot taken again. Slots stick to whoever got them first, and a
 * node that got few early is starved while every peer it asks answers busy (the
 * simulator's slowest node at N = 25 was refused 97-99% of the time for 160 s;
 * docs/BENCHMARKS.md, simulator, sessions 24 and 25).
 *
 * The sender therefore remembers, for `holdMs`, the peers it answered busy, in the order
 * it first refused them. A free slot goes to the first of them; a peer just served that
 * asks again is answered busy and queues like the rest; slots beyond those the waiting
 * peers may come back for go to anyone; a claim the peer does not renew within `holdMs`
 * lapses.
 *
 * A slot kept for a waiting peer stays free until that peer is back, up to its back-off.
 * That is worth it only where an upload takes longer than that: on a 2 Mbit/s uplink a
 * 256 KiB piece among 8 uploads takes 8 s, on a 100 Mbit/s one a 1 MiB piece takes
 * 0.7 s, and there slots free so often that a refused peer finds one anyway, while
 * keeping them brought the simulator's N = 50 last node from 33 s to 55 s. So slots are
 * kept only while the uploads take `minUploadMs` or more (smoothed over the last few);
 * otherwise, and until an upload has ended, the first to ask gets a free slot.
 */

/** Options of the upload turns. */
export interface UploadTurnsInit {
  /**
   * How long a peer answered busy keeps its claim on the next free slot: its back-off
   * and the time its request takes to come back. 0 turns the rule off (first come,
   * first served).
   */
  holdMs: number
  /**
   * Slots are kept for waiting peers only while an upload takes at least this long on
   * average. @default `holdMs`
   */
  minUploadMs?: number
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
  /** An upload `admit` let in has ended after `ms` (sent, failed or cancelled). */
  ended(ms: number): void
  /** Whether a free slot is kept for the waiting peers now (uploads take long enough). */
  keeping(): boolean
  /** Peers waiting for a slot now. */
  waiting(): number
}

/**
 * Default holdMs (and minUploadMs): the agent's 1 s busy back-off and a request's way
 * back. In the simulator the turns brought the last node of N = 25 and 50 at 2 and
 * 5 Mbit/s 6-21% sooner; on the 2-core testbed, where RTTs of up to seconds and the
 * CPU's delays already shuffle who asks first, they changed nothing measurable
 * (docs/BENCHMARKS.md, simulator and cluster, session 25).
 */
export const UPLOAD_TURN_HOLD_MS = 2_000

/** Creates the upload turns of one node. */
export function createUploadTurns<P>(init: UploadTurnsInit): UploadTurns<P> {
  const holdMs = init.holdMs
  const minUploadMs = init.minUploadMs ?? holdMs
  const now = init.now ?? (() => performance.now())
  if (!(holdMs >= 0) || !(minUploadMs >= 0)) throw new RangeError('invalid upload turns')
  /** How long an upload takes, smoothed over the last few (0 until one ended). */
  let uploadMs = 0
  /** When lapsed claims were last dropped. */
  let swept = Number.NEGATIVE_INFINITY
  const keeping = (): boolean => holdMs > 0 && uploadMs > 0 && uploadMs >= minUploadMs
  /** Peers answered busy and until when they keep their claim, in the order they were first refused. */
  const waiting = new Map<P, number>()

  /** Drops the claims that lapsed by `t`. */
  function dropLapsed(t: number): void {
    for (const [p, until] of waiting) if (until <= t) waiting.delete(p)
  }

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
      // Claims that lapsed are dropped once a hold, so a sender that keeps no slots
      // (it never looks at the queue) does not gather every peer it ever refused.
      if (t - swept >= holdMs) {
        swept = t
        dropLapsed(t)
      }
      if (active < cap && (!keeping() || hasTurn(peer, cap - active, t))) {
        waiting.delete(peer)
        return true
      }
      // Refused: the peer waits, keeping its place in the queue if its claim still holds
      // (a lapsed one goes to the end, where the newest are).
      if (!((waiting.get(peer) ?? 0) > t)) waiting.delete(peer)
      waiting.set(peer, t + holdMs)
      return false
    },
    ended(ms) {
      // Smoothed as TCP smooths its round-trip time (RFC 6298): 1/8 of the newest.
      uploadMs = uploadMs === 0 ? ms : uploadMs + (ms - uploadMs) / 8
    },
    keeping,
    waiting() {
      dropLapsed(now())
      return waiting.size
    },
  }
}
