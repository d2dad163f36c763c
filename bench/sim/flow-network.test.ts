import { describe, expect, it } from 'vitest'
import { EventQueue } from './event-queue.js'
import { type Flow, FlowNetwork, type Sharing } from './flow-network.js'

/** Runs the network alone, starting flows at given times; returns finish times by name. */
function run(
  up: number[],
  down: number[],
  starts: Array<{ at: number; src: number; dst: number; bytes: number; name: string }>,
  sharing: Sharing = 'proportional',
): Record<string, number> {
  const queue = new EventQueue()
  const net = new FlowNetwork(queue, 1, Float64Array.from(up), Float64Array.from(down), sharing)
  for (const s of starts) queue.push(s.at, 2, s)
  const done: Record<string, number> = {}
  for (let ev = queue.pop(); ev !== undefined; ev = queue.pop()) {
    if (ev.kind === 2) {
      const s = ev.ref as (typeof starts)[number]
      net.start(s.src, s.dst, s.bytes, ev.t, s.name)
    } else {
      const flow = ev.ref as Flow
      if (!net.due(flow, ev.version, ev.t)) continue
      net.remove(flow, ev.t)
      done[flow.owner as string] = ev.t
    }
  }
  return done
}

describe('FlowNetwork', () => {
  it('shares an uplink equally and hands the share back when a flow ends', () => {
    // Sender 0 at 1 byte/ms to two receivers with fast downlinks.
    const done = run(
      [1, 1, 1],
      [100, 100, 100],
      [
        { at: 0, src: 0, dst: 1, bytes: 1000, name: 'a' },
        { at: 0, src: 0, dst: 2, bytes: 500, name: 'b' },
      ],
    )
    expect(done.b).toBeCloseTo(1000, 6)
    expect(done.a).toBeCloseTo(1500, 6)
  })

  /** Sender 0 to a fast receiver (a); b joins at 400 (a has 600 left), bound by its receiver at 0.25 byte/ms. */
  const joining = [
    [1, 1, 1],
    [100, 0.25, 100],
    [
      { at: 0, src: 0, dst: 2, bytes: 1000, name: 'a' },
      { at: 400, src: 0, dst: 1, bytes: 100, name: 'b' },
    ],
  ] as const satisfies Parameters<typeof run>

  it('slows a running flow when another joins, and takes the receiver bound into account', () => {
    const done = run(...joining)
    // b: min(1/2, 0.25) = 0.25 -> 400 ms. a: 0.5 byte/ms meanwhile (proportional share),
    // 200 bytes by 800, then 400 left at 1 byte/ms.
    expect(done.b).toBeCloseTo(800, 6)
    expect(done.a).toBeCloseTo(1200, 6)
  })

  it("max-min: gives the share a receiver-bound flow cannot use to the sender's other flows", () => {
    const done = run(...joining, 'max-min')
    // b is bound by its receiver at 0.25; a gets the other 0.75 of the uplink: 300 bytes
    // by 800, then the last 300 at 1 byte/ms.
    expect(done.b).toBeCloseTo(800, 6)
    expect(done.a).toBeCloseTo(1100, 6)
  })

  it('max-min: fills bottleneck by bottleneck across several senders and receivers', () => {
    // Senders 0 (up 3) and 1 (up 1); receivers 2 (down 1) and 3 (down 10).
    // Flows 0->2, 0->3, 1->3. Receiver 2 bounds 0->2 at 1; sender 1 bounds 1->3 at 1;
    // 0->3 takes what is left of sender 0: 2. Proportional would give 0->3 only 1.5.
    const bytes = 6000
    const up = [3, 1, 0, 0]
    const down = [0, 0, 1, 10]
    const flows = [
      { at: 0, src: 0, dst: 2, bytes, name: 'x' },
      { at: 0, src: 0, dst: 3, bytes, name: 'y' },
      { at: 0, src: 1, dst: 3, bytes, name: 'z' },
    ]
    const maxMin = run(up, down, flows, 'max-min')
    // y at 2 finishes at 3000; then x stays receiver-bound at 1 and z sender-bound at 1.
    expect(maxMin.y).toBeCloseTo(3000, 6)
    expect(maxMin.x).toBeCloseTo(6000, 6)
    expect(maxMin.z).toBeCloseTo(6000, 6)
    expect(run(up, down, flows).y).toBeCloseTo(4000, 6)
  })

  it('counts the bytes each sender sent, cut-short flows included', () => {
    const queue = new EventQueue()
    const net = new FlowNetwork(queue, 1, Float64Array.from([2, 1]), Float64Array.from([10, 10]))
    const f = net.start(0, 1, 1000, 0, undefined)
    net.remove(f, 100)
    expect(net.sent[0]).toBeCloseTo(200, 6)
  })
})
