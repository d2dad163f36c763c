import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { pullBlob, pullBlobSocket } from './oci-client.js'

const DIGEST = `sha256:${'a'.repeat(64)}`

/** An HTTP server on loopback that answers every request with `handler`. */
async function serve(handler: Parameters<typeof createServer>[1]): Promise<URL> {
  const server = createServer(handler)
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
}

const servers: Server[] = []

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections()
    await new Promise((resolve) => s.close(resolve))
  }
})

describe('pullBlobSocket', () => {
  it('counts the body of a blob GET, sent in many writes, as node:http does', async () => {
    const size = 3 * 1024 * 1024 + 17
    let path = ''
    const base = await serve((req, res) => {
      path = req.url ?? ''
      res.writeHead(200, { 'content-length': size, 'docker-content-digest': DIGEST })
      const chunk = Buffer.alloc(64 * 1024, 1)
      let left = size
      while (left > 0) {
        res.write(chunk.subarray(0, Math.min(left, chunk.length)))
        left -= chunk.length
      }
      res.end()
    })
    expect(await pullBlobSocket(base, 'bench/blob', DIGEST, { expectedSize: size })).toBe(size)
    expect(path).toBe(`/v2/bench/blob/blobs/${DIGEST}`)
    expect(await pullBlob(base, 'bench/blob', DIGEST, { expectedSize: size })).toBe(size)
  })

  it('takes an empty body', async () => {
    const base = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': 0 })
      res.end()
    })
    expect(await pullBlobSocket(base, 'r', DIGEST, { expectedSize: 0 })).toBe(0)
  })

  it('fails on a status other than 200, a chunked body, a wrong size and a body cut short', async () => {
    const notFound = await serve((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end('{"errors":[{"code":"BLOB_UNKNOWN"}]}')
    })
    await expect(pullBlobSocket(notFound, 'r', DIGEST, { expectedSize: 10 })).rejects.toThrow(
      'expected HTTP 200, got HTTP/1.1 404',
    )
    const chunked = await serve((_req, res) => {
      res.writeHead(200)
      res.write('abc')
      res.end('def')
    })
    await expect(pullBlobSocket(chunked, 'r', DIGEST, { expectedSize: 6 })).rejects.toThrow(
      'transfer-encoded',
    )
    const other = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': 5 })
      res.end('12345')
    })
    await expect(pullBlobSocket(other, 'r', DIGEST, { expectedSize: 6 })).rejects.toThrow(
      'got 5 bytes, expected 6',
    )
    const cut = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': 100 })
      res.write('only a part', () => res.socket?.destroy())
    })
    await expect(pullBlobSocket(cut, 'r', DIGEST, { expectedSize: 100 })).rejects.toThrow(
      'connection closed after 11 of 100 bytes',
    )
  })

  it('fails when nothing listens', async () => {
    const base = await serve((_req, res) => res.end())
    const closed = servers.pop()!
    await new Promise((resolve) => closed.close(resolve))
    await expect(pullBlobSocket(base, 'r', DIGEST, { expectedSize: 1 })).rejects.toThrow(/ECONNREFUSED/)
  })
})
