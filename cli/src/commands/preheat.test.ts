import { createHash } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { createRegistryClient } from '../../../protocol/src/registry-client/index.js'
import { parseRegistryConfig } from '../../../registry/src/config.js'
import { createRegistryNode } from '../../../registry/src/main.js'
import { parseTrackerConfig } from '../../../tracker/src/config.js'
import { createTrackerNode } from '../../../tracker/src/main.js'
import { progressLine, runPreheat } from './preheat.js'

const TOKEN = 'cli-preheat-token-0123456789'
const logger = pino({ level: 'silent' })
const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function serve(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  )
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** A registry (no seed) holding team/app:1, and a tracker with the admin API. */
async function startParts() {
  const registry = await createRegistryNode(
    parseRegistryConfig({ storageDriver: 'memory', gcIntervalMs: 0, seed: { enabled: false } }),
    { logger, metrics: new Registry() },
  )
  await registry.start()
  cleanups.push(() => registry.stop())
  const registryUrl = await serve(registry.app.callback())
  const client = createRegistryClient({ url: registryUrl })
  const layer = new TextEncoder().encode('layer bytes '.repeat(1000))
  const config = new TextEncoder().encode('{"os":"linux"}')
  const digest = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`
  await client.uploadBlob('team/app', layer)
  await client.uploadBlob('team/app', config)
  const manifest = {
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
  }
  await client.putManifest(
    'team/app',
    '1',
    new TextEncoder().encode(JSON.stringify(manifest)),
    'application/vnd.oci.image.manifest.v1+json',
  )
  const tracker = await createTrackerNode(parseTrackerConfig({ preheat: { adminToken: TOKEN } }), {
    logger,
    metrics: new Registry(),
  })
  await tracker.start()
  cleanups.push(() => tracker.stop())
  const trackerUrl = await serve(tracker.app.callback())
  return { registryHost: new URL(registryUrl).host, trackerUrl, size: layer.length + config.length }
}

function sink(tty = false) {
  let text = ''
  return { write: (t: string) => (text += t), isTTY: tty, text: () => text }
}

describe('shoal preheat', () => {
  it('creates a seed job, shows progress while waiting and exits 0 when it succeeds', async () => {
    const parts = await startParts()
    const stdout = sink()
    const stderr = sink()
    const code = await runPreheat(
      {
        image: `${parts.registryHost}/team/app:1`,
        tracker: parts.trackerUrl,
        token: TOKEN,
        platforms: [],
        scope: 'seed',
        wait: true,
        intervalMs: 20,
      },
      { stdout, stderr },
    )
    expect(code).toBe(0)
    expect(stdout.text()).toMatch(/^[a-z0-9]+-[0-9a-f]{12}\n$/)
    expect(stderr.text()).toContain(`[${'#'.repeat(30)}] 100%  1/1 targets`)
    expect(stderr.text()).toMatch(/succeeded: .*team\/app:1 on 1 target/)
  })

  it('exits 1 with the reason when the job fails, and refuses a wrong token', async () => {
    const parts = await startParts()
    const stderr = sink()
    const code = await runPreheat(
      {
        image: `${parts.registryHost}/team/none:1`,
        tracker: parts.trackerUrl,
        token: TOKEN,
        platforms: [],
        scope: 'seed',
        wait: true,
        intervalMs: 20,
      },
      { stdout: sink(), stderr },
    )
    expect(code).toBe(1)
    expect(stderr.text()).toMatch(/failed: image not found: team\/none:1/)
    await expect(
      runPreheat(
        {
          image: `${parts.registryHost}/team/app:1`,
          tracker: parts.trackerUrl,
          token: 'x'.repeat(20),
          platforms: [],
          scope: 'all',
          wait: false,
        },
        { stdout: sink(), stderr: sink() },
      ),
    ).rejects.toThrow(/403.*admin token refused/)
  })

  it('draws the bar from the job progress', () => {
    const line = progressLine(
      {
        state: 'running',
        progress: { targets: 4, targetsDone: 1, bytesTotal: 4 * 1024 * 1024, bytesDone: 1024 * 1024 },
      } as never,
      10,
    )
    expect(line).toBe('[###.......]  25%  1/4 targets  1.0 MiB/4.0 MiB  running')
  })
})
