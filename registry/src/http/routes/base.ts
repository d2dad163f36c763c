/** `GET /v2/`: the API version check every client makes first. */
import type { EndpointHandlers } from './types.js'

/** Handlers of `/v2/`: 200 with an empty JSON object (the version header is set for every answer). */
export function createBaseRoutes(): EndpointHandlers<'base'> {
  return {
    GET: async (ctx) => {
      ctx.status = 200
      ctx.body = {}
    },
  }
}
