import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { digestOf } from '../../../protocol/src/index.js'
import {
  blobFixture,
  errorCodes,
  pushBlob,
  rawRequest,
  startTestRegistry,
  type TestRegistry,
} from './testing.js'

describe.each(['memory', 'filesystem'] as const)('registry app: blobs (%s driver)', (driver) => {
  let reg: TestRegistry
  const blob = blobFixture(1000)
  beforeEach(async () => {
    reg = await startTestRegistry({ driver })
    await pushBlob(reg.url, 'lib/x', blob.bytes)
  })
  afterEach(async () => {
    await reg.close()
  })

  const url = () => `${reg.url}/v2/lib/x/blobs/${blob.digest}`
  const get = (range?: string) => fetch(url(), range === undefined ? {} : { headers: { Range: range } })

  it('serves a blob with its headers, and HEAD without a body', async () => {
    const res = await get()
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/octet-stream')
    expect(res.headers.get('docker-content-digest')).toBe(blob.digest)
    expect(res.headers.get('content-length')).toBe('1000')
    expect(res.headers.get('accept-ranges')).toBe('bytes')
    expect(Buffer.from(await res.arrayBuffer()).equals(blob.bytes)).toBe(true)

    const head = await rawRequest(reg.port, 'HEAD', `/v2/lib/x/blobs/${blob.digest}`)
    expect(head.status).toBe(200)
    expect(head.headers['content-length']).toBe('1000')
    expect(head.headers['docker-content-digest']).toBe(blob.digest)
    expect(head.headers['accept-ranges']).toBe('bytes')
    expect(head.body.byteLength).toBe(0)
  })

  it('serves byte ranges with 206 and Content-Range', async () => {
    const cases: Array<[string, number, number]> = [
      ['bytes=0-0', 0, 0],
      ['bytes=10-', 10, 999],
      ['bytes=100-199', 100, 199],
      ['bytes=990-5000', 990, 999],
      ['bytes=-1', 999, 999],
      ['bytes=-100', 900, 999],
      ['bytes=-5000', 0, 999],
      ['bytes=999-999', 999, 999],
    ]
    for (const [range, start, end] of cases) {
      const res = await get(range)
      expect(res.status, range).toBe(206)
      expect(res.headers.get('content-range'), range).toBe(`bytes ${start}-${end}/1000`)
      expect(res.headers.get('content-length'), range).toBe(String(end - start + 1))
      expect(res.headers.get('docker-content-digest'), range).toBe(blob.digest)
      const body = Buffer.from(await res.arrayBuffer())
      expect(body.equals(blob.bytes.subarray(start, end + 1)), range).toBe(true)
    }
  })

  it('answers 416 with Content-Range: bytes */size to unsatisfiable ranges', async () => {
    for (const range of ['bytes=1000-', 'bytes=1000-1001', 'bytes=5000-6000', 'bytes=-0']) {
      const res = await get(range)
      expect(res.status, range).toBe(416)
      expect(res.headers.get('content-range'), range).toBe('bytes */1000')
      expect(await errorCodes(res), range).toEqual(['RANGE_INVALID'])
    }
  })

  it('ignores Range headers that are not one valid byte range and serves the whole blob', async () => {
    for (const range of ['bytes=5-2', 'items=0-1', 'bytes=0-1,5-6', 'bytes=-', 'bytes=a-b', 'bytes 0-1']) {
      const res = await get(range)
      expect(res.status, range).toBe(200)
      expect(res.headers.get('content-range'), range).toBeNull()
      expect((await res.arrayBuffer()).byteLength, range).toBe(1000)
    }
  })

  it('serves an empty blob, and refuses any range of it', async () => {
    const empty = await pushBlob(reg.url, 'lib/x', new Uint8Array())
    const res = await fetch(`${reg.url}/v2/lib/x/blobs/${empty.digest}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-length')).toBe('0')
    expect((await res.arrayBuffer()).byteLength).toBe(0)
    const ranged = await fetch(`${reg.url}/v2/lib/x/blobs/${empty.digest}`, {
      headers: { Range: 'bytes=0-' },
    })
    expect(ranged.status).toBe(416)
    expect(ranged.headers.get('content-range')).toBe('bytes */0')
  })

  it('answers 404 BLOB_UNKNOWN for unknown blobs and blobs of other repositories', async () => {
    for (const path of [`/v2/lib/x/blobs/${digestOf('nope')}`, `/v2/other/blobs/${blob.digest}`]) {
      const res = await fetch(`${reg.url}${path}`)
      expect(res.status, path).toBe(404)
      expect(await errorCodes(res), path).toEqual(['BLOB_UNKNOWN'])
      const head = await rawRequest(reg.port, 'HEAD', path)
      expect(head.status, path).toBe(404)
      expect(head.body.byteLength, path).toBe(0)
      const ranged = await fetch(`${reg.url}${path}`, { headers: { Range: 'bytes=0-' } })
      expect(ranged.status, path).toBe(404)
    }
  })

  it('DELETEs a blob with 202, after which it is unknown', async () => {
    const del = await fetch(url(), { method: 'DELETE' })
    expect(del.status).toBe(202)
    expect(await del.text()).toBe('')
    const res = await get()
    expect(res.status).toBe(404)
    expect(await errorCodes(res)).toEqual(['BLOB_UNKNOWN'])
  })

  it('counts blob bytes sent', async () => {
    await (await get()).arrayBuffer()
    await (await get('bytes=-10')).arrayBuffer()
    const deadline = Date.now() + 5000
    let value = 0
    while (Date.now() < deadline) {
      const metric = await reg.metrics.getSingleMetric('shoal_registry_blob_bytes_sent_total')!.get()
      value = metric.values[0]?.value ?? 0
      if (value >= 1010) break
      await new Promise((r) => setImmediate(r))
    }
    expect(value).toBe(1010)
  })
})
