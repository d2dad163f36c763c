import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { encodeSignedPieceMap, type SignedPieceMap, signPieceMap } from '../../../protocol/src/piece-map.js'
import { blobFixture, peerKeyFixture, pieceMapFixture } from '../../../protocol/src/testing/fixtures.js'
import { createPieceMapStore } from './piece-maps.js'

interface FakeRegistry {
  url: string
  maps: Map<string, SignedPieceMap>
  seed: { peerId: string; multiaddrs: string[] } | undefined
  requests: string[]
  /** How the next piece map requests fail, one entry each: never answered, or that status. */
  mapFailures: Array<'hang' | number>
  close(): Promise<void>
}

async function fakeRegistry(): Promise<FakeRegistry> {
  const maps = new Map<string, SignedPieceMap>()
  const requests: string[] = []
  const state: FakeRegistry = {
    url: '',
    maps,
    seed: undefined,
    requests,
    mapFailures: [],
    close: async () => {},
  }
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '')
    if (req.url === '/shoal/v1/seed' && state.seed) {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(state.seed))
      return
    }
    const m = /^\/shoal\/v1\/piece-maps\/(.+)$/.exec(req.url ?? '')
    const failure = m ? state.mapFailures.shift() : undefined
    if (failure === 'hang') return
    if (failure !== undefined) {
      res.statusCode = failure
      res.end()
      return
    }
    const signed = m ? maps.get(m[1]!) : undefined
    if (signed === undefined) {
      res.statusCode = 404
      res.end('{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
      return
    }
    res.setHeader('content-type', 'application/vnd.shoal.piece-map.v1')
    res.end(Buffer.from(encodeSignedPieceMap(signed)))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  state.close = async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  return state
}

describe('piece map store', () => {
  let dir: string
  let registry: FakeRegistry

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-piece-maps-'))
    registry = await fakeRegistry()
  })

  afterEach(async () => {
    await registry.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('learns the seed peer id once, verifies maps against it, and keeps them across restarts', async () => {
    const seed = await peerKeyFixture()
    const blob = await pieceMapFixture(100_000, { pieceSize: 16 * 1024, seed: 3 })
    const { map } = blob
    registry.maps.set(blob.digest, await signPieceMap(map, seed.privateKey))
    registry.seed = { peerId: seed.peerId.toString(), multiaddrs: ['/ip4/127.0.0.1/tcp/1'] }
    const store = createPieceMapStore({}, { registryUrl: registry.url, root: dir })
    await store.start()
    expect(await store.get(blob.digest)).toEqual(map)
    expect(store.seedPeerId()).toBe(seed.peerId.toString())

    // The registry goes away: a new store (a restarted agent) reads the verified map from disk.
    await registry.close()
    const again = createPieceMapStore(
      {},
      { registryUrl: registry.url, registryPeerId: seed.peerId.toString(), root: dir },
    )
    expect(await again.get(blob.digest)).toEqual(map)
    expect((await again.signed(blob.digest))?.signer).toBe(seed.peerId.toString())
  })

  it('refuses maps signed by another key, and says swarm unavailable when the seed has none', async () => {
    const seed = await peerKeyFixture()
    const intruder = await peerKeyFixture()
    const blob = await pieceMapFixture(50_000, { pieceSize: 16 * 1024, seed: 4 })
    const other = blobFixture(50_000, 5)
    const { map } = blob
    registry.maps.set(blob.digest, await signPieceMap(map, intruder.privateKey))
    const store = createPieceMapStore(
      {},
      { registryUrl: registry.url, registryPeerId: seed.peerId.toString(), root: dir },
    )
    await store.start()
    await expect(store.get(blob.digest)).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
    await expect(store.get(other.digest)).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
  })

  it('asks peers when the registry cannot be reached, skipping maps that do not verify', async () => {
    const seed = await peerKeyFixture()
    const intruder = await peerKeyFixture()
    const blob = await pieceMapFixture(50_000, { pieceSize: 16 * 1024, seed: 6 })
    const { map } = blob
    const good = await signPieceMap(map, seed.privateKey)
    const bad = await signPieceMap(map, intruder.privateKey)
    await registry.close()
    const store = createPieceMapStore(
      {
        async *fromPeers() {
          yield bad
          yield good
        },
      },
      { registryUrl: registry.url, registryPeerId: seed.peerId.toString(), root: dir },
    )
    await store.start()
    expect(await store.get(blob.digest)).toEqual(map)
  })

  it('asks the registry again, with a longer deadline, when neither it nor a peer gave the map', async () => {
    const seed = await peerKeyFixture()
    const blob = await pieceMapFixture(50_000, { pieceSize: 16 * 1024, seed: 7 })
    registry.maps.set(blob.digest, await signPieceMap(blob.map, seed.privateKey))
    // The first request is never answered (a starved seed), the second gets a 503.
    registry.mapFailures.push('hang', 503)
    let peerAsks = 0
    const store = createPieceMapStore(
      {
        // biome-ignore lint/correctness/useYield: a peer that has no map
        async *fromPeers() {
          peerAsks++
        },
      },
      { registryUrl: registry.url, registryPeerId: seed.peerId.toString(), root: dir, timeoutMs: 200 },
    )
    await store.start()
    // Two askers at once share one fetch.
    const [a, b] = await Promise.all([store.get(blob.digest), store.get(blob.digest)])
    expect(a).toEqual(blob.map)
    expect(b).toEqual(blob.map)
    expect(registry.requests.filter((r) => r.startsWith('/shoal/v1/piece-maps/'))).toHaveLength(3)
    expect(peerAsks).toBe(1)
  })

  it('gives up after its retries, and an asker that aborts stops waiting at once', async () => {
    const seed = await peerKeyFixture()
    const blob = await pieceMapFixture(50_000, { pieceSize: 16 * 1024, seed: 8 })
    registry.maps.set(blob.digest, await signPieceMap(blob.map, seed.privateKey))
    registry.mapFailures.push(503, 503)
    const store = createPieceMapStore(
      {},
      {
        registryUrl: registry.url,
        registryPeerId: seed.peerId.toString(),
        root: dir,
        timeoutMs: 200,
        registryRetries: 1,
      },
    )
    await store.start()
    const aborted = store.get(blob.digest, { signal: AbortSignal.timeout(50) })
    const waiting = store.get(blob.digest)
    await expect(aborted).rejects.toMatchObject({ name: 'TimeoutError' })
    await expect(waiting).rejects.toMatchObject({ name: 'SwarmUnavailableError' })
    expect(registry.requests.filter((r) => r.startsWith('/shoal/v1/piece-maps/'))).toHaveLength(2)
    // A later ask starts afresh and finds the registry answering again.
    expect(await store.get(blob.digest)).toEqual(blob.map)
  })
})
