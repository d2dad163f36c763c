/**
 * A client of the tracker's preheat admin API (protocol/src/preheat-api.ts), for the
 * CLI and the registry's preheat rules. Errors: TrackerUnavailableError when the
 * tracker cannot be reached or answers 5xx, TrackerRejectedError (with the status and
 * the tracker's message) for 4xx.
 */
import { TrackerRejectedError, TrackerUnavailableError } from '../errors.js'
import type { PreheatCreateRequest, PreheatJob } from '../preheat-api.js'

/** Options of createPreheatClient. */
export interface PreheatClientInit {
  /** Base URL of the tracker. */
  url: string
  /** The tracker's admin token. */
  token: string
  fetch?: typeof globalThis.fetch
  /** Deadline of one request. @default 10000 */
  timeoutMs?: number
}

/** The preheat admin client. */
export interface PreheatClient {
  create(request: PreheatCreateRequest, options?: { signal?: AbortSignal }): Promise<PreheatJob>
  get(id: string, options?: { signal?: AbortSignal }): Promise<PreheatJob>
  list(options?: { signal?: AbortSignal }): Promise<PreheatJob[]>
  cancel(id: string, options?: { signal?: AbortSignal }): Promise<PreheatJob>
}

/** Creates a preheat admin client. */
export function createPreheatClient(init: PreheatClientInit): PreheatClient {
  const base = init.url.replace(/\/+$/, '')
  const doFetch = init.fetch ?? globalThis.fetch
  const timeoutMs = init.timeoutMs ?? 10_000

  async function call<T>(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    const timeout = AbortSignal.timeout(timeoutMs)
    const combined = signal === undefined ? timeout : AbortSignal.any([signal, timeout])
    let res: Response
    let text: string
    try {
      res = await doFetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${init.token}`,
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: combined,
      })
      text = await res.text()
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason
      const why = timeout.aborted ? `timed out after ${timeoutMs} ms` : (err as Error).message
      throw new TrackerUnavailableError(`tracker ${base}: ${why}`, undefined, { cause: err })
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      json = undefined
    }
    if (res.status >= 400) {
      const message =
        (json as { error?: { message?: string } } | undefined)?.error?.message ?? text.slice(0, 300)
      const issues = (json as { error?: { issues?: string[] } } | undefined)?.error?.issues
      const full = issues?.length ? `${message}: ${issues.join('; ')}` : message
      if (res.status >= 500)
        throw new TrackerUnavailableError(`tracker ${base} answered ${res.status}: ${full}`)
      throw new TrackerRejectedError(`tracker refused ${method} ${path} (${res.status}): ${full}`, res.status)
    }
    if (json === undefined) throw new TrackerUnavailableError(`tracker ${base} answered with invalid JSON`)
    return json as T
  }

  return {
    create: (request, options = {}) => call('POST', '/v1/preheat', request, options.signal),
    get: (id, options = {}) =>
      call('GET', `/v1/preheat/${encodeURIComponent(id)}`, undefined, options.signal),
    list: async (options = {}) =>
      (await call<{ jobs: PreheatJob[] }>('GET', '/v1/preheat', undefined, options.signal)).jobs,
    cancel: (id, options = {}) =>
      call('DELETE', `/v1/preheat/${encodeURIComponent(id)}`, undefined, options.signal),
  }
}
