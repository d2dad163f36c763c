import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { digestOf } from '../../../protocol/src/index.js'
import {
  blobFixture,
  errorCodes,
  pushBlob,
  rawErrorCodes,
  rawExchange,
  rawRequest,
  startTestRegistry,
  type TestRegistry,
} from './testing.js'

function streamOf(...parts: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const p of parts) controller.enqueue(p)
      controller.close()
    },
  })
}

describe.each(['memory', 'filesystem'] as const)('registry app: uploads (%s driver)', (driver) => {
  let reg: TestRegistry
  const blob = blobFixture(3000)
  beforeEach(async () => {
    reg = await startTestRegistry({ driver })
  })
  afterEach(async () => {
    await reg.close()
  })

  async function start(name = 'app'): Promise<string> {
    const res = await fetch(`${reg.url}/v2/${name}/blobs/uploads/`, { method: 'POST' })
    expect(res.status).toBe(202)
    return res.headers.get('location')!
  }

  const patch = (location: string, body: Uint8Array, headers: Record<string, string> = {}) =>
    fetch(`${reg.url}${location}`, { method: 'PATCH', headers, body })

  async function status(location: string): Promise<Response> {
    return fetch(`${reg.url}${location}`)
  }

  async function bytesOf(name: string, digest: string): Promise<Buffer> {
    const res = await fetch(`${reg.url}/v2/${name}/blobs/${digest}`)
    expect(res.status).toBe(200)
    return Buffer.from(await res.arrayBuffer())
  }

  it('starts a session with 202, Location, Range 0-0 and Docker-Upload-UUID', async () => {
    const res = await fetch(`${reg.url}/v2/a/b/blobs/uploads/`, { method: 'POST' })
    expect(res.status).toBe(202)
    const id = res.headers.get('docker-upload-uuid')
    expect(id).toBeTruthy()
    expect(res.headers.get('location')).toBe(`/v2/a/b/blobs/uploads/${id}`)
    expect(res.headers.get('range')).toBe('0-0')
    expect(res.headers.get('content-length')).toBe('0')
    // The spelling without the trailing slash works too.
    const bare = await fetch(`${reg.url}/v2/a/b/blobs/uploads`, { method: 'POST' })
    expect(bare.status).toBe(202)
  })

  it('uploads in ordered chunks with Content-Range, reports status, and completes with PUT', async () => {
    const location = await start()
    const first = await patch(location, blob.bytes.subarray(0, 1000), {
      'Content-Range': '0-999',
      'Content-Type': 'application/octet-stream',
    })
    expect(first.status).toBe(202)
    expect(first.headers.get('range')).toBe('0-999')
    expect(first.headers.get('location')).toBe(location)
    expect(first.headers.get('docker-upload-uuid')).toBe(location.split('/').pop())

    const st = await status(location)
    expect(st.status).toBe(204)
    expect(st.headers.get('range')).toBe('0-999')
    expect(st.headers.get('location')).toBe(location)

    const second = await patch(location, blob.bytes.subarray(1000, 2000), { 'Content-Range': '1000-1999' })
    expect(second.status).toBe(202)
    expect(second.headers.get('range')).toBe('0-1999')

    const put = await fetch(`${reg.url}${location}?digest=${blob.digest}`, {
      method: 'PUT',
      headers: { 'Content-Range': '2000-2999' },
      body: blob.bytes.subarray(2000),
    })
    expect(put.status).toBe(201)
    expect(put.headers.get('location')).toBe(`/v2/app/blobs/${blob.digest}`)
    expect(put.headers.get('docker-content-digest')).toBe(blob.digest)
    expect((await bytesOf('app', blob.digest)).equals(blob.bytes)).toBe(true)

    // The session is gone once completed.
    const after = await status(location)
    expect(after.status).toBe(404)
    expect(await errorCodes(after)).toEqual(['BLOB_UPLOAD_UNKNOWN'])
  })

  it('accepts streamed (chunked) PATCHes without Content-Range and a PUT without body', async () => {
    const location = await start()
    const res = await fetch(`${reg.url}${location}`, {
      method: 'PATCH',
      body: streamOf(blob.bytes.subarray(0, 1500), blob.bytes.subarray(1500, 2500)),
      duplex: 'half',
    } as RequestInit)
    expect(res.status).toBe(202)
    expect(res.headers.get('range')).toBe('0-2499')
    const more = await fetch(`${reg.url}${location}`, {
      method: 'PATCH',
      body: streamOf(blob.bytes.subarray(2500)),
      duplex: 'half',
    } as RequestInit)
    expect(more.headers.get('range')).toBe('0-2999')
    const put = await fetch(`${reg.url}${location}?digest=${blob.digest}`, { method: 'PUT' })
    expect(put.status).toBe(201)
    expect((await bytesOf('app', blob.digest)).equals(blob.bytes)).toBe(true)
  })

  it('answers 416 to out-of-order, overlapping and malformed chunks and keeps the upload intact', async () => {
    const location = await start()
    await patch(location, blob.bytes.subarray(0, 1000), { 'Content-Range': '0-999' })
    const cases: Array<[string, Buffer]> = [
      ['1001-1999', blob.bytes.subarray(1001, 2000)], // gap
      ['500-1499', blob.bytes.subarray(500, 1500)], // overlap
      ['0-999', blob.bytes.subarray(0, 1000)], // repeat
      ['1999-1000', blob.bytes.subarray(1000, 2000)], // end before start
      ['abc', blob.bytes.subarray(1000, 2000)], // malformed
    ]
    for (const [range, body] of cases) {
      const res = await patch(location, body, { 'Content-Range': range })
      expect(res.status, range).toBe(416)
      expect(await errorCodes(res), range).toEqual(['RANGE_INVALID'])
      const st = await status(location)
      expect(st.headers.get('range'), range).toBe('0-999')
    }
    await patch(location, blob.bytes.subarray(1000), { 'Content-Range': '1000-2999' })
    const put = await fetch(`${reg.url}${location}?digest=${blob.digest}`, { method: 'PUT' })
    expect(put.status).toBe(201)
    expect((await bytesOf('app', blob.digest)).equals(blob.bytes)).toBe(true)
  })

  it('rejects a Content-Length that disagrees with Content-Range with SIZE_INVALID', async () => {
    const location = await start()
    const res = await rawRequest(
      reg.port,
      'PATCH',
      location,
      { 'Content-Range': '0-99', 'Content-Length': '50' },
      blob.bytes.subarray(0, 50),
    )
    expect(res.status).toBe(400)
    expect(rawErrorCodes(res)).toEqual(['SIZE_INVALID'])
    expect((await status(location)).headers.get('range')).toBe('0-0')
  })

  it('keeps the upload consistent when a chunk body breaks off', async () => {
    const location = await start()
    await patch(location, blob.bytes.subarray(0, 1000), { 'Content-Range': '0-999' })
    // Declares 1000 bytes, sends 400, then closes: Node never completes the body.
    await rawExchange(
      reg.port,
      `PATCH ${location} HTTP/1.1\r\nHost: x\r\nContent-Range: 1000-1999\r\nContent-Length: 1000\r\n\r\n`,
      blob.bytes.subarray(1000, 1400),
    )
    // The broken chunk is dropped whole (the storage layer keeps the offset at the end
    // of the last complete chunk); the session goes on from there.
    const st = await status(location)
    expect(st.status).toBe(204)
    expect(st.headers.get('range')).toBe('0-999')
    const offset = 1000
    const rest = await patch(location, blob.bytes.subarray(offset), { 'Content-Range': `${offset}-2999` })
    expect(rest.status).toBe(202)
    const put = await fetch(`${reg.url}${location}?digest=${blob.digest}`, { method: 'PUT' })
    expect(put.status).toBe(201)
    expect((await bytesOf('app', blob.digest)).equals(blob.bytes)).toBe(true)
  })

  it('refuses a PUT whose content does not match the digest and leaves no blob', async () => {
    const location = await start()
    await patch(location, blob.bytes, { 'Content-Range': '0-2999' })
    const wrong = digestOf('other content')
    const res = await fetch(`${reg.url}${location}?digest=${wrong}`, { method: 'PUT' })
    expect(res.status).toBe(400)
    expect(await errorCodes(res)).toEqual(['DIGEST_INVALID'])
    expect((await fetch(`${reg.url}/v2/app/blobs/${wrong}`)).status).toBe(404)
    expect((await fetch(`${reg.url}/v2/app/blobs/${blob.digest}`)).status).toBe(404)
  })

  it('requires a valid digest on PUT', async () => {
    const location = await start()
    for (const query of ['', '?digest=sha256:short', '?digest=']) {
      const res = await fetch(`${reg.url}${location}${query}`, { method: 'PUT' })
      expect(res.status, query).toBe(400)
      expect(await errorCodes(res), query).toEqual(['DIGEST_INVALID'])
    }
  })

  it('uploads monolithically with POST ?digest= (201), and refuses a wrong digest without leftovers', async () => {
    const res = await fetch(`${reg.url}/v2/app/blobs/uploads/?digest=${blob.digest}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/octet-stream' },
      body: blob.bytes,
    })
    expect(res.status).toBe(201)
    expect(res.headers.get('location')).toBe(`/v2/app/blobs/${blob.digest}`)
    expect(res.headers.get('docker-content-digest')).toBe(blob.digest)
    expect((await bytesOf('app', blob.digest)).equals(blob.bytes)).toBe(true)

    const other = blobFixture(10)
    const wrong = await fetch(`${reg.url}/v2/app/blobs/uploads/?digest=${digestOf('x')}`, {
      method: 'POST',
      body: other.bytes,
    })
    expect(wrong.status).toBe(400)
    expect(await errorCodes(wrong)).toEqual(['DIGEST_INVALID'])
    expect((await fetch(`${reg.url}/v2/app/blobs/${other.digest}`)).status).toBe(404)

    const invalid = await fetch(`${reg.url}/v2/app/blobs/uploads/?digest=nope`, { method: 'POST', body: 'x' })
    expect(invalid.status).toBe(400)
    expect(await errorCodes(invalid)).toEqual(['DIGEST_INVALID'])
  })

  it('accepts sha512 digests', async () => {
    const digest = digestOf(blob.bytes, 'sha512')
    const res = await fetch(`${reg.url}/v2/app/blobs/uploads/?digest=${digest}`, {
      method: 'POST',
      body: blob.bytes,
    })
    expect(res.status).toBe(201)
    expect(res.headers.get('docker-content-digest')).toBe(digest)
    expect((await bytesOf('app', digest)).equals(blob.bytes)).toBe(true)
  })

  it('lets only one of two concurrent chunks at the same offset in', async () => {
    const location = await start()
    const [a, b] = await Promise.all([
      patch(location, blob.bytes.subarray(0, 1500), { 'Content-Range': '0-1499' }),
      patch(location, blob.bytes.subarray(0, 1500), { 'Content-Range': '0-1499' }),
    ])
    expect([a.status, b.status].sort()).toEqual([202, 416])
    expect((await status(location)).headers.get('range')).toBe('0-1499')
  })

  it('refuses a final PUT chunk that does not start at the offset', async () => {
    const location = await start()
    await patch(location, blob.bytes.subarray(0, 1000), { 'Content-Range': '0-999' })
    const res = await fetch(`${reg.url}${location}?digest=${blob.digest}`, {
      method: 'PUT',
      headers: { 'Content-Range': '1500-2999' },
      body: blob.bytes.subarray(1500),
    })
    expect(res.status).toBe(416)
    expect(await errorCodes(res)).toEqual(['RANGE_INVALID'])
    expect((await status(location)).headers.get('range')).toBe('0-999')
  })

  it('mounts blobs across repositories', async () => {
    await pushBlob(reg.url, 'source', blob.bytes)
    const mounted = await fetch(`${reg.url}/v2/target/blobs/uploads/?mount=${blob.digest}&from=source`, {
      method: 'POST',
    })
    expect(mounted.status).toBe(201)
    expect(mounted.headers.get('location')).toBe(`/v2/target/blobs/${blob.digest}`)
    expect(mounted.headers.get('docker-content-digest')).toBe(blob.digest)
    expect((await bytesOf('target', blob.digest)).equals(blob.bytes)).toBe(true)

    // Without `from`: mounted when the blob exists anywhere.
    const anywhere = await fetch(`${reg.url}/v2/third/blobs/uploads/?mount=${blob.digest}`, {
      method: 'POST',
    })
    expect(anywhere.status).toBe(201)

    // Not in `from`: an ordinary upload session instead.
    const missing = await fetch(`${reg.url}/v2/fourth/blobs/uploads/?mount=${blob.digest}&from=empty`, {
      method: 'POST',
    })
    expect(missing.status).toBe(202)
    expect(missing.headers.get('location')).toMatch(/^\/v2\/fourth\/blobs\/uploads\/.+/)
    expect((await fetch(`${reg.url}/v2/fourth/blobs/${blob.digest}`)).status).toBe(404)

    const unknown = await fetch(`${reg.url}/v2/fifth/blobs/uploads/?mount=${digestOf('nothing')}`, {
      method: 'POST',
    })
    expect(unknown.status).toBe(202)

    const badFrom = await fetch(`${reg.url}/v2/x/blobs/uploads/?mount=${blob.digest}&from=../source`, {
      method: 'POST',
    })
    expect(badFrom.status).toBe(400)
    expect(await errorCodes(badFrom)).toEqual(['NAME_INVALID'])
  })

  it('cancels a session with DELETE (204), after which it is unknown', async () => {
    const location = await start()
    await patch(location, blob.bytes.subarray(0, 10))
    const del = await fetch(`${reg.url}${location}`, { method: 'DELETE' })
    expect(del.status).toBe(204)
    for (const method of ['GET', 'PATCH', 'DELETE']) {
      const res = await fetch(`${reg.url}${location}`, { method, body: method === 'PATCH' ? 'x' : undefined })
      expect(res.status, method).toBe(404)
      expect(await errorCodes(res), method).toEqual(['BLOB_UPLOAD_UNKNOWN'])
    }
  })

  it('answers 404 BLOB_UPLOAD_UNKNOWN for unknown, foreign and malformed session ids', async () => {
    const location = await start('one')
    const id = location.split('/').pop()!
    const paths = [
      '/v2/app/blobs/uploads/does-not-exist',
      `/v2/two/blobs/uploads/${id}`,
      '/v2/app/blobs/uploads/..',
      '/v2/app/blobs/uploads/%2e%2e',
      '/v2/app/blobs/uploads/a%2Fb',
      '/v2/app/blobs/uploads/.hidden',
    ]
    for (const path of paths) {
      const res = await rawRequest(reg.port, 'GET', path)
      expect(res.status, path).toBe(404)
      expect(rawErrorCodes(res), path).toEqual(['BLOB_UPLOAD_UNKNOWN'])
    }
  })

  it('counts blob bytes received', async () => {
    const location = await start()
    await patch(location, blob.bytes.subarray(0, 1234))
    const metric = await reg.metrics.getSingleMetric('shoal_registry_blob_bytes_received_total')!.get()
    expect(metric.values[0]?.value).toBe(1234)
  })
})
