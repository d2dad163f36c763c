/**
 * Push-triggered preheat: a registry with a preheat rule and a webhook, a tracker with
 * the admin API. A push matching the rule starts a job on the tracker (scope seed: the
 * tracker reads the image through the registry) and the webhook receiver, which fails
 * at first, gets the push, pull and preheat events after retries.
 */
import { createHash } from 'node:crypto'
import type http from 'node:http'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import type { PreheatJob } from '../../protocol/src/preheat-api.js'
import { createRegistryClient } from '../../protocol/src/registry-client/index.js'
import { createPreheatClient } from '../../protocol/src/tracker-client/preheat.js'
import { parseRegistryConfig } from '../../registry/src/config.js'
import type { RegistryEvent } from '../../registry/src/events/index.js'
import { createRegistryNode } from '../../registry/src/main.js'
import { parseTrackerConfig } from '../../tracker/src/config.js'
import { createTrackerNode } from '../../tracker/src/main.js'
import { serve, waitUntil } from './swarm-cluster.js'

const TOKEN = 'rules-test-admin-token-012345'
const logger = pino({ level: 'silent' })

describe('preheat rules and webhooks', () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('starts a job for a matching push and notifies a webhook that fails at first', async () => {
    const tracker = await createTrackerNode(parseTrackerConfig({ preheat: { adminToken: TOKEN } }), {
      logger,
      metrics: new Registry(),
    })
    await tracker.start()
    cleanups.push(() => tracker.stop())
    const trackerServed = await serve(tracker.app.callback())
    cleanups.push(() => trackerServed.close())

    const events: RegistryEvent[] = []
    let hookCalls = 0
    const hook = await serve((req, res: http.ServerResponse) => {
      let text = ''
      req.on('data', (c) => (text += c))
      req.on('end', () => {
        hookCalls++
        if (hookCalls <= 2) {
          res.statusCode = 500
          res.end()
          return
        }
        events.push(JSON.parse(text) as RegistryEvent)
        res.end()
      })
    })
    cleanups.push(() => hook.close())

    const registry = await createRegistryNode(
      parseRegistryConfig({
        storageDriver: 'memory',
        gcIntervalMs: 0,
        seed: { enabled: false },
        events: {
          webhookUrls: [`${hook.url}/events`],
          webhookInitialBackoffMs: 20,
          trackerUrl: trackerServed.url,
          trackerAdminToken: TOKEN,
          preheatRules: ['team/*:v*@seed'],
        },
      }),
      { logger, metrics: new Registry() },
    )
    await registry.start()
    cleanups.push(() => registry.stop())
    const served = await serve(registry.app.callback())
    cleanups.push(() => served.close())
    registry.setUrl?.(served.url)

    const client = createRegistryClient({ url: served.url })
    const layer = new TextEncoder().encode('a layer '.repeat(500))
    const config = new TextEncoder().encode('{}')
    const digest = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`
    const manifest = new TextEncoder().encode(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: digest(config),
          size: config.length,
        },
        layers: [
          { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digest(layer), size: layer.length },
        ],
      }),
    )
    for (const repo of ['team/app', 'other/app']) {
      await client.uploadBlob(repo, layer)
      await client.uploadBlob(repo, config)
    }
    // Not matching: another repository, and a tag outside the pattern.
    await client.putManifest('other/app', 'v1', manifest, 'application/vnd.oci.image.manifest.v1+json')
    await client.putManifest('team/app', 'latest', manifest, 'application/vnd.oci.image.manifest.v1+json')
    // Matching.
    await client.putManifest('team/app', 'v2', manifest, 'application/vnd.oci.image.manifest.v1+json')

    const admin = createPreheatClient({ url: trackerServed.url, token: TOKEN })
    let jobs: PreheatJob[] = []
    await waitUntil(async () => {
      jobs = await admin.list()
      return jobs.length === 1 && jobs[0]!.state === 'succeeded'
    }, 'the rule to start a job that succeeds')
    expect(jobs[0]).toMatchObject({
      image: `${served.host}/team/app:v2`,
      scope: 'seed',
      repository: 'team/app',
      reference: 'v2',
    })
    expect(jobs[0]!.targets).toMatchObject([{ id: 'seed', state: 'done' }])

    await waitUntil(() => events.some((e) => e.type === 'preheat'), 'the preheat event')
    const pushes = events.filter((e) => e.type === 'push').map((e) => `${e.repository}:${e.tag}`)
    expect(pushes.sort()).toEqual(['other/app:v1', 'team/app:latest', 'team/app:v2'])
    const preheat = events.find((e) => e.type === 'preheat')!
    expect(preheat).toMatchObject({
      repository: 'team/app',
      tag: 'v2',
      job: { id: jobs[0]!.id, state: 'succeeded' },
    })
    expect(hookCalls).toBeGreaterThanOrEqual(events.length + 2)

    // Pulls and deletes are events too.
    await client.getManifest('team/app', 'v2')
    await waitUntil(() => events.some((e) => e.type === 'pull' && e.tag === 'v2'), 'the pull event')
    await client.getManifest('team/app', 'latest')
    const res = await fetch(`${served.url}/v2/other/app/manifests/${digest(manifest)}`, { method: 'DELETE' })
    expect(res.status).toBe(202)
    await waitUntil(
      () => events.some((e) => e.type === 'delete' && e.repository === 'other/app'),
      'the delete event',
    )
  }, 60_000)
})
