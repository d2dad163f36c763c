/**
 * Upload slots sized by the uplink. A node that serves more pieces at once than its
 * uplink can carry in good time gains nothing: each of 16 uploads on a 2 Mbit/s uplink
 * gets 1/16 of it, a 256 KiB piece takes 17 s, the askers' deadlines and slow-request
 * cuts fire, and a piece it has just received reaches the next holders late and all at
 * once. Answering busy instead sends the asker to a peer with room.
 *
 * The cap follows the rate the node's uploads reached: as many uploads as that rate
 * can give one piece each within `targetPieceMs`, between `min` and `max`. The rate is
 * the best of the last `windows` one-second windows (`windowMs`), so a dip does not
 * close slots at once. Before anything was sent the cap is `max`.
 *
 * It grows where the uploads go fast: when each upload gets more than a piece per
 * target time, the rate with one more upload is higher and so is the cap, up to `max`;
 * on a slow uplink the rate stays where it is and the cap stays low. The simulator found
 * 4 uploads faster than 16 at 20 Mbit/s with 1 MiB pieces, and slower at 100 Mbit/s
 * (docs/BENCHMARKS.md, simulator, session 6): one number does not fit every uplink.
 */

/** Options of an upload cap. */
export interface UploadCapInit {
  /** Most uploads at once, whatever the rate. */
  max: number
  /** Fewest uploads the cap goes down to. @default 4 (or `max`, when smaller) */
  min?: number
  /** Time one upload should take to send one piece. */
  targetPieceMs: number
  /** Length of one rate window. @default 1000 */
  windowMs?: number
  /** Windows whose best rate is the uplink's estimate. @default 10 */
  windows?: number
  /** Clock in ms, for tests. @default performance.now */
  now?: () => number
}

/** The upload cap of one node. */
export interface UploadCap {
  /** Counts `bytes` sent of a piece of `pieceBytes` bytes. */
  sent(bytes: number, pieceBytes: number): void
  /** Uploads allowed at once now. */
  current(): number
  /** The uplink's estimate in bytes per second (0 until something was sent). */
  rate(): number
}

/** Creates an upload cap; `targetPieceMs` 0 keeps the cap at `max`. */
export function createUploadCap(init: UploadCapInit): UploadCap {
  const max = init.max
  const min = Math.min(max, init.min ?? 4)
  const target = init.targetPieceMs
  const windowMs = init.windowMs ?? 1000
  const keep = init.windows ?? 10
  const now = init.now ?? (() => performance.now())
  if (!(max >= 1) || !(min >= 1) || !(target >= 0) || !(windowMs > 0) || !(keep >= 1)) {
    throw new RangeError('invalid upload cap')
  }
  if (target === 0) return { sent: () => {}, current: () => max, rate: () => 0 }
  /** Bytes sent in each of the last `keep` windows, newest last, by window number. */
  const totals: Array<{ window: number; bytes: number }> = []
  let pieceBytes = 0

  function windowOf(t: number): number {
    return Math.floor(t / windowMs)
  }

  function best(): number {
    const current = windowOf(now())
    while (totals.length > 0 && totals[0]!.window <= current - keep) totals.shift()
    let most = 0
    // The window still filling counts only by what it has reached already.
    for (const t of totals) most = Math.max(most, t.bytes)
    return (most * 1000) / windowMs
  }

  return {
    sent(bytes, size) {
      pieceBytes = size
      const w = windowOf(now())
      const last = totals[totals.length - 1]
      if (last !== undefined && last.window === w) last.bytes += bytes
      else {
        totals.push({ window: w, bytes })
        if (totals.length > keep) totals.shift()
      }
    },
    current() {
      const r = best()
      if (r === 0 || pieceBytes === 0) return max
      const fits = Math.floor((r * target) / 1000 / pieceBytes)
      return Math.max(min, Math.min(max, fits))
    },
    rate: best,
  }
}
