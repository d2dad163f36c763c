import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from '@libp2p/interface'
import type { SingleKadDHT } from '@libp2p/kad-dht'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { type Ping, ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { afterEach, describe, expect, it } from 'vitest'
import { digestOf } from '../digest.js'
import { createP2PNode, generateSwarmKey, type P2PNode, type P2PNodeInit } from './node.js'

async function waitFor(check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met before the deadline')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe('p2p node', () => {
  const nodes: P2PNode[] = []

  async function node(init: P2PNodeInit = {}): Promise<P2PNode> {
    const n = await createP2PNode({}, init)
    nodes.push(n)
    await n.start()
    return n
  }

  const stockNodes: Libp2p[] = []

  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.stop()))
    await Promise.all(stockNodes.splice(0).map((n) => n.stop()))
  })

  it('talks to a node running stock @chainsafe/libp2p-noise, both ways', async () => {
    const ours = await node()
    const stock: Libp2p<{ ping: Ping }> = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { ping: ping() },
    })
    stockNodes.push(stock)
    const signal = () => AbortSignal.timeout(5_000)
    expect(
      await stock.services.ping.ping(ours.getMultiaddrs()[0]!, { signal: signal() }),
    ).toBeGreaterThanOrEqual(0)
    await stock.hangUp(ours.peerId)
    // Our side sees the stock node close the connection.
    await waitFor(() => ours.libp2p.getConnections(stock.peerId).length === 0)
    expect(
      await ours.libp2p.services.ping.ping(stock.getMultiaddrs()[0]!, { signal: signal() }),
    ).toBeGreaterThanOrEqual(0)
    expect(ours.libp2p.getConnections(stock.peerId)[0]?.encryption).toBe('/noise')
  })

  it('connects only nodes that share the pre-shared key', async () => {
    const key = generateSwarmKey()
    const a = await node({ psk: key })
    const b = await node({ psk: key })
    const other = await node({ psk: generateSwarmKey() })
    const open = await node()
    const signal = () => AbortSignal.timeout(3_000)
    expect(
      await a.libp2p.services.ping.ping(b.getMultiaddrs()[0]!, { signal: signal() }),
    ).toBeGreaterThanOrEqual(0)
    // A mismatched key garbles the handshake, which then fails or times out.
    const refused = await Promise.allSettled([
      a.libp2p.services.ping.ping(other.getMultiaddrs()[0]!, { signal: signal() }),
      open.libp2p.services.ping.ping(a.getMultiaddrs()[0]!, { signal: signal() }),
      a.libp2p.services.ping.ping(open.getMultiaddrs()[0]!, { signal: signal() }),
    ])
    expect(refused.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected'])
    expect(a.libp2p.getConnections(other.peerId)).toHaveLength(0)
    expect(a.libp2p.getConnections(open.peerId)).toHaveLength(0)
  })

  it('accepts and dials only allow-listed peer ids', async () => {
    const keys = await Promise.all([0, 1, 2].map(() => generateKeyPair('Ed25519')))
    const [ka, kb, kc] = keys as [(typeof keys)[0], (typeof keys)[0], (typeof keys)[0]]
    const idA = peerIdFromPrivateKey(ka).toString()
    const idB = peerIdFromPrivateKey(kb).toString()
    const a = await node({ privateKey: ka, allowPeers: [idB] })
    const b = await node({ privateKey: kb, allowPeers: [idA] })
    const c = await node({ privateKey: kc })
    const signal = () => AbortSignal.timeout(5_000)
    expect(
      await b.libp2p.services.ping.ping(a.getMultiaddrs()[0]!, { signal: signal() }),
    ).toBeGreaterThanOrEqual(0)
    // c is not on a's list: a refuses it inbound and will not dial it.
    await expect(c.libp2p.services.ping.ping(a.getMultiaddrs()[0]!, { signal: signal() })).rejects.toThrow()
    await expect(a.libp2p.services.ping.ping(c.getMultiaddrs()[0]!, { signal: signal() })).rejects.toThrow()
    expect(a.libp2p.getConnections(c.peerId)).toHaveLength(0)
  })

  it('dials its bootstrap peers again once they come up', async () => {
    const key = await generateKeyPair('Ed25519')
    const first = await node({ privateKey: key })
    const addr = first.getMultiaddrs()[0]!
    await first.stop()
    const late = await node({ bootstrap: [addr.toString()], rebootstrapIntervalMs: 100 })
    expect(late.libp2p.getConnections()).toHaveLength(0)
    const port = addr.toString().split('/tcp/')[1]!.split('/')[0]
    const back = await node({ privateKey: key, listen: [`/ip4/127.0.0.1/tcp/${port}`] })
    await waitFor(() => late.libp2p.getConnections(back.peerId).length > 0)
  })

  it('provides a blob in the DHT and finds the provider among five nodes', async () => {
    const seed = await node()
    const bootstrap = [seed.getMultiaddrs()[0]!.toString()]
    const others = [
      await node({ bootstrap }),
      await node({ bootstrap }),
      await node({ bootstrap }),
      await node({ bootstrap }),
    ]
    const all = [seed, ...others]
    const tableSize = (n: P2PNode) => (n.libp2p.services.dht as SingleKadDHT).routingTable.size
    await waitFor(() => all.every((n) => tableSize(n) >= 1) && tableSize(seed) >= 4)
    const digest = digestOf('a layer only one node holds')
    const [provider, , , seeker] = others as [P2PNode, P2PNode, P2PNode, P2PNode]
    expect(await seeker.findProviders(digest, { signal: AbortSignal.timeout(1_000) })).toEqual([])
    await provider.provide(digest, { signal: AbortSignal.timeout(10_000) })
    const found = await seeker.findProviders(digest, { signal: AbortSignal.timeout(10_000) })
    expect(found.map((p) => p.id.toString())).toEqual([provider.peerId.toString()])
    // The node never offers itself as a provider.
    expect(await provider.findProviders(digest, { signal: AbortSignal.timeout(1_000) })).toEqual([])
  })
})
