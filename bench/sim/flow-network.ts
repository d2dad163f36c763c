/**
 * A flow-level network for the simulator: each piece transfer is one flow from a
 * sender's uplink to a receiver's downlink, and its rate is recomputed only when a flow
 * starts or ends at one of its two ends.
 *
 * Two sharing models:
 * - `proportional` (the default): per-endpoint equal share. A flow gets
 *   min(up(s) / flowsOut(s), down(r) / flowsIn(r)). The share depends only on the two
 *   endpoints, so a change touches just the flows of those two endpoints: cheap enough
 *   for 10,000 nodes. It leaves the share a receiver-bound flow does not use idle instead
 *   of giving it to the sender's other flows (and the same at the receiver), so it is
 *   pessimistic wherever a node has flows bound at the other end.
 * - `max-min`: max-min fair rates by progressive filling over every flow on every change,
 *   what TCP flows with similar round-trip times converge to behind shaped links. It
 *   costs O(endpoints x bottlenecks + flows) per change, so it suits clusters of tens or
 *   a few hundred nodes (the testbed's sizes), not thousands.
 * Rates are in bytes per millisecond; times in milliseconds.
 */
import type { EventQueue } from './event-queue.js'

/**
 * One transfer in progress. Its changing numbers (bytes left, rate, when it was last
 * advanced, when its completion event fires) sit in the network's per-flow array at
 * `id` (FlowNetwork.rateOf reads the rate): a re-rating then reads one record per flow
 * instead of an object and the boxes of its number fields.
 */
export interface Flow {
  /** The flow's record in the network; reused once the flow is removed. */
  id: number
  src: number
  dst: number
  bytes: number
  version: number
  /** Index in the sender's outgoing list, -1 once removed. */
  upIdx: number
  downIdx: number
  /** Anything the owner wants back on completion. */
  owner: unknown
}

/** Numbers per flow in FlowNetwork's per-flow array, and where each sits. */
const FLOW_STRIDE = 8
const F_SRC = 0
const F_DST = 1
const F_REMAINING = 2
const F_RATE = 3
const F_LAST_T = 4
/** When its pending completion event fires. */
const F_DUE_AT = 5

/** How flows share the links they cross (see the file's comment). */
export type Sharing = 'proportional' | 'max-min'

/** The flows and link capacities of all endpoints. */
export class FlowNetwork {
  readonly out: Flow[][]
  readonly in: Flow[][]
  /** Bytes sent per endpoint (completed and cut-short flows). */
  readonly sent: Float64Array
  /** Flows out of and into each endpoint (out[e].length, in[e].length), read without visiting the lists. */
  private readonly outCount: Int32Array
  private readonly inCount: Int32Array
  private readonly sharing: Sharing
  /** max-min: every flow in progress, and scratch space for the filling. */
  private readonly flows: Flow[] = []
  private readonly capacity: Float64Array
  private readonly unfixed: Int32Array
  private readonly fixed = new Set<Flow>()
  /** Per flow id: its numbers (FLOW_STRIDE apart), the flow, and the ids free for reuse. */
  private fd = new Float64Array(FLOW_STRIDE * 1024)
  private readonly byId: Flow[] = []
  private readonly freeIds: number[] = []
  /** The ids of out[e] and in[e], in the same order. */
  private readonly outIds: number[][]
  private readonly inIds: number[][]

  constructor(
    private readonly queue: EventQueue,
    private readonly doneKind: number,
    /** Uplink per endpoint in bytes/ms. */
    readonly up: Float64Array,
    /** Downlink per endpoint in bytes/ms. */
    readonly down: Float64Array,
    sharing: Sharing = 'proportional',
  ) {
    this.out = Array.from({ length: up.length }, () => [])
    this.in = Array.from({ length: up.length }, () => [])
    this.outIds = Array.from({ length: up.length }, () => [])
    this.inIds = Array.from({ length: up.length }, () => [])
    this.sent = new Float64Array(up.length)
    this.outCount = new Int32Array(up.length)
    this.inCount = new Int32Array(up.length)
    this.sharing = sharing
    // Links 0..n-1 are uplinks, n..2n-1 downlinks.
    this.capacity = new Float64Array(2 * up.length)
    this.unfixed = new Int32Array(2 * up.length)
  }

  /** Flows out of endpoint `e` (out[e].length). */
  outFlows(e: number): number {
    return this.outCount[e]!
  }

  /** The rate of a flow in progress, bytes/ms. */
  rateOf(flow: Flow): number {
    return this.fd[flow.id * FLOW_STRIDE + F_RATE]!
  }

  /** Starts a flow of `bytes` from `src` to `dst` at `now`. */
  start(src: number, dst: number, bytes: number, now: number, owner: unknown): Flow {
    let id = this.freeIds.pop()
    if (id === undefined) {
      id = this.byId.length
      if (FLOW_STRIDE * (id + 1) > this.fd.length) {
        const fd = new Float64Array(2 * this.fd.length)
        fd.set(this.fd)
        this.fd = fd
      }
      this.byId.push(undefined as unknown as Flow)
    }
    const flow: Flow = {
      id,
      src,
      dst,
      bytes,
      version: 0,
      upIdx: this.out[src]!.length,
      downIdx: this.in[dst]!.length,
      owner,
    }
    this.byId[id] = flow
    const b = id * FLOW_STRIDE
    const fd = this.fd
    fd[b + F_SRC] = src
    fd[b + F_DST] = dst
    fd[b + F_REMAINING] = bytes
    fd[b + F_RATE] = 0
    fd[b + F_LAST_T] = now
    fd[b + F_DUE_AT] = Number.POSITIVE_INFINITY
    this.out[src]!.push(flow)
    this.in[dst]!.push(flow)
    this.outIds[src]!.push(id)
    this.inIds[dst]!.push(id)
    this.outCount[src]!++
    this.inCount[dst]!++
    if (this.sharing === 'max-min') {
      this.flows.push(flow)
      this.fill(now)
    } else {
      this.refresh(src, dst, now)
    }
    return flow
  }

  /** Removes a flow (completed or cancelled) at `now` and re-rates its neighbours. */
  remove(flow: Flow, now: number): void {
    if (flow.upIdx < 0) return
    const b = flow.id * FLOW_STRIDE
    this.advance(b, now)
    // A finished flow (under half a byte left, see due) sent all of its bytes.
    const remaining = this.fd[b + F_REMAINING]!
    this.sent[flow.src]! += remaining <= 0.5 ? flow.bytes : flow.bytes - remaining
    const outs = this.out[flow.src]!
    const outIds = this.outIds[flow.src]!
    const lastOut = outs.pop()!
    const lastOutId = outIds.pop()!
    if (lastOut !== flow) {
      outs[flow.upIdx] = lastOut
      outIds[flow.upIdx] = lastOutId
      lastOut.upIdx = flow.upIdx
    }
    const ins = this.in[flow.dst]!
    const inIds = this.inIds[flow.dst]!
    const lastIn = ins.pop()!
    const lastInId = inIds.pop()!
    if (lastIn !== flow) {
      ins[flow.downIdx] = lastIn
      inIds[flow.downIdx] = lastInId
      lastIn.downIdx = flow.downIdx
    }
    flow.upIdx = -1
    flow.downIdx = -1
    this.outCount[flow.src]!--
    this.inCount[flow.dst]!--
    flow.version++
    // Events of the flow still queued see upIdx -1 (due) and never read the record.
    this.freeIds.push(flow.id)
    if (this.sharing === 'max-min') {
      const k = this.flows.indexOf(flow)
      const last = this.flows.pop()!
      if (last !== flow) this.flows[k] = last
      this.fill(now)
    } else {
      this.refresh(flow.src, flow.dst, now)
    }
  }

  /**
   * Handles a popped completion event: true when `flow` has really finished (the caller
   * removes it); false for a superseded event, or one that fired early because the flow
   * slowed down since it was scheduled (then it is scheduled again at the right time).
   */
  due(flow: Flow, version: number, now: number): boolean {
    if (flow.upIdx < 0 || flow.version !== version) return false
    const b = flow.id * FLOW_STRIDE
    this.advance(b, now)
    const fd = this.fd
    // Less than a byte left (or a float's worth of it) counts as done.
    if (fd[b + F_REMAINING]! <= 0.5) return true
    const dueAt = now + fd[b + F_REMAINING]! / fd[b + F_RATE]!
    fd[b + F_DUE_AT] = dueAt
    this.queue.push(dueAt, this.doneKind, flow, flow.version)
    return false
  }

  /** Counts down the bytes the flow at record `b` sent since it was last advanced. */
  private advance(b: number, now: number): void {
    const fd = this.fd
    const lastT = fd[b + F_LAST_T]!
    if (now > lastT) {
      fd[b + F_REMAINING] = fd[b + F_REMAINING]! - fd[b + F_RATE]! * (now - lastT)
      fd[b + F_LAST_T] = now
    }
  }

  /**
   * Max-min fair rates by progressive filling: the link whose remaining capacity split
   * over its flows still unfixed is smallest is the bottleneck of those flows; they get
   * that share, which is taken from the other link of each, and so on until every flow
   * has its rate.
   */
  private fill(now: number): void {
    const n = this.up.length
    const capacity = this.capacity
    const unfixed = this.unfixed
    capacity.set(this.up, 0)
    capacity.set(this.down, n)
    unfixed.fill(0)
    for (const f of this.flows) {
      unfixed[f.src]!++
      unfixed[n + f.dst]!++
    }
    const fixed = this.fixed
    fixed.clear()
    let left = this.flows.length
    while (left > 0) {
      let link = -1
      let share = Number.POSITIVE_INFINITY
      for (let l = 0; l < 2 * n; l++) {
        const k = unfixed[l]!
        if (k === 0) continue
        const s = capacity[l]! / k
        if (s < share) {
          share = s
          link = l
        }
      }
      const rate = Math.max(share, 1e-9)
      const through = link < n ? this.out[link]! : this.in[link - n]!
      for (const f of through) {
        if (fixed.has(f)) continue
        fixed.add(f)
        left--
        unfixed[f.src]!--
        unfixed[n + f.dst]!--
        capacity[f.src] = Math.max(0, capacity[f.src]! - rate)
        capacity[n + f.dst] = Math.max(0, capacity[n + f.dst]! - rate)
        this.setRate(f.id, rate, now)
      }
    }
  }

  private setRate(id: number, rate: number, now: number): void {
    const fd = this.fd
    const b = id * FLOW_STRIDE
    if (rate === fd[b + F_RATE]) return
    this.advance(b, now)
    fd[b + F_RATE] = rate
    const dueAt = now + Math.max(0, fd[b + F_REMAINING]!) / rate
    // A flow that slowed down keeps its pending event, which fires early and is pushed
    // again then (see due); only a flow that sped up needs an earlier event now. This
    // keeps the heap from filling with superseded events when rates flicker.
    if (dueAt < fd[b + F_DUE_AT]!) {
      const flow = this.byId[id]!
      flow.version++
      fd[b + F_DUE_AT] = dueAt
      this.queue.push(dueAt, this.doneKind, flow, flow.version)
    }
  }

  /**
   * Re-rates the flows out of `src` and into `dst`: each gets min(up(s) / flowsOut(s),
   * down(r) / flowsIn(r)), the share at `src` (or `dst`) worked out once for all of them.
   */
  private refresh(src: number, dst: number, now: number): void {
    const up = this.up
    const down = this.down
    const outCount = this.outCount
    const inCount = this.inCount
    const fd = this.fd
    const upShare = up[src]! / outCount[src]!
    for (const id of this.outIds[src]!) {
      const d = fd[id * FLOW_STRIDE + F_DST]!
      this.setRate(id, Math.min(upShare, down[d]! / inCount[d]!), now)
    }
    const downShare = down[dst]! / inCount[dst]!
    for (const id of this.inIds[dst]!) {
      const s = fd[id * FLOW_STRIDE + F_SRC]!
      if (s !== src) this.setRate(id, Math.min(up[s]! / outCount[s]!, downShare), now)
    }
  }
}
