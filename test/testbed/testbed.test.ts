/**
 * The cluster testbed itself: a 3-node shaped network comes up with jumbo frames, its
 * hosts reach one another over 198.18.0.0/15, a transfer between two nodes runs at the
 * shaped rate (loosely: a shared two-core machine is noisy), its links queue what
 * `queueMs` says, and stopping removes every namespace it made, as does
 * cleanupLeftovers after a run that did not stop.
 */
import { readFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { listNetns } from '../helpers/netns.js'
import {
  createCleanup,
  createTempDir,
  removeTempDir,
  requireBinaries,
  startProcess,
} from '../helpers/processes.js'
import { applyShaping, DEFAULT_DOWN_QUEUE_MS, queueBytes, readLinkCounters } from './shaping.js'
import { createTestbed } from './testbed.js'
import { availableCongestionControls, machineCongestionControl } from './congestion-control.js'
import { cleanupLeftovers, createTopology, newRunPrefix } from './topology.js'

const NODE_MBIT = 20
const TRANSFER_BYTES = 5_000_000
const QUEUE_MS = 200

interface QdiscJson {
  kind: string
  parent?: string
  options?: { rate?: number; lat?: number; limit?: number }
}

describe('cluster testbed', () => {
  const cleanup = createCleanup()
  afterEach(() => cleanup.run())

  it('builds a shaped 3-node cluster, moves bytes at the shaped rate, and removes everything', async () => {
    requireBinaries(['ip', 'tc', 'nsenter', 'curl'])
    const workDir = await createTempDir('shoal-testbed-')
    cleanup.add(() => removeTempDir(workDir))
    const prefix = newRunPrefix()
    const testbed = await createTestbed({
      nodes: 3,
      nodeMbit: NODE_MBIT,
      originMbit: 40,
      queueMs: QUEUE_MS,
      downQueueMs: QUEUE_MS,
      workDir,
      prefix,
    })
    cleanup.add(() => testbed.stop())
    const [n1, n2, n3] = testbed.topology.nodes
    expect((await listNetns()).filter((name) => name.startsWith(prefix))).toHaveLength(6)

    // Uplink: tbf at the node's rate, queueing QUEUE_MS; downlink: htb at the same rate
    // on the switch side, over a bfifo of as many bytes.
    const up = JSON.parse(
      (await n1!.ns.exec('tc', ['-j', 'qdisc', 'show', 'dev', 'eth0'])).stdout,
    ) as QdiscJson[]
    expect(up[0]).toMatchObject({
      kind: 'tbf',
      options: { rate: (NODE_MBIT * 1e6) / 8, lat: QUEUE_MS * 1000 },
    })
    const down = JSON.parse(
      (await testbed.topology.switchNs.exec('tc', ['-j', 'qdisc', 'show', 'dev', n1!.id])).stdout,
    ) as QdiscJson[]
    expect(down.map((q) => q.kind)).toEqual(['htb', 'bfifo'])
    expect(down[1]).toMatchObject({ parent: '1:10', options: { limit: queueBytes(NODE_MBIT, QUEUE_MS) } })

    const link = JSON.parse(
      (await n1!.ns.exec('ip', ['-j', 'link', 'show', 'dev', 'eth0'])).stdout,
    ) as Array<{
      mtu: number
    }>
    expect(link[0]!.mtu).toBe(9000)

    const script = `require('http').createServer((q, r) => r.end(Buffer.alloc(${TRANSFER_BYTES}))).listen(8080, '${n2!.address}', () => console.log('ready'))`
    const server = await startProcess({
      name: 'server',
      ...n2!.ns.wrap(process.execPath, ['-e', script]),
      logDir: workDir,
    })
    cleanup.add(() => server.stop())
    await server.waitForLine((line) => (line === 'ready' ? true : undefined))

    // Reachable from another node and from the origin (over the bridge, not loopback).
    const ping = await n3!.ns.exec('curl', [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `http://${n2!.address}:8080/`,
    ])
    expect(ping.stdout).toBe('200')
    const before = await readLinkCounters(n2!.ns.name)
    const portsBefore = await testbed.hostLinkBytes([n1!, n2!])
    const fetched = await n1!.ns.exec('curl', [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{size_download} %{speed_download}',
      `http://${n2!.address}:8080/`,
    ])
    const [size, speed] = fetched.stdout.split(' ').map(Number) as [number, number]
    expect(size).toBe(TRANSFER_BYTES)
    const mbit = (speed * 8) / 1e6
    // Shaped to 20 Mbit/s: never faster than that (plus the token bucket's burst), and not
    // absurdly slower either (an unshaped veth moves gigabits).
    expect(mbit).toBeLessThan(NODE_MBIT * 1.15)
    expect(mbit).toBeGreaterThan(NODE_MBIT * 0.3)
    const after = await readLinkCounters(n2!.ns.name)
    expect(after.txBytes - before.txBytes).toBeGreaterThanOrEqual(TRANSFER_BYTES)
    // The switch's ports saw the same transfer: down to n1, up from n2.
    const portsAfter = await testbed.hostLinkBytes([n1!, n2!])
    expect(portsAfter.downBytes - portsBefore.downBytes).toBeGreaterThanOrEqual(TRANSFER_BYTES)
    expect(portsAfter.upBytes - portsBefore.upBytes).toBeGreaterThanOrEqual(TRANSFER_BYTES)
    expect(portsAfter.downBytes - portsBefore.downBytes).toBeLessThan(TRANSFER_BYTES * 1.2)

    await server.stop()
    await testbed.stop()
    expect((await listNetns()).filter((name) => name.startsWith(prefix))).toEqual([])
  })

  it("bounds the downlinks to DEFAULT_DOWN_QUEUE_MS unless told otherwise; 0 keeps htb's own leaf", async () => {
    requireBinaries(['ip', 'tc'])
    const topology = await createTopology({ nodes: 2, prefix: newRunPrefix() })
    cleanup.add(() => topology.destroy())
    const downlink = async (id: string): Promise<QdiscJson[]> =>
      JSON.parse(
        (await topology.switchNs.exec('tc', ['-j', 'qdisc', 'show', 'dev', id])).stdout,
      ) as QdiscJson[]
    await applyShaping(topology, { nodeMbit: 2, originMbit: 25 })
    const bounded = await downlink(topology.nodes[0]!.id)
    expect(bounded.map((q) => q.kind)).toEqual(['htb', 'bfifo'])
    expect(bounded[1]!.options?.limit).toBe(queueBytes(2, DEFAULT_DOWN_QUEUE_MS))
    for (const node of topology.nodes)
      await topology.switchNs.exec('tc', ['qdisc', 'del', 'dev', node.id, 'root'])
    await applyShaping(topology, { nodeMbit: 2, originMbit: 25, downQueueMs: 0 })
    expect((await downlink(topology.nodes[1]!.id)).map((q) => q.kind)).not.toContain('bfifo')
  })

  it('sets the TCP congestion control of every host when told, and reports what the hosts run', async () => {
    requireBinaries(['ip', 'sysctl'])
    // One the kernel has besides the machine's own, and outside the allowed list if
    // there is one (reno is built into every kernel).
    const machine = await machineCongestionControl()
    const allowedBefore = await readFile('/proc/sys/net/ipv4/tcp_allowed_congestion_control', 'utf8')
    const others = (await availableCongestionControls()).filter((cc) => cc !== machine)
    const wanted = others.find((cc) => !allowedBefore.split(/\s+/).includes(cc)) ?? others[0]
    expect(wanted).toBeDefined()
    const topology = await createTopology({ nodes: 1, prefix: newRunPrefix(), tcpCongestionControl: wanted! })
    cleanup.add(() => topology.destroy())
    expect(topology.tcpCongestionControl).toBe(wanted)
    for (const host of [topology.origin, topology.tracker, ...topology.nodes]) {
      const read = await host.ns.exec('sysctl', ['-n', 'net.ipv4.tcp_congestion_control'])
      expect(read.stdout.trim()).toBe(wanted)
    }
    const untouched = await createTopology({ nodes: 1, prefix: newRunPrefix() })
    cleanup.add(() => untouched.destroy())
    expect(untouched.tcpCongestionControl).toBe(machine)
    await topology.destroy()
    expect(await readFile('/proc/sys/net/ipv4/tcp_allowed_congestion_control', 'utf8')).toBe(allowedBefore)
    await expect(createTopology({ nodes: 1, tcpCongestionControl: 'no-such-cc' })).rejects.toThrow(
      /not available/,
    )
  })

  it('removes the namespaces of a run that never stopped', async () => {
    requireBinaries(['ip'])
    const prefix = newRunPrefix()
    const topology = await createTopology({ nodes: 2, prefix })
    cleanup.add(() => topology.destroy())
    expect((await listNetns()).filter((name) => name.startsWith(prefix))).toHaveLength(5)
    const removed = await cleanupLeftovers(prefix)
    expect(removed.sort()).toEqual([
      `${prefix}n1`,
      `${prefix}n2`,
      `${prefix}origin`,
      `${prefix}sw`,
      `${prefix}tracker`,
    ])
    expect((await listNetns()).filter((name) => name.startsWith(prefix))).toEqual([])
  })
})
