/**
 * A flow-level network for the simulator: each piece transfer is one flow from a
 * sender's uplink to a receiver's downlink, and its rate is recomputed only when a flow
 * starts or ends at one of its two ends.
 *
 * Sharing model: proportional (per-endpoint equal share), not max-min fair. A flow gets
 * min(up(s) / flowsOut(s), down(r) / flowsIn(r)). Max-min fairness needs a global
 * progressive filling over every flow on every change (O(flows) per event, hundreds of
 * millions of events for 10,000 nodes), while the equal share depends only on the two
 * endpoints, so a change touches just the flows of those two endpoints. It leaves the
 * share a receiver-bound flow does not use idle instead of giving it to the sender's
 * other flows, so it is slightly pessimistic when links are asymmetric; in a swarm of
 * equal nodes (every uplink busy with several flows) the two models agree closely.
 * Rates are in bytes per millisecond; times in milliseconds.
 */
import type { EventQueue } from './event-queue.js'

/** One transfer in progress. */
export interface Flow {
  src: number
  dst: number
  bytes: number
  remaining: number
  rate: number
  lastT: number
  version: number
  /** When its pending completion event fires. */
  dueAt: number
  /** Index in the sender's outgoing list, -1 once removed. */
  upIdx: number
  downIdx: number
  /** Anything the owner wants back on completion. */
  owner: unknown
}

/** The flows and link capacities of all endpoints. */
export class FlowNetwork {
  readonly out: Flow[][]
  readonly in: Flow[][]
  /** Bytes sent per endpoint (completed and cut-short flows). */
  readonly sent: Float64Array

  constructor(
    private readonly queue: EventQueue,
    private readonly doneKind: number,
    /** Uplink per endpoint in bytes/ms. */
    readonly up: Float64Array,
    /** Downlink per endpoint in bytes/ms. */
    readonly down: Float64Array,
  ) {
    this.out = Array.from({ length: up.length }, () => [])
    this.in = Array.from({ length: up.length }, () => [])
    this.sent = new Float64Array(up.length)
  }

  /** Starts a flow of `bytes` from `src` to `dst` at `now`. */
  start(src: number, dst: number, bytes: number, now: number, owner: unknown): Flow {
    const flow: Flow = {
      src,
      dst,
      bytes,
      remaining: bytes,
      rate: 0,
      lastT: now,
      version: 0,
      dueAt: Number.POSITIVE_INFINITY,
      upIdx: this.out[src]!.length,
      downIdx: this.in[dst]!.length,
      owner,
    }
    this.out[src]!.push(flow)
    this.in[dst]!.push(flow)
    this.refresh(src, dst, now)
    return flow
  }

  /** Removes a flow (completed or cancelled) at `now` and re-rates its neighbours. */
  remove(flow: Flow, now: number): void {
    if (flow.upIdx < 0) return
    this.advance(flow, now)
    this.sent[flow.src]! += flow.bytes - Math.max(0, flow.remaining)
    const outs = this.out[flow.src]!
    const lastOut = outs.pop()!
    if (lastOut !== flow) {
      outs[flow.upIdx] = lastOut
      lastOut.upIdx = flow.upIdx
    }
    const ins = this.in[flow.dst]!
    const lastIn = ins.pop()!
    if (lastIn !== flow) {
      ins[flow.downIdx] = lastIn
      lastIn.downIdx = flow.downIdx
    }
    flow.upIdx = -1
    flow.downIdx = -1
    flow.version++
    this.refresh(flow.src, flow.dst, now)
  }

  /**
   * Handles a popped completion event: true when `flow` has really finished (the caller
   * removes it); false for a superseded event, or one that fired early because the flow
   * slowed down since it was scheduled (then it is scheduled again at the right time).
   */
  due(flow: Flow, version: number, now: number): boolean {
    if (flow.upIdx < 0 || flow.version !== version) return false
    this.advance(flow, now)
    // Less than a byte left (or a float's worth of it) counts as done.
    if (flow.remaining <= 0.5) return true
    flow.dueAt = now + flow.remaining / flow.rate
    this.queue.push(flow.dueAt, this.doneKind, flow, flow.version)
    return false
  }

  private advance(flow: Flow, now: number): void {
    if (now > flow.lastT) {
      flow.remaining -= flow.rate * (now - flow.lastT)
      flow.lastT = now
    }
  }

  private rerate(flow: Flow, now: number): void {
    const rate = Math.min(
      this.up[flow.src]! / this.out[flow.src]!.length,
      this.down[flow.dst]! / this.in[flow.dst]!.length,
    )
    if (rate === flow.rate) return
    this.advance(flow, now)
    flow.rate = rate
    const dueAt = now + Math.max(0, flow.remaining) / rate
    // A flow that slowed down keeps its pending event, which fires early and is pushed
    // again then (see due); only a flow that sped up needs an earlier event now. This
    // keeps the heap from filling with superseded events when rates flicker.
    if (dueAt < flow.dueAt) {
      flow.version++
      flow.dueAt = dueAt
      this.queue.push(dueAt, this.doneKind, flow, flow.version)
    }
  }

  private refresh(src: number, dst: number, now: number): void {
    for (const f of this.out[src]!) this.rerate(f, now)
    for (const f of this.in[dst]!) if (f.src !== src) this.rerate(f, now)
  }
}
