import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { fluidBound } from '../cluster/bound.js'
import { EventQueue } from './event-queue.js'
import { summarizeSim } from './report.js'
import { type SimConfig, layerSizes, mbitToBytesPerMs, simulate } from './simulate.js'
import { MAX_CONCURRENT_UPLOADS } from '../../protocol/src/p2p/piece-server.js'
import { STARTING_PEERS } from '../../peer-agent/src/transfer/piece-picker.js'
import { UPLOAD_TURN_HOLD_MS } from '../../protocol/src/p2p/upload-turns.js'

const MiB = 2 ** 20

/** Issue 4's testbed case at N = 25: 2 Mbit/s nodes, a 25 Mbit/s origin, 2 layers (the image and seed are the test's). */
const TESTBED_N25: Partial<SimConfig> = {
  nodes: 25,
  layers: 2,
  nodeUpMbit: 2,
  originMbit: 25,
  latencyMs: 1,
  haveDelayMs: 50,
  sharing: 'max-min',
}

/** A streaming, ahead-capped, jittered run, used by the narrowed-pick and pinned tests. */
const STREAMING_RUN: Partial<SimConfig> = {
  nodes: 40,
  imageBytes: 24 * MiB,
  layers: 2,
  nodeUpMbit: 50,
  latencyMs: 2,
  seed: 3,
  streaming: true,
  aheadMaxInFlight: 4,
  startJitterMs: 500,
}

function config(over: Partial<SimConfig>): SimConfig {
  return {
    nodes: 1,
    imageBytes: 16 * MiB,
    layers: 1,
    nodeUpMbit: 100,
    originMbit: 100,
    latencyMs: 5,
    seed: 7,
    // The tests (and the pinned outcomes below) were written for 16 uploads per node,
    // the agent's default until session 23, for downloads that take all their peers
    // from the start (before session 24), and for upload slots served first come, first
    // served (before session 25); the defaults' own tests say what they are now.
    maxConcurrentUploads: 16,
    startingPeers: 0,
    uploadTurnHoldMs: 0,
    ...over,
  }
}

describe('EventQueue', () => {
  it('pops by time, then in insertion order', () => {
    const q = new EventQueue()
    const times = [5, 1, 3, 3, 9, 0, 3, 2]
    for (const [i, t] of times.entries()) q.push(t, 0, i)
    const out: Array<[number, number]> = []
    for (let e = q.pop(); e !== undefined; e = q.pop()) out.push([e.t, e.ref as number])
    expect(out).toEqual([
      [0, 5],
      [1, 1],
      [2, 7],
      [3, 2],
      [3, 3],
      [3, 6],
      [5, 0],
      [9, 4],
    ])
  })

  // Pushes and pops mixed, with the current time moving on as events are popped; each
  // event goes to the heap or to one of three lanes (some of them out of the lane's order).
  function mixedRun(q: EventQueue): { out: number[]; expected: number[] } {
    const held: Array<{ t: number; id: number }> = []
    const out: number[] = []
    const expected: number[] = []
    let id = 0
    let now = 0
    for (let round = 0; round < 3000; round++) {
      for (let k = 0; k < 3; k++) {
        const lane = ((round + k) % 5) - 1
        // Fixed delays per lane, now and then a shorter one; the heap gets any time.
        const t = lane < 0 ? now + ((round * 7 + k * 3) % 11) : now + lane * 2 - (round % 13 === 0 ? 1 : 0)
        q.push(t, k, id, round, Math.min(lane, 2))
        held.push({ t, id: id++ })
      }
      for (let k = 0; k < 2; k++) {
        held.sort((a, b) => a.t - b.t || a.id - b.id)
        expected.push(held.shift()!.id)
        const e = q.pop()!
        now = e.t
        out.push(e.ref as number)
      }
    }
    while (held.length > 0) {
      held.sort((a, b) => a.t - b.t || a.id - b.id)
      expected.push(held.shift()!.id)
      out.push(q.pop()!.ref as number)
    }
    expect(q.pop()).toBeUndefined()
    return { out, expected }
  }

  it("keeps that order with lanes, some events pushed out of their lane's order", () => {
    const { out, expected } = mixedRun(new EventQueue())
    expect(out).toEqual(expected)
  })

  it('keeps that order when its sequence numbers are renumbered', () => {
    // A limit of 64 sequence numbers: renumbered again and again while events are held.
    const { out, expected } = mixedRun(new EventQueue(64))
    expect(out).toEqual(expected)
  })

  it('gives back kind and version', () => {
    const q = new EventQueue()
    q.push(2, 15, 'a', 2 ** 40, 0)
    q.push(1, 3, 'b', 7)
    expect(q.pop()).toMatchObject({ t: 1, kind: 3, ref: 'b', version: 7 })
    expect(q.pop()).toMatchObject({ t: 2, kind: 15, ref: 'a', version: 2 ** 40 })
    expect(() => q.push(0, 16, 'c')).toThrow()
    expect(() => q.push(0, 1, 'c', 1.5)).toThrow()
  })
})

describe('simulate', () => {
  it('gives one node without contention size / bandwidth plus a few latencies', () => {
    // One piece: no request round trips between pieces.
    const c = config({ nodeUpMbit: 50, originMbit: 100, latencyMs: 5, pieceSize: 16 * MiB })
    const r = simulate(c)
    // Bound by the node's 50 Mbit downlink.
    const transferMs = c.imageBytes / mbitToBytesPerMs(50)
    const t = r.completionMs[0]!
    expect(t).toBeGreaterThanOrEqual(transferMs)
    // announce + answer, the first request, the last byte's way back: four latencies.
    expect(t).toBeLessThanOrEqual(transferMs + 4 * c.latencyMs + 1)
    expect(r.originBytes).toBe(c.imageBytes)
  })

  it('pays a round trip per piece with one request to the origin at a time, and hides it with two', () => {
    // minRequestsInFlight 1: no floor for a download with a single source.
    const c = config({
      nodeUpMbit: 50,
      originMbit: 100,
      latencyMs: 5,
      originRequests: 1,
      minRequestsInFlight: 1,
    })
    const r = simulate(c)
    const transferMs = c.imageBytes / mbitToBytesPerMs(50)
    const roundTrips = (r.pieces + 1) * 2 * c.latencyMs
    expect(r.completionMs[0]!).toBeCloseTo(transferMs + roundTrips, 0)
    // Two requests in flight overlap the round trips with transfers.
    const two = simulate({ ...c, originRequests: 2 })
    expect(two.completionMs[0]!).toBeLessThan(r.completionMs[0]! - (r.pieces - 2) * c.latencyMs)
    expect(two.completionMs[0]!).toBeGreaterThanOrEqual(transferMs)
    // The scheduler's default floor (4 in flight while sources are few) does the same for
    // a download whose only source is the origin, with one origin request configured.
    const floored = simulate({ ...c, minRequestsInFlight: 4 })
    expect(floored.completionMs[0]!).toBeLessThan(r.completionMs[0]! - (r.pieces - 2) * c.latencyMs)
  })

  it('splits the image into layers that add up to it', () => {
    expect(layerSizes(10, 3)).toEqual([3, 3, 4])
    expect(layerSizes(16 * MiB, 2).reduce((a, b) => a + b)).toBe(16 * MiB)
  })

  it.each(['proportional', 'max-min'] as const)(
    'finishes a swarm no faster than the fluid bound and within a sensible factor of it (%s sharing)',
    (sharing) => {
      const c = config({
        sharing,
        nodes: 30,
        imageBytes: 64 * MiB,
        layers: 1,
        nodeUpMbit: 100,
        originMbit: 100,
        latencyMs: 1,
      })
      const r = simulate(c)
      const bound = fluidBound({
        fileBytes: c.imageBytes,
        nodes: c.nodes,
        originMbit: c.originMbit,
        nodeUpMbit: c.nodeUpMbit,
        nodeDownMbit: c.nodeUpMbit,
      })
      const last = r.lastDoneMs / 1000
      expect(last).toBeGreaterThanOrEqual(bound.seconds)
      expect(last).toBeLessThan(3 * bound.seconds)
      expect(r.deliveredPieces).toBe(c.nodes * r.pieces)
      // Every byte came from somewhere: the origin sent at least one copy, far fewer than N.
      expect(r.originBytes).toBeGreaterThanOrEqual(c.imageBytes)
      expect(r.originBytes).toBeLessThan(c.nodes * c.imageBytes)
    },
  )

  it('samples how busy the links are when asked, without changing the run', () => {
    const c = config({ nodes: 12, imageBytes: 16 * MiB, layers: 1, latencyMs: 1, timelineMs: 500 })
    const r = simulate(c)
    const plain = simulate({ ...c, timelineMs: 0 })
    expect(plain.timeline).toBeUndefined()
    expect(r.completionMs).toEqual(plain.completionMs)
    const timeline = r.timeline!
    // One sample every 500 ms from 0 until the last event.
    expect(timeline.length).toBe(Math.floor(r.lastDoneMs / 500) + 1)
    expect(timeline.map((p) => p.t)).toEqual(timeline.map((_, i) => i * 0.5))
    for (const p of timeline) {
      for (const share of [p.downBusy, p.upBusy, p.originBusy]) {
        expect(share).toBeGreaterThanOrEqual(0)
        expect(share).toBeLessThanOrEqual(1 + 1e-9)
      }
    }
    // Nothing moves at t = 0 (requests are still on their way), the origin is busy right
    // after, and the nodes still pulling only ever decrease.
    expect(timeline[0]).toMatchObject({ pulling: 12, downBusy: 0, originBusy: 0 })
    expect(timeline[1]!.originBusy).toBeGreaterThan(0.5)
    for (let i = 1; i < timeline.length; i++)
      expect(timeline[i]!.pulling).toBeLessThanOrEqual(timeline[i - 1]!.pulling)
  })

  it('is deterministic for a fixed seed and differs across seeds', () => {
    const c = config({ nodes: 20, imageBytes: 16 * MiB, layers: 2, latencyMs: 2, seed: 42 })
    const a = simulate(c)
    const b = simulate(c)
    expect(b.completionMs).toEqual(a.completionMs)
    expect(b.originBytes).toBe(a.originBytes)
    expect(b.events).toBe(a.events)
    const other = simulate({ ...c, seed: 43 })
    expect(other.completionMs).not.toEqual(a.completionMs)
  })

  it('is bound by the origin when the origin is the slowest link', () => {
    const c = config({ nodes: 10, imageBytes: 16 * MiB, nodeUpMbit: 1000, originMbit: 50, latencyMs: 1 })
    const r = simulate(c)
    const row = summarizeSim('origin-bound', c, r)
    expect(row.boundLimitedBy).toBe('origin upload')
    expect(row.ratioToBound).toBeGreaterThanOrEqual(1)
    expect(row.p50Seconds).toBeLessThanOrEqual(row.maxSeconds)
    // The origin sends every byte at least once; exactly once may round to 1 - 1e-16.
    expect(row.originRatio).toBeGreaterThanOrEqual(1 - 1e-9)
  })

  it('serves pieces from peers that are still downloading (in-flight seeding)', () => {
    const c = config({ nodes: 12, imageBytes: 16 * MiB, layers: 1, latencyMs: 1 })
    const deliveries: Array<{ from: number; t: number }> = []
    const r = simulate({ ...c, onPiece: (_n, _l, _i, from, t) => deliveries.push({ from, t }) })
    expect(deliveries).toHaveLength(c.nodes * r.pieces)
    const fromPartial = deliveries.filter((d) => d.from < c.nodes && d.t < r.completionMs[d.from]!)
    expect(fromPartial.length).toBeGreaterThan(0)
  })

  it('keeps the seed from sending a piece again after its hold while two agents hold it', () => {
    // A 60 s hold on 2 Mbit nodes: the pull outlasts it, and without the tracker's word
    // on spread pieces the seed sent 1.59x the image (seed 1, before that word existed).
    const c = config({ ...TESTBED_N25, imageBytes: 40 * 1e6, seed: 1, repeatPieceAfterMs: 60_000 })
    const r = simulate(c)
    expect(Math.max(...r.completionMs)).toBeGreaterThan(120_000)
    expect(r.originBytes / c.imageBytes).toBeLessThan(1.15)
  })

  it('sends one piece from one node no more than maxUploadsPerPiece times at once', () => {
    // With one copy at a time, a node's copies of a piece land at least one piece's
    // sending time apart (a copy alone needs that much of the uplink); without the
    // limit, copies share the uplink and land together.
    const c = config({
      nodes: 20,
      imageBytes: 8 * MiB,
      layers: 1,
      nodeUpMbit: 2,
      originMbit: 25,
      latencyMs: 1,
    })
    const closest = (maxUploadsPerPiece: number): { gapMs: number; pieceMs: number } => {
      const landed = new Map<string, number[]>()
      const r = simulate({
        ...c,
        maxUploadsPerPiece,
        onPiece: (_node, layer, index, from, t) => {
          if (from === c.nodes) return
          const key = `${from}/${layer}/${index}`
          landed.set(key, [...(landed.get(key) ?? []), t])
        },
      })
      let gapMs = Number.POSITIVE_INFINITY
      for (const times of landed.values()) {
        times.sort((a, b) => a - b)
        for (let k = 1; k < times.length; k++) gapMs = Math.min(gapMs, times[k]! - times[k - 1]!)
      }
      return { gapMs, pieceMs: (r.pieceSize[0]! * 8) / (c.nodeUpMbit * 1e3) }
    }
    const limited = closest(1)
    expect(limited.gapMs).toBeGreaterThanOrEqual(limited.pieceMs * 0.999)
    const unlimited = closest(0)
    expect(unlimited.gapMs).toBeLessThan(unlimited.pieceMs / 2)
  })

  it('lets only originSlots peers fetch from the origin at once', () => {
    const c = config({ nodes: 15, imageBytes: 16 * MiB, layers: 1, latencyMs: 1, originSlots: 1 })
    const fromOrigin: Array<{ node: number; t: number }> = []
    const r = simulate({
      ...c,
      onPiece: (node, _l, _i, from, t) => {
        if (from === c.nodes) fromOrigin.push({ node, t })
      },
    })
    // A slot is held until its peer completes: origin pieces reach one node at a time.
    for (let k = 1; k < fromOrigin.length; k++) {
      const prev = fromOrigin[k - 1]!
      const cur = fromOrigin[k]!
      if (cur.node !== prev.node) expect(cur.t).toBeGreaterThanOrEqual(r.completionMs[prev.node]!)
    }
    expect(fromOrigin.length).toBeGreaterThanOrEqual(r.pieces)
  })
  it('gives a node one origin slot across layers with exclusiveOriginSlots', () => {
    // Until the first node is done, who got pieces from the origin, and of which layers.
    const receivers = (exclusiveOriginSlots: boolean): Map<number, Set<number>> => {
      const c = config({ nodes: 30, imageBytes: 32 * MiB, layers: 2, latencyMs: 1, originSlots: 4, seed: 3 })
      const got: Array<{ node: number; layer: number; t: number }> = []
      const r = simulate({
        ...c,
        exclusiveOriginSlots,
        onPiece: (node, layer, _i, from, t) => {
          if (from === c.nodes) got.push({ node, layer, t })
        },
      })
      const firstDone = Math.min(...r.completionMs)
      const byNode = new Map<number, Set<number>>()
      for (const g of got) {
        if (g.t >= firstDone) continue
        const layers = byNode.get(g.node) ?? new Set<number>()
        layers.add(g.layer)
        byNode.set(g.node, layers)
      }
      return byNode
    }
    const shared = receivers(false)
    const exclusive = receivers(true)
    // By default the first nodes to ask take both layers' 4 slots.
    expect([...shared.values()].some((layers) => layers.size === 2)).toBe(true)
    expect(shared.size).toBeLessThanOrEqual(8)
    // Exclusive: each node one layer's slot, so 8 nodes share the origin.
    expect([...exclusive.values()].every((layers) => layers.size === 1)).toBe(true)
    expect(exclusive.size).toBe(8)
  })
  it('uses peers beyond maxPeers only when half of them answered busy (busyExtraPeers), or to reach sought pieces', () => {
    // One upload at a time per node: peers answer busy all the time.
    const c = config({
      nodes: 16,
      imageBytes: 8 * MiB,
      layers: 1,
      latencyMs: 1,
      maxPeers: 2,
      maxConcurrentUploads: 1,
    })
    const mostAgents = (busyExtraPeers: number, soughtExtraPeers = 0): number => {
      const senders = new Map<number, Set<number>>()
      simulate({
        ...c,
        busyExtraPeers,
        soughtExtraPeers,
        onPiece: (node, _l, _i, from) => {
          if (from === c.nodes) return
          const set = senders.get(node) ?? new Set<number>()
          set.add(from)
          senders.set(node, set)
        },
      })
      return Math.max(...[...senders.values()].map((s) => s.size))
    }
    expect(mostAgents(0)).toBeLessThanOrEqual(2)
    const extra = mostAgents(8)
    expect(extra).toBeGreaterThan(2)
    expect(extra).toBeLessThanOrEqual(2 + 8)
    // Pieces the origin declined that neither peer holds bring in up to 4 more.
    const sought = mostAgents(0, 4)
    expect(sought).toBeGreaterThan(2)
    expect(sought).toBeLessThanOrEqual(2 + 4)
  })
})

describe('simulate, pickPiece over the pieces it may pick', () => {
  // narrowPicks hands pickPiece only the pieces it can pick outside endgame; the whole
  // download must give the same picks with the same random draws.
  const runs: Array<Partial<SimConfig>> = [
    { nodes: 30, imageBytes: 32 * MiB, layers: 2, nodeUpMbit: 100, latencyMs: 1, seed: 4 },
    { nodes: 60, nodeUpMbit: 100, latencyMs: 1, seed: 2, maxPeers: 40, maxConcurrentUploads: 4 },
    STREAMING_RUN,
  ]
  for (const [k, over] of runs.entries()) {
    it(`gives the same run as pickPiece over every piece (${k + 1})`, () => {
      const outcome = (narrowPicks: boolean) => {
        const hash = createHash('sha256')
        const r = simulate(
          config({
            ...over,
            narrowPicks,
            onPiece: (node, layer, index, from, simMs) =>
              hash.update(`${node},${layer},${index},${from},${simMs};`),
          }),
        )
        return { events: r.events, completion: r.completionMs, deliveries: hash.digest('hex') }
      }
      expect(outcome(true)).toEqual(outcome(false))
    })
  }
})

/** A hash of who sent which piece to whom and when, and the last node's time, of one run. */
function deliveriesOf(over: Partial<SimConfig>): string {
  const hash = createHash('sha256')
  const r = simulate({
    ...config({ nodes: 14, imageBytes: 8 * MiB, layers: 2, nodeUpMbit: 20, latencyMs: 1, seed: 5 }),
    ...over,
    onPiece: (node, layer, index, from, simMs) => hash.update(`${node},${layer},${index},${from},${simMs};`),
  })
  return `${hash.digest('hex')}:${r.lastDoneMs}`
}

describe('simulate, defaults', () => {
  it("runs the agent's default upload cap when none is given", () => {
    const byDefault = deliveriesOf({ maxConcurrentUploads: undefined })
    expect(byDefault).toBe(deliveriesOf({ maxConcurrentUploads: MAX_CONCURRENT_UPLOADS }))
    // And the cap matters here: with 16 the pieces travel differently.
    expect(byDefault).not.toBe(deliveriesOf({ maxConcurrentUploads: 16 }))
  })

  it("runs the agent's starting peer limit when none is given", () => {
    const byDefault = deliveriesOf({ startingPeers: undefined })
    expect(byDefault).toBe(deliveriesOf({ startingPeers: STARTING_PEERS }))
    // With 13 peers per download the limit matters: without it the pieces travel differently.
    expect(byDefault).not.toBe(deliveriesOf({ startingPeers: 0 }))
  })

  it("runs the piece server's upload turns when none is given", () => {
    const byDefault = deliveriesOf({ uploadTurnHoldMs: undefined })
    expect(byDefault).toBe(deliveriesOf({ uploadTurnHoldMs: UPLOAD_TURN_HOLD_MS }))
    expect(byDefault).not.toBe(deliveriesOf({ uploadTurnHoldMs: 0 }))
  })

  it('keeps no slots for waiting peers where uploads are quick', () => {
    // 100 Mbit/s: a 256 KiB piece among 8 uploads takes about 0.2 s, under the 2 s hold.
    const fast = { nodeUpMbit: 100, maxConcurrentUploads: undefined }
    expect(deliveriesOf({ ...fast, uploadTurnHoldMs: undefined })).toBe(
      deliveriesOf({ ...fast, uploadTurnHoldMs: 0 }),
    )
  })

  it('keeps the slowest node near the median by giving freed upload slots in turn', () => {
    // The testbed case at N = 25 with the agent's defaults. Served first come,
    // first served, a node refused early stays refused: a download holding a slot asks
    // for its next piece the moment its piece is done and takes the freed slot again.
    const lastToMedian = (uploadTurnHoldMs: number | undefined): number => {
      const r = simulate({
        ...config({ ...TESTBED_N25, imageBytes: 40 * MiB, seed: 2 }),
        maxConcurrentUploads: undefined,
        startingPeers: undefined,
        uploadTurnHoldMs,
      })
      const done = [...r.completionMs].sort((a, b) => a - b)
      return done[done.length - 1]! / done[done.length >> 1]!
    }
    expect(lastToMedian(undefined)).toBeLessThan(1.1)
    expect(lastToMedian(0)).toBeGreaterThan(1.25)
  })
})

describe('simulate, pinned runs', () => {
  // Each run's outcome as the simulator of session 11 (before the link state moved into
  // dense arrays and per-piece masks) computed it, pinned again in session 18 when the
  // peer search took the scheduler's rules (wantsMorePeers, admitsPeer), and in session 24
  // when a download crowded out by busy answers searched at once. A change made for speed must leave
  // these exactly as they are; a change of policy (piece-picker.ts, hand-out.ts, the
  // rules restated in simulate.ts) changes them on purpose, and then they are pinned again.
  const cases: Array<{ name: string; over: Partial<SimConfig>; expected: Record<string, number | string> }> =
    [
      {
        name: 'defaults, two layers',
        over: { nodes: 30, imageBytes: 32 * MiB, layers: 2, nodeUpMbit: 100, latencyMs: 1, seed: 4 },
        expected: {
          events: 37363,
          busy: 1759,
          declined: 323,
          origin: 33554432,
          last: 4662.4430187828575,
          deliveries: 'cd2ec45f69cd901e',
        },
      },
      {
        // The scheduler's cap on requests in flight (inFlightCap), off by default.
        name: 'defaults, two layers, at most 8 requests in flight per download',
        over: {
          nodes: 30,
          imageBytes: 32 * MiB,
          layers: 2,
          nodeUpMbit: 100,
          latencyMs: 1,
          seed: 4,
          maxInFlight: 8,
        },
        expected: {
          events: 34236,
          busy: 1317,
          declined: 119,
          origin: 33554432,
          last: 4425.153669293571,
          deliveries: '57ae53c762309a91',
        },
      },
      {
        // 49 links per download: the per-piece masks take two 32-bit words.
        name: 'more than 32 peers per download, 4 uploads per agent',
        over: { nodes: 60, nodeUpMbit: 100, latencyMs: 1, seed: 2, maxPeers: 40, maxConcurrentUploads: 4 },
        expected: {
          events: 30257,
          busy: 3363,
          declined: 216,
          origin: 16777216,
          last: 3008.8563627176745,
          deliveries: 'eee7db52645a480e',
        },
      },
      {
        name: 'streaming, ahead cap, start jitter',
        over: { ...STREAMING_RUN, haveDelayMs: 300 },
        expected: {
          events: 42550,
          busy: 3192,
          declined: 523,
          origin: 25165824,
          last: 8230.237122845985,
          deliveries: 'be26ffdade171abe',
        },
      },
    ]
  for (const { name, over, expected } of cases) {
    it(`gives the pinned outcome: ${name}`, () => {
      const hash = createHash('sha256')
      const r = simulate(
        config({
          ...over,
          // Who sent which piece to whom, and when, in the order stored.
          onPiece: (node, layer, index, from, simMs) =>
            hash.update(`${node},${layer},${index},${from},${simMs};`),
        }),
      )
      expect({
        events: r.events,
        busy: r.busyAnswers,
        declined: r.declinedAnswers,
        origin: r.originBytes,
        last: r.lastDoneMs,
        deliveries: hash.digest('hex').slice(0, 16),
      }).toEqual(expected)
    })
  }
})
