import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { digestOf } from '../digest.js'
import { createTrackerClient } from './index.js'

const digest = digestOf('blob')
const peerId = '12D3KooWAbc'

let server: Server | undefined
afterEach(async () => {
  server?.closeAllConnections()
  await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())))
  server = undefined
})

async function serve(
  handler: (path: string, body: string) => { status: number; body: string } | 'hang',
): Promise<string> {
  server = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => {
      body += c
    })
    req.on('end', () => {
      const r = handler(req.url ?? '', body)
      if (r === 'hang') return
      res.writeHead(r.status, { 'content-type': 'application/json' }).end(r.body)
    })
  })
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`
}

describe('tracker client', () => {
  it('repeats a call once when the connection closes under it, and no more', async () => {
    let requests = 0
    let cut: 'first' | 'every' = 'first'
    server = createServer((req, res) => {
      requests++
      req.resume()
      req.on('end', () => {
        // Closing without an answer is what a reused keep-alive socket the server just dropped looks like.
        if (cut === 'every' || requests === 1) return req.socket.destroy()
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ peers: [], seeds: [], intervalMs: 1000, allowOrigin: false }))
      })
    })
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
    const url = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`
    const client = createTrackerClient({ url, timeoutMs: 2000 })
    const announce = { peerId, multiaddrs: [], digest, state: 'partial' as const }

    // The first request is cut off, the repeat answered.
    await expect(client.announce(announce)).resolves.toMatchObject({ allowOrigin: false })
    expect(requests).toBe(2)

    requests = 0
    cut = 'every' // one repeat, then the tracker counts as unavailable
    await expect(client.announce(announce)).rejects.toMatchObject({ name: 'TrackerUnavailableError' })
    expect(requests).toBe(2)
  })
  it('announces and parses the answer', async () => {
    let seen: unknown
    const url = await serve((path, body) => {
      seen = { path, body: JSON.parse(body) }
      return {
        status: 200,
        body: JSON.stringify({ peers: [], seeds: [], intervalMs: 1000, allowOrigin: true }),
      }
    })
    const client = createTrackerClient({ url })
    const res = await client.announce({ peerId, multiaddrs: [], digest, state: 'partial' })
    expect(res).toEqual({ peers: [], seeds: [], intervalMs: 1000, allowOrigin: true })
    expect(seen).toMatchObject({ path: '/v1/announce', body: { peerId, role: 'peer', uploadLoad: 0 } })
  })
  it('maps 4xx, 5xx, bad answers, timeouts and refused connections to typed errors', async () => {
    let mode = 'reject'
    const url = await serve(() => {
      if (mode === 'reject')
        return { status: 400, body: JSON.stringify({ error: { code: 'BAD_REQUEST', message: 'nope' } }) }
      if (mode === 'fail') return { status: 503, body: 'down' }
      if (mode === 'garbage') return { status: 200, body: '{"peers": 5}' }
      return 'hang'
    })
    const client = createTrackerClient({ url, timeoutMs: 200 })
    const req = { reporter: peerId, peerId: '12D3KooWBad', digest }
    await expect(client.reportBadPeer(req)).rejects.toMatchObject({
      name: 'TrackerRejectedError',
      status: 400,
    })
    mode = 'fail'
    await expect(client.reportBadPeer(req)).rejects.toMatchObject({ name: 'TrackerUnavailableError' })
    mode = 'garbage'
    await expect(client.swarms()).rejects.toMatchObject({ name: 'TrackerUnavailableError' })
    mode = 'hang'
    await expect(client.swarms()).rejects.toMatchObject({ name: 'TrackerUnavailableError' })
    const ac = new AbortController()
    const p = client.swarm(digest, { signal: ac.signal })
    ac.abort(new Error('caller gave up'))
    await expect(p).rejects.toThrow('caller gave up')
    const dead = createTrackerClient({ url: 'http://127.0.0.1:1', timeoutMs: 1000 })
    await expect(dead.swarms()).rejects.toMatchObject({ name: 'TrackerUnavailableError' })
  })
  it('reuses one connection for calls in a row, and reports an answer cut short or too large', async () => {
    let connections = 0
    let mode: 'ok' | 'cut' | 'huge' = 'ok'
    server = createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        if (mode === 'cut') {
          // Headers and half a body, then the connection is gone.
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' })
          res.write('{"peers": [')
          setTimeout(() => req.socket.destroy(), 20)
          return
        }
        if (mode === 'huge') {
          res.writeHead(200, { 'content-type': 'application/json' })
          const chunk = Buffer.alloc(1 << 20, 0x20)
          for (let i = 0; i < 17; i++) res.write(chunk)
          res.end('{}')
          return
        }
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ peers: [], seeds: [], intervalMs: 1000, allowOrigin: false }))
      })
    })
    server.on('connection', () => connections++)
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
    const url = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`
    const client = createTrackerClient({ url, timeoutMs: 2000 })
    const announce = { peerId, multiaddrs: [], digest, state: 'partial' as const }
    for (let i = 0; i < 3; i++)
      await expect(client.announce(announce)).resolves.toMatchObject({ intervalMs: 1000 })
    expect(connections).toBe(1)

    mode = 'cut'
    await expect(client.announce(announce)).rejects.toMatchObject({ name: 'TrackerUnavailableError' })
    mode = 'huge'
    await expect(client.announce(announce)).rejects.toMatchObject({
      name: 'TrackerUnavailableError',
      message: expect.stringContaining('larger than'),
    })
    // And it recovers once the tracker answers properly again.
    mode = 'ok'
    await expect(client.announce(announce)).resolves.toMatchObject({ intervalMs: 1000 })
  })
  it('fails over to the next replica and sticks to it', async () => {
    let calls = 0
    const url = await serve(() => {
      calls++
      return { status: 200, body: JSON.stringify({ swarms: [] }) }
    })
    const client = createTrackerClient({ url: ['http://127.0.0.1:1', url], timeoutMs: 1000 })
    expect(await client.swarms()).toEqual({ swarms: [] })
    expect(await client.swarms()).toEqual({ swarms: [] })
    expect(calls).toBe(2)
    const none = createTrackerClient({ url: ['http://127.0.0.1:1', 'http://127.0.0.1:2'], timeoutMs: 1000 })
    await expect(none.swarms()).rejects.toMatchObject({ name: 'TrackerUnavailableError' })
  })
  it('refuses to send an invalid request', async () => {
    const client = createTrackerClient({ url: 'http://127.0.0.1:1' })
    await expect(
      client.announce({ peerId: 'not valid!', multiaddrs: [], digest, state: 'partial' }),
    ).rejects.toMatchObject({ name: 'TrackerRejectedError', status: 400 })
  })
})
