import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { parsePreheatRule, ruleMatches } from './preheat-rules.js'
import type { RegistryEvent } from './types.js'
import { createWebhookNotifier } from './webhooks.js'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function receiver(failFirst: number) {
  const received: Array<{ at: number; body: RegistryEvent }> = []
  let calls = 0
  const server = http.createServer((req, res) => {
    let text = ''
    req.on('data', (c) => (text += c))
    req.on('end', () => {
      calls++
      if (calls <= failFirst) {
        res.statusCode = 503
        res.end('not yet')
        return
      }
      received.push({ at: Date.now(), body: JSON.parse(text) as RegistryEvent })
      res.end('ok')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  )
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    calls: () => calls,
  }
}

const event = (type: RegistryEvent['type']): RegistryEvent => ({
  id: 'e1',
  type,
  at: new Date().toISOString(),
  repository: 'team/app',
  tag: 'v1',
  digest: `sha256:${'a'.repeat(64)}`,
})

describe('webhooks', () => {
  it('delivers to a receiver that fails at first, after retries with growing backoff', async () => {
    const hook = await receiver(3)
    const metrics = new Registry()
    const notifier = createWebhookNotifier(
      { metrics },
      { urls: [hook.url], initialBackoffMs: 40, maxBackoffMs: 1000 },
    )
    cleanups.push(() => notifier.stop())
    const started = Date.now()
    const pushed = event('push')
    notifier.notify(pushed)
    await notifier.idle()
    expect(hook.calls()).toBe(4)
    expect(hook.received.map((r) => r.body)).toEqual([pushed])
    // Backoff: at least half of 40 + 80 + 160 ms (jittered between half and all of each).
    expect(hook.received[0]!.at - started).toBeGreaterThanOrEqual(140)
    const values = (await metrics.getSingleMetric('shoal_registry_webhook_deliveries_total')!.get()).values
    const by = Object.fromEntries(values.map((v) => [v.labels.result, v.value]))
    expect(by).toEqual({ retried: 3, delivered: 1 })
  })

  it('gives up after maxAttempts and sends only the event types asked for', async () => {
    const hook = await receiver(100)
    const notifier = createWebhookNotifier(
      {},
      { urls: [hook.url], events: ['push'], maxAttempts: 3, initialBackoffMs: 5 },
    )
    cleanups.push(() => notifier.stop())
    notifier.notify(event('pull'))
    notifier.notify(event('push'))
    await notifier.idle()
    expect(hook.calls()).toBe(3)
    expect(hook.received).toEqual([])
  })
})

describe('preheat rules', () => {
  it('parses repository and tag globs, scope and platforms', () => {
    expect(parsePreheatRule('team/*:release-*@zone:eu#linux/amd64,linux/arm64')).toEqual({
      repository: 'team/*',
      tag: 'release-*',
      scope: 'zone:eu',
      platforms: ['linux/amd64', 'linux/arm64'],
    })
    expect(parsePreheatRule('library/**')).toEqual({ repository: 'library/**', scope: 'all', platforms: [] })
    expect(() => parsePreheatRule('team/app@half')).toThrow(/invalid scope/)
    expect(() => parsePreheatRule('Team App')).toThrow(/invalid repository/)
  })

  it('matches pushes by tag only, with * inside a segment and ** across', () => {
    const rule = parsePreheatRule('team/*:v*')
    expect(ruleMatches(rule, 'team/app', 'v1')).toBe(true)
    expect(ruleMatches(rule, 'team/app', 'latest')).toBe(false)
    expect(ruleMatches(rule, 'team/a/b', 'v1')).toBe(false)
    expect(ruleMatches(rule, 'team/app', undefined)).toBe(false)
    expect(ruleMatches(parsePreheatRule('team/**'), 'team/a/b', 'x')).toBe(true)
  })
})
