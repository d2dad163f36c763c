/**
 * The fetching side of the transfer benchmark (a child process): for each stack
 * variant a libp2p node with shoal's piece client, fetching every piece of the blob
 * from one or more servers and checking each piece's sha256 as the agent does; and a
 * raw TCP client reading the same bytes from the servers' raw ports.
 *
 * Every shoal variant reads its pieces into buffers from one piece buffer pool
 * (piece-buffers.ts) and gives each back once its sha256 was checked, as the agent's
 * download scheduler does once a piece is in the cache. The raw TCP paths read the
 * socket's own chunks, as before.
 *
 * Since session 12 the pool's buffers are in shared memory and the piece client's
 * hasher hashes each piece on a worker thread as its bytes arrive, as the agent does;
 * `SHOAL_BENCH_HASH_WORKER=0` hashes on the main thread instead (an A/B switch).
 * `SHOAL_BENCH_HASH_WORKER_MIN_KIB=N` sets the hasher's `minWorkerBytes` (pieces under
 * N KiB hashed on the main thread, in shared memory as the agent's are): 0 puts every
 * piece on the worker, a large N none (session 13's measurement of that cutoff).
 */
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import type { Libp2p } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Digest } from '../../protocol/src/index.js'
import {
  createPieceBufferPool,
  createPieceClient,
  createPieceHasher,
  type PieceClient,
  type PieceWant,
} from '../../protocol/src/p2p/index.js'
import { type StackVariant, startStack } from './stack.js'
import { serveRequests, type WorkerRequest } from './worker-process.js'

/** What the parent asks to fetch. */
export interface FetchJob {
  digest: Digest
  size: number
  pieceSize: number
  /** sha256 (hex) of every piece. */
  pieceHashes: string[]
}

/** How long a fetch took, from after the connections were up to the last byte. */
export interface FetchResult {
  seconds: number
  bytes: number
  /** The fetching process's peak RSS so far (since it started, all paths), in bytes. */
  fetcherMaxRssBytes: number
}

function maxRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024
}

const nodes = new Map<string, { node: Libp2p; client: PieceClient }>()

/**
 * Piece buffers for every shoal variant. Pieces in use at once: one per request in
 * flight (peers x depth); the bound leaves room for up to 8 peers at depth 2.
 */
/** Pieces hashed on the piece client's hasher's worker thread, or on the main thread; an A/B switch. */
const hashOnWorker = process.env.SHOAL_BENCH_HASH_WORKER !== '0'

const pieceBuffers = createPieceBufferPool({
  maxBuffers: 16,
  shared: hashOnWorker,
  maxSharedBytes: 128 * 1024 * 1024,
})
const allocate = (length: number): Uint8Array => pieceBuffers.take(length)
const minWorkerKib = process.env.SHOAL_BENCH_HASH_WORKER_MIN_KIB
const hasher = hashOnWorker
  ? createPieceHasher(minWorkerKib === undefined ? {} : { minWorkerBytes: Number(minWorkerKib) * 1024 })
  : undefined

/** Pieces hashed as they arrive (the piece client's `sha256`), or whole once in; an A/B switch. */
const hashAsArrives = process.env.SHOAL_BENCH_HASH_WHOLE !== '1'

function pieceLength(job: FetchJob, index: number): number {
  return Math.min(job.pieceSize, job.size - index * job.pieceSize)
}

async function startNodes(variants: StackVariant[]): Promise<void> {
  for (const variant of variants) {
    const node = await startStack(variant)
    nodes.set(variant.name, {
      node,
      client: createPieceClient(
        { libp2p: node },
        {
          timeoutMs: 300_000,
          lane: variant.libp2pStreams !== true,
          ...(hasher === undefined ? {} : { hasher }),
        },
      ),
    })
  }
}

/**
 * Fetches all pieces from `addresses` over one connection each: pieces are handed out
 * in batches from one queue, `depth` requests in flight per peer, as the agent keeps
 * its peers busy.
 */
async function fetchShoal(
  variant: string,
  addresses: string[],
  job: FetchJob,
  batch: number,
  depth: number,
  /** Fetch only the first `limit` pieces (a warm-up). */
  limit = job.pieceHashes.length,
): Promise<FetchResult> {
  const entry = nodes.get(variant)
  if (entry === undefined) throw new Error(`no node for variant ${variant}`)
  const { node, client } = entry
  const peers = addresses.map((a) => multiaddr(a))
  await Promise.all(peers.map((p) => node.dial(p, { signal: AbortSignal.timeout(60_000) })))
  const queue: PieceWant[][] = []
  const count = Math.min(limit, job.pieceHashes.length)
  let expected = 0
  for (let i = 0; i < count; i += batch) {
    const wants: PieceWant[] = []
    for (let j = i; j < Math.min(i + batch, count); j++) {
      expected += pieceLength(job, j)
      wants.push({ index: j, length: pieceLength(job, j) })
    }
    queue.push(wants)
  }
  let bytes = 0
  const started = performance.now()
  const worker = async (peer: (typeof peers)[number]): Promise<void> => {
    for (let wants = queue.shift(); wants !== undefined; wants = queue.shift()) {
      for await (const piece of client.fetchPieces(peer, job.digest, wants, {
        allocate,
        sha256: hashAsArrives,
      })) {
        if (piece.bytes === undefined) throw new Error(`piece ${piece.index} refused: ${piece.status}`)
        const hash = piece.sha256 ?? createHash('sha256').update(piece.bytes).digest('hex')
        if (hash !== job.pieceHashes[piece.index]) throw new Error(`piece ${piece.index} failed its sha256`)
        bytes += piece.bytes.byteLength
        // Checked and counted: nothing reads it any more, the next piece may reuse it.
        pieceBuffers.give(piece.bytes)
      }
    }
  }
  await Promise.all(peers.flatMap((peer) => Array.from({ length: depth }, () => worker(peer))))
  const seconds = (performance.now() - started) / 1000
  for (const p of peers) await node.hangUp(p)
  if (bytes !== expected) throw new Error(`fetched ${bytes} of ${expected} bytes`)
  return { seconds, bytes, fetcherMaxRssBytes: maxRssBytes() }
}

/** Reads `[start, end)` from one raw server; with `verify`, hashes it piece by piece. */
async function readRaw(
  socket: Socket,
  job: FetchJob,
  start: number,
  end: number,
  verify: boolean,
): Promise<number> {
  socket.write(`${job.digest} ${start} ${end}\n`)
  let position = start
  let hash = verify ? createHash('sha256') : undefined
  for await (const chunk of socket as AsyncIterable<Buffer>) {
    if (hash !== undefined) {
      let offset = 0
      while (offset < chunk.byteLength) {
        const index = Math.floor(position / job.pieceSize)
        const pieceEnd = Math.min(job.size, (index + 1) * job.pieceSize)
        const take = Math.min(chunk.byteLength - offset, pieceEnd - position)
        hash.update(chunk.subarray(offset, offset + take))
        offset += take
        position += take
        if (position === pieceEnd) {
          if (hash.digest('hex') !== job.pieceHashes[index])
            throw new Error(`raw piece ${index} failed its sha256`)
          hash = createHash('sha256')
        }
      }
    } else {
      position += chunk.byteLength
    }
  }
  if (position !== end) throw new Error(`raw read ended at ${position}, wanted ${end}`)
  return end - start
}

/** Fetches the blob over raw TCP, one connection per server, each a contiguous share of the pieces. */
async function fetchRaw(ports: number[], job: FetchJob, verify: boolean): Promise<FetchResult> {
  const sockets = ports.map((port) => connect({ port, host: '127.0.0.1', noDelay: true }))
  await Promise.all(sockets.map((s) => once(s, 'connect')))
  const pieces = job.pieceHashes.length
  const started = performance.now()
  const counts = await Promise.all(
    sockets.map((socket, i) => {
      const first = Math.floor((pieces * i) / sockets.length)
      const last = Math.floor((pieces * (i + 1)) / sockets.length)
      return readRaw(socket, job, first * job.pieceSize, Math.min(job.size, last * job.pieceSize), verify)
    }),
  )
  const seconds = (performance.now() - started) / 1000
  const bytes = counts.reduce((a, b) => a + b, 0)
  if (bytes !== job.size) throw new Error(`fetched ${bytes} of ${job.size} bytes`)
  return { seconds, bytes, fetcherMaxRssBytes: maxRssBytes() }
}

serveRequests(
  async (req: WorkerRequest) => {
    switch (req.cmd) {
      case 'start':
        await startNodes(req.variants as StackVariant[])
        return null
      case 'shoal':
        return fetchShoal(
          String(req.variant),
          req.addresses as string[],
          req.job as FetchJob,
          Number(req.batch),
          Number(req.depth),
          req.limit === undefined ? undefined : Number(req.limit),
        )
      case 'raw':
        return fetchRaw(req.ports as number[], req.job as FetchJob, req.verify === true)
      default:
        throw new Error(`unknown command ${req.cmd}`)
    }
  },
  async () => {
    for (const { node } of nodes.values()) await node.stop()
    await hasher?.close()
  },
)
