import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  errorCodes,
  rawErrorCodes,
  rawExchange,
  rawRequest,
  startTestRegistry,
  type TestRegistry,
} from './testing.js'

const DIGEST = `sha256:${'a'.repeat(64)}`

describe('registry app: routing and errors', () => {
  let reg: TestRegistry
  beforeEach(async () => {
    reg = await startTestRegistry()
  })
  afterEach(async () => {
    await reg.close()
  })

  it('answers GET /v2/ with 200 and the API version header', async () => {
    const res = await fetch(`${reg.url}/v2/`)
    expect(res.status).toBe(200)
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0')
    expect(await res.json()).toEqual({})
    const head = await fetch(`${reg.url}/v2/`, { method: 'HEAD' })
    expect(head.status).toBe(200)
  })

  it('answers unknown paths with 404 and an OCI error body carrying the version header', async () => {
    for (const path of ['/v2/foo', '/v2/foo/bar', '/v2/foo/tags/other', '/other', '/v2/foo/blobs']) {
      const res = await fetch(`${reg.url}${path}`)
      expect(res.status, path).toBe(404)
      expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0')
      expect(res.headers.get('content-type')).toMatch(/^application\/json/)
      const body = (await res.json()) as { errors: Array<{ code: string; message: string }> }
      expect(body.errors[0]?.code).toBe('UNSUPPORTED')
      expect(typeof body.errors[0]?.message).toBe('string')
    }
  })

  it('answers a wrong method with 405 UNSUPPORTED and Allow', async () => {
    const res = await fetch(`${reg.url}/v2/foo/manifests/latest`, { method: 'POST' })
    expect(res.status).toBe(405)
    expect(await errorCodes(res)).toEqual(['UNSUPPORTED'])
    expect(res.headers.get('allow')?.split(', ').sort()).toEqual(['DELETE', 'GET', 'HEAD', 'PUT'])
    const tags = await fetch(`${reg.url}/v2/foo/tags/list`, { method: 'DELETE' })
    expect(tags.status).toBe(405)
    expect(tags.headers.get('allow')).toBe('GET, HEAD')
    const uploads = await fetch(`${reg.url}/v2/foo/blobs/uploads/`, { method: 'GET' })
    expect(uploads.status).toBe(405)
  })

  it('rejects invalid repository names, including traversal attempts, with 400 NAME_INVALID', async () => {
    const paths = [
      '/v2/Foo/manifests/latest',
      '/v2/%2e%2e/manifests/latest',
      '/v2/a/%2e%2e/b/manifests/latest',
      '/v2/a/../b/manifests/latest',
      '/v2/../../etc/blobs/' + DIGEST,
      '/v2/..%2f..%2fetc/tags/list',
      '/v2/a%2Fb/tags/list',
      '/v2/.hidden/blobs/uploads/',
      '/v2//manifests/latest',
      '/v2/a//b/manifests/latest',
      '/v2/a/b%00/manifests/latest',
      `/v2/${'a'.repeat(256)}/manifests/latest`,
    ]
    for (const path of paths) {
      const method = path.endsWith('/uploads/') ? 'POST' : 'GET'
      const res = await rawRequest(reg.port, method, path)
      expect(res.status, path).toBe(400)
      expect(rawErrorCodes(res), path).toEqual(['NAME_INVALID'])
    }
    // Nothing was created on the way.
    const catalog = await fetch(`${reg.url}/v2/_catalog`)
    expect(await catalog.json()).toEqual({ repositories: [] })
  })

  it('rejects malformed digests and tags', async () => {
    const cases: Array<[string, string]> = [
      ['/v2/foo/blobs/sha256:abc', 'DIGEST_INVALID'],
      [`/v2/foo/blobs/md5:${'a'.repeat(32)}`, 'DIGEST_INVALID'],
      [`/v2/foo/blobs/sha256:${'A'.repeat(64)}`, 'DIGEST_INVALID'],
      ['/v2/foo/blobs/..', 'DIGEST_INVALID'],
      ['/v2/foo/manifests/-bad', 'TAG_INVALID'],
      ['/v2/foo/manifests/..', 'TAG_INVALID'],
      [`/v2/foo/manifests/${'t'.repeat(129)}`, 'TAG_INVALID'],
      ['/v2/foo/manifests/sha256:xyz', 'DIGEST_INVALID'],
      ['/v2/foo/referrers/sha256:xyz', 'DIGEST_INVALID'],
    ]
    for (const [path, code] of cases) {
      const res = await rawRequest(reg.port, 'GET', path)
      expect(res.status, path).toBe(400)
      expect(rawErrorCodes(res), path).toEqual([code])
    }
  })

  it('decodes percent-encoded references', async () => {
    const res = await fetch(`${reg.url}/v2/foo/blobs/sha256%3A${'a'.repeat(64)}`)
    expect(res.status).toBe(404)
    expect(await errorCodes(res)).toEqual(['BLOB_UNKNOWN'])
  })

  it('sends no body with a HEAD answer, errors included', async () => {
    for (const path of ['/v2/foo/manifests/latest', `/v2/foo/blobs/${DIGEST}`, '/v2/nope', '/v2/']) {
      const raw = await rawExchange(reg.port, `HEAD ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
      const text = raw.toString('latin1')
      const end = text.indexOf('\r\n\r\n')
      expect(end, path).toBeGreaterThan(0)
      expect(text.slice(end + 4), path).toBe('')
      expect(text, path).toMatch(/docker-distribution-api-version: registry\/2.0/i)
    }
    const missing = await fetch(`${reg.url}/v2/foo/manifests/latest`, { method: 'HEAD' })
    expect(missing.status).toBe(404)
  })

  it('records request metrics by route template, and access metrics work without a given registry', async () => {
    await fetch(`${reg.url}/v2/`)
    await fetch(`${reg.url}/v2/a/b/blobs/${DIGEST}`)
    await fetch(`${reg.url}/v2/a/b/blobs/${DIGEST}`)
    await fetch(`${reg.url}/nowhere`)
    // The close event that records the metrics may trail the response slightly.
    const deadline = Date.now() + 5000
    let text = ''
    while (Date.now() < deadline) {
      text = await reg.metrics.metrics()
      if (text.includes('route="unmatched"')) break
      await new Promise((r) => setImmediate(r))
    }
    expect(text).toContain(
      'shoal_registry_http_requests_total{method="GET",route="/v2/<name>/blobs/<digest>",status="404"} 2',
    )
    expect(text).toContain('shoal_registry_http_requests_total{method="GET",route="/v2/",status="200"} 1')
    expect(text).toContain(
      'shoal_registry_http_requests_total{method="GET",route="unmatched",status="404"} 1',
    )
    expect(text).toContain(
      'shoal_registry_http_request_duration_seconds_count{method="GET",route="/v2/<name>/blobs/<digest>"} 2',
    )
    expect(text).toContain('shoal_registry_blob_bytes_sent_total 0')
    expect(text).toContain('shoal_registry_blob_bytes_received_total 0')
  })
})
