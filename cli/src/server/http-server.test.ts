import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import Koa from 'koa'
import { pino } from 'pino'
import { Counter } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { type HttpService, ListenError, startHttpService } from './http-server.js'
import { createMetricsRegistry } from './metrics.js'

const logger = pino({ level: 'silent' })
const services: HttpService[] = []
const blockers: Server[] = []

afterEach(async () => {
  await Promise.all(services.splice(0).map((s) => s.close(100)))
  await Promise.all(blockers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))))
})

function appAnswering(text: string): Koa {
  const app = new Koa()
  app.use((ctx) => {
    ctx.body = `${text} ${ctx.path}`
  })
  return app
}

describe('startHttpService', () => {
  it('answers /healthz and /metrics itself and passes the rest to the app', async () => {
    const metrics = createMetricsRegistry()
    new Counter({ name: 'shoal_test_things_total', help: 'things', registers: [metrics] }).inc(3)
    const service = await startHttpService({
      service: 'test',
      app: appAnswering('app'),
      listen: '127.0.0.1:0',
      metrics,
      logger,
    })
    services.push(service)
    expect(service.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)

    const health = await fetch(`${service.url}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.json()).toEqual({ status: 'ok' })

    const text = await (await fetch(`${service.url}/metrics`)).text()
    expect(text).toContain('shoal_test_things_total 3')
    expect(text).toContain('process_cpu_user_seconds_total')
    expect(text).toContain('nodejs_eventloop_lag_seconds')

    expect(await (await fetch(`${service.url}/v2/?x=1`)).text()).toBe('app /v2/')
    expect(await (await fetch(`${service.url}/healthzzz`)).text()).toBe('app /healthzzz')
  })

  it('logs one listening line with the service and its url', async () => {
    const lines: string[] = []
    const capture = pino({ level: 'info' }, { write: (line: string) => lines.push(line) })
    const service = await startHttpService({
      service: 'registry',
      app: appAnswering('x'),
      listen: '127.0.0.1:0',
      metrics: createMetricsRegistry(),
      logger: capture,
    })
    services.push(service)
    const listening = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'listening')
    expect(listening).toHaveLength(1)
    expect(listening[0]).toMatchObject({ service: 'registry', url: service.url })
  })

  it('fails with a ListenError that says the port is in use', async () => {
    const blocker = createServer()
    blockers.push(blocker)
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
    const { port } = blocker.address() as AddressInfo
    const attempt = startHttpService({
      service: 'registry',
      app: appAnswering('x'),
      listen: `127.0.0.1:${port}`,
      metrics: createMetricsRegistry(),
      logger,
    })
    await expect(attempt).rejects.toBeInstanceOf(ListenError)
    await expect(attempt).rejects.toThrow(/already in use/)
  })

  it('close() waits for requests in flight, then resolves; twice is fine', async () => {
    const app = new Koa()
    let release!: () => void
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    app.use(async (ctx) => {
      await held
      ctx.body = 'done'
    })
    const service = await startHttpService({
      service: 't',
      app,
      listen: '127.0.0.1:0',
      metrics: createMetricsRegistry(),
      logger,
    })
    const response = fetch(`${service.url}/slow`).then((r) => r.text())
    // Wait until the request is inside the app before closing.
    const deadline = Date.now() + 5_000
    while ((await new Promise<number>((r) => service.server.getConnections((_, n) => r(n)))) === 0) {
      if (Date.now() > deadline) throw new Error('request never arrived')
      await new Promise((r) => setTimeout(r, 10))
    }
    const closed = service.close(5_000)
    release()
    expect(await response).toBe('done')
    await closed
    await service.close()
    expect(service.server.listening).toBe(false)
  })
})
