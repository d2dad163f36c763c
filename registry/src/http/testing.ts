/**
 * Test helpers for the HTTP layer: a registry app served on 127.0.0.1:0 over any
 * RegistryService (the memory-backed storage registry by default), raw HTTP requests
 * for what fetch refuses to send (dot segments, truncated bodies), and fixtures.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, request, type Server } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { type Descriptor, type Digest, digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import type { RegistryService } from '../service.js'
import { createFilesystemDriver, createMemoryDriver, createStorageRegistry } from '../storage/index.js'
import { createRegistryApp, type RegistryAppInit } from './app.js'

/** A running registry app. */
export interface TestRegistry {
  /** Base URL, `http://127.0.0.1:<port>`. */
  url: string
  port: number
  service: RegistryService
  metrics: Registry
  server: Server
  close(): Promise<void>
}

/** Storage drivers the HTTP suites run against. */
export type TestDriver = 'memory' | 'filesystem'

/**
 * Serves the registry app on 127.0.0.1:0 over `service`, or over a fresh storage
 * registry on `driver` (memory by default; filesystem in its own temp dir) when omitted.
 */
export async function startTestRegistry(
  init: RegistryAppInit & { service?: RegistryService; driver?: TestDriver } = {},
): Promise<TestRegistry> {
  let root: string | undefined
  let storage: ReturnType<typeof createStorageRegistry> | undefined
  if (init.service === undefined) {
    if (init.driver === 'filesystem') root = await mkdtemp(join(tmpdir(), 'shoal-http-'))
    const driver = root === undefined ? createMemoryDriver() : createFilesystemDriver({ root })
    storage = createStorageRegistry({ driver })
    await storage.start()
  }
  const service = init.service ?? storage!
  const metrics = new Registry()
  const app = createRegistryApp({ registry: service, metrics }, init)
  const server = createServer(app.callback())
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('server has no port')
  return {
    url: `http://127.0.0.1:${address.port}`,
    port: address.port,
    service,
    metrics,
    server,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await storage?.stop()
      if (root !== undefined) await rm(root, { recursive: true, force: true })
    },
  }
}

/** A raw answer: status, lower-cased headers and the body bytes. */
export interface RawResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
}

/** Sends a request with the path exactly as given (no URL normalisation). */
export function rawRequest(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Uint8Array,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      )
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/**
 * Writes `head` and `body` to a fresh TCP connection, half-closes it, and returns every
 * byte the server sent back until it closed. For truncated bodies and byte-exact checks.
 */
export function rawExchange(
  port: number,
  head: string,
  body: Uint8Array = new Uint8Array(),
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', (c) => chunks.push(c))
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the server answered still leaves its answer readable.
      if (err.code === 'ECONNRESET') resolve(Buffer.concat(chunks))
      else reject(err)
    })
    socket.on('close', () => resolve(Buffer.concat(chunks)))
    socket.write(head)
    socket.end(body)
  })
}

/** Random bytes and their digest. */
export function blobFixture(size: number): { bytes: Buffer; digest: Digest } {
  const bytes = randomBytes(size)
  return { bytes, digest: digestOf(bytes) }
}

/** Uploads a blob in one monolithic POST; throws unless the registry answers 201. */
export async function pushBlob(url: string, name: string, bytes: Uint8Array): Promise<Descriptor> {
  const digest = digestOf(bytes)
  const res = await fetch(`${url}/v2/${name}/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream' },
    body: bytes,
  })
  if (res.status !== 201) throw new Error(`push blob: ${res.status} ${await res.text()}`)
  return { mediaType: MEDIA_TYPES.ociLayerGzip, digest, size: bytes.byteLength }
}

/** Pushes a config and one layer and returns a valid OCI image manifest body for them. */
export async function pushImage(
  url: string,
  name: string,
  extra: Record<string, unknown> = {},
): Promise<{ body: Buffer; digest: Digest; layer: Descriptor; config: Descriptor }> {
  const config = await pushBlob(
    url,
    name,
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' })),
  )
  config.mediaType = MEDIA_TYPES.ociConfig
  const layer = await pushBlob(url, name, randomBytes(300))
  const body = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config,
      layers: [layer],
      ...extra,
    }),
  )
  return { body, digest: digestOf(body), layer, config }
}

/** PUTs a manifest; returns the response. */
export function putManifest(
  url: string,
  name: string,
  reference: string,
  body: Uint8Array,
  mediaType: string = MEDIA_TYPES.ociManifest,
): Promise<Response> {
  return fetch(`${url}/v2/${name}/manifests/${reference}`, {
    method: 'PUT',
    headers: { 'Content-Type': mediaType },
    body,
  })
}

/** The OCI error codes of an error answer. */
export async function errorCodes(res: Response): Promise<string[]> {
  const json = (await res.json()) as { errors: Array<{ code: string }> }
  return json.errors.map((e) => e.code)
}

/** The OCI error codes of a raw error answer. */
export function rawErrorCodes(res: RawResponse): string[] {
  const json = JSON.parse(res.body.toString('utf8')) as { errors: Array<{ code: string }> }
  return json.errors.map((e) => e.code)
}
