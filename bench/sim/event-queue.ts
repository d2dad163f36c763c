/**
 * The simulator's event queue: a min-heap on (time, sequence number), so events at the
 * same instant run in the order they were scheduled and a run is deterministic. Events
 * are never removed from the middle; a superseded event is left in the heap and skipped
 * when popped (its owner keeps a version number), which keeps every operation O(log n).
 *
 * Laid out for speed at millions of events: a 4-ary heap whose keys (time, sequence
 * number) sit in typed arrays next to each other, so a sift compares neighbouring
 * numbers instead of chasing an object per entry; what an event carries (kind, ref,
 * version) stays in a slot of its own, found through the heap entry, and slots are
 * reused. `next` pops without allocating; `pop` returns an object (for tests and small
 * uses).
 */

/** One scheduled event. */
export interface SimEvent {
  /** Simulated time in milliseconds. */
  t: number
  /** Insertion order, the tie-break. */
  seq: number
  kind: number
  /** What the event is about (a flow, a request, a download). */
  ref: unknown
  /** For lazily cancelled events: the owner's version when the event was scheduled. */
  version: number
}

const ARITY = 4

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
  /** Heap entries: key (time, sequence number) and the slot of the payload. */
  private hT = new Float64Array(1024)
  private hSeq = new Float64Array(1024)
  private hSlot = new Int32Array(1024)
  /** Payload slots, and the free ones as a stack. */
  private sKind = new Int32Array(1024)
  private sVersion = new Float64Array(1024)
  private sRef: unknown[] = []
  private free = new Int32Array(1024)
  private freeCount = 0
  private slotCount = 0

  /** Number of events held, superseded ones included. */
  get size(): number {
    return this.n
  }

  /** Schedules an event. */
  push(t: number, kind: number, ref: unknown, version = 0): void {
    let slot: number
    if (this.freeCount > 0) {
      slot = this.free[--this.freeCount]!
    } else {
      slot = this.slotCount++
      if (slot >= this.sKind.length) this.growSlots()
      this.sRef.push(undefined)
    }
    this.sKind[slot] = kind
    this.sVersion[slot] = version
    this.sRef[slot] = ref
    if (this.n >= this.hT.length) this.growHeap()
    const hT = this.hT
    const hSeq = this.hSeq
    const hSlot = this.hSlot
    const seq = this.nextSeq++
    let i = this.n++
    while (i > 0) {
      const parent = ((i - 1) / ARITY) | 0
      const pt = hT[parent]!
      if (pt < t || (pt === t && hSeq[parent]! < seq)) break
      hT[i] = pt
      hSeq[i] = hSeq[parent]!
      hSlot[i] = hSlot[parent]!
      i = parent
    }
    hT[i] = t
    hSeq[i] = seq
    hSlot[i] = slot
  }

  /**
   * Removes the earliest event and puts it in `t`, `seq`, `kind`, `ref` and `version`;
   * false when the queue is empty.
   */
  next(): boolean {
    const n = this.n
    if (n === 0) return false
    const hT = this.hT
    const hSeq = this.hSeq
    const hSlot = this.hSlot
    const slot = hSlot[0]!
    this.t = hT[0]!
    this.seq = hSeq[0]!
    this.kind = this.sKind[slot]!
    this.version = this.sVersion[slot]!
    this.ref = this.sRef[slot]
    this.sRef[slot] = undefined
    this.free[this.freeCount++] = slot
    const last = n - 1
    this.n = last
    if (last > 0) {
      // Sift the last entry down from the root.
      const t = hT[last]!
      const seq = hSeq[last]!
      const s = hSlot[last]!
      let i = 0
      for (;;) {
        const first = ARITY * i + 1
        if (first >= last) break
        let c = first
        let ct = hT[first]!
        let cs = hSeq[first]!
        const end = Math.min(first + ARITY, last)
        for (let k = first + 1; k < end; k++) {
          const kt = hT[k]!
          if (kt < ct || (kt === ct && hSeq[k]! < cs)) {
            c = k
            ct = kt
            cs = hSeq[k]!
          }
        }
        if (t < ct || (t === ct && seq < cs)) break
        hT[i] = ct
        hSeq[i] = cs
        hSlot[i] = hSlot[c]!
        i = c
      }
      hT[i] = t
      hSeq[i] = seq
      hSlot[i] = s
    }
    return true
  }

  /** Removes and returns the earliest event, or undefined when empty. */
  pop(): SimEvent | undefined {
    if (!this.next()) return undefined
    return { t: this.t, seq: this.seq, kind: this.kind, ref: this.ref, version: this.version }
  }

  private growHeap(): void {
    const size = this.hT.length * 2
    this.hT = grow(this.hT, new Float64Array(size))
    this.hSeq = grow(this.hSeq, new Float64Array(size))
    this.hSlot = grow(this.hSlot, new Int32Array(size))
  }

  private growSlots(): void {
    const size = this.sKind.length * 2
    this.sKind = grow(this.sKind, new Int32Array(size))
    this.sVersion = grow(this.sVersion, new Float64Array(size))
    this.free = grow(this.free, new Int32Array(size))
  }
}

function grow<T extends Float64Array | Int32Array>(from: T, to: T): T {
  to.set(from)
  return to
}
