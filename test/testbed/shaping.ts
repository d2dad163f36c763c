/**
 * Bandwidth shaping and byte counters for the testbed. A host's upload is a tbf qdisc on
 * its own `eth0`; its download is an htb class on the switch-side end of its veth (the
 * switch sends into the host through it). `netem` is not available in this kernel, so
 * there is no added latency.
 */
import { runCommand } from '../helpers/processes.js'
import type { Topology, TestbedHost } from './topology.js'

/** Token bucket size: room for two jumbo frames, enough for tbf at these rates. */
const BURST_BYTES = 20_000

async function tc(netns: string, args: string[]): Promise<void> {
  await runCommand('tc', ['-n', netns, ...args], { timeoutMs: 30_000 })
}

/** Limits what `host` sends to `mbit` megabits per second (tbf on its eth0). */
export async function shapeUplink(host: TestbedHost, mbit: number): Promise<void> {
  await tc(host.ns.name, [
    'qdisc',
    'replace',
    'dev',
    'eth0',
    'root',
    'tbf',
    'rate',
    `${mbit}mbit`,
    'burst',
    String(BURST_BYTES),
    'latency',
    '50ms',
  ])
}

/** Limits what `host` receives to `mbit` megabits per second (htb on the switch-side veth). */
export async function shapeDownlink(topology: Topology, host: TestbedHost, mbit: number): Promise<void> {
  const sw = topology.switchNs.name
  await tc(sw, ['qdisc', 'replace', 'dev', host.id, 'root', 'handle', '1:', 'htb', 'default', '10'])
  await tc(sw, [
    'class',
    'replace',
    'dev',
    host.id,
    'parent',
    '1:',
    'classid',
    '1:10',
    'htb',
    'rate',
    `${mbit}mbit`,
    'ceil',
    `${mbit}mbit`,
    'burst',
    String(BURST_BYTES),
    'cburst',
    String(BURST_BYTES),
    'quantum',
    String(topology.mtu + 100),
  ])
}

/** Shaping of a whole testbed, in megabits per second. */
export interface ShapingPlan {
  /** Each node's upload and download. */
  nodeMbit: number
  /** The origin's upload (seed registry and baseline Distribution share it). */
  originMbit: number
}

/** Applies `plan` to every node (both directions) and to the origin's uplink. */
export async function applyShaping(topology: Topology, plan: ShapingPlan): Promise<void> {
  await shapeUplink(topology.origin, plan.originMbit)
  for (const node of topology.nodes) {
    await shapeUplink(node, plan.nodeMbit)
    await shapeDownlink(topology, node, plan.nodeMbit)
  }
}

/** Bytes and packets an interface has sent and received. */
export interface LinkCounters {
  txBytes: number
  rxBytes: number
  txPackets: number
  rxPackets: number
}

/**
 * Reads an interface's counters (`ip -s -j link show`) in namespace `netns`.
 * @throws when the interface does not exist
 */
export async function readLinkCounters(netns: string, dev = 'eth0'): Promise<LinkCounters> {
  const { stdout } = await runCommand('ip', ['-n', netns, '-s', '-j', 'link', 'show', 'dev', dev])
  const [link] = JSON.parse(stdout) as Array<{
    stats64?: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } }
  }>
  const stats = link?.stats64
  if (!stats) throw new Error(`no counters for ${dev} in ${netns}`)
  return {
    txBytes: stats.tx.bytes,
    rxBytes: stats.rx.bytes,
    txPackets: stats.tx.packets,
    rxPackets: stats.rx.packets,
  }
}
