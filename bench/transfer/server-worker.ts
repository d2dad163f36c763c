/**
 * The serving side of the transfer benchmark (a child process): the agent's blob cache
 * holding the test blob, shoal's piece server on one libp2p node per stack variant, and
 * a raw TCP server sending the same cache bytes in the same 1 MiB chunks.
 *
 * Raw protocol: the client sends one line `<digest> <start> <end>\n`; the server writes
 * bytes [start, end) and ends the connection.
 */
import { once } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import type { Libp2p } from '@libp2p/interface'
import { type BlobCache, createBlobCache } from '../../peer-agent/src/cache/index.js'
import type { Digest } from '../../protocol/src/index.js'
import { createPieceServer, type PieceServer } from '../../protocol/src/p2p/index.js'
import { type StackVariant, startStack } from './stack.js'
import { serveRequests, type WorkerRequest } from './worker-process.js'

const DEFAULT_WRITE_BYTES = 1 << 20

const caches = new Map<number, BlobCache>()
const nodes: Libp2p[] = []
const servers: PieceServer[] = []
let raw: Server | undefined
let root = ''

async function cacheFor(writeBytes: number): Promise<BlobCache> {
  let cache = caches.get(writeBytes)
  if (cache === undefined) {
    // Several caches on one root only read: each yields chunks of its own size.
    cache = createBlobCache({}, { root, quotaBytes: 2 ** 50, durable: false, readChunkBytes: writeBytes })
    await cache.start()
    caches.set(writeBytes, cache)
  }
  return cache
}

async function serveRaw(socket: Socket, cache: BlobCache): Promise<void> {
  socket.setNoDelay(true)
  // Read the request line without iterating the socket (ending an iteration destroys it).
  const line = await new Promise<string>((resolve, reject) => {
    let text = ''
    const onData = (chunk: Buffer): void => {
      text += String(chunk)
      if (!text.includes('\n')) return
      socket.off('data', onData)
      socket.pause()
      resolve(text)
    }
    socket.on('data', onData)
    socket.once('error', reject)
  })
  const [digest, start, end] = line.trim().split(' ')
  const body = cache.readRange(digest as Digest, Number(start), Number(end))
  for await (const chunk of body as AsyncIterable<Uint8Array>) {
    if (!socket.write(chunk)) await once(socket, 'drain')
  }
  socket.end()
}

async function start(req: WorkerRequest): Promise<unknown> {
  root = String(req.root)
  const variants = req.variants as StackVariant[]
  const addresses: Record<string, string> = {}
  for (const variant of variants) {
    const node = await startStack(variant)
    nodes.push(node)
    const source = await cacheFor(variant.writeBytes ?? DEFAULT_WRITE_BYTES)
    // A loaded machine can leave a stream unread for long: the bench measures speed, not stall handling.
    const server = createPieceServer(
      { libp2p: node, source },
      {
        maxConcurrentUploads: 64,
        sendStallTimeoutMs: 600_000,
        requestTimeoutMs: 600_000,
        ...(variant.libp2pStreams === true ? {} : { lane: { host: '127.0.0.1' } }),
      },
    )
    await server.start()
    servers.push(server)
    addresses[variant.name] = node.getMultiaddrs()[0]!.toString()
  }
  const rawCache = await cacheFor(DEFAULT_WRITE_BYTES)
  raw = createServer((socket) => {
    serveRaw(socket, rawCache).catch(() => socket.destroy())
  })
  raw.listen(0, '127.0.0.1')
  await once(raw, 'listening')
  const address = raw.address()
  const rawPort = typeof address === 'object' && address !== null ? address.port : 0
  return { addresses, rawPort }
}

serveRequests(
  async (req) => {
    if (req.cmd === 'start') return start(req)
    throw new Error(`unknown command ${req.cmd}`)
  },
  async () => {
    raw?.close()
    for (const server of servers) await server.stop()
    for (const node of nodes) await node.stop()
    for (const cache of caches.values()) await cache.stop()
  },
)
