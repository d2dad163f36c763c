import { connect } from 'node:net'
import pino from 'pino'
import { Registry } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createTrackerClient, digestOf } from '../../../protocol/src/index.js'
import { parseTrackerConfig } from '../config.js'
import { createTrackerNode, type TrackerNode } from '../main.js'
import { serveApp } from '../testing/serve.js'

const digest = digestOf('blob')
let node: TrackerNode
let server: Awaited<ReturnType<typeof serveApp>>
let metrics: Registry

beforeEach(async () => {
  metrics = new Registry()
  node = await createTrackerNode(parseTrackerConfig({ originSlotsPerSwarm: 1 }), {
    logger: pino({ level: 'silent' }),
    metrics,
  })
  await node.start()
  server = await serveApp(node.app)
})
afterEach(async () => {
  await server.close()
  await node.stop()
  await node.stop()
})

async function post(path: string, body: string | Uint8Array, headers: Record<string, string> = {}) {
  const res = await fetch(server.url + path, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', ...headers },
  })
  return {
    status: res.status,
    json: (await res.json()) as { error?: { code: string; message: string; issues?: string[] } },
  }
}

describe('tracker HTTP API', () => {
  it('serves announce, report and the swarm views through the client', async () => {
    const client = createTrackerClient({ url: server.url })
    const a = await client.announce({
      peerId: 'peerA',
      multiaddrs: ['/ip4/127.0.0.1/tcp/1'],
      digest,
      state: 'partial',
      zone: 'z1',
    })
    expect(a).toEqual({ peers: [], seeds: [], intervalMs: 10_000, allowOrigin: true })
    const b = await client.announce({ peerId: 'peerB', multiaddrs: [], digest, state: 'complete' })
    expect(b.peers).toEqual([
      { peerId: 'peerA', multiaddrs: ['/ip4/127.0.0.1/tcp/1'], complete: false, zone: 'z1', uploadLoad: 0 },
    ])
    expect(b.allowOrigin).toBe(false)
    expect((await client.swarms()).swarms).toEqual([
      { digest, peers: 2, complete: 1, seeds: 0, originSlotsInUse: 1 },
    ])
    const detail = await client.swarm(digest)
    expect(detail.peers.map((p) => [p.peerId, p.originSlot])).toEqual([
      ['peerA', true],
      ['peerB', false],
    ])
    expect(
      await client.reportBadPeer({ reporter: 'peerB', peerId: 'peerA', digest, reason: 'bad piece' }),
    ).toEqual({
      dropped: false,
      reporters: 1,
    })
    await expect(client.reportBadPeer({ reporter: 'nobody', peerId: 'peerA', digest })).rejects.toMatchObject(
      {
        name: 'TrackerRejectedError',
        status: 403,
      },
    )
    expect((await client.swarm(digestOf('other'))).peers).toEqual([])

    const text = await metrics.metrics()
    expect(text).toMatch(/shoal_tracker_announces_total\{event="update"\} 2/)
    expect(text).toMatch(/shoal_tracker_peers\{state="complete"\} 1/)
    expect(text).toMatch(/shoal_tracker_peers\{state="partial"\} 1/)
    expect(text).toMatch(/shoal_tracker_swarms 1/)
    expect(text).toMatch(/shoal_tracker_http_requests_total\{route="\/v1\/report",status="403"\} 1/)
  })

  it('answers garbage on every endpoint with a clear 4xx and keeps serving', async () => {
    const bodies: Array<string | Uint8Array> = [
      '',
      'not json',
      '{',
      'null',
      '[]',
      '"x"',
      '{"peerId": 5}',
      JSON.stringify({ peerId: 'p', multiaddrs: [], digest: 'sha256:nope', state: 'partial' }),
      JSON.stringify({ peerId: 'p', multiaddrs: ['x'.repeat(10_000)], digest, state: 'weird' }),
      JSON.stringify({ peerId: 'p', multiaddrs: [], digest, state: 'partial', bitfield: 'AA==' }),
      JSON.stringify({ peerId: 'p', multiaddrs: [], digest, state: 'partial', extra: 1 }),
      JSON.stringify({ peerId: 'p', multiaddrs: [], digest, state: 'partial', uploadLoad: -1 }),
      JSON.stringify({ reporter: 'a', peerId: 'a', digest }),
      JSON.stringify({ __proto__: { polluted: true }, constructor: { prototype: { x: 1 } } }),
      new Uint8Array([0xff, 0xfe, 0x00, 0x01, 0x80]),
    ]
    for (const path of ['/v1/announce', '/v1/report']) {
      for (const body of bodies) {
        const { status, json } = await post(path, body)
        expect(status, `${path} ${String(body).slice(0, 50)}`).toBe(400)
        expect(json.error?.code).toBe('BAD_REQUEST')
        expect(json.error?.message.length).toBeGreaterThan(0)
      }
    }
    const invalid = await post(
      '/v1/announce',
      JSON.stringify({ peerId: 'bad id!', multiaddrs: [], digest, state: 'x' }),
    )
    expect(invalid.json.error?.issues?.some((i) => i.startsWith('peerId:'))).toBe(true)
    expect(invalid.json.error?.issues?.some((i) => i.startsWith('state:'))).toBe(true)

    const big = await post('/v1/announce', 'x'.repeat(200_000))
    expect(big.status).toBe(413)
    expect((await fetch(`${server.url}/v1/swarms/sha256:zz`)).status).toBe(400)
    expect((await fetch(`${server.url}/v1/swarms/%E0%A4%A`)).status).toBe(400)
    expect((await fetch(`${server.url}/v1/nope`)).status).toBe(404)
    const wrong = await fetch(`${server.url}/v1/announce`)
    expect(wrong.status).toBe(405)
    expect(wrong.headers.get('allow')).toBe('POST')
    expect((await fetch(`${server.url}/v1/swarms`, { method: 'DELETE' })).status).toBe(405)

    // A client that goes away in the middle of its body.
    const { port } = new URL(server.url)
    await new Promise<void>((resolve) => {
      const socket = connect(Number(port), '127.0.0.1', () => {
        socket.write('POST /v1/announce HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"peerId":')
        setImmediate(() => socket.destroy())
      })
      socket.on('close', () => resolve())
      socket.on('error', () => {})
    })

    // Still serving.
    const client = createTrackerClient({ url: server.url })
    expect(
      (await client.announce({ peerId: 'ok', multiaddrs: [], digest, state: 'partial' })).allowOrigin,
    ).toBe(true)
    expect(await metrics.metrics()).toMatch(
      /shoal_tracker_http_requests_total\{route="\/v1\/announce",status="400"\} \d+/,
    )
  })
})
