/**
 * The few OCI Distribution calls the registry benchmark makes, on node:http with a
 * keep-alive agent: the thinnest client there is, so that the client's own cost is
 * small and the same for both servers. Not a general client (see
 * protocol/src/registry-client for that): it trusts the servers and checks statuses.
 */
import { createHash } from 'node:crypto'
import { Agent, type IncomingMessage, request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { BlobVariant } from './blob-source.js'

/** Media types a manifest GET accepts, as container clients send them. */
export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ')

const agent = new Agent({ keepAlive: true, maxSockets: 64 })

interface Response {
  status: number
  headers: IncomingMessage['headers']
  body: Buffer
}

async function readAll(response: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of response) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Sends one request; `body` is a buffer or a stream of buffers of `contentLength` bytes. */
async function send(
  method: string,
  url: URL,
  init: { headers?: Record<string, string | number>; body?: Buffer | AsyncIterable<Buffer> } = {},
): Promise<Response> {
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest(url, { method, agent, headers: init.headers }, resolve)
    req.once('error', reject)
    if (init.body === undefined) req.end()
    else if (Buffer.isBuffer(init.body)) req.end(init.body)
    else pipeline(Readable.from(init.body, { objectMode: false }), req).catch(reject)
  })
  return { status: response.statusCode ?? 0, headers: response.headers, body: await readAll(response) }
}

function expectStatus(response: Response, expected: number, what: string): void {
  if (response.status !== expected) {
    const text = response.body.toString('utf8').slice(0, 500)
    throw new Error(`${what}: expected HTTP ${expected}, got ${response.status}: ${text}`)
  }
}

function locationOf(response: Response, base: URL, what: string): URL {
  const location = response.headers.location
  if (!location) throw new Error(`${what}: no Location header`)
  return new URL(location, base)
}

async function startUpload(base: URL, repository: string): Promise<URL> {
  const response = await send('POST', new URL(`/v2/${repository}/blobs/uploads/`, base), {
    headers: { 'content-length': 0 },
  })
  expectStatus(response, 202, 'POST upload')
  return locationOf(response, base, 'POST upload')
}

async function finishUpload(
  location: URL,
  digest: string,
  body?: { data: AsyncIterable<Buffer> | Buffer; length: number },
): Promise<void> {
  const url = new URL(location)
  url.searchParams.set('digest', digest)
  const response = await send('PUT', url, {
    headers: {
      'content-length': body?.length ?? 0,
      ...(body ? { 'content-type': 'application/octet-stream' } : {}),
    },
    ...(body ? { body: body.data } : {}),
  })
  expectStatus(response, 201, 'PUT upload')
}

/**
 * Pushes `blob` as one monolithic upload: POST to open a session, then one PUT with
 * the whole body and the digest.
 * @throws when the server answers with an unexpected status
 */
export async function pushBlobMonolithic(base: URL, repository: string, blob: BlobVariant): Promise<void> {
  const location = await startUpload(base, repository)
  await finishUpload(location, blob.digest, { data: blob.read(0, blob.size), length: blob.size })
}

/**
 * Pushes `blob` as a chunked upload: POST, one PATCH per `chunkBytes` with
 * Content-Range, then an empty PUT with the digest.
 * @throws when the server answers with an unexpected status
 */
export async function pushBlobChunked(
  base: URL,
  repository: string,
  blob: BlobVariant,
  chunkBytes: number,
): Promise<void> {
  let location = await startUpload(base, repository)
  for (let start = 0; start < blob.size; start += chunkBytes) {
    const end = Math.min(blob.size, start + chunkBytes)
    const response = await send('PATCH', location, {
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': end - start,
        'content-range': `${start}-${end - 1}`,
      },
      body: blob.read(start, end),
    })
    expectStatus(response, 202, 'PATCH upload')
    location = locationOf(response, base, 'PATCH upload')
  }
  await finishUpload(location, blob.digest)
}

/**
 * Pushes a small blob held in memory (configs, small layers) with a monolithic upload.
 * Returns its digest.
 */
export async function pushSmallBlob(base: URL, repository: string, data: Buffer): Promise<string> {
  const digest = 'sha256:' + createHash('sha256').update(data).digest('hex')
  const location = await startUpload(base, repository)
  await finishUpload(location, digest, { data, length: data.length })
  return digest
}

/**
 * GETs a blob and counts its bytes; with `verify`, also checks the digest.
 * Returns the number of bytes received.
 * @throws when the status is not 200, the size is wrong, or verification fails
 */
export async function pullBlob(
  base: URL,
  repository: string,
  digest: string,
  options: { expectedSize: number; verify?: boolean },
): Promise<number> {
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest(new URL(`/v2/${repository}/blobs/${digest}`, base), { agent }, resolve)
    req.once('error', reject)
    req.end()
  })
  if (response.statusCode !== 200) {
    const text = (await readAll(response)).toString('utf8').slice(0, 500)
    throw new Error(`GET blob: expected HTTP 200, got ${response.statusCode}: ${text}`)
  }
  const hash = options.verify ? createHash('sha256') : undefined
  let bytes = 0
  for await (const chunk of response) {
    bytes += (chunk as Buffer).length
    hash?.update(chunk as Buffer)
  }
  if (bytes !== options.expectedSize) {
    throw new Error(`GET blob: got ${bytes} bytes, expected ${options.expectedSize}`)
  }
  if (hash) {
    const actual = 'sha256:' + hash.digest('hex')
    if (actual !== digest) throw new Error(`GET blob: digest ${actual} does not match ${digest}`)
  }
  return bytes
}

/** The most bytes a response head may take before the socket client gives up. */
const MAX_HEAD_BYTES = 64 * 1024

/** What pullBlobSocket reads into, one per pull, reused for every read of that pull. */
const SOCKET_READ_BYTES = 1024 * 1024

/**
 * GETs a blob over a bare TCP socket and counts its bytes: the request is written by
 * hand and only the response head is parsed, and the socket reads into one 1 MiB
 * buffer of its own (`onread`), so a read takes whatever the kernel holds, up to 1 MiB,
 * and costs one callback and an addition: no Buffer per 64 KiB chunk, no HTTP parser
 * over the body, no promise per chunk as with `for await` over node:http. Where
 * node:http's client sets the pace of a loopback pull, this one leaves it to the
 * server. Plain HTTP/1.1 with Content-Length only (both servers answer a blob GET so);
 * anything else is an error. Returns the number of body bytes received.
 * @throws when the status is not 200, the length is missing or wrong, or the connection fails
 */
export function pullBlobSocket(
  base: URL,
  repository: string,
  digest: string,
  options: { expectedSize: number },
): Promise<number> {
  const path = `/v2/${repository}/blobs/${digest}`
  return new Promise<number>((resolve, reject) => {
    const socket = connect({
      host: base.hostname,
      port: Number(base.port),
      onread: {
        buffer: Buffer.allocUnsafe(SOCKET_READ_BYTES),
        callback: (n, buf) => {
          onBytes(n, buf)
          return true
        },
      },
    })
    let head: Buffer | undefined = Buffer.alloc(0)
    let length = -1
    let received = 0
    let done = false
    const fail = (err: Error): void => {
      if (done) return
      done = true
      socket.destroy()
      reject(err)
    }
    const body = (n: number): void => {
      received += n
      if (received > length) fail(new Error(`GET blob: more than the ${length} bytes announced`))
      else if (received === length) {
        done = true
        socket.destroy()
        if (length !== options.expectedSize) {
          reject(new Error(`GET blob: got ${length} bytes, expected ${options.expectedSize}`))
        } else resolve(received)
      }
    }
    socket.once('connect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${base.host}\r\nConnection: close\r\n\r\n`)
    })
    // The buffer is read into again after the callback: the head is copied out of it.
    const onBytes = (n: number, buf: Uint8Array): void => {
      if (done) return
      if (head === undefined) {
        body(n)
        return
      }
      head = Buffer.concat([head, buf.subarray(0, n)])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) fail(new Error('GET blob: response head too long'))
        return
      }
      const lines = head.subarray(0, end).toString('latin1').split('\r\n')
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1]
      const header = (name: string): string | undefined =>
        lines
          .slice(1)
          .find((l) => l.toLowerCase().startsWith(`${name}:`))
          ?.slice(name.length + 1)
          .trim()
      if (status !== '200') {
        fail(new Error(`GET blob: expected HTTP 200, got ${lines[0]}`))
        return
      }
      if (header('transfer-encoding') !== undefined) {
        fail(new Error('GET blob: a transfer-encoded body (only Content-Length is read)'))
        return
      }
      length = Number(header('content-length') ?? Number.NaN)
      if (!Number.isSafeInteger(length) || length < 0) {
        fail(new Error('GET blob: no Content-Length'))
        return
      }
      const rest = head.length - (end + 4)
      head = undefined
      if (length === 0) body(0)
      if (rest > 0) body(rest)
    }
    socket.once('error', fail)
    socket.once('close', () => {
      fail(new Error(`GET blob: connection closed after ${received} of ${length} bytes`))
    })
  })
}

/**
 * PUTs a manifest under `reference` (a tag or its digest). Returns the digest the
 * server reports in Docker-Content-Digest.
 * @throws when the server does not answer 201
 */
export async function putManifest(
  base: URL,
  repository: string,
  reference: string,
  mediaType: string,
  body: Buffer,
): Promise<string> {
  const response = await send('PUT', new URL(`/v2/${repository}/manifests/${reference}`, base), {
    headers: { 'content-type': mediaType, 'content-length': body.length },
    body,
  })
  expectStatus(response, 201, 'PUT manifest')
  const digest = response.headers['docker-content-digest']
  return typeof digest === 'string' ? digest : ''
}

/**
 * GETs a manifest and returns its body.
 * @throws when the server does not answer 200
 */
export async function getManifest(base: URL, repository: string, reference: string): Promise<Buffer> {
  const response = await send('GET', new URL(`/v2/${repository}/manifests/${reference}`, base), {
    headers: { accept: MANIFEST_ACCEPT },
  })
  expectStatus(response, 200, 'GET manifest')
  return response.body
}

/** Closes the idle keep-alive sockets so the process can exit. */
export function closeClient(): void {
  agent.destroy()
}
