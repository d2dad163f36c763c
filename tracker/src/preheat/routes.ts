/**
 * The preheat routes of the tracker app: the agents' heartbeat (`POST /v1/heartbeat`,
 * open like announce) and the admin API under `/v1/preheat` (Bearer token). Without an
 * admin token configured the admin API answers 403: it is never open by accident.
 */
import { timingSafeEqual } from 'node:crypto'
import type Koa from 'koa'
import { DeniedError, UnauthorizedError } from '../../../protocol/src/index.js'
import { preheatCreateRequestSchema } from '../../../protocol/src/preheat-api.js'
import { heartbeatRequestSchema } from '../../../protocol/src/tracker-api.js'
import { readJson, type TrackerRoute, validate } from '../http/app.js'
import type { PreheatService } from './service.js'

/** Throws unless the request carries `Authorization: Bearer <adminToken>`. */
export function requireAdmin(ctx: Koa.Context, adminToken: string | undefined): void {
  if (adminToken === undefined || adminToken === '')
    throw new DeniedError('the admin API is disabled: set preheat.adminToken in the tracker configuration')
  const header = ctx.get('authorization')
  const match = /^Bearer\s+(\S+)$/i.exec(header)
  if (match === null) {
    ctx.set('WWW-Authenticate', 'Bearer realm="shoal-tracker"')
    throw new UnauthorizedError('admin token required (Authorization: Bearer <token>)')
  }
  const given = Buffer.from(match[1]!)
  const expected = Buffer.from(adminToken)
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    throw new DeniedError('admin token refused')
}

/** Builds the preheat routes. */
export function preheatRoutes(preheat: PreheatService, init: { adminToken?: string }): TrackerRoute[] {
  const admin = (ctx: Koa.Context) => requireAdmin(ctx, init.adminToken)
  return [
    {
      name: '/v1/heartbeat',
      pattern: /^\/v1\/heartbeat\/?$/,
      methods: {
        POST: async (ctx) => preheat.heartbeat(validate(heartbeatRequestSchema, await readJson(ctx))),
      },
    },
    {
      name: '/v1/preheat',
      pattern: /^\/v1\/preheat\/?$/,
      methods: {
        POST: async (ctx) => {
          admin(ctx)
          const job = await preheat.create(validate(preheatCreateRequestSchema, await readJson(ctx)))
          ctx.status = 201
          return job
        },
        GET: async (ctx) => {
          admin(ctx)
          return { jobs: await preheat.list() }
        },
      },
    },
    {
      name: '/v1/preheat/:id',
      pattern: /^\/v1\/preheat\/([A-Za-z0-9_-]{1,64})\/?$/,
      methods: {
        GET: async (ctx, [id]) => {
          admin(ctx)
          return preheat.get(id!)
        },
        DELETE: async (ctx, [id]) => {
          admin(ctx)
          return preheat.cancel(id!)
        },
      },
    },
  ]
}
