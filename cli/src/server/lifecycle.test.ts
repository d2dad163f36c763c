import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import Koa from 'koa'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { ListenError } from './http-server.js'
import { type RunningPart, runPart, type ServiceNode, stopParts } from './lifecycle.js'
import { createMetricsRegistry } from './metrics.js'

const logger = pino({ level: 'silent' })
const running: RunningPart[] = []
const blockers: Server[] = []

afterEach(async () => {
  await stopParts(running.splice(0), logger).catch(() => {})
  await Promise.all(blockers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))))
})

function fakeNode(events: string[], name: string): ServiceNode {
  const app = new Koa()
  app.use((ctx) => {
    ctx.body = name
  })
  return {
    app,
    async start() {
      events.push(`${name} start`)
    },
    async stop() {
      events.push(`${name} stop`)
    },
  }
}

describe('runPart', () => {
  it('starts the node before serving it, and stops parts in reverse order, once', async () => {
    const events: string[] = []
    for (const name of ['a', 'b']) {
      const part = await runPart({
        service: name,
        node: fakeNode(events, name),
        listen: '127.0.0.1:0',
        metrics: createMetricsRegistry(),
        logger,
      })
      running.push(part)
      expect(await (await fetch(`${part.url}/x`)).text()).toBe(name)
    }
    const parts = running.splice(0)
    await stopParts(parts, logger)
    await stopParts(parts, logger)
    expect(events).toEqual(['a start', 'b start', 'b stop', 'a stop'])
  })

  it('stops the node again when its address cannot be bound', async () => {
    const blocker = createServer()
    blockers.push(blocker)
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    const events: string[] = []
    await expect(
      runPart({
        service: 'a',
        node: fakeNode(events, 'a'),
        listen: `127.0.0.1:${(blocker.address() as AddressInfo).port}`,
        metrics: createMetricsRegistry(),
        logger,
      }),
    ).rejects.toBeInstanceOf(ListenError)
    expect(events).toEqual(['a start', 'a stop'])
  })

  it('stopParts stops every part even when one fails, then throws', async () => {
    const events: string[] = []
    const failing: RunningPart = {
      service: 'bad',
      url: '',
      async stop() {
        throw new Error('boom')
      },
    }
    const good: RunningPart = {
      service: 'good',
      url: '',
      async stop() {
        events.push('good stop')
      },
    }
    await expect(stopParts([good, failing], logger)).rejects.toThrow(/did not stop cleanly/)
    expect(events).toEqual(['good stop'])
  })
})
