import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { parseRegistryConfig } from './config.js'
import { createRegistryNode, type RegistryNode } from './main.js'

const logger = pino({ level: 'silent' })
let dir: string
const nodes: RegistryNode[] = []
const servers: Server[] = []

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shoal-registry-main-'))
})
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))))
  await Promise.all(nodes.splice(0).map((n) => n.stop()))
  await rm(dir, { recursive: true, force: true })
})

async function serve(node: RegistryNode): Promise<string> {
  const server = createServer(node.app.callback())
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function* bytes(data: Uint8Array): AsyncIterable<Uint8Array> {
  yield data
}

describe('createRegistryNode', () => {
  it('composes a filesystem registry whose app serves /v2/ and whose content lands in dataDir', async () => {
    const metrics = new Registry()
    const config = parseRegistryConfig({ dataDir: join(dir, 'data'), gcIntervalMs: 0 })
    const node = await createRegistryNode(config, { logger, metrics })
    nodes.push(node)
    await node.start()
    const url = await serve(node)
    expect((await fetch(`${url}/v2/`)).status).toBe(200)

    const data = new TextEncoder().encode('hello shoal')
    const upload = await node.service.startUpload('test/main')
    const info = await node.service.completeUpload(
      'test/main',
      upload.id,
      `sha256:${createHash('sha256').update(data).digest('hex')}`,
      bytes(data),
    )
    expect(info.size).toBe(data.length)
    expect((await readdir(join(dir, 'data'), { recursive: true })).length).toBeGreaterThan(0)

    // The HTTP app registered its metrics on the given registry.
    expect(await metrics.getSingleMetricAsString('shoal_registry_http_requests_total')).toContain('route=')
  })

  it('serves content of a configured upstream through the pull-through cache', async () => {
    const origin = await createRegistryNode(
      parseRegistryConfig({ storageDriver: 'memory', gcIntervalMs: 0 }),
      {
        logger,
        metrics: new Registry(),
      },
    )
    nodes.push(origin)
    await origin.start()
    const originUrl = await serve(origin)
    const data = new TextEncoder().encode('from upstream')
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`
    const upload = await origin.service.startUpload('lib/thing')
    await origin.service.completeUpload('lib/thing', upload.id, digest, bytes(data))

    const metrics = new Registry()
    const cache = await createRegistryNode(
      parseRegistryConfig({
        storageDriver: 'memory',
        gcIntervalMs: 0,
        upstreams: [{ url: originUrl, prefix: 'up' }],
      }),
      { logger, metrics },
    )
    nodes.push(cache)
    await cache.start()
    const url = await serve(cache)
    const response = await fetch(`${url}/v2/up/lib/thing/blobs/${digest}`)
    expect(response.status).toBe(200)
    expect(new Uint8Array(await response.arrayBuffer())).toEqual(data)
    expect(await metrics.getSingleMetricAsString('shoal_registry_proxy_requests_total')).toContain(
      'kind="blob"',
    )
  })

  it('runs garbage collection on demand and counts it', async () => {
    const metrics = new Registry()
    const node = await createRegistryNode(parseRegistryConfig({ storageDriver: 'memory', gcIntervalMs: 0 }), {
      logger,
      metrics,
    })
    nodes.push(node)
    await node.start()
    await node.collectGarbage()
    expect(await metrics.getSingleMetricAsString('shoal_registry_gc_runs_total')).toContain('result="ok"} 1')
  })

  it('runs garbage collection periodically and stops cleanly, twice', async () => {
    const metrics = new Registry()
    const node = await createRegistryNode(
      parseRegistryConfig({ storageDriver: 'memory', gcIntervalMs: 20 }),
      {
        logger,
        metrics,
      },
    )
    await node.start()
    const deadline = Date.now() + 10_000
    while (
      !(await metrics.getSingleMetricAsString('shoal_registry_gc_runs_total')).includes('result="ok"}')
    ) {
      if (Date.now() > deadline) throw new Error('no periodic garbage collection within 10 s')
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await node.stop()
    await node.stop()
  })
})
