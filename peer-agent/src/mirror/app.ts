/**
 * The node's registry mirror: the pull half of the OCI Distribution API as a Koa app,
 * for containerd (hosts.toml; `?ns=<upstream host>` on every request) and Docker
 * (registry-mirrors; no `ns`, meaning docker.io). Routes are thin: name the content,
 * pass the private-repository gate, ask the manifest or blob source, set headers and
 * stream the body.
 */
import type { Context, Middleware } from 'koa'
import Koa from 'koa'
import type { Logger } from 'pino'
import { Registry } from 'prom-client'
import {
  contentRange,
  type Digest,
  parseDigest,
  parseReference,
  type ResolvedRange,
  RouteUnknownError,
  resolveRange,
  UnsupportedError,
} from '../../../protocol/src/index.js'
import type { AccessChecker } from '../upstream/access.js'
import { API_VERSION, API_VERSION_HEADER, createErrorHandler } from './error-handler.js'
import { createMirrorMetrics, type MirrorMetrics } from './metrics.js'
import { DOCKER_HUB, repositoryOf, upstreamHostOf } from './names.js'
import type { BlobSource, ManifestInfo, ManifestSource, SourceOptions } from './sources.js'

/** Collaborators of the mirror app. */
export interface MirrorAppComponents {
  manifests: ManifestSource
  blobs: BlobSource
  /** The private-repository gate; without it every client may read everything the agent can. */
  access?: AccessChecker
  logger?: Logger
  /** Where shoal_agent_http_requests_total is registered; a private registry when omitted. */
  metrics?: Registry
}

/** Options of the mirror app. */
export interface MirrorAppInit {
  /** The upstream host of requests without `ns`. @default 'docker.io' */
  defaultHost?: string
}

/** Route templates, the `route` label of shoal_agent_http_requests_total. */
export const MIRROR_ROUTES = {
  base: '/v2/',
  manifest: '/v2/<name>/manifests/<reference>',
  blob: '/v2/<name>/blobs/<digest>',
  unmatched: 'unmatched',
} as const

type Match =
  | { route: 'base' }
  | { route: 'manifest'; name: string; reference: string }
  | { route: 'blob'; name: string; digest: string }

/** Splits a raw path from the right (names contain slashes); undefined for anything else. */
function matchPath(path: string): Match | undefined {
  if (path === '/v2' || path === '/v2/') return { route: 'base' }
  if (!path.startsWith('/v2/')) return undefined
  const parts = path.slice(4).split('/')
  if (parts.length < 3) return undefined
  const last = decode(parts[parts.length - 1] ?? '')
  const kind = parts[parts.length - 2]
  const name = parts.slice(0, -2).join('/')
  if (kind === 'manifests') return { route: 'manifest', name, reference: last }
  if (kind === 'blobs') return { route: 'blob', name, digest: last }
  return undefined
}

function decode(part: string): string {
  try {
    return decodeURIComponent(part)
  } catch {
    return part
  }
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS'])

/** Records the request metric and a debug access-log line when the response is over. */
function createObserver(metrics: MirrorMetrics, logger: Logger | undefined): Middleware {
  return async (ctx, next) => {
    const started = process.hrtime.bigint()
    ctx.set(API_VERSION_HEADER, API_VERSION)
    ctx.res.once('close', () => {
      const route = (ctx.state as { route?: string }).route ?? MIRROR_ROUTES.unmatched
      const method = KNOWN_METHODS.has(ctx.method) ? ctx.method : 'OTHER'
      const status = ctx.res.statusCode
      metrics.requests.inc({ method, route, status: String(status) })
      logger?.debug(
        {
          method: ctx.method,
          path: ctx.path,
          ns: ctx.query.ns,
          status,
          durationMs: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
          completed: ctx.res.writableFinished,
        },
        'request',
      )
    })
    await next()
  }
}

/** A signal that aborts when the client goes away before the response is complete. */
function clientGone(ctx: Context): AbortSignal {
  const controller = new AbortController()
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) controller.abort(new Error('client closed the connection'))
  })
  return controller.signal
}

function setManifestHeaders(ctx: Context, info: ManifestInfo): void {
  ctx.set('Content-Type', info.mediaType)
  ctx.set('Docker-Content-Digest', info.digest)
  ctx.set('ETag', `"${info.digest}"`)
}

function setBlobHeaders(ctx: Context, digest: Digest): void {
  ctx.set('Content-Type', 'application/octet-stream')
  ctx.set('Docker-Content-Digest', digest)
  ctx.set('ETag', `"${digest}"`)
  ctx.set('Accept-Ranges', 'bytes')
  ctx.set('Cache-Control', 'max-age=31536000')
}

/**
 * Creates the mirror app: `GET /v2/`, and HEAD/GET of `/v2/<name>/manifests/<ref>` and
 * `/v2/<name>/blobs/<digest>` with `?ns=<upstream host>`. Blob GETs honour one `bytes=`
 * range (206, or 416 with `Content-Range: bytes *\/size`). Other methods answer 405,
 * other paths 404, both as OCI error bodies. Registers shoal_agent_http_requests_total
 * on `components.metrics`.
 */
export function createMirrorApp(components: MirrorAppComponents, init: MirrorAppInit = {}): Koa {
  const { manifests, blobs, access, logger } = components
  const metrics = createMirrorMetrics(components.metrics ?? new Registry())
  const defaultHost = init.defaultHost ?? DOCKER_HUB
  const app = new Koa()
  app.on('error', (err: unknown) => logger?.debug({ err }, 'response failed after it started'))
  app.use(createObserver(metrics, logger))
  app.use(createErrorHandler({ logger }))
  app.use(async (ctx) => {
    const match = matchPath(ctx.path)
    if (match === undefined) throw new RouteUnknownError(undefined, { path: ctx.path.slice(0, 300) })
    ;(ctx.state as { route?: string }).route = MIRROR_ROUTES[match.route]
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      throw new UnsupportedError(`${ctx.method} is not supported by the mirror`, { allow: ['GET', 'HEAD'] })
    }
    if (match.route === 'base') {
      ctx.status = 200
      ctx.type = 'application/json'
      ctx.body = '{}'
      return
    }
    const ns = typeof ctx.query.ns === 'string' ? ctx.query.ns : undefined
    const host = upstreamHostOf(ns, defaultHost)
    const repository = repositoryOf(host, match.name)
    const authorization = ctx.get('Authorization') || undefined
    const signal = clientGone(ctx)
    const options: SourceOptions = { signal, ...(authorization === undefined ? {} : { authorization }) }

    if (match.route === 'manifest') {
      parseReference(match.reference)
      const ref = { host, repository, reference: match.reference }
      await access?.check({ ...ref, kind: 'manifest' }, authorization, { signal })
      if (ctx.method === 'HEAD') {
        const info = await manifests.head(ref, options)
        setManifestHeaders(ctx, info)
        ctx.set('Content-Length', String(info.size))
        ctx.status = 200
        return
      }
      const manifest = await manifests.get(ref, options)
      setManifestHeaders(ctx, manifest)
      ctx.status = 200
      ctx.body = Buffer.from(manifest.body.buffer, manifest.body.byteOffset, manifest.body.byteLength)
      return
    }

    const digest = parseDigest(match.digest).digest
    const ref = { host, repository, digest }
    await access?.check({ host, repository, kind: 'blob', reference: digest }, authorization, { signal })
    if (ctx.method === 'HEAD') {
      const info = await blobs.stat(ref, options)
      setBlobHeaders(ctx, digest)
      ctx.set('Content-Length', String(info.size))
      ctx.status = 200
      return
    }
    const rangeHeader = ctx.get('Range')
    let range: ResolvedRange | undefined
    if (rangeHeader !== '') {
      // The size is needed to resolve suffix ranges and to answer 416 properly.
      const info = await blobs.stat(ref, options)
      range = resolveRange(rangeHeader, info.size)
    }
    const opened = await blobs.open(ref, range, options)
    setBlobHeaders(ctx, digest)
    if (range === undefined) {
      ctx.status = 200
      ctx.set('Content-Length', String(opened.size))
    } else {
      ctx.status = 206
      ctx.set('Content-Range', contentRange(opened.range, opened.size))
      ctx.set('Content-Length', String(opened.range.end - opened.range.start + 1))
    }
    // A source failing mid-stream must cut the response off: the client then knows the blob is incomplete.
    opened.stream.once('error', (err) => {
      logger?.warn({ err, digest, host, repository }, 'blob stream failed after the answer started')
      ctx.res.destroy()
    })
    ctx.body = opened.stream
  })
  return app
}
