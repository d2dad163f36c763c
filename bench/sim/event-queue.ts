/**
 * The simulator's event queue: a binary min-heap on (time, sequence number), so events
 * at the same instant run in the order they were scheduled and a run is deterministic.
 * Events are never removed from the middle; a superseded event is left in the heap and
 * skipped when popped (its owner keeps a version number), which keeps every operation
 * O(log n).
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

/** A binary heap of events ordered by time, then insertion order. */
export class EventQueue {
  private readonly heap: SimEvent[] = []
  private seq = 0

  /** Number of events held, superseded ones included. */
  get size(): number {
    return this.heap.length
  }

  /** Schedules an event; returns it. */
  push(t: number, kind: number, ref: unknown, version = 0): SimEvent {
    const event: SimEvent = { t, seq: this.seq++, kind, ref, version }
    const heap = this.heap
    let i = heap.length
    heap.push(event)
    while (i > 0) {
      const parent = (i - 1) >> 1
      const p = heap[parent]!
      if (p.t < t || (p.t === t && p.seq < event.seq)) break
      heap[i] = p
      i = parent
    }
    heap[i] = event
    return event
  }

  /** Removes and returns the earliest event, or undefined when empty. */
  pop(): SimEvent | undefined {
    const heap = this.heap
    const top = heap[0]
    if (top === undefined) return undefined
    const last = heap.pop()!
    const n = heap.length
    if (n > 0) {
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= n) break
        const r = l + 1
        let c = l
        if (r < n) {
          const a = heap[l]!
          const b = heap[r]!
          if (b.t < a.t || (b.t === a.t && b.seq < a.seq)) c = r
        }
        const child = heap[c]!
        if (last.t < child.t || (last.t === child.t && last.seq < child.seq)) break
        heap[i] = child
        i = c
      }
      heap[i] = last
    }
    return top
  }
}
