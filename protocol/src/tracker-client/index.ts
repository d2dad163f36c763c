/**
 * A client of the tracker's HTTP API (see protocol/src/tracker-api.ts). Every call has a
 * deadline (the caller's signal, and `timeoutMs` per request) and fails with a typed
 * error: TrackerUnavailableError when the tracker cannot be reached, times out, answers
 * 5xx or answers something unparseable; TrackerRejectedError (with the status) for 4xx.
 *
 * Requests go over node:http(s) with a keep-alive agent of the client's own, not over
 * fetch: an agent calls its tracker about once a second (announces, peer searches,
 * heartbeats), and fetch's WHATWG machinery (Request, Headers, web streams) made each
 * call cost a few ms of CPU on the testbed's host, about 5% of a pulling agent's main
 * thread (docs/BENCHMARKS.md, cluster, fifteenth round).
 */
import http from 'node:http'
import https from 'node:https'
import type { z } from 'zod'
import { TrackerRejectedError, TrackerUnavailableError } from '../errors.js'
import {
  type AnnounceRequestInput,
  type AnnounceResponse,
  announceRequestSchema,
  announceResponseSchema,
  formatIssues,
  type HeartbeatRequest,
  type HeartbeatResponse,
  heartbeatRequestSchema,
  heartbeatResponseSchema,
  type ReportBadPeerRequest,
  type ReportBadPeerResponse,
  reportBadPeerRequestSchema,
  reportBadPeerResponseSchema,
  type SwarmDetail,
  type SwarmList,
  swarmDetailSchema,
  swarmListSchema,
} from '../tracker-api.js'

/** Options of createTrackerClient. */
export interface TrackerClientInit {
  /**
   * Base URL of the tracker, e.g. `http://127.0.0.1:7070`, or the URLs of several
   * replicas: a call that finds one unavailable tries the next, and the client sticks
   * to the last one that answered.
   */
  url: string | string[]
  /** Deadline of one request in milliseconds. @default 5000 */
  timeoutMs?: number
}

/** What one HTTP exchange with the tracker gave. */
interface Answer {
  status: number
  text: string
}

/** Largest answer body read from a tracker (a swarm listing of many peers fits). */
const MAX_ANSWER_BYTES = 16 << 20

/** Talks to one tracker. */
export interface TrackerClient {
  /** Announces and returns the peer set. Throws TrackerUnavailableError or TrackerRejectedError (also, status 400 and nothing sent, for a request that fails the schema). */
  announce(request: AnnounceRequestInput, options?: { signal?: AbortSignal }): Promise<AnnounceResponse>
  /** Reports a peer that served bad data. Same errors as announce. */
  reportBadPeer(
    request: ReportBadPeerRequest,
    options?: { signal?: AbortSignal },
  ): Promise<ReportBadPeerResponse>
  /** Sends an agent heartbeat (stats, held preheat blobs) and returns its preheat tasks. Same errors as announce. */
  heartbeat(request: HeartbeatRequest, options?: { signal?: AbortSignal }): Promise<HeartbeatResponse>
  /** Lists swarms (observability). */
  swarms(options?: { signal?: AbortSignal }): Promise<SwarmList>
  /** Describes one swarm (observability). */
  swarm(digest: string, options?: { signal?: AbortSignal }): Promise<SwarmDetail>
}

/** Creates a tracker client. Throws TypeError for a malformed URL or an empty URL list. */
export function createTrackerClient(init: TrackerClientInit): TrackerClient {
  const bases = (Array.isArray(init.url) ? init.url : [init.url]).map((u) => {
    const base = new URL(u)
    if (!base.pathname.endsWith('/')) base.pathname += '/'
    return base
  })
  if (bases.length === 0) throw new TypeError('createTrackerClient needs at least one URL')
  for (const base of bases) {
    if (base.protocol !== 'http:' && base.protocol !== 'https:')
      throw new TypeError(`tracker URL ${base.href} is not http or https`)
  }
  const timeoutMs = init.timeoutMs ?? 5000
  // Idle sockets are closed after 4 s: the tracker (koa on node:http) closes them after 5.
  const agents = {
    'http:': new http.Agent({ keepAlive: true, keepAliveMsecs: 1_000, maxSockets: 8, timeout: 4_000 }),
    'https:': new https.Agent({ keepAlive: true, keepAliveMsecs: 1_000, maxSockets: 8, timeout: 4_000 }),
  }
  let current = 0

  /** One request; resolves to the status and body, rejects when no answer came. */
  function exchange(
    url: URL,
    method: 'GET' | 'POST',
    body: string | undefined,
    signal: AbortSignal,
  ): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const secure = url.protocol === 'https:'
      const headers: http.OutgoingHttpHeaders = { accept: 'application/json' }
      const payload = body === undefined ? undefined : Buffer.from(body)
      if (payload !== undefined) {
        headers['content-type'] = 'application/json'
        headers['content-length'] = payload.byteLength
      }
      const req = (secure ? https : http).request(
        url,
        { method, headers, agent: secure ? agents['https:'] : agents['http:'], signal },
        (res) => {
          const chunks: Buffer[] = []
          let size = 0
          let tooLarge: Error | undefined
          res.on('data', (chunk: Buffer) => {
            size += chunk.byteLength
            if (size > MAX_ANSWER_BYTES) {
              tooLarge ??= new Error(`answer larger than ${MAX_ANSWER_BYTES} bytes`)
              res.destroy(tooLarge)
              return
            }
            chunks.push(chunk)
          })
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
          )
          res.on('error', (err) => reject(tooLarge ?? err))
          res.on('aborted', () =>
            reject(tooLarge ?? new Error('the tracker closed the connection mid-answer')),
          )
        },
      )
      req.on('error', reject)
      req.end(payload)
    })
  }

  async function call<T>(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    schema: z.ZodType<T>,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    let lastError: unknown
    for (let attempt = 0; attempt < bases.length; attempt++) {
      const i = (current + attempt) % bases.length
      try {
        let result: T
        try {
          result = await callOne(bases[i]!, method, path, body, schema, signal)
        } catch (err) {
          // A pooled keep-alive connection the tracker closed just as it was reused fails
          // before any answer; every tracker call may be repeated, so try once more on a
          // fresh connection rather than report the tracker down (which costs origin slots).
          if (!(err instanceof TrackerUnavailableError) || !isStaleConnection(err.cause)) throw err
          result = await callOne(bases[i]!, method, path, body, schema, signal)
        }
        current = i
        return result
      } catch (err) {
        if (!(err instanceof TrackerUnavailableError)) throw err
        lastError = err
      }
    }
    throw lastError
  }

  async function callOne<T>(
    base: URL,
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    schema: z.ZodType<T>,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    signal?.throwIfAborted()
    const url = new URL(path, base)
    const timeout = AbortSignal.timeout(timeoutMs)
    const combined = signal === undefined ? timeout : AbortSignal.any([signal, timeout])
    let res: Answer
    try {
      res = await exchange(url, method, body === undefined ? undefined : JSON.stringify(body), combined)
    } catch (err) {
      // A caller's own abort is the caller's business: rethrow its reason unchanged.
      if (signal?.aborted === true) throw signal.reason
      const why = timeout.aborted
        ? `timed out after ${timeoutMs} ms`
        : err instanceof Error
          ? err.message
          : String(err)
      throw new TrackerUnavailableError(`tracker ${url.origin}: ${why}`, undefined, { cause: err })
    }
    const { text } = res
    if (res.status >= 400) {
      let message = text.slice(0, 500)
      let detail: unknown
      try {
        const parsed = JSON.parse(text) as { error?: { message?: string; issues?: string[] } }
        if (typeof parsed.error?.message === 'string') message = parsed.error.message
        detail = parsed.error?.issues
      } catch {}
      if (res.status >= 500)
        throw new TrackerUnavailableError(`tracker ${url.origin} answered ${res.status}: ${message}`, detail)
      throw new TrackerRejectedError(
        `tracker ${url.origin} refused ${method} ${url.pathname} (${res.status}): ${message}`,
        res.status,
        detail,
      )
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (err) {
      throw new TrackerUnavailableError(`tracker ${url.origin} answered with invalid JSON`, undefined, {
        cause: err,
      })
    }
    const parsed = schema.safeParse(json)
    if (!parsed.success) {
      throw new TrackerUnavailableError(
        `tracker ${url.origin} answered with an unexpected shape`,
        formatIssues(parsed.error),
      )
    }
    return parsed.data
  }

  function validated<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
    const r = schema.safeParse(value)
    if (!r.success) throw new TrackerRejectedError('invalid tracker request', 400, formatIssues(r.error))
    return r.data
  }

  return {
    async announce(request, options = {}) {
      const body = validated(announceRequestSchema, request)
      return call('POST', 'v1/announce', body, announceResponseSchema, options.signal)
    },
    async reportBadPeer(request, options = {}) {
      const body = validated(reportBadPeerRequestSchema, request)
      return call('POST', 'v1/report', body, reportBadPeerResponseSchema, options.signal)
    },
    async heartbeat(request, options = {}) {
      const body = validated(heartbeatRequestSchema, request)
      return call('POST', 'v1/heartbeat', body, heartbeatResponseSchema, options.signal)
    },
    swarms(options = {}) {
      return call('GET', 'v1/swarms', undefined, swarmListSchema, options.signal)
    },
    swarm(digest, options = {}) {
      return call(
        'GET',
        `v1/swarms/${encodeURIComponent(digest)}`,
        undefined,
        swarmDetailSchema,
        options.signal,
      )
    },
  }
}

const STALE_CONNECTION_CODES = new Set(['ECONNRESET', 'EPIPE'])

/** True for a request failure caused by the connection closing under it, not by a timeout. */
function isStaleConnection(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && STALE_CONNECTION_CODES.has(code)) return true
  }
  return false
}
