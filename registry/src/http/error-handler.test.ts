import { afterEach, describe, expect, it } from 'vitest'
import { TooManyRequestsError, UpstreamError } from '../../../protocol/src/index.js'
import type { RegistryService } from '../service.js'
import { startTestRegistry, type TestRegistry } from './testing.js'

const DIGEST = `sha256:${'b'.repeat(64)}`

/** A service whose every method throws `err`. */
function failing(err: unknown): RegistryService {
  return new Proxy({} as RegistryService, {
    get: () => async () => {
      throw err
    },
  })
}

describe('error middleware', () => {
  let reg: TestRegistry | undefined
  afterEach(async () => {
    await reg?.close()
    reg = undefined
  })

  it('answers unexpected errors with 500 UNKNOWN without their message', async () => {
    reg = await startTestRegistry({ service: failing(new Error('EACCES /secret/path')) })
    const res = await fetch(`${reg.url}/v2/app/blobs/${DIGEST}`)
    expect(res.status).toBe(500)
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0')
    const text = await res.text()
    expect(text).not.toContain('secret')
    expect(JSON.parse(text)).toEqual({ errors: [{ code: 'UNKNOWN', message: 'internal server error' }] })
  })

  it('keeps an upstream status and renders domain errors with their detail', async () => {
    reg = await startTestRegistry({ service: failing(new UpstreamError('upstream unavailable', 503)) })
    const res = await fetch(`${reg.url}/v2/app/manifests/latest`)
    expect(res.status).toBe(503)
    expect((await res.json()) as unknown).toEqual({
      errors: [{ code: 'UNKNOWN', message: 'upstream unavailable' }],
    })
    await reg.close()

    reg = await startTestRegistry({
      service: failing(new TooManyRequestsError(undefined, { retryAfterS: 3 })),
    })
    const limited = await fetch(`${reg.url}/v2/app/tags/list`)
    expect(limited.status).toBe(429)
    expect((await limited.json()) as unknown).toEqual({
      errors: [{ code: 'TOOMANYREQUESTS', message: 'too many requests', detail: { retryAfterS: 3 } }],
    })
  })
})
