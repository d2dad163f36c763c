import { describe, expect, it } from 'vitest'
import { parseLinkCounters, parseQdiscCounters, queueBytes } from './shaping.js'

describe('testbed shaping helpers', () => {
  it('reads every interface of `ip -s -j link show` by name, leaving out those without counters', () => {
    const json = JSON.stringify([
      {
        ifindex: 1,
        ifname: 'lo',
        stats64: { rx: { bytes: 10, packets: 1 }, tx: { bytes: 10, packets: 1 } },
      },
      {
        ifindex: 7,
        ifname: 'n12',
        stats64: { rx: { bytes: 2_000, packets: 3 }, tx: { bytes: 9_000_000, packets: 1_001 } },
      },
      { ifindex: 8, ifname: 'br0' },
    ])
    const counters = parseLinkCounters(json)
    expect([...counters.keys()]).toEqual(['lo', 'n12'])
    expect(counters.get('n12')).toEqual({
      txBytes: 9_000_000,
      rxBytes: 2_000,
      txPackets: 1_001,
      rxPackets: 3,
    })
    expect(() => parseLinkCounters('not json')).toThrow()
  })

  it('sizes a queue in ms of its link rate, plus the burst', () => {
    // 2 Mbit/s for 2 s is 500 kB.
    expect(queueBytes(2, 2_000) - queueBytes(2, 0)).toBe(500_000)
  })

  it('reads the root queue of each device from `tc -s -j qdisc show`, children left out', () => {
    const json = JSON.stringify([
      { kind: 'noqueue', handle: '0:', dev: 'lo', root: true, bytes: 0, packets: 0, drops: 0, overlimits: 0 },
      { kind: 'htb', handle: '1:', dev: 'n3', root: true, bytes: 9_000, packets: 2, drops: 5, overlimits: 7 },
      { kind: 'bfifo', handle: '8001:', dev: 'n3', parent: '1:10', bytes: 9_000, packets: 2, drops: 5 },
    ])
    const counters = parseQdiscCounters(json)
    expect([...counters.keys()]).toEqual(['lo', 'n3'])
    expect(counters.get('n3')).toEqual({ bytes: 9_000, packets: 2, drops: 5, overlimits: 7 })
    // `tc ... show dev eth0` may leave the device out of each entry.
    const one = parseQdiscCounters(
      JSON.stringify([{ kind: 'tbf', root: true, bytes: 1, packets: 1, drops: 2 }]),
      'eth0',
    )
    expect(one.get('eth0')).toEqual({ bytes: 1, packets: 1, drops: 2, overlimits: 0 })
  })
})
