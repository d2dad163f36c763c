/**
 * The live view's routes: `GET /` (one plain HTML page with inline JS that polls
 * `GET /v1/overview` every second; no build step) and `GET /v1/overview` (JSON).
 */
import { readFileSync } from 'node:fs'
import type { TrackerRoute } from '../http/app.js'
import type { PreheatService } from '../preheat/service.js'
import type { Tracker } from '../tracker.js'
import { buildOverview } from './overview.js'

const page = readFileSync(new URL('./page.html', import.meta.url), 'utf8')

/** Builds the live view routes. */
export function liveRoutes(components: { tracker: Tracker; preheat: PreheatService }): TrackerRoute[] {
  return [
    {
      name: '/',
      pattern: /^\/(?:index\.html)?$/,
      methods: {
        GET: async (ctx) => {
          ctx.type = 'text/html; charset=utf-8'
          ctx.set('Cache-Control', 'no-cache')
          ctx.body = page
          return undefined
        },
      },
    },
    {
      name: '/v1/overview',
      pattern: /^\/v1\/overview\/?$/,
      methods: { GET: async () => buildOverview(components) },
    },
  ]
}
