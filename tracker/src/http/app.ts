/**
 * The tracker's HTTP API as a Koa app (routes in protocol/src/tracker-api.ts). Handlers
 * parse and validate, call one Tracker method and render JSON. Every failure becomes a
 * JSON error `{ "error": { "code", "message", "issues"? } }` with its status from the
 * shared error table; nothing a client sends can take the process down.
 */
import Koa from 'koa'
import type { Logger } from 'pino'
import type { z } from 'zod'
import {
  announceRequestSchema,
  DecodeError,
  type Digest,
  formatIssues,
  isDigest,
  DigestInvalidError,
  MAX_TRACKER_BODY_BYTES,
  ociErrorFor,
  reportBadPeerRequestSchema,
  RouteUnknownError,
  ShoalError,
  type TrackerErrorBody,
  TooLargeError,
  UnsupportedError,
} from '../../../protocol/src/index.js'
import type { TrackerMetrics } from '../metrics.js'
import type { Tracker } from '../tracker.js'

/** Collaborators of the tracker app. */
export interface TrackerAppComponents {
  tracker: Tracker
  logger?: Logger
  metrics?: Pick<TrackerMetrics, 'httpRequests'>
  /** More routes (the preheat admin API, heartbeats, the live view), tried after the core ones. */
  extraRoutes?: TrackerRoute[]
  /** Preheat tasks for a peer, added to its announce answers (pull model). */
  tasksFor?(peerId: string): Promise<import('../../../protocol/src/tracker-api.js').PreheatTask[]>
}

const ERROR_CODES: Record<number, string> = {
  400: 'BAD_REQUEST',
  401: 'UNAUTHORIZED',
  403: 'DENIED',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_ALLOWED',
  413: 'TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
}

/** Reads a JSON request body (bounded); DecodeError or TooLargeError when it cannot. */
export async function readJson(ctx: Koa.Context): Promise<unknown> {
  const declared = Number(ctx.get('content-length') || '0')
  if (declared > MAX_TRACKER_BODY_BYTES)
    throw new TooLargeError(`body larger than ${MAX_TRACKER_BODY_BYTES} bytes`)
  const chunks: Buffer[] = []
  let size = 0
  try {
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
      size += chunk.length
      if (size > MAX_TRACKER_BODY_BYTES)
        throw new TooLargeError(`body larger than ${MAX_TRACKER_BODY_BYTES} bytes`)
      chunks.push(chunk)
    }
  } catch (err) {
    if (err instanceof TooLargeError) throw err
    throw new DecodeError('request body was cut off', undefined, { cause: err })
  }
  const text = Buffer.concat(chunks).toString('utf8')
  if (text.trim() === '') throw new DecodeError('request body is empty; expected JSON')
  try {
    return JSON.parse(text)
  } catch {
    throw new DecodeError('request body is not valid JSON')
  }
}

/** Validates a value against a schema; DecodeError listing the issues when it fails. */
export function validate<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const r = schema.safeParse(value)
  if (!r.success) throw new DecodeError('request does not match the schema', formatIssues(r.error))
  return r.data
}

/** A route handler: returns the JSON body (or sets ctx.body itself and returns undefined). */
export type Handler = (ctx: Koa.Context, params: string[]) => Promise<unknown>
/** A tracker route. */
export interface TrackerRoute {
  name: string
  pattern: RegExp
  methods: Partial<Record<string, Handler>>
}

/** Creates the tracker's Koa app. */
export function createTrackerApp(components: TrackerAppComponents): Koa {
  const { tracker, logger } = components
  const routes: TrackerRoute[] = [
    {
      name: '/v1/announce',
      pattern: /^\/v1\/announce\/?$/,
      methods: {
        POST: async (ctx) => {
          const request = validate(announceRequestSchema, await readJson(ctx))
          const answer = await tracker.announce(request, { signal: abortOnClose(ctx) })
          if (components.tasksFor === undefined) return answer
          const tasks = await components.tasksFor(request.peerId)
          return tasks.length > 0 ? { ...answer, tasks } : answer
        },
      },
    },
    {
      name: '/v1/report',
      pattern: /^\/v1\/report\/?$/,
      methods: {
        POST: async (ctx) =>
          tracker.report(validate(reportBadPeerRequestSchema, await readJson(ctx)), {
            signal: abortOnClose(ctx),
          }),
      },
    },
    {
      name: '/v1/swarms',
      pattern: /^\/v1\/swarms\/?$/,
      methods: { GET: async (ctx) => tracker.swarms({ signal: abortOnClose(ctx) }) },
    },
    {
      name: '/v1/swarms/:digest',
      pattern: /^\/v1\/swarms\/([^/]+)\/?$/,
      methods: {
        GET: async (ctx, [raw]) => {
          let digest: string
          try {
            digest = decodeURIComponent(raw ?? '')
          } catch {
            throw new DigestInvalidError('digest is not valid percent-encoding')
          }
          if (!isDigest(digest)) throw new DigestInvalidError(`invalid digest: ${digest.slice(0, 200)}`)
          return tracker.swarm(digest as Digest, { signal: abortOnClose(ctx) })
        },
      },
    },
    ...(components.extraRoutes ?? []),
  ]

  const app = new Koa()
  app.silent = true
  app.use(async (ctx) => {
    let routeName = 'unknown'
    try {
      const route = routes.find((r) => r.pattern.test(ctx.path))
      if (route === undefined) throw new RouteUnknownError(`no tracker endpoint at ${ctx.path.slice(0, 200)}`)
      routeName = route.name
      const handler = route.methods[ctx.method]
      if (handler === undefined) {
        ctx.set('Allow', Object.keys(route.methods).join(', '))
        throw new UnsupportedError(`${ctx.method} is not allowed on ${route.name}`)
      }
      const params = route.pattern.exec(ctx.path)!.slice(1)
      const body = await handler(ctx, params)
      if (body !== undefined) {
        ctx.body = body
        ctx.type = 'application/json'
      }
    } catch (err) {
      const { status } = ociErrorFor(err)
      if (status >= 500) logger?.error({ err, path: ctx.path }, 'tracker request failed')
      else
        logger?.debug(
          { err: err instanceof Error ? err.message : err, path: ctx.path },
          'tracker request refused',
        )
      const body: TrackerErrorBody = {
        error: {
          code: ERROR_CODES[status] ?? (status >= 500 ? 'INTERNAL' : 'ERROR'),
          message: status >= 500 && !(err instanceof ShoalError) ? 'internal error' : (err as Error).message,
        },
      }
      if (err instanceof ShoalError && Array.isArray(err.detail)) body.error.issues = err.detail as string[]
      if (status === 413) ctx.set('Connection', 'close')
      ctx.status = status
      ctx.body = body
    } finally {
      components.metrics?.httpRequests.inc({ route: routeName, status: String(ctx.status) })
    }
  })
  return app
}

/** A signal that aborts when the client goes away before the answer is sent. */
export function abortOnClose(ctx: Koa.Context): AbortSignal {
  const ac = new AbortController()
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) ac.abort(new Error('client closed the connection'))
  })
  return ac.signal
}
