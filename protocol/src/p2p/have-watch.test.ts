import { randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { sleep } from '../abort.js'
import { Bitfield } from '../bitfield.js'
import { digestOf } from '../digest.js'
import { createMessageReader, encodeMessage, type Message } from '../messages/index.js'
import { HAVE_WATCH_PROTOCOL } from '../protocols.js'
import { createMemoryPieceSource, type MemoryPieceSource } from './memory-piece-source.js'
import { createP2PNode, type P2PNode } from './node.js'
import { createPieceClient, type HaveWatchEvent, type PieceClient } from './piece-client.js'
import { createPieceServer, type PieceServer, type PieceServerInit } from './piece-server.js'
import type { PieceSource } from './piece-source.js'

const PIECE = 16 * 1024
const PIECES = 8
const layout = { size: PIECES * PIECE, pieceSize: PIECE }
const digest = digestOf('a blob being downloaded')

interface Peer {
  node: P2PNode
  source: MemoryPieceSource
  server: PieceServer
  client: PieceClient
  /** The transport of every stream its client opened. */
  opened: string[]
}

/** Reads a watch in the background: what it yielded so far, and how it ended. */
function follow(events: AsyncGenerator<HaveWatchEvent>) {
  const seen: HaveWatchEvent[] = []
  const done = (async () => {
    for await (const e of events) seen.push(e)
  })()
  done.catch(() => {})
  return { seen, done }
}

async function until(what: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!what()) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await sleep(10)
  }
}

describe.each(['libp2p', 'lane'] as const)('have watch over %s', (transport) => {
  const cleanups: Array<() => Promise<void>> = []

  async function peer(
    init: PieceServerInit = {},
    wrap: (s: MemoryPieceSource) => PieceSource = (s) => s,
  ): Promise<Peer> {
    const source = createMemoryPieceSource()
    const node = await createP2PNode({})
    await node.start()
    const server = createPieceServer(
      { libp2p: node.libp2p, source: wrap(source) },
      transport === 'lane' ? { lane: { host: '127.0.0.1' }, ...init } : init,
    )
    await server.start()
    const opened: string[] = []
    const client = createPieceClient(
      { libp2p: node.libp2p },
      { timeoutMs: 5_000, lane: transport === 'lane', onStreamOpened: (t) => opened.push(t) },
    )
    cleanups.push(async () => {
      client.close()
      await server.stop()
      await node.stop()
    })
    return { node, source, server, client, opened }
  }

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('sends the bitfield, then each piece as it is stored, and ends once all are held', async () => {
    const [holder, watcher] = [await peer({ haveUpdateIntervalMs: 0 }), await peer()]
    holder.source.putPiece(digest, layout, 2, randomBytes(PIECE))
    const watch = follow(watcher.client.watchHave(holder.node.getMultiaddrs(), digest))
    await until(() => watch.seen.length === 1)
    const first = watch.seen[0]
    expect(first !== undefined && 'bitfield' in first && [...(first.bitfield?.indexes() ?? [])]).toEqual([2])
    const order = [5, 0, 7, 1, 3, 4, 6]
    for (const index of order) {
      holder.source.putPiece(digest, layout, index, randomBytes(PIECE))
      await until(() => watch.seen.flatMap((e) => ('gained' in e ? e.gained : [])).includes(index))
    }
    await watch.done
    expect(watch.seen.slice(1).flatMap((e) => ('gained' in e ? e.gained : []))).toEqual(order)
    // The server let go of the source once the watch ended.
    await until(() => holder.source.watchers(digest) === 0)
    // On the lane when both ends serve one, not a silent fall-back to libp2p.
    expect(watcher.opened).toEqual([transport])
  })

  it('puts the pieces stored within one interval into one update', async () => {
    const [holder, watcher] = [await peer({ haveUpdateIntervalMs: 300 }), await peer()]
    holder.source.putPiece(digest, layout, 0, randomBytes(PIECE))
    const watch = follow(watcher.client.watchHave(holder.node.getMultiaddrs(), digest))
    await until(() => watch.seen.length === 1)
    holder.source.putPiece(digest, layout, 1, randomBytes(PIECE))
    await until(() => watch.seen.length === 2)
    // Stored while the interval after the last update runs: sent together at its end.
    for (const index of [2, 3, 4]) holder.source.putPiece(digest, layout, index, randomBytes(PIECE))
    await until(() => watch.seen.length === 3)
    expect(watch.seen.slice(1)).toEqual([{ gained: [1] }, { gained: [2, 3, 4] }])
  })

  it('answers a blob it does not hold with no bitfield, and ends the watch', async () => {
    const [holder, watcher] = [await peer(), await peer()]
    const events: HaveWatchEvent[] = []
    for await (const e of watcher.client.watchHave(holder.node.getMultiaddrs(), digest)) events.push(e)
    expect(events).toEqual([{ bitfield: undefined }])
    await until(() => holder.source.watchers(digest) === 0)
  })

  it('answers once and ends when its source cannot be watched', async () => {
    const [holder, watcher] = [await peer({}, (s) => ({ ...s, watch: undefined })), await peer()]
    holder.source.putPiece(digest, layout, 4, randomBytes(PIECE))
    const events: HaveWatchEvent[] = []
    for await (const e of watcher.client.watchHave(holder.node.getMultiaddrs(), digest)) events.push(e)
    expect(events).toHaveLength(1)
    const only = events[0]
    expect(only !== undefined && 'bitfield' in only && only.bitfield?.count()).toBe(1)
  })

  it('ends the watch when the holder loses the blob, and when the watcher stops', async () => {
    const [holder, watcher] = [await peer(), await peer()]
    holder.source.putPiece(digest, layout, 0, randomBytes(PIECE))
    const lost = follow(watcher.client.watchHave(holder.node.getMultiaddrs(), digest))
    await until(() => lost.seen.length === 1)
    holder.source.deleteBlob(digest)
    await lost.done
    await until(() => holder.source.watchers(digest) === 0)

    holder.source.putPiece(digest, layout, 0, randomBytes(PIECE))
    const controller = new AbortController()
    const stopped = follow(
      watcher.client.watchHave(holder.node.getMultiaddrs(), digest, { signal: controller.signal }),
    )
    await until(() => stopped.seen.length === 1 && holder.source.watchers(digest) === 1)
    controller.abort(new Error('download finished'))
    await expect(stopped.done).rejects.toThrow('download finished')
    await until(() => holder.source.watchers(digest) === 0)
  })

  it('ends watches when the server stops', async () => {
    const [holder, watcher] = [await peer(), await peer()]
    holder.source.putPiece(digest, layout, 0, randomBytes(PIECE))
    const watch = follow(watcher.client.watchHave(holder.node.getMultiaddrs(), digest))
    await until(() => watch.seen.length === 1)
    await holder.server.stop()
    await expect(watch.done).rejects.toThrow()
    expect(holder.source.watchers(digest)).toBe(0)
  })

  it('refuses a message from the watcher after its request', async () => {
    const holder = await peer()
    const raw = await peer()
    holder.source.putPiece(digest, layout, 0, randomBytes(PIECE))
    const stream = await raw.node.libp2p.dialProtocol(holder.node.getMultiaddrs(), HAVE_WATCH_PROTOCOL)
    const reader = createMessageReader(stream)
    stream.send(encodeMessage({ type: 'have-request', digest }))
    expect((await reader.read())?.type).toBe('have-reply')
    stream.send(encodeMessage({ type: 'have-update', indexes: [1] }))
    const reply = await reader.read()
    expect(reply).toMatchObject({ type: 'error', code: 'bad-request' })
    await until(() => holder.source.watchers(digest) === 0)
  })

  it('throws when a peer says it gained a piece the blob does not have', async () => {
    const [liar, watcher] = [await peer(), await peer()]
    await liar.node.libp2p.handle(
      HAVE_WATCH_PROTOCOL,
      async (stream) => {
        const reader = createMessageReader(stream)
        await reader.read()
        const replies: Message[] = [
          { type: 'have-reply', status: 'ok', bitfield: new Bitfield(PIECES) },
          { type: 'have-update', indexes: [PIECES] },
        ]
        for (const m of replies) stream.send(encodeMessage(m))
        await reader.read().catch(() => undefined)
      },
      { force: true },
    )
    // The liar's handler is on libp2p; its lane serves the honest server's.
    const client = createPieceClient({ libp2p: watcher.node.libp2p }, { timeoutMs: 5_000 })
    const watch = follow(client.watchHave(liar.node.getMultiaddrs(), digest))
    await expect(watch.done).rejects.toMatchObject({ name: 'DecodeError' })
    expect(watch.seen).toHaveLength(1)
  })

  it('fails at once against a peer that does not speak the protocol', async () => {
    const watcher = await peer()
    const old = await createP2PNode({})
    await old.start()
    cleanups.push(() => old.stop())
    const watch = follow(watcher.client.watchHave(old.getMultiaddrs(), digest))
    await expect(watch.done).rejects.toThrow()
    expect(watch.seen).toHaveLength(0)
  })
})
