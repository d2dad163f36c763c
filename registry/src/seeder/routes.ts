/**
 * The seed's HTTP endpoints, beside (never under) the OCI API:
 *
 * ```
 * GET|HEAD /shoal/v1/seed                     200 {"peerId","multiaddrs":[...]}
 * GET|HEAD /shoal/v1/piece-maps/<digest>      200 the signed piece map, binary envelope
 *                                                 (application/vnd.shoal.piece-map.v1);
 *          ...?format=json                        or JSON (application/vnd.shoal.piece-map.v1+json)
 *                                             404 BLOB_UNKNOWN when the blob is not held
 *                                             400 DIGEST_INVALID for a malformed digest
 * ```
 *
 * A Koa middleware that passes every other path on; errors are thrown for the registry
 * app's error middleware to render as OCI error bodies.
 */
import type { Middleware } from 'koa'
import {
  BlobUnknownError,
  DigestInvalidError,
  ParameterInvalidError,
  parseDigest,
  RouteUnknownError,
  UnsupportedError,
} from '../../../protocol/src/index.js'
import { encodeSignedPieceMap, SIGNED_PIECE_MAP_MEDIA_TYPE } from '../../../protocol/src/piece-map.js'
import type { PieceMapStore } from './piece-maps.js'

/** Media type of the binary envelope of a signed piece map (protocol/src/piece-map.ts encodeSignedPieceMap). */
export const SIGNED_PIECE_MAP_BINARY_MEDIA_TYPE = 'application/vnd.shoal.piece-map.v1'
/** Prefix of every seed endpoint. */
export const SEED_ROUTE_PREFIX = '/shoal/v1/'

/** What the routes need of the seed. */
export interface SeedRoutesComponents {
  pieceMaps: Pick<PieceMapStore, 'get'>
  /** The seed's peer id and dialable addresses (each ending in /p2p/<id>). */
  info(): { peerId: string; multiaddrs: string[] }
}

/** Creates the middleware serving /shoal/v1/... */
export function createSeedRoutes(components: SeedRoutesComponents): Middleware {
  const { pieceMaps } = components
  return async (ctx, next) => {
    if (!ctx.path.startsWith(SEED_ROUTE_PREFIX)) return next()
    const rest = ctx.path.slice(SEED_ROUTE_PREFIX.length)
    const state = ctx.state as { route?: string; allow?: string[] }
    const readOnly = (): void => {
      if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
        state.allow = ['GET', 'HEAD']
        throw new UnsupportedError(`${ctx.method} is not supported on ${state.route}`, {
          method: ctx.method,
          allow: state.allow,
        })
      }
    }

    if (rest === 'seed') {
      state.route = '/shoal/v1/seed'
      readOnly()
      ctx.set('Cache-Control', 'no-store')
      ctx.body = components.info()
      return
    }

    const match = /^piece-maps\/([^/]+)$/.exec(rest)
    if (match) {
      state.route = '/shoal/v1/piece-maps/<digest>'
      readOnly()
      let raw: string
      try {
        raw = decodeURIComponent(match[1]!)
      } catch {
        throw new DigestInvalidError(undefined, { digest: match[1]!.slice(0, 200) })
      }
      const { digest } = parseDigest(raw)
      const format = ctx.query.format
      if (format !== undefined && format !== 'json' && format !== 'binary') {
        throw new ParameterInvalidError('format must be json or binary', {
          format: String(format).slice(0, 50),
        })
      }
      const signed = await pieceMaps.get(digest)
      if (signed === undefined) throw new BlobUnknownError(undefined, { digest })
      // The map of a digest never changes while the seed's key does not.
      ctx.set('Cache-Control', 'max-age=300')
      if (format === 'json') {
        ctx.type = SIGNED_PIECE_MAP_MEDIA_TYPE
        ctx.body = Buffer.from(JSON.stringify(signed))
      } else {
        ctx.type = SIGNED_PIECE_MAP_BINARY_MEDIA_TYPE
        ctx.body = Buffer.from(encodeSignedPieceMap(signed))
      }
      return
    }

    state.route = '/shoal/v1/*'
    throw new RouteUnknownError(undefined, { path: ctx.path.slice(0, 300) })
  }
}
