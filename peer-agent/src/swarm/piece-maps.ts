/**
 * Where the agent gets the signed piece map of a blob and how it is trusted: from the
 * seed registry over HTTP (`GET <registry>/shoal/v1/piece-maps/<digest>`, binary envelope or JSON), or, when the
 * registry cannot be reached, from peers over the piece-map protocol. Every map is
 * verified against the seed's peer id: the configured `registryPeerId`, or the one the
 * registry gives at `GET /shoal/v1/seed`, learnt once and pinned. Verified maps are kept
 * in memory and on disk (so a restarted agent resumes without the registry) and are
 * served to other peers.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { raceSignal, sleep } from '../../../protocol/src/abort.js'
import { type Digest, isDigest } from '../../../protocol/src/index.js'
import {
  decodeSignedPieceMap,
  type PieceMap,
  parseSignedPieceMap,
  type SignedPieceMap,
  verifyPieceMap,
} from '../../../protocol/src/piece-map.js'
import { SwarmUnavailableError } from '../transfer/index.js'

/** The seed's identity as the registry publishes it. */
export interface SeedInfo {
  peerId: string
  multiaddrs: string[]
}

/** Collaborators of the piece map store. */
export interface PieceMapStoreComponents {
  /** Asks peers for a signed map (the piece-map protocol); used when the registry is down. */
  fromPeers?(digest: Digest, options: { signal: AbortSignal }): AsyncIterable<SignedPieceMap>
  fetch?: typeof globalThis.fetch
  logger?: Logger
}

/** Options of the piece map store. */
export interface PieceMapStoreInit {
  /** Base URL of the seed registry. */
  registryUrl: string
  /** The seed's peer id (trust root); learnt from the registry when absent. */
  registryPeerId?: string
  /** Folder for verified maps. */
  root: string
  /** Deadline of one HTTP request. @default 10000 */
  timeoutMs?: number
  /**
   * Times the registry is asked again for a piece map it could not be reached for (a
   * timeout, a refused connection, a 5xx) when no peer gave one either, each with twice
   * the deadline before, after a pause of a second per retry. A map is a few kilobytes;
   * when fifty agents start a pull at once on a starved machine the seed can take more
   * than one deadline to answer, and a download without its map goes to the seed's
   * HTTP for the whole blob (docs/BENCHMARKS.md, cluster, eighteenth round).
   * @default 2
   */
  registryRetries?: number
  /** Maps kept in memory. @default 1024 */
  maxCached?: number
}

/** The piece map store. */
export interface PieceMapStore {
  /** Creates the folder. */
  start(): Promise<void>
  /**
   * The verified piece map of `digest`. Throws SwarmUnavailableError when no trusted map
   * can be had (the registry has none and no peer gave a valid one).
   */
  get(digest: Digest, options?: { signal?: AbortSignal }): Promise<PieceMap>
  /** A verified signed map held in memory or on disk, for the piece-map protocol. */
  signed(digest: Digest): Promise<SignedPieceMap | undefined>
  /** The seed's peer id when known (configured or learnt). */
  seedPeerId(): string | undefined
  /** Asks the registry who its seed is (and pins the peer id); undefined when it cannot tell. */
  seedInfo(options?: { signal?: AbortSignal }): Promise<SeedInfo | undefined>
}

/** Creates the piece map store (see the file comment). */
export function createPieceMapStore(
  components: PieceMapStoreComponents,
  init: PieceMapStoreInit,
): PieceMapStore {
  const fetchImpl = components.fetch ?? globalThis.fetch
  const log = components.logger
  const timeoutMs = init.timeoutMs ?? 10_000
  const registryRetries = init.registryRetries ?? 2
  /** Maps being fetched: concurrent asks for one digest share the fetch. */
  const fetching = new Map<Digest, Promise<SignedPieceMap>>()
  const maxCached = init.maxCached ?? 1024
  const base = init.registryUrl.replace(/\/+$/, '')
  const memory = new Map<Digest, { map: PieceMap; signed: SignedPieceMap }>()
  let pinned = init.registryPeerId
  let learning: Promise<SeedInfo | undefined> | undefined

  const fileOf = (digest: Digest): string => join(init.root, `${digest.replace(':', '-')}.json`)

  function deadline(signal: AbortSignal | undefined, ms = timeoutMs): AbortSignal {
    const t = AbortSignal.timeout(ms)
    return signal ? AbortSignal.any([signal, t]) : t
  }

  function remember(digest: Digest, map: PieceMap, signed: SignedPieceMap): void {
    memory.delete(digest)
    memory.set(digest, { map, signed })
    if (memory.size > maxCached) memory.delete(memory.keys().next().value as Digest)
  }

  async function seedInfo(options: { signal?: AbortSignal } = {}): Promise<SeedInfo | undefined> {
    try {
      const res = await fetchImpl(`${base}/shoal/v1/seed`, {
        headers: { accept: 'application/json' },
        signal: deadline(options.signal),
      })
      if (!res.ok) {
        await res.body?.cancel()
        return undefined
      }
      const body = (await res.json()) as { peerId?: unknown; multiaddrs?: unknown }
      if (typeof body.peerId !== 'string' || !/^[A-Za-z0-9]{1,128}$/.test(body.peerId)) return undefined
      const multiaddrs = Array.isArray(body.multiaddrs)
        ? body.multiaddrs.filter((m): m is string => typeof m === 'string' && m.startsWith('/')).slice(0, 16)
        : []
      // The first answer is pinned: a registry cannot later swap the trust root.
      pinned ??= body.peerId
      return { peerId: body.peerId, multiaddrs }
    } catch (err) {
      if (options.signal?.aborted) throw err
      log?.debug({ err }, 'could not ask the registry for its seed')
      return undefined
    }
  }

  async function trustRoot(signal: AbortSignal | undefined): Promise<string | undefined> {
    if (pinned !== undefined) return pinned
    learning ??= seedInfo().finally(() => {
      learning = undefined
    })
    await learning
    signal?.throwIfAborted()
    return pinned
  }

  async function verify(digest: Digest, value: unknown, signer: string): Promise<SignedPieceMap> {
    const signed = parseSignedPieceMap(value)
    const map = await verifyPieceMap(signed, signer)
    if (map.digest !== digest)
      throw new SwarmUnavailableError(`piece map is for ${map.digest}, not ${digest}`)
    return { ...signed, map }
  }

  async function fromDisk(digest: Digest, signer: string): Promise<SignedPieceMap | undefined> {
    try {
      const text = await readFile(fileOf(digest), 'utf8')
      return await verify(digest, JSON.parse(text), signer)
    } catch {
      return undefined
    }
  }

  async function save(digest: Digest, signed: SignedPieceMap): Promise<void> {
    const file = fileOf(digest)
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`
    try {
      await writeFile(tmp, JSON.stringify(signed))
      await rename(tmp, file)
    } catch (err) {
      log?.debug({ err, digest }, 'could not persist a piece map')
    }
  }

  /** Returns the map from the registry, `null` when it has none, undefined when it cannot be reached. */
  async function fromRegistry(
    digest: Digest,
    signer: string,
    signal: AbortSignal | undefined,
    ms = timeoutMs,
  ): Promise<SignedPieceMap | null | undefined> {
    let res: Response
    try {
      res = await fetchImpl(`${base}/shoal/v1/piece-maps/${digest}`, {
        headers: { accept: 'application/json' },
        signal: deadline(signal, ms),
      })
    } catch (err) {
      if (signal?.aborted) throw err
      log?.debug({ err, digest }, 'registry unreachable for a piece map')
      return undefined
    }
    if (res.status === 404) {
      await res.body?.cancel()
      return null
    }
    if (!res.ok) {
      await res.body?.cancel()
      return undefined
    }
    try {
      // The seed answers with the binary envelope by default, or JSON.
      const type = res.headers.get('content-type') ?? ''
      const body = new Uint8Array(await res.arrayBuffer())
      const value: unknown = type.includes('json')
        ? JSON.parse(new TextDecoder().decode(body))
        : decodeSignedPieceMap(body)
      return await verify(digest, value, signer)
    } catch (err) {
      log?.warn({ err, digest }, 'the registry served a piece map that does not verify')
      return undefined
    }
  }

  async function fromPeers(
    digest: Digest,
    signer: string,
    signal: AbortSignal | undefined,
  ): Promise<SignedPieceMap | undefined> {
    if (components.fromPeers === undefined) return undefined
    const limit = deadline(signal)
    try {
      for await (const candidate of components.fromPeers(digest, { signal: limit })) {
        try {
          return await verify(digest, candidate, signer)
        } catch (err) {
          log?.warn({ err, digest }, 'a peer served a piece map that does not verify')
        }
      }
    } catch (err) {
      if (signal?.aborted) throw err
      log?.debug({ err, digest }, 'no peer gave a piece map')
    }
    return undefined
  }

  /** The registry, then peers, then the registry again with longer deadlines (registryRetries). */
  async function fetchMap(digest: Digest, signer: string): Promise<SignedPieceMap> {
    const noMap = (): SwarmUnavailableError =>
      new SwarmUnavailableError(`swarm unavailable: the seed has no piece map of ${digest}`, { digest })
    let registry = await fromRegistry(digest, signer, undefined)
    if (registry === null) throw noMap()
    let signed = registry ?? (await fromPeers(digest, signer, undefined))
    for (let retry = 1; signed === undefined && retry <= registryRetries; retry++) {
      await sleep(1_000 * retry)
      log?.debug({ digest, retry }, 'asking the registry for a piece map again')
      registry = await fromRegistry(digest, signer, undefined, timeoutMs * 2 ** retry)
      if (registry === null) throw noMap()
      signed = registry
    }
    if (signed === undefined) {
      throw new SwarmUnavailableError(`swarm unavailable: no trusted piece map of ${digest}`, { digest })
    }
    await save(digest, signed)
    return signed
  }

  return {
    async start() {
      await mkdir(init.root, { recursive: true })
    },

    async get(digest, options = {}) {
      if (!isDigest(digest)) throw new SwarmUnavailableError(`not a digest: ${digest}`)
      const held = memory.get(digest)
      if (held) return held.map
      const signer = await trustRoot(options.signal)
      if (signer === undefined) {
        throw new SwarmUnavailableError('swarm unavailable: the seed registry peer id is unknown', { digest })
      }
      let signed = await fromDisk(digest, signer)
      if (signed === undefined) {
        let shared = fetching.get(digest)
        if (shared === undefined) {
          // Shared by every asker, so one asker's abort does not end it for the others:
          // each waits on it with its own signal below.
          shared = fetchMap(digest, signer).finally(() => fetching.delete(digest))
          fetching.set(digest, shared)
        }
        signed = await raceSignal(shared, options.signal)
      }
      remember(digest, signed.map, signed)
      return signed.map
    },

    async signed(digest) {
      const held = memory.get(digest)
      if (held) return held.signed
      if (pinned === undefined) return undefined
      const signed = await fromDisk(digest, pinned)
      if (signed) remember(digest, signed.map, signed)
      return signed
    },

    seedPeerId() {
      return pinned
    },

    seedInfo,
  }
}
