/**
 * The simulator's event queue: a min-heap on (time, sequence number), so events at the
 * same instant run in the order they were scheduled and a run is deterministic. Events
 * are never removed from the middle; a superseded event is left in the heap and skipped
 * when popped (its owner keeps a version number), which keeps every operation O(log n).
 *
 * Laid out for speed at millions of events: a 4-ary heap in one typed array, each entry
 * two numbers side by side: the time, and the sequence number and payload slot packed
 * into one (sequence number x 2^23 + slot, exact in a double). The four children of an
 * entry are 64 bytes in a row (a cache line, or two neighbouring ones, depending on
 * where the array starts), so a sift reads about one line per level and moves an entry
 * with its slot. What an event carries (kind, ref, version) stays in its slot,
 * and slots are reused. `next` pops without allocating; `pop` returns an object (for
 * tests and small uses). Sequence numbers are renumbered, in order, before they outgrow
 * the packing.
 *
 * Lanes: most events are scheduled a fixed delay after the current time (a request
 * arrives one latency after it was sent, a busy peer is asked again a back-off later).
 * Pushed with the same lane, such events come in time order, so a lane is a plain FIFO
 * (a ring buffer), and `next` takes the earliest of the heap's first event and each
 * lane's first. The order of events is the same as with the heap alone; the heap only
 * holds what came out of order (flows' completions and the like), and is smaller. An
 * event pushed to a lane earlier than the lane's last one goes to the heap instead.
 */

/** One scheduled event. */
export interface SimEvent {
  /** Simulated time in milliseconds. */
  t: number
  /** Insertion order, the tie-break. */
  seq: number
  /** 0 to 15. */
  kind: number
  /** What the event is about (a flow, a request, a download). */
  ref: unknown
  /**
   * For lazily cancelled events: the owner's version when the event was scheduled (a
   * whole number from 0 to 2^48).
   */
  version: number
}

const ARITY = 4
/** Bits of the packed key that hold the payload slot: at most 2^23 events pending. */
const SLOT_BITS = 23
const SLOTS = 2 ** SLOT_BITS
/** Sequence numbers below this fit beside a slot in a double's 53 bits. */
const SEQ_LIMIT = 2 ** (53 - SLOT_BITS)
/** Event kinds are 0 .. KINDS - 1; versions are whole numbers up to MAX_VERSION. */
const KINDS = 16
const MAX_VERSION = 2 ** 48
/**
 * Entry i sits at h[2 * (i + OFFSET)] (time) and the number after it (packed key): with
 * the offset, the children of entry i (4i + 1 .. 4i + 4) start at a multiple of 64
 * bytes from the start of the array.
 */
const OFFSET = 3

/** A FIFO of events pushed in time order: a ring buffer of (time, packed key). */
class Lane {
  e = new Float64Array(2 * 1024)
  /** Entries in the ring (a power of two), the first one's index, and how many are held. */
  size = 1024
  head = 0
  count = 0
  /** Time of the last event pushed. */
  lastT = Number.NEGATIVE_INFINITY

  add(t: number, key: number): void {
    if (this.count === this.size) {
      // Unwrap into a ring twice the size.
      const e = new Float64Array(4 * this.size)
      for (let j = 0; j < this.count; j++) {
        const from = 2 * ((this.head + j) & (this.size - 1))
        e[2 * j] = this.e[from]!
        e[2 * j + 1] = this.e[from + 1]!
      }
      this.e = e
      this.head = 0
      this.size *= 2
    }
    const at = 2 * ((this.head + this.count) & (this.size - 1))
    this.e[at] = t
    this.e[at + 1] = key
    this.count++
    this.lastT = t
  }
}

/** A heap of events ordered by time, then insertion order. */
export class EventQueue {
  /** The event `next` popped last. */
  t = 0
  seq = 0
  kind = 0
  ref: unknown = undefined
  version = 0

  private n = 0
  private nextSeq = 0
  /** Heap entries: time, then sequence number x SLOTS + payload slot. */
  private h = new Float64Array(2 * (1024 + OFFSET))
  /**
   * Payload slots (kind and version in one number, version x KINDS + kind, so that a pop
   * loads one number for both), and the free ones as a stack.
   */
  private sKindVersion = new Float64Array(1024)
  private sRef: unknown[] = []
  private free = new Int32Array(1024)
  private freeCount = 0
  private slotCount = 0
  private readonly lanes: Lane[] = []

  /** @param seqLimit renumber sequence numbers on reaching this (tests make it small). */
  constructor(private readonly seqLimit = SEQ_LIMIT) {}

  /** Number of events held, superseded ones included. */
  get size(): number {
    let size = this.n
    for (const lane of this.lanes) size += lane.count
    return size
  }

  /**
   * Schedules an event. `lane` (0, 1, ...; -1 for none) names a FIFO for events the
   * caller schedules a fixed delay after the current time (see the file's comment);
   * the order of events does not depend on it.
   */
  push(t: number, kind: number, ref: unknown, version = 0, lane = -1): void {
    if (
      (kind & (KINDS - 1)) !== kind ||
      !(version >= 0 && version <= MAX_VERSION && Math.floor(version) === version)
    )
      throw new Error(`event queue: kind ${kind} or version ${version} out of range`)
    let slot: number
    if (this.freeCount > 0) {
      slot = this.free[--this.freeCount]!
    } else {
      slot = this.slotCount++
      if (slot >= SLOTS) throw new Error(`event queue: more than ${SLOTS} events pending`)
      if (slot >= this.sKindVersion.length) this.growSlots()
      this.sRef.push(undefined)
    }
    this.sKindVersion[slot] = version * KINDS + kind
    this.sRef[slot] = ref
    if (2 * (this.n + OFFSET + 1) > this.h.length) this.growHeap()
    if (this.nextSeq >= this.seqLimit) this.renumber()
    const key = this.nextSeq++ * SLOTS + slot
    if (lane >= 0) {
      while (this.lanes.length <= lane) this.lanes.push(new Lane())
      const q = this.lanes[lane]!
      if (t >= q.lastT) {
        q.add(t, key)
        return
      }
    }
    const h = this.h
    let i = this.n++
    while (i > 0) {
      const parent = ((i - 1) / ARITY) | 0
      const p = 2 * (parent + OFFSET)
      const pt = h[p]!
      const pk = h[p + 1]!
      if (pt < t || (pt === t && pk < key)) break
      const q = 2 * (i + OFFSET)
      h[q] = pt
      h[q + 1] = pk
      i = parent
    }
    const q = 2 * (i + OFFSET)
    h[q] = t
    h[q + 1] = key
  }

  /**
   * Removes the earliest event and puts it in `t`, `seq`, `kind`, `ref` and `version`;
   * false when the queue is empty.
   */
  next(): boolean {
    const n = this.n
    const h = this.h
    // The earliest of the heap's first event and each lane's first.
    let found = n > 0
    let from: Lane | undefined
    let t = found ? h[2 * OFFSET]! : 0
    let key = found ? h[2 * OFFSET + 1]! : 0
    const lanes = this.lanes
    for (let j = 0; j < lanes.length; j++) {
      const q = lanes[j]!
      if (q.count === 0) continue
      const at = 2 * q.head
      const qt = q.e[at]!
      const qk = q.e[at + 1]!
      if (!found || qt < t || (qt === t && qk < key)) {
        found = true
        from = q
        t = qt
        key = qk
      }
    }
    if (!found) return false
    const slot = key % SLOTS
    this.t = t
    this.seq = (key - slot) / SLOTS
    const kindVersion = this.sKindVersion[slot]!
    const kind = kindVersion % KINDS
    this.kind = kind
    this.version = (kindVersion - kind) / KINDS
    this.ref = this.sRef[slot]
    this.sRef[slot] = undefined
    this.free[this.freeCount++] = slot
    if (from !== undefined) {
      from.head = (from.head + 1) & (from.size - 1)
      from.count--
      return true
    }
    const last = n - 1
    this.n = last
    if (last > 0) {
      // Sift the last entry down from the root.
      const lp = 2 * (last + OFFSET)
      const lt = h[lp]!
      const lk = h[lp + 1]!
      let i = 0
      for (;;) {
        const first = ARITY * i + 1
        if (first >= last) break
        let c = first
        let cp = 2 * (first + OFFSET)
        let ct = h[cp]!
        let ck = h[cp + 1]!
        const end = Math.min(first + ARITY, last)
        for (let k = first + 1; k < end; k++) {
          const kp = 2 * (k + OFFSET)
          const kt = h[kp]!
          if (kt < ct || (kt === ct && h[kp + 1]! < ck)) {
            c = k
            cp = kp
            ct = kt
            ck = h[kp + 1]!
          }
        }
        if (lt < ct || (lt === ct && lk < ck)) break
        const ip = 2 * (i + OFFSET)
        h[ip] = ct
        h[ip + 1] = ck
        i = c
      }
      const ip = 2 * (i + OFFSET)
      h[ip] = lt
      h[ip + 1] = lk
    }
    return true
  }

  /** Removes and returns the earliest event, or undefined when empty. */
  pop(): SimEvent | undefined {
    if (!this.next()) return undefined
    return { t: this.t, seq: this.seq, kind: this.kind, ref: this.ref, version: this.version }
  }

  /**
   * Gives the events held sequence numbers 0, 1, ... in their order: the heap's order
   * stays as it is (only the sequence numbers' order counts), and there is room again.
   */
  private renumber(): void {
    // Every packed key held (heap and lanes), where it sits, in the order of the keys.
    const places: Array<{ e: Float64Array; at: number }> = []
    for (let i = 0; i < this.n; i++) places.push({ e: this.h, at: 2 * (i + OFFSET) + 1 })
    for (const q of this.lanes) {
      for (let j = 0; j < q.count; j++) places.push({ e: q.e, at: 2 * ((q.head + j) & (q.size - 1)) + 1 })
    }
    places.sort((a, b) => a.e[a.at]! - b.e[b.at]!)
    for (const [r, { e, at }] of places.entries()) e[at] = r * SLOTS + (e[at]! % SLOTS)
    this.nextSeq = places.length
  }

  private growHeap(): void {
    this.h = grow(this.h, new Float64Array(2 * this.h.length))
  }

  private growSlots(): void {
    const size = this.sKindVersion.length * 2
    this.sKindVersion = grow(this.sKindVersion, new Float64Array(size))
    this.free = grow(this.free, new Int32Array(size))
  }
}

function grow<T extends Float64Array | Int32Array>(from: T, to: T): T {
  to.set(from)
  return to
}
