import { randomBytes } from 'node:crypto'
import { stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { Registry } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Bitfield, digestOf } from '../../../protocol/src/index.js'
import { createMessageReader } from '../../../protocol/src/messages/index.js'
import {
  createP2PNode,
  createPieceClient,
  generateSwarmKey,
  type P2PNode,
} from '../../../protocol/src/p2p/index.js'
import {
  computePieceMap,
  decodeSignedPieceMap,
  parseSignedPieceMap,
  pieceRange,
  SIGNED_PIECE_MAP_MEDIA_TYPE,
  verifyPieceMap,
  MIN_PIECE_SIZE,
} from '../../../protocol/src/piece-map.js'
import {
  HAVE_PROTOCOL,
  HAVE_WATCH_PROTOCOL,
  PIECE_MAP_PROTOCOL,
  PIECES_PROTOCOL,
} from '../../../protocol/src/protocols.js'
import { createTrackerClient } from '../../../protocol/src/tracker-client/index.js'
// In-process tracker for the announce test (tests may compose services; code may not).
import { parseTrackerConfig } from '../../../tracker/src/config.js'
import { createTrackerNode } from '../../../tracker/src/main.js'
import { SIGNED_PIECE_MAP_BINARY_MEDIA_TYPE } from './routes.js'
import {
  closeServer,
  createSeedHarness,
  pushBlob,
  type SeedHarness,
  serveHttp,
  silent,
  waitFor,
} from './testing.js'

const MiB = 1024 * 1024

async function seedInfo(url: string): Promise<{ peerId: string; multiaddrs: string[] }> {
  const res = await fetch(`${url}/shoal/v1/seed`)
  expect(res.status).toBe(200)
  return (await res.json()) as { peerId: string; multiaddrs: string[] }
}

async function counter(metrics: Registry, name: string): Promise<number> {
  const m = await metrics.getSingleMetric(name)?.get()
  return m?.values.reduce((sum, v) => sum + v.value, 0) ?? 0
}

describe('the registry as seed', () => {
  let h: SeedHarness
  const peers: P2PNode[] = []

  beforeEach(async () => {
    h = await createSeedHarness()
  })

  afterEach(async () => {
    await Promise.all(peers.splice(0).map((p) => p.stop()))
    await h.cleanup()
  })

  /** Runs `body` against a real tracker on loopback (its HTTP URL), stopped afterwards. */
  async function withTracker(
    announceIntervalMs: number,
    body: (url: string) => Promise<void>,
  ): Promise<void> {
    const trackerNode = await createTrackerNode(parseTrackerConfig({ announceIntervalMs }), {
      logger: silent,
      metrics: new Registry(),
    })
    await trackerNode.start()
    const served = await serveHttp(trackerNode.app.callback())
    try {
      await body(served.url)
    } finally {
      await closeServer(served.server)
      await trackerNode.stop()
    }
  }

  async function peer(bootstrap: string[] = []): Promise<P2PNode> {
    const node = await createP2PNode({}, { bootstrap })
    peers.push(node)
    await node.start()
    return node
  }

  it('computes the piece map at push, serves it signed, and keeps key and map across a restart', async () => {
    const first = await h.registry()
    const seed = first.node.seed!
    const data = randomBytes(2 * MiB + 1234)
    const digest = await pushBlob(first.node, data)
    // Computed by the commit hook, not by a request.
    await waitFor(() => seed.pieceMaps.computed() === 1)
    const info = await seedInfo(first.url)
    expect(info.peerId).toBe(seed.peerId.toString())
    expect(info.multiaddrs.length).toBeGreaterThan(0)
    expect(info.multiaddrs.every((a) => a.endsWith(`/p2p/${info.peerId}`))).toBe(true)

    const res = await fetch(`${first.url}/shoal/v1/piece-maps/${digest}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe(SIGNED_PIECE_MAP_BINARY_MEDIA_TYPE)
    const signed = decodeSignedPieceMap(new Uint8Array(await res.arrayBuffer()))
    const expected = await computePieceMap([data], digest, data.length)
    expect(await verifyPieceMap(signed, info.peerId)).toEqual(expected)
    expect(expected.pieces).toHaveLength(Math.ceil(data.length / MIN_PIECE_SIZE))

    const json = await fetch(`${first.url}/shoal/v1/piece-maps/${digest}?format=json`)
    expect(json.headers.get('content-type')).toContain(SIGNED_PIECE_MAP_MEDIA_TYPE)
    expect(await verifyPieceMap(parseSignedPieceMap(await json.json()), info.peerId)).toEqual(expected)
    // The key is private to the registry's user.
    expect((await stat(join(h.dir, 'data', 'seed', 'key'))).mode & 0o777).toBe(0o600)
    await first.stop()

    const second = await h.registry()
    expect(second.node.seed!.peerId.toString()).toBe(info.peerId)
    const again = await fetch(`${second.url}/shoal/v1/piece-maps/${digest}?format=json`)
    expect(await verifyPieceMap(parseSignedPieceMap(await again.json()), info.peerId)).toEqual(expected)
    // Read back from storage, not computed again.
    expect(second.node.seed!.pieceMaps.computed()).toBe(0)
  })

  it('computes the map of a blob stored without a seed on first request, and refuses bad requests', async () => {
    const plain = await h.registry({ seed: { enabled: false } })
    expect(plain.node.seed).toBeUndefined()
    const data = randomBytes(100_000)
    const digest = await pushBlob(plain.node, data)
    expect((await fetch(`${plain.url}/shoal/v1/seed`)).status).toBe(404)
    await plain.stop()

    const r = await h.registry()
    const seed = r.node.seed!
    expect(seed.pieceMaps.computed()).toBe(0)
    const res = await fetch(`${r.url}/shoal/v1/piece-maps/${digest}`)
    expect(res.status).toBe(200)
    const map = await verifyPieceMap(
      decodeSignedPieceMap(new Uint8Array(await res.arrayBuffer())),
      seed.peerId,
    )
    expect(map).toEqual(await computePieceMap([data], digest, data.length))
    expect(seed.pieceMaps.computed()).toBe(1)

    const unknown = await fetch(`${r.url}/shoal/v1/piece-maps/${digestOf('not here')}`)
    expect(unknown.status).toBe(404)
    expect(await unknown.json()).toMatchObject({ errors: [{ code: 'BLOB_UNKNOWN' }] })
    const garbage: Array<[string, RequestInit | undefined, number]> = [
      ['/shoal/v1/piece-maps/sha256:zz', undefined, 400],
      ['/shoal/v1/piece-maps/%E0%A4%A', undefined, 400],
      [`/shoal/v1/piece-maps/${'a'.repeat(5000)}`, undefined, 400],
      [`/shoal/v1/piece-maps/${digest}?format=xml`, undefined, 400],
      [`/shoal/v1/piece-maps/${digest}`, { method: 'POST', body: 'x' }, 405],
      ['/shoal/v1/seed', { method: 'DELETE' }, 405],
      ['/shoal/v1/nothing', undefined, 404],
      ['/shoal/v1/piece-maps/', undefined, 404],
    ]
    for (const [path, init, status] of garbage) {
      const answer = await fetch(`${r.url}${path}`, init)
      expect({ path, status: answer.status }).toEqual({ path, status })
      expect(((await answer.json()) as { errors: unknown[] }).errors).toHaveLength(1)
    }
    // The OCI API is untouched and the registry still serves.
    expect((await fetch(`${r.url}/v2/`)).status).toBe(200)
    expect((await fetch(`${r.url}/shoal/v1/piece-maps/${digest}`)).status).toBe(200)
  })

  it('computes the piece map of pulled-through content when it lands in storage', async () => {
    const upstream = await h.registry({ dataDir: join(h.dir, 'upstream'), seed: { enabled: false } })
    const data = randomBytes(300_000)
    const digest = await pushBlob(upstream.node, data, 'library/app')
    const proxy = await h.registry({ upstreams: [{ url: upstream.url }] })
    const seed = proxy.node.seed!
    expect(seed.pieceMaps.computed()).toBe(0)
    const res = await fetch(`${proxy.url}/v2/library/app/blobs/${digest}`)
    expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true)
    await waitFor(() => seed.pieceMaps.computed() === 1)
    const signed = await seed.pieceMaps.get(digest)
    expect(await verifyPieceMap(signed, seed.peerId)).toEqual(
      await computePieceMap([data], digest, data.length),
    )
  })

  it('serves every piece to a libp2p peer, which reassembles the exact blob, and survives garbage', async () => {
    const r = await h.registry()
    const seed = r.node.seed!
    const data = randomBytes(2 * MiB + 777)
    const digest = await pushBlob(r.node, data)
    const addrs = (await seedInfo(r.url)).multiaddrs
    const leecher = await peer()
    const client = createPieceClient({ libp2p: leecher.libp2p }, { timeoutMs: 10_000 })
    const to = addrs.map((a) => multiaddr(a))

    // Garbage on every protocol first: answered with an error or a reset, never a crash.
    for (const protocol of [PIECES_PROTOCOL, HAVE_PROTOCOL, HAVE_WATCH_PROTOCOL, PIECE_MAP_PROTOCOL]) {
      for (const junk of [randomBytes(3000), Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])]) {
        const stream = await leecher.libp2p.dialProtocol(to, protocol, { signal: AbortSignal.timeout(5_000) })
        stream.send(junk)
        await stream.close()
        try {
          const reader = createMessageReader(stream)
          for (let m = await reader.read(); m !== undefined; m = await reader.read()) {
            expect(m).toMatchObject({ type: 'error' })
          }
        } catch {
          // A reset stream is an acceptable answer to garbage.
        }
      }
    }

    const signed = await client.fetchPieceMap(to, digest)
    const map = await verifyPieceMap(signed, seed.peerId)
    expect(map.pieces).toHaveLength(Math.ceil(data.length / MIN_PIECE_SIZE))
    expect((await client.fetchHave(to, digest))?.isComplete()).toBe(true)
    expect(await client.fetchHave(to, digestOf('unknown'))).toBeUndefined()
    // A watch of a blob the seed holds whole is answered once, complete, and ends.
    const watched = []
    for await (const event of client.watchHave(to, digest)) watched.push(event)
    expect(watched).toHaveLength(1)
    expect(watched[0] !== undefined && 'bitfield' in watched[0] && watched[0].bitfield?.isComplete()).toBe(
      true,
    )
    const parts: Buffer[] = []
    for await (const piece of client.fetchPieces(
      to,
      digest,
      map.pieces.map((_, index) => ({ index, length: pieceRange(map, index).length })),
    )) {
      parts[piece.index] = Buffer.from(piece.bytes!)
    }
    const whole = Buffer.concat(parts)
    expect(whole.equals(data)).toBe(true)
    expect(digestOf(whole)).toBe(digest)
    await expect(client.fetchPiece(to, digest, map.pieces.length)).rejects.toMatchObject({
      status: 'not-held',
    })
    await expect(client.fetchPiece(to, digestOf('unknown'), 0)).rejects.toMatchObject({ status: 'not-found' })
    // Sent bytes count in the registry's shared counter, next to the HTTP layer's.
    expect(await counter(r.metrics, 'shoal_registry_blob_bytes_sent_total')).toBe(data.length)
    expect(await counter(r.metrics, 'shoal_registry_seed_pieces_sent_total')).toBe(map.pieces.length)
    const http = await fetch(`${r.url}/v2/test/seed/blobs/${digest}`)
    expect(Buffer.from(await http.arrayBuffer()).equals(data)).toBe(true)
    await waitFor(
      async () => (await counter(r.metrics, 'shoal_registry_blob_bytes_sent_total')) === 2 * data.length,
    )
  })

  it('caps the upload rate and the concurrent uploads', async () => {
    // 512 KiB/s with a one-second bucket: 2 MiB + 1 take at least 3 s minus the 0.5 s burst.
    const rate = 512 * 1024
    const r = await h.registry({ seed: { uploadBytesPerSecond: rate, maxConcurrentUploads: 1 } })
    const data = randomBytes(2 * MiB + 1)
    const digest = await pushBlob(r.node, data)
    const map = await verifyPieceMap(await r.node.seed!.pieceMaps.get(digest), r.node.seed!.peerId)
    const leecher = await peer()
    const client = createPieceClient({ libp2p: leecher.libp2p }, { timeoutMs: 20_000 })
    const to = r.node.seed!.multiaddrs().map((a) => multiaddr(a))
    const started = performance.now()
    const slow = client.fetchPieces(
      to,
      digest,
      map.pieces.map((_, index) => ({ index })),
    )
    const first = await slow.next()
    expect(first.value).toMatchObject({ index: 0 })
    // The one upload slot is taken: another request is answered busy at once.
    await expect(client.fetchPiece(to, digest, 2)).rejects.toMatchObject({ status: 'busy' })
    let received = first.value!.bytes!.byteLength
    for await (const piece of slow) received += piece.bytes!.byteLength
    const seconds = (performance.now() - started) / 1000
    expect(received).toBe(data.length)
    // Unlimited, 2 MiB on loopback take well under 0.5 s; the bucket allows rate/s after its burst.
    expect(seconds).toBeGreaterThan((data.length - rate) / rate - 0.5)
  })

  it('closes the seed to peers without its pre-shared key, and refuses an unreadable key file', async () => {
    const pskFile = join(h.dir, 'swarm.key')
    const psk = generateSwarmKey()
    await writeFile(pskFile, psk)
    await expect(h.registry({ seed: { pskFile: join(h.dir, 'missing.key') } })).rejects.toMatchObject({
      name: 'ConfigError',
    })
    const r = await h.registry({ seed: { pskFile } })
    const digest = await pushBlob(r.node, randomBytes(1000))
    const to = r.node.seed!.multiaddrs().map((a) => multiaddr(a))
    const member = await createP2PNode({}, { psk })
    peers.push(member)
    await member.start()
    const signed = await createPieceClient({ libp2p: member.libp2p }).fetchPieceMap(to, digest)
    expect((await verifyPieceMap(signed, r.node.seed!.peerId)).digest).toBe(digest)
    const outsider = await peer()
    await expect(
      createPieceClient({ libp2p: outsider.libp2p }, { timeoutMs: 3_000 }).fetchPieceMap(to, digest),
    ).rejects.toThrow()
  })

  it('announces held and new blobs to a real tracker and provides them in the DHT', async () => {
    await withTracker(1000, async (url) => {
      const tracker = createTrackerClient({ url })
      // A blob stored while no seed ran is announced when the seed starts.
      const plain = await h.registry({ seed: { enabled: false } })
      const old = await pushBlob(plain.node, randomBytes(5000))
      await plain.stop()
      const r = await h.registry({ seed: { trackerUrl: url } })
      const seedId = r.node.seed!.peerId.toString()
      const inSwarm = async (digest: string): Promise<boolean> => {
        try {
          const swarm = await tracker.swarm(digest)
          return swarm.peers.some((p) => p.peerId === seedId && p.role === 'seed' && p.complete)
        } catch {
          return false
        }
      }
      await waitFor(() => inSwarm(old))
      // A pushed blob is announced at commit.
      const fresh = await pushBlob(r.node, randomBytes(7000))
      await waitFor(() => inSwarm(fresh))
      const swarm = await tracker.swarm(fresh)
      const entry = swarm.peers.find((p) => p.peerId === seedId)!
      expect(entry.multiaddrs).toEqual(r.node.seed!.multiaddrs())
      expect(entry.pieceCount).toBe(1)

      // A peer that joined the DHT through the seed finds it as a provider.
      const other = await peer([r.node.seed!.multiaddrs()[0]!])
      await waitFor(async () => {
        const found = await other.findProviders(fresh, { signal: AbortSignal.timeout(1_000) })
        return found.some((p) => p.id.toString() === seedId)
      })
      // Stopping the seed tells the tracker it left.
      await r.stop()
      expect(await inSwarm(fresh)).toBe(false)
    })
  })

  it('keeps sending a piece only once while the tracker says two agents hold it', async () => {
    await withTracker(200, async (url) => {
      const tracker = createTrackerClient({ url })
      // A hold of 100 ms: without the tracker's word, a piece goes again soon after.
      const r = await h.registry({ seed: { trackerUrl: url, repeatPieceAfterMs: 100 } })
      const digest = await pushBlob(r.node, randomBytes(2 * MiB + 777))
      const map = await verifyPieceMap(await r.node.seed!.pieceMaps.get(digest), r.node.seed!.peerId)
      const to = r.node.seed!.multiaddrs().map((a) => multiaddr(a))
      const first = createPieceClient({ libp2p: (await peer()).libp2p }, { timeoutMs: 10_000 })
      const second = createPieceClient({ libp2p: (await peer()).libp2p }, { timeoutMs: 10_000 })
      for (let i = 0; i < map.pieces.length; i++) await first.fetchPiece(to, digest, i)
      // Two agents say they hold piece 0; piece 1 only one.
      const held = (...indexes: number[]): string => {
        const b = new Bitfield(map.pieces.length)
        for (const i of indexes) b.set(i)
        return b.toBase64()
      }
      for (const [agent, bits] of [
        [await peer(), held(0, 1)],
        [await peer(), held(0)],
      ] as const) {
        await tracker.announce({
          peerId: agent.peerId.toString(),
          multiaddrs: [],
          digest,
          state: 'partial',
          piecesHeld: 1,
          pieceCount: map.pieces.length,
          bitfield: bits,
        })
      }
      // The seed hears it with its next announce (at most every second).
      const announces = await counter(r.metrics, 'shoal_registry_seed_announces_total')
      await waitFor(
        async () => (await counter(r.metrics, 'shoal_registry_seed_announces_total')) > announces + 1,
      )
      await expect(second.fetchPiece(to, digest, 0)).rejects.toMatchObject({ status: 'not-held' })
      expect((await second.fetchPiece(to, digest, 1)).byteLength).toBe(pieceRange(map, 1).length)
      expect(await counter(r.metrics, 'shoal_registry_seed_pieces_deferred_total')).toBe(1)
    })
  })
})
