/**
 * The cluster testbed's network: a switch namespace holding a Linux bridge, and one
 * namespace per host (the origin, the tracker, N nodes) joined to it by a veth pair
 * created directly inside the two namespaces, so nothing ever appears in the root
 * namespace. Addresses are in 198.18.0.0/15 only; every veth and the bridge use MTU 9000
 * (jumbo frames keep per-packet kernel work, the first thing to saturate two cores,
 * low). Every namespace name starts with a per-run prefix under {@link TESTBED_PREFIX},
 * so leftovers of an interrupted run can be found and removed by name.
 */
import { randomBytes } from 'node:crypto'
import { createNetns, deleteNetns, listNetns, type NetworkNamespace } from '../helpers/netns.js'
import { runCommand } from '../helpers/processes.js'
import { allowCongestionControl } from './congestion-control.js'
import { raiseNeighbourLimits } from './neighbour-table.js'

/** Every testbed namespace name starts with this (then a run id and a dash). */
export const TESTBED_PREFIX = 'shb-'

/** The MTU of every veth and the bridge. @default 9000 */
export const JUMBO_MTU = 9000

/** What a host of the testbed is for. */
export type HostRole = 'origin' | 'tracker' | 'node'

/** A namespace joined to the switch. */
export interface TestbedHost {
  readonly role: HostRole
  /** `origin`, `tracker`, `n1`, `n2`, ...: also the switch-side veth's name. */
  readonly id: string
  readonly ns: NetworkNamespace
  /** Its IPv4 address in 198.18.0.0/15 (on its `eth0`). */
  readonly address: string
}

/** Options of {@link createTopology}. */
export interface TopologyInit {
  nodes: number
  /** Per-run namespace prefix. @default `shb-<random 4 hex>-` */
  prefix?: string
  /** @default JUMBO_MTU */
  mtu?: number
  /**
   * TCP congestion control of every host (a per-namespace sysctl; the kernel must offer
   * it). When unset, hosts keep what a new namespace inherits from the machine.
   */
  tcpCongestionControl?: string
}

/** The testbed network. */
export interface Topology {
  readonly prefix: string
  readonly mtu: number
  /** TCP congestion control of every host (what `net.ipv4.tcp_congestion_control` reads in them). */
  readonly tcpCongestionControl: string
  /** The namespace holding the bridge `br0` and the switch-side veth ends. */
  readonly switchNs: NetworkNamespace
  readonly origin: TestbedHost
  readonly tracker: TestbedHost
  readonly nodes: readonly TestbedHost[]
  /** Deletes every namespace (veths and the bridge go with them). Safe to call twice. */
  destroy(): Promise<void>
}

/** The address of node `i` (1-based): 198.18.1.1, ... 198.18.1.250, 198.18.2.1, ... */
export function nodeAddress(i: number): string {
  if (!Number.isInteger(i) || i < 1 || i > 250 * 254) throw new RangeError(`node index ${i} out of range`)
  return `198.18.${1 + Math.floor((i - 1) / 250)}.${((i - 1) % 250) + 1}`
}

/** The origin's address (the seed registry and the baseline Distribution). */
export const ORIGIN_ADDRESS = '198.18.0.2'
/** The tracker's address. */
export const TRACKER_ADDRESS = '198.18.0.3'

/** A fresh per-run prefix: `shb-<4 hex>-`. Short, because namespace names end up in paths. */
export function newRunPrefix(): string {
  return `${TESTBED_PREFIX}${randomBytes(2).toString('hex')}-`
}

/** Runs `tasks` with at most `limit` at once; rejects with the first failure after all settle. */
async function inBatches<T>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0
  const errors: unknown[] = []
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!
      try {
        await task(item)
      } catch (err) {
        errors.push(err)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (errors.length > 0) throw errors[0]
}

async function ip(args: string[]): Promise<void> {
  await runCommand('ip', args, { timeoutMs: 30_000 })
}

/**
 * Builds the switch and its hosts. On any failure it removes what it made and rethrows.
 * Needs root and iproute2.
 */
export async function createTopology(
  init: TopologyInit,
  options: { signal?: AbortSignal } = {},
): Promise<Topology> {
  const prefix = init.prefix ?? newRunPrefix()
  const mtu = init.mtu ?? JUMBO_MTU
  const made: NetworkNamespace[] = []
  let destroyed = false
  let restoreNeighbourLimits: (() => Promise<void>) | undefined
  let restoreAllowedCongestionControl: (() => Promise<void>) | undefined
  const destroy = async (): Promise<void> => {
    if (destroyed) return
    destroyed = true
    await inBatches(made.splice(0), 8, (ns) => ns.delete())
    await restoreNeighbourLimits?.()
    await restoreAllowedCongestionControl?.()
  }
  try {
    // Origin, tracker and nodes all talk to one another: see neighbour-table.ts.
    restoreNeighbourLimits = await raiseNeighbourLimits(init.nodes + 2)
    if (init.tcpCongestionControl !== undefined) {
      restoreAllowedCongestionControl = await allowCongestionControl(init.tcpCongestionControl)
    }
    const switchNs = await createNetns({ name: `${prefix}sw` })
    made.push(switchNs)
    await ip(['-n', switchNs.name, 'link', 'add', 'br0', 'mtu', String(mtu), 'type', 'bridge'])
    await ip(['-n', switchNs.name, 'link', 'set', 'br0', 'up'])

    const join = async (role: HostRole, id: string, address: string): Promise<TestbedHost> => {
      options.signal?.throwIfAborted()
      const ns = await createNetns({ name: `${prefix}${id}` })
      made.push(ns)
      await ip([
        '-n',
        ns.name,
        'link',
        'add',
        'eth0',
        'type',
        'veth',
        'peer',
        'name',
        id,
        'netns',
        switchNs.name,
      ])
      await ip(['-n', ns.name, 'link', 'set', 'eth0', 'mtu', String(mtu)])
      await ip(['-n', switchNs.name, 'link', 'set', id, 'mtu', String(mtu)])
      await ip(['-n', ns.name, 'addr', 'add', `${address}/15`, 'dev', 'eth0'])
      await ip(['-n', ns.name, 'link', 'set', 'eth0', 'up'])
      await ip(['-n', switchNs.name, 'link', 'set', id, 'master', 'br0'])
      await ip(['-n', switchNs.name, 'link', 'set', id, 'up'])
      if (init.tcpCongestionControl !== undefined) {
        await ns.exec('sysctl', ['-q', '-w', `net.ipv4.tcp_congestion_control=${init.tcpCongestionControl}`])
      }
      return { role, id, ns, address }
    }

    const origin = await join('origin', 'origin', ORIGIN_ADDRESS)
    const tracker = await join('tracker', 'tracker', TRACKER_ADDRESS)
    const nodes: TestbedHost[] = new Array(init.nodes)
    await inBatches(
      Array.from({ length: init.nodes }, (_, i) => i + 1),
      6,
      async (i) => {
        nodes[i - 1] = await join('node', `n${i}`, nodeAddress(i))
      },
    )
    const tcpCongestionControl = (
      await origin.ns.exec('sysctl', ['-n', 'net.ipv4.tcp_congestion_control'])
    ).stdout.trim()
    return { prefix, mtu, tcpCongestionControl, switchNs, origin, tracker, nodes, destroy }
  } catch (err) {
    await destroy().catch(() => {})
    throw err
  }
}

/** The PIDs of processes whose network namespace is `name` (`ip netns pids`). */
export async function namespacePids(name: string): Promise<number[]> {
  const result = await runCommand('ip', ['netns', 'pids', name], { allowFailure: true })
  return result.stdout
    .split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isInteger(n) && n > 0)
}

/**
 * Removes what earlier runs left behind: for every namespace named `<prefix>*`
 * (default: every testbed run), SIGKILLs the processes inside it (they can only be
 * testbed daemons and clients) and deletes it. Returns the names deleted.
 */
export async function cleanupLeftovers(prefix = TESTBED_PREFIX): Promise<string[]> {
  const names = (await listNetns()).filter((name) => name.startsWith(prefix))
  for (const name of names) {
    for (const pid of await namespacePids(name)) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // Gone already.
      }
    }
  }
  await inBatches(names, 8, (name) => deleteNetns(name))
  return names
}
