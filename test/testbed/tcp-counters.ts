/**
 * The kernel's TCP counters of a host's network namespace (/proc/net/snmp and
 * /proc/net/netstat, read by a process inside it), to tell how much of what a link
 * carried was sent again: a link's byte counters include retransmissions, and a pull
 * that wastes its links shows there before it shows in the agents' own counters.
 */
import type { TestbedHost } from './topology.js'

/** The counters kept, as `<table>.<name>` of /proc/net/snmp and /proc/net/netstat. */
export const TCP_COUNTERS = [
  'Tcp.ActiveOpens',
  'Tcp.PassiveOpens',
  'Tcp.EstabResets',
  'Tcp.OutRsts',
  'Tcp.InSegs',
  'Tcp.OutSegs',
  'Tcp.RetransSegs',
  // Retransmission timeouts, and those the kernel found spurious afterwards.
  'TcpExt.TCPTimeouts',
  'TcpExt.TCPSpuriousRTOs',
  'TcpExt.TCPLossProbes',
  'TcpExt.TCPFastRetrans',
  'TcpExt.TCPSlowStartRetrans',
  'TcpExt.TCPLostRetransmit',
  // Segments the far end reported as received twice (D-SACK): data sent again for nothing.
  'TcpExt.TCPDSACKRecv',
  // Segments this end received twice and said so.
  'TcpExt.TCPDSACKOldSent',
  'TcpExt.TCPDSACKOfoSent',
  // Recoveries undone once the kernel saw they were not needed.
  'TcpExt.TCPDSACKUndo',
  'TcpExt.TCPLossUndo',
  // A retransmission skipped because the first copy still sat in this host's queue.
  'TcpExt.TCPSpuriousRtxHostQueues',
  // Connection attempts whose SYN was sent again (a connect that waited a second or more).
  'TcpExt.TCPSynRetrans',
  // Receive windows closed because the application did not read (a starved reader).
  'TcpExt.TCPToZeroWindowAdv',
  'TcpExt.TCPRcvQDrop',
  // Segments delivered to the far end (acknowledged), for scale.
  'TcpExt.TCPDelivered',
  // Connections closed or reset with unread or unsent data.
  'TcpExt.TCPAbortOnData',
  'TcpExt.TCPAbortOnClose',
] as const

export type TcpCounters = Record<string, number>

/**
 * Parses /proc/net/snmp or /proc/net/netstat text: pairs of lines `<Table>: names...`
 * and `<Table>: values...`. Returns every counter as `<Table>.<name>`.
 */
export function parseProcNetCounters(text: string): TcpCounters {
  const counters: TcpCounters = {}
  const lines = text.split('\n').filter((l) => l.includes(':'))
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const [table, names] = splitLine(lines[i]!)
    const [valueTable, values] = splitLine(lines[i + 1]!)
    if (table !== valueTable || names.length !== values.length) {
      throw new Error(`unexpected /proc/net line pair for ${table} and ${valueTable}`)
    }
    names.forEach((name, k) => {
      const value = Number(values[k])
      if (Number.isFinite(value)) counters[`${table}.${name}`] = value
    })
  }
  return counters
}

function splitLine(line: string): [string, string[]] {
  const colon = line.indexOf(':')
  return [
    line.slice(0, colon),
    line
      .slice(colon + 1)
      .trim()
      .split(/\s+/),
  ]
}

/** The kept counters (TCP_COUNTERS) of one host's namespace; a counter the kernel lacks is 0. */
export async function readTcpCounters(host: Pick<TestbedHost, 'ns'>): Promise<TcpCounters> {
  const { stdout } = await host.ns.exec('cat', ['/proc/net/snmp', '/proc/net/netstat'], { timeoutMs: 15_000 })
  const all = parseProcNetCounters(stdout)
  return Object.fromEntries(TCP_COUNTERS.map((name) => [name, all[name] ?? 0]))
}

/** The kept counters summed over `hosts`. */
export async function sumTcpCounters(hosts: ReadonlyArray<Pick<TestbedHost, 'ns'>>): Promise<TcpCounters> {
  const sum: TcpCounters = Object.fromEntries(TCP_COUNTERS.map((name) => [name, 0]))
  const each = await Promise.all(hosts.map((h) => readTcpCounters(h)))
  for (const c of each) for (const name of TCP_COUNTERS) sum[name] = (sum[name] ?? 0) + (c[name] ?? 0)
  return sum
}
