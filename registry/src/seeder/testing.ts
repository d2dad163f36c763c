/**
 * Test helpers for the seed: a composed registry node in a temp dir served over HTTP,
 * blob pushes, and polling with a deadline.
 */
import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { type Digest, digestOf } from '../../../protocol/src/index.js'
import { parseRegistryConfig, type RegistryConfigInput } from '../config.js'
import { createRegistryNode, type RegistryNode } from '../main.js'

/** A silent logger. */
export const silent = pino({ level: 'silent' })

/** Serves a Koa-like callback on 127.0.0.1:0; returns its base URL and server. */
export async function serveHttp(
  callback: Parameters<typeof createServer>[1],
): Promise<{ url: string; server: Server }> {
  const server = createServer(callback)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }
}

/** Closes a server, dropping kept-alive connections. */
export function closeServer(server: Server): Promise<void> {
  server.closeAllConnections()
  return new Promise((resolve) => server.close(() => resolve()))
}

/** Polls `check` every 25 ms until it holds; throws after `timeoutMs`. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met before the deadline')
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** A running registry node with its HTTP URL and metrics. */
export interface TestRegistry {
  node: RegistryNode
  url: string
  metrics: Registry
  stop(): Promise<void>
}

/** Owns a temp dir and stops whatever it started. */
export interface SeedHarness {
  dir: string
  /** Starts a registry on `dataDir` (default: the harness dir) with seed settings. */
  registry(config?: RegistryConfigInput): Promise<TestRegistry>
  cleanup(): Promise<void>
}

/** Creates a harness with its own temp dir. */
export async function createSeedHarness(): Promise<SeedHarness> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-seed-'))
  const stops: Array<() => Promise<void>> = []
  return {
    dir,
    async registry(config = {}) {
      const metrics = new Registry()
      const node = await createRegistryNode(
        parseRegistryConfig({ dataDir: join(dir, 'data'), gcIntervalMs: 0, ...config }),
        { logger: silent, metrics },
      )
      await node.start()
      const { url, server } = await serveHttp(node.app.callback())
      let stopped: Promise<void> | undefined
      const stop = (): Promise<void> => {
        stopped ??= (async () => {
          await closeServer(server)
          await node.stop()
        })()
        return stopped
      }
      stops.push(stop)
      return { node, url, metrics, stop }
    },
    async cleanup() {
      for (const stop of stops.splice(0).reverse()) await stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** Pushes `data` as a blob of `repository` through the service; returns its digest. */
export async function pushBlob(
  node: RegistryNode,
  data: Uint8Array,
  repository = 'test/seed',
): Promise<Digest> {
  const digest = digestOf(data)
  const upload = await node.service.startUpload(repository)
  await node.service.completeUpload(
    repository,
    upload.id,
    digest,
    (async function* () {
      yield data
    })(),
  )
  return digest
}

/** Random bytes of `size`. */
export function randomBlob(size: number): Buffer {
  return randomBytes(size)
}
