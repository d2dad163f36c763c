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

/** How long a link's queue is by default, in ms of its rate (tbf's `latency`). */
export const DEFAULT_QUEUE_MS = 50

/**
 * Queue of the nodes' downlinks, in ms of their rate. htb's default leaf queues 1,000
 * frames, which with jumbo frames is 36 s at 2 Mbit/s: no real port buffers that long,
 * and up to 24 TCP streams into one node filled it, so a request's first byte waited
 * behind tens of seconds of other pieces and timed out (docs/BENCHMARKS.md, cluster,
 * tenth and eighteenth rounds). Two seconds is still a deep, bufferbloated queue, and
 * deep enough that the origin's bursts into a 2 Mbit node are not dropped and sent
 * again (at 500 ms its link carried 1.42x the image at N = 10).
 */
export const DEFAULT_DOWN_QUEUE_MS = 2_000

/** Bytes a queue of `queueMs` at `mbit` holds, on top of the token bucket's burst. */
export function queueBytes(mbit: number, queueMs: number): number {
  return Math.round((mbit * 1e6 * queueMs) / 8 / 1000) + BURST_BYTES
}

/**
 * Limits what `host` sends to `mbit` megabits per second (tbf on its eth0), with a queue
 * of `queueMs` of that rate: what does not fit is dropped.
 */
export async function shapeUplink(
  host: TestbedHost,
  mbit: number,
  queueMs = DEFAULT_QUEUE_MS,
): Promise<void> {
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
    `${queueMs}ms`,
  ])
}

/**
 * Limits what `host` receives to `mbit` megabits per second (htb on the switch-side
 * veth). With `queueMs` above 0, the class queues at most that long at its rate (a
 * bfifo of queueBytes) and drops the rest, as the uplink's tbf does; without it (or
 * 0), htb's default leaf queues 1,000 frames (9 MB of jumbo frames: 14 s at 5 Mbit/s).
 */
export async function shapeDownlink(
  topology: Topology,
  host: TestbedHost,
  mbit: number,
  queueMs?: number,
): Promise<void> {
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
  if (queueMs !== undefined && queueMs > 0) {
    await tc(sw, [
      'qdisc',
      'replace',
      'dev',
      host.id,
      'parent',
      '1:10',
      'handle',
      '10:',
      'bfifo',
      'limit',
      String(queueBytes(mbit, queueMs)),
    ])
  }
}

/** Shaping of a whole testbed, in megabits per second. */
export interface ShapingPlan {
  /** Each node's upload and download. */
  nodeMbit: number
  /** The origin's upload (seed registry and baseline Distribution share it). */
  originMbit: number
  /** Queue of the uplinks (the nodes' and the origin's), in ms of their rate. @default DEFAULT_QUEUE_MS */
  queueMs?: number
  /**
   * Queue of the nodes' downlinks, in ms of their rate (see shapeDownlink); 0 leaves
   * htb's leaf of 1,000 frames. @default DEFAULT_DOWN_QUEUE_MS
   */
  downQueueMs?: number
}

/** Applies `plan` to every node (both directions) and to the origin's uplink. */
export async function applyShaping(topology: Topology, plan: ShapingPlan): Promise<void> {
  await shapeUplink(topology.origin, plan.originMbit, plan.queueMs)
  for (const node of topology.nodes) {
    await shapeUplink(node, plan.nodeMbit, plan.queueMs)
    await shapeDownlink(topology, node, plan.nodeMbit, plan.downQueueMs ?? DEFAULT_DOWN_QUEUE_MS)
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
  const counters = parseLinkCounters(
    (await runCommand('ip', ['-n', netns, '-s', '-j', 'link', 'show', 'dev', dev])).stdout,
  )
  const found = counters.get(dev)
  if (!found) throw new Error(`no counters for ${dev} in ${netns}`)
  return found
}

/**
 * Reads the counters of every interface in namespace `netns` with one `ip` call: the
 * switch namespace holds the far end of every host's veth, so one read gives every
 * node's download (the switch side's tx) and upload (its rx).
 */
export async function readAllLinkCounters(netns: string): Promise<Map<string, LinkCounters>> {
  return parseLinkCounters((await runCommand('ip', ['-n', netns, '-s', '-j', 'link', 'show'])).stdout)
}

/** Counters by interface name from the JSON of `ip -s -j link show` (interfaces without stats left out). */
export function parseLinkCounters(json: string): Map<string, LinkCounters> {
  const links = JSON.parse(json) as Array<{
    ifname?: string
    stats64?: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } }
  }>
  const counters = new Map<string, LinkCounters>()
  for (const link of links) {
    const stats = link.stats64
    if (!stats || typeof link.ifname !== 'string') continue
    counters.set(link.ifname, {
      txBytes: stats.tx.bytes,
      rxBytes: stats.rx.bytes,
      txPackets: stats.tx.packets,
      rxPackets: stats.rx.packets,
    })
  }
  return counters
}

/** What a link's shaping queue did: bytes and packets it sent, packets it dropped. */
export interface QdiscCounters {
  bytes: number
  packets: number
  drops: number
  overlimits: number
}

/**
 * The root queue's counters of each device in `netns` (`tc -s -j qdisc show`), by device
 * name. The root of an htb counts what its classes' queues dropped too.
 */
export async function readQdiscCounters(netns: string, dev?: string): Promise<Map<string, QdiscCounters>> {
  const args = ['-n', netns, '-s', '-j', 'qdisc', 'show', ...(dev === undefined ? [] : ['dev', dev])]
  return parseQdiscCounters((await runCommand('tc', args)).stdout, dev)
}

/** Root qdisc counters by device from the JSON of `tc -s -j qdisc show` (`dev` names the device when the output does not). */
export function parseQdiscCounters(json: string, dev?: string): Map<string, QdiscCounters> {
  const qdiscs = JSON.parse(json) as Array<{
    dev?: string
    root?: boolean
    bytes?: number
    packets?: number
    drops?: number
    overlimits?: number
  }>
  const counters = new Map<string, QdiscCounters>()
  for (const q of qdiscs) {
    const name = q.dev ?? dev
    if (q.root !== true || name === undefined) continue
    counters.set(name, {
      bytes: q.bytes ?? 0,
      packets: q.packets ?? 0,
      drops: q.drops ?? 0,
      overlimits: q.overlimits ?? 0,
    })
  }
  return counters
}
