import { afterEach, describe, expect, it } from 'vitest'
import { createNetns, type NetworkNamespace } from '../helpers/netns.js'
import { parseProcNetCounters, readTcpCounters, TCP_COUNTERS, type TcpCounters } from './tcp-counters.js'

/** How much one counter grew from `before` to `after`. */
function grew(before: TcpCounters, after: TcpCounters, name: string): number {
  return (after[name] ?? 0) - (before[name] ?? 0)
}

describe('TCP counters of a namespace', () => {
  const made: NetworkNamespace[] = []
  afterEach(async () => {
    for (const ns of made.splice(0)) await ns.delete()
  })

  it('parses the name and value line pairs of /proc/net/snmp and /proc/net/netstat', () => {
    const text = [
      'Ip: Forwarding DefaultTTL',
      'Ip: 1 64',
      'Tcp: RtoAlgorithm RtoMin ActiveOpens OutSegs RetransSegs',
      'Tcp: 1 200 17 2243332 15230',
      'TcpExt: SyncookiesSent TCPTimeouts TCPDSACKRecv',
      'TcpExt: 0 41 7',
      '',
    ].join('\n')
    expect(parseProcNetCounters(text)).toEqual({
      'Ip.Forwarding': 1,
      'Ip.DefaultTTL': 64,
      'Tcp.RtoAlgorithm': 1,
      'Tcp.RtoMin': 200,
      'Tcp.ActiveOpens': 17,
      'Tcp.OutSegs': 2243332,
      'Tcp.RetransSegs': 15230,
      'TcpExt.SyncookiesSent': 0,
      'TcpExt.TCPTimeouts': 41,
      'TcpExt.TCPDSACKRecv': 7,
    })
    expect(() => parseProcNetCounters('Tcp: A B\nUdp: 1 2\n')).toThrow(/unexpected/)
    expect(() => parseProcNetCounters('Tcp: A B\nTcp: 1\n')).toThrow(/unexpected/)
  })

  it("reads one namespace's own counters, not the machine's", async () => {
    const busy = await createNetns()
    made.push(busy)
    const quiet = await createNetns()
    made.push(quiet)
    const [busy0, quiet0] = [await readTcpCounters({ ns: busy }), await readTcpCounters({ ns: quiet })]
    expect(Object.keys(busy0).sort()).toEqual([...TCP_COUNTERS].sort())
    // A connection refused on the namespace's loopback: one active open, one reset sent.
    const refused = await busy
      .exec('curl', ['-sS', '--max-time', '5', 'http://127.0.0.1:9/'], { timeoutMs: 10_000 })
      .then(() => 'connected')
      .catch(() => 'refused')
    expect(refused).toBe('refused')
    const busy1 = await readTcpCounters({ ns: busy })
    expect(grew(busy0, busy1, 'Tcp.ActiveOpens')).toBe(1)
    expect(grew(busy0, busy1, 'Tcp.OutRsts')).toBeGreaterThanOrEqual(1)
    const quiet1 = await readTcpCounters({ ns: quiet })
    expect(grew(quiet0, quiet1, 'Tcp.ActiveOpens')).toBe(0)
    expect(grew(quiet0, quiet1, 'Tcp.OutRsts')).toBe(0)
  })
})
