/**
 * Garbage against running CLI processes (a seed registry, a tracker and an agent with
 * the swarm on, all on loopback): random and malformed frames on every shoal libp2p
 * protocol (dialled with a libp2p node of our own) and raw bytes on the libp2p TCP
 * ports before any noise handshake; malformed JSON, huge headers, invalid ranges, bad
 * digests, path traversal, truncated bodies and half-sent (slowloris-style) requests on
 * every HTTP endpoint family. Every answer must be a clear 4xx (an OCI error body on
 * /v2 and /shoal/v1, the tracker's JSON error on /v1), and afterwards every process is
 * still running and serving: a normal pull through the agent (whose pieces come from
 * the seed over libp2p) still works. Every loop is bounded.
 */
import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { digestOf } from '../../protocol/src/index.js'
import { decodeMessage, encodeMessage, type Message } from '../../protocol/src/messages/index.js'
import { createP2PNode, type P2PNode } from '../../protocol/src/p2p/index.js'
import {
  HAVE_PROTOCOL,
  HAVE_WATCH_PROTOCOL,
  PIECE_MAP_PROTOCOL,
  PIECES_PROTOCOL,
} from '../../protocol/src/protocols.js'
import { buildTestImage, getBlob, getManifest, pushImage, type TestImage } from '../helpers/images.js'
import { createCleanup, createTempDir, removeTempDir, requireBinaries } from '../helpers/processes.js'
import { type ShoalService, startShoalRegistry, startShoalService } from '../helpers/shoal.js'
import { sampleSum } from '../helpers/metrics.js'

const REPOSITORY = 'garbage/busybox'
const MISSING_DIGEST = `sha256:${'0'.repeat(64)}`

/** What came back on a raw socket. */
interface RawAnswer {
  /** The HTTP status of the first response line, if any arrived. */
  status: number | undefined
  text: string
}

/**
 * Writes `chunks` to 127.0.0.1:`port` (in order, `gapMs` apart), optionally half-closes,
 * and collects what comes back until the server closes or `timeoutMs` passes.
 */
function raw(
  port: number,
  chunks: Array<string | Buffer>,
  options: { end?: boolean; gapMs?: number; timeoutMs?: number; destroyAfterWrite?: boolean } = {},
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    const received: Buffer[] = []
    let done = false
    const finish = (): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      const text = Buffer.concat(received).toString('latin1')
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      resolve({ status: match ? Number(match[1]) : undefined, text })
    }
    const timer = setTimeout(finish, options.timeoutMs ?? 5_000)
    socket.on('data', (chunk: Buffer) => received.push(chunk))
    socket.on('close', finish)
    socket.on('error', finish)
    socket.on('connect', async () => {
      for (const chunk of chunks) {
        if (socket.destroyed) break
        socket.write(chunk)
        if (options.gapMs) await new Promise((r) => setTimeout(r, options.gapMs))
      }
      if (options.destroyAfterWrite) finish()
      else if (options.end) socket.end()
    })
  })
}

/** A raw HTTP/1.1 request with `Connection: close`. */
function request(method: string, path: string, headers: Record<string, string> = {}, body = ''): string {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close']
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`)
  if (body !== '' && headers['Content-Length'] === undefined)
    lines.push(`Content-Length: ${Buffer.byteLength(body)}`)
  return `${lines.join('\r\n')}\r\n\r\n${body}`
}

/** Checks an OCI error answer: its status and the code of its first error. */
async function expectOciError(response: Response, status: number | number[], code?: string): Promise<void> {
  const text = await response.text()
  expect([status].flat(), `${response.url}: ${response.status} ${text.slice(0, 300)}`).toContain(
    response.status,
  )
  const body = JSON.parse(text) as { errors: Array<{ code: string; message: string }> }
  expect(Array.isArray(body.errors) && body.errors.length > 0, text).toBe(true)
  if (code !== undefined) expect(body.errors[0]?.code, text).toBe(code)
}

/** Checks a tracker error answer: its status and a `{ error: { code, message } }` body. */
async function expectTrackerError(response: Response, status: number): Promise<void> {
  const text = await response.text()
  expect(response.status, `${response.url}: ${text.slice(0, 300)}`).toBe(status)
  const body = JSON.parse(text) as { error: { code: string; message: string } }
  expect(typeof body.error.code, text).toBe('string')
  expect(typeof body.error.message, text).toBe('string')
}

/** Splits the frames of a piece-protocol answer and decodes them (trailing bytes are ignored). */
function decodeFrames(bytes: Buffer): Message[] {
  const messages: Message[] = []
  let offset = 0
  while (offset + 4 <= bytes.length) {
    const length = bytes.readUInt32BE(offset)
    if (offset + 4 + length > bytes.length) break
    messages.push(decodeMessage(bytes.subarray(offset + 4, offset + 4 + length)))
    offset += 4 + length
  }
  return messages
}

describe('garbage on every libp2p protocol and HTTP endpoint', () => {
  const cleanup = createCleanup()
  let work: string
  let registry: ShoalService
  let tracker: ShoalService
  let agent: ShoalService
  let image: TestImage
  let seedAddr: string
  let agentAddr: string
  let client: P2PNode

  beforeAll(async () => {
    requireBinaries(['skopeo', 'umoci', 'busybox'])
    work = await createTempDir('shoal-e2e-garbage-')
    cleanup.add(() => removeTempDir(work), 'remove temp dir')
    image = await buildTestImage({ dir: join(work, 'image'), randomLayerBytes: 2 * 1024 * 1024 })
    await mkdir(join(work, 'tracker'), { recursive: true })
    tracker = await startShoalService({
      args: ['tracker', '--listen', '127.0.0.1:0', '--data-dir', join(work, 'tracker')],
      service: 'tracker',
      name: 'shoal-tracker',
      logDir: work,
    })
    cleanup.add(() => tracker.stop(), 'stop tracker')
    registry = await startShoalRegistry({
      dataDir: join(work, 'registry-data'),
      logDir: work,
      extraArgs: ['--gc-interval-ms', '0', '--seed-tracker-url', tracker.url],
    })
    cleanup.add(() => registry.stop(), 'stop registry')
    await pushImage(image, { host: registry.host, repository: REPOSITORY })
    await mkdir(join(work, 'agent-data'), { recursive: true })
    agent = await startShoalService({
      args: [
        'agent',
        '--listen',
        '127.0.0.1:0',
        '--data',
        join(work, 'agent-data'),
        '--registry',
        registry.url,
        '--tracker',
        tracker.url,
      ],
      service: 'agent',
      name: 'shoal-agent',
      logDir: work,
      startTimeoutMs: 120_000,
    })
    cleanup.add(() => agent.stop(), 'stop agent')
    const seed = (await (await fetch(`${registry.url}/shoal/v1/seed`)).json()) as { multiaddrs: string[] }
    seedAddr = seed.multiaddrs.find((a) => a.startsWith('/ip4/127.0.0.1/')) ?? (seed.multiaddrs[0] as string)
    agentAddr = await agent.process.waitForLine((line) => {
      if (!line.includes('"swarm started"')) return undefined
      const record = JSON.parse(line) as { multiaddrs: string[] }
      return record.multiaddrs.find((a) => a.startsWith('/ip4/127.0.0.1/'))
    })
    client = await createP2PNode({})
    await client.start()
    cleanup.add(() => client.stop(), 'stop libp2p client')
  })

  afterAll(async () => {
    await cleanup.run()
  })

  /** Opens `protocol` on `target`, sends `chunks`, half-closes and returns every byte answered. */
  async function exchange(target: string, protocol: string, chunks: Uint8Array[]): Promise<Buffer> {
    const signal = AbortSignal.timeout(15_000)
    const stream = await client.libp2p.dialProtocol(multiaddr(target), protocol, { signal })
    for (const chunk of chunks) stream.send(chunk)
    await stream.close({ signal }).catch(() => undefined)
    const received: Buffer[] = []
    try {
      for await (const chunk of stream) received.push(Buffer.from(chunk.subarray()))
    } catch {
      // A reset after the error frame is fine; what arrived is checked.
    }
    return Buffer.concat(received)
  }

  function frame(body: Uint8Array | number[]): Uint8Array {
    const b = Buffer.from(body)
    const out = Buffer.alloc(4 + b.length)
    out.writeUInt32BE(b.length, 0)
    b.copy(out, 4)
    return out
  }

  it('answers malformed frames on every shoal libp2p protocol with a bad-request error and stays up', async () => {
    const layer = image.layers[image.layers.length - 1]!
    const digestBytes = [1, ...Buffer.from(layer.digest.slice('sha256:'.length), 'hex')]
    const malformed: Array<{ name: string; chunks: Uint8Array[] }> = [
      { name: 'random bytes', chunks: [randomBytes(1024)] },
      { name: 'a frame longer than allowed', chunks: [Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])] },
      { name: 'a truncated frame', chunks: [Buffer.from([0, 0, 0, 40, 1, 1, 2])] },
      { name: 'a truncated frame header', chunks: [Buffer.from([0, 0])] },
      { name: 'an empty frame', chunks: [frame([])] },
      { name: 'an unknown message type', chunks: [frame([99, 1, 2, 3])] },
      { name: 'an unknown digest algorithm', chunks: [frame([2, 7, ...randomBytes(32)])] },
      { name: 'a short digest', chunks: [frame([2, 1, ...randomBytes(10)])] },
      { name: 'trailing bytes', chunks: [frame([2, ...digestBytes, 0, 0, 0])] },
      { name: 'a piece request with no indexes', chunks: [frame([1, ...digestBytes, 0, 0])] },
      {
        name: 'a piece request with too many indexes',
        chunks: [frame([1, ...digestBytes, 0xff, 0xff, ...Buffer.alloc(8)])],
      },
      {
        name: 'a reply sent as a request',
        chunks: [encodeMessage({ type: 'have-reply', status: 'not-found' })],
      },
    ]
    for (const target of [seedAddr, agentAddr]) {
      for (const protocol of [PIECES_PROTOCOL, HAVE_PROTOCOL, HAVE_WATCH_PROTOCOL, PIECE_MAP_PROTOCOL]) {
        for (const { name, chunks } of malformed) {
          const what = `${name} on ${protocol} to ${target === seedAddr ? 'the seed' : 'the agent'}`
          if (protocol === PIECES_PROTOCOL && name === 'trailing bytes') continue
          const answer = await exchange(target, protocol, chunks)
          const messages = decodeFrames(answer)
          expect(messages.length, what).toBeGreaterThan(0)
          const last = messages[messages.length - 1]!
          expect(last.type, what).toBe('error')
          if (last.type === 'error') expect(last.code, `${what}: ${last.message}`).toBe('bad-request')
        }
        // A well-formed request for a blob nobody has is a clear not-found, not an error.
        const missing = [1, ...Buffer.alloc(32)]
        const answer = decodeFrames(
          await exchange(target, protocol, [
            protocol === PIECES_PROTOCOL
              ? frame([1, ...missing, 0, 1, 0, 0, 0, 0])
              : frame([protocol === PIECE_MAP_PROTOCOL ? 6 : 2, ...missing]),
          ]),
        )
        expect(answer.length, `missing blob on ${protocol}`).toBeGreaterThan(0)
        const first = answer[0]!
        if (first.type === 'piece-header') expect(first.status).toBe('not-found')
        else if (first.type === 'have-reply' || first.type === 'piece-map-reply')
          expect(first.status).toBe('not-found')
        else expect.fail(`unexpected ${first.type} for a missing blob on ${protocol}`)
      }
    }
    // Raw bytes on the libp2p TCP ports, with no noise handshake: refused, nothing crashes.
    for (const target of [seedAddr, agentAddr]) {
      const port = Number(multiaddr(target).toString().split('/tcp/')[1]?.split('/')[0])
      await raw(port, [randomBytes(4096)], { end: true })
      await raw(port, ['/multistream/1.0.0\n', randomBytes(512)], { end: true })
      await raw(
        port,
        [Buffer.from([0x13]), '/multistream/1.0.0\n', Buffer.from([0x07]), '/noise\n', randomBytes(300)],
        {
          end: true,
        },
      )
      await raw(port, [], { destroyAfterWrite: true })
      await raw(port, [Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])], { end: true })
    }
    for (const service of [registry, tracker, agent]) {
      expect(service.process.exitStatus(), service.process.name).toBeUndefined()
    }
    // The seed and the agent still take a new connection and answer a proper request.
    for (const target of [seedAddr, agentAddr]) {
      await client.libp2p.hangUp(multiaddr(target))
      const missing = decodeFrames(
        await exchange(target, HAVE_PROTOCOL, [frame([2, 1, ...Buffer.alloc(32)])]),
      )
      expect(missing[0]?.type === 'have-reply' && missing[0].status, target).toBe('not-found')
    }
    const have = decodeFrames(await exchange(seedAddr, HAVE_PROTOCOL, [frame([2, ...digestBytes])]))
    expect(have[0]?.type === 'have-reply' && have[0].status).toBe('ok')
  })

  it('answers garbage on the registry /v2 and /shoal/v1 with OCI errors and stays up', async () => {
    const base = registry.url
    const layer = image.layers[0]!
    // Malformed JSON and a schema-less manifest.
    await expectOciError(
      await fetch(`${base}/v2/${REPOSITORY}/manifests/bad`, {
        method: 'PUT',
        headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
        body: '{"schemaVersion": 2, "layers": [',
      }),
      400,
      'MANIFEST_INVALID',
    )
    await expectOciError(
      await fetch(`${base}/v2/${REPOSITORY}/manifests/bad`, {
        method: 'PUT',
        headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
        body: JSON.stringify({ schemaVersion: 2, layers: 'nope' }),
      }),
      400,
    )
    // Bad digests.
    await expectOciError(await fetch(`${base}/v2/${REPOSITORY}/blobs/sha256:xyz`), 400, 'DIGEST_INVALID')
    await expectOciError(await fetch(`${base}/v2/${REPOSITORY}/blobs/md5:abcd`), 400)
    await expectOciError(await fetch(`${base}/v2/${REPOSITORY}/blobs/${MISSING_DIGEST}`), 404, 'BLOB_UNKNOWN')
    const upload = await fetch(`${base}/v2/${REPOSITORY}/blobs/uploads/`, { method: 'POST' })
    expect(upload.status).toBe(202)
    const location = new URL(upload.headers.get('location') as string, base)
    location.searchParams.set('digest', MISSING_DIGEST)
    await expectOciError(
      await fetch(location, { method: 'PUT', body: 'not these bytes' }),
      400,
      'DIGEST_INVALID',
    )
    // Invalid ranges.
    await expectOciError(
      await fetch(`${base}/v2/${REPOSITORY}/blobs/${layer.digest}`, {
        headers: { range: `bytes=${layer.size + 10}-` },
      }),
      416,
    )
    const reversed = await fetch(`${base}/v2/${REPOSITORY}/blobs/${layer.digest}`, {
      headers: { range: 'bytes=50-10' },
    })
    expect([200, 416]).toContain(reversed.status)
    await reversed.arrayBuffer()
    // Path traversal, raw (fetch would normalise the path).
    for (const path of [
      '/v2/../../../../etc/passwd',
      `/v2/${REPOSITORY}/../../../etc/passwd/blobs/${layer.digest}`,
      '/v2/%2e%2e/%2e%2e/etc/manifests/passwd',
      `/v2/${REPOSITORY}/manifests/..%2f..%2f..%2fetc%2fpasswd`,
      '/shoal/v1/piece-maps/..%2f..%2f..%2fetc%2fpasswd',
      '/shoal/v1/../../etc/passwd',
    ]) {
      const answer = await raw(registry.port, [request('GET', path)])
      expect(answer.status, `${path}: ${answer.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400)
      expect(answer.status, path).toBeLessThan(500)
      expect(answer.text).not.toContain('root:')
    }
    // The seed's endpoints.
    await expectOciError(await fetch(`${base}/shoal/v1/piece-maps/not-a-digest`), 400, 'DIGEST_INVALID')
    await expectOciError(await fetch(`${base}/shoal/v1/piece-maps/${MISSING_DIGEST}`), 404, 'BLOB_UNKNOWN')
    await expectOciError(await fetch(`${base}/shoal/v1/piece-maps/${layer.digest}?format=xml`), 400)
    await expectOciError(await fetch(`${base}/shoal/v1/nothing-here`), 404)
    await expectOciError(await fetch(`${base}/shoal/v1/seed`, { method: 'POST', body: '{' }), 405)
    // Truncated bodies: a PATCH and a manifest PUT that promise more than they send.
    const second = await fetch(`${base}/v2/${REPOSITORY}/blobs/uploads/`, { method: 'POST' })
    const patchPath = new URL(second.headers.get('location') as string, base)
    await raw(
      registry.port,
      [
        request(
          'PATCH',
          `${patchPath.pathname}${patchPath.search}`,
          { 'Content-Length': '100000', 'Content-Type': 'application/octet-stream' },
          'only a few bytes',
        ),
      ],
      { destroyAfterWrite: true, gapMs: 50 },
    )
    await raw(
      registry.port,
      [
        request(
          'PUT',
          `/v2/${REPOSITORY}/manifests/truncated`,
          { 'Content-Length': '5000', 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
          '{"schemaVersion": 2,',
        ),
      ],
      { destroyAfterWrite: true, gapMs: 50 },
    )
    const truncatedTag = await fetch(`${base}/v2/${REPOSITORY}/manifests/truncated`)
    await expectOciError(truncatedTag, 404, 'MANIFEST_UNKNOWN')
    // The registry still serves the image.
    const manifest = await getManifest(base, REPOSITORY, image.tag)
    expect(digestOf(manifest.bytes)).toBe(image.manifestDigest)
    expect(registry.process.exitStatus()).toBeUndefined()
  })

  it('answers garbage on the tracker /v1 with JSON errors and stays up', async () => {
    const base = tracker.url
    const post = (path: string, body: string, headers: Record<string, string> = {}) =>
      fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
      })
    await expectTrackerError(await post('/v1/announce', '{"peerId": '), 400)
    await expectTrackerError(await post('/v1/announce', ''), 400)
    await expectTrackerError(await post('/v1/announce', '{}'), 400)
    await expectTrackerError(await post('/v1/announce', '[1,2,3]'), 400)
    await expectTrackerError(
      await post('/v1/announce', JSON.stringify({ peerId: 'x', digest: 'sha256:nope', multiaddrs: 5 })),
      400,
    )
    await expectTrackerError(await post('/v1/report', '\u0000\u0001garbage'), 400)
    await expectTrackerError(await post('/v1/announce', `{"pad":"${'a'.repeat(200 * 1024)}"}`), 413)
    await expectTrackerError(await fetch(`${base}/v1/swarms/not-a-digest`), 400)
    await expectTrackerError(await fetch(`${base}/v1/swarms/%E0%A4%A`), 400)
    await expectTrackerError(await fetch(`${base}/v1/nothing`), 404)
    await expectTrackerError(await fetch(`${base}/v1/announce`, { method: 'DELETE' }), 405)
    for (const path of ['/v1/../../etc/passwd', '/v1/swarms/..%2f..%2fetc%2fpasswd']) {
      const answer = await raw(tracker.port, [request('GET', path)])
      expect(answer.status, `${path}: ${answer.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400)
      expect(answer.status, path).toBeLessThan(500)
    }
    // A truncated announce body.
    await raw(
      tracker.port,
      [
        request(
          'POST',
          '/v1/announce',
          { 'Content-Length': '1000', 'Content-Type': 'application/json' },
          '{"peer',
        ),
      ],
      { destroyAfterWrite: true, gapMs: 50 },
    )
    const swarms = await fetch(`${base}/v1/swarms`)
    expect(swarms.status).toBe(200)
    await swarms.json()
    expect(tracker.process.exitStatus()).toBeUndefined()
  })

  it('answers garbage on the agent mirror /v2 with OCI errors and stays up', async () => {
    const base = agent.url
    const layer = image.layers[0]!
    await expectOciError(await fetch(`${base}/v2/${REPOSITORY}/blobs/sha256:xyz`), 400, 'DIGEST_INVALID')
    await expectOciError(await fetch(`${base}/v2/${REPOSITORY}/blobs/${MISSING_DIGEST}`), 404, 'BLOB_UNKNOWN')
    await expectOciError(await fetch(`${base}/v2/${REPOSITORY}/manifests/no-such-tag`), 404)
    await expectOciError(await fetch(`${base}/v2/${REPOSITORY}/manifests/sha256:short`), 400)
    await expectOciError(
      await fetch(`${base}/v2/${REPOSITORY}/manifests/bad`, { method: 'PUT', body: '{' }),
      [404, 405],
      'UNSUPPORTED',
    )
    await expectOciError(
      await fetch(`${base}/v2/${REPOSITORY}/blobs/uploads/`, { method: 'POST' }),
      [404, 405],
      'UNSUPPORTED',
    )
    await expectOciError(await fetch(`${base}/v2/${REPOSITORY}/blobs/${layer.digest}?ns=%ZZ`), 400)
    // Fetch the blob once so the agent holds it, then ask for impossible ranges.
    expect(digestOf(await getBlob(base, REPOSITORY, layer.digest))).toBe(layer.digest)
    await expectOciError(
      await fetch(`${base}/v2/${REPOSITORY}/blobs/${layer.digest}`, {
        headers: { range: `bytes=${layer.size + 10}-` },
      }),
      416,
    )
    for (const path of [
      '/v2/../../../../etc/passwd',
      `/v2/${REPOSITORY}/../../../etc/passwd/blobs/${layer.digest}`,
      `/v2/${REPOSITORY}/manifests/..%2f..%2f..%2fetc%2fpasswd`,
      '/v2/%2e%2e/%2e%2e/etc/manifests/passwd',
    ]) {
      const answer = await raw(agent.port, [request('GET', path)])
      expect(answer.status, `${path}: ${answer.text.slice(0, 300)}`).toBeGreaterThanOrEqual(400)
      expect(answer.status, path).toBeLessThan(500)
      expect(answer.text).not.toContain('root:')
    }
    expect(agent.process.exitStatus()).toBeUndefined()
  })

  it('survives huge headers, non-HTTP bytes and half-sent requests on every service, /metrics and /healthz included', async () => {
    for (const service of [registry, tracker, agent]) {
      const name = service.process.name
      for (const path of ['/metrics', '/healthz', '/v2/', '/v1/swarms']) {
        const huge = await raw(service.port, [request('GET', path, { 'X-Huge': 'a'.repeat(64 * 1024) })])
        expect(huge.status, `${name} ${path} huge header`).toBe(431)
      }
      const manyHeaders: Record<string, string> = {}
      for (let i = 0; i < 3000; i++) manyHeaders[`X-H${i}`] = 'v'
      const many = await raw(service.port, [request('GET', '/healthz', manyHeaders)])
      expect(many.status, `${name} many headers`).toBeGreaterThanOrEqual(400)
      expect(many.status, `${name} many headers`).toBeLessThan(500)
      const noise = await raw(service.port, [randomBytes(2048)], { end: true })
      expect(noise.status, `${name} random bytes`).toBe(400)
      const badVersion = await raw(service.port, ['GET /healthz HTTP/9.9\r\n\r\n'], { end: true })
      expect(badVersion.status ?? 400, `${name} bad version`).toBeGreaterThanOrEqual(400)
      for (const method of ['POST', 'PUT', 'DELETE']) {
        for (const path of ['/metrics', '/healthz']) {
          const response = await fetch(`${service.url}${path}`, {
            method,
            body: method === 'DELETE' ? undefined : '{',
          })
          await response.arrayBuffer()
          expect(response.status, `${name} ${method} ${path}`).toBeGreaterThanOrEqual(400)
          expect(response.status, `${name} ${method} ${path}`).toBeLessThan(500)
        }
      }
      const odd = await fetch(`${service.url}/metrics?x=%ZZ&x[]=1`)
      expect(odd.status).toBe(200)
      await odd.arrayBuffer()

      // Slowloris: twenty connections that send half a request slowly; the service keeps
      // answering others meanwhile; then they give up and close.
      const slow = Array.from({ length: 20 }, () =>
        raw(
          service.port,
          ['GET /v2/ HTTP/1.1\r\n', 'Host: 127.0.0.1\r\n', 'X-Slow: 1\r\n', 'X-Slower: 2\r\n'],
          {
            gapMs: 200,
            destroyAfterWrite: true,
          },
        ),
      )
      const during = await fetch(`${service.url}/healthz`)
      expect(during.status, `${name} healthz during slowloris`).toBe(200)
      await during.arrayBuffer()
      for (const answer of await Promise.all(slow)) expect(answer.status).toBeUndefined()
      const after = await fetch(`${service.url}/metrics`)
      expect(after.status, `${name} metrics afterwards`).toBe(200)
      await after.text()
      expect(service.process.exitStatus(), name).toBeUndefined()
    }
  })

  it('still pulls normally through the agent, its pieces from the seed over libp2p', async () => {
    const manifest = await getManifest(agent.url, REPOSITORY, image.tag)
    expect(digestOf(manifest.bytes)).toBe(image.manifestDigest)
    for (const blob of [image.config, ...image.layers]) {
      expect(digestOf(await getBlob(agent.url, REPOSITORY, blob.digest))).toBe(blob.digest)
    }
    const metrics = await (await fetch(`${agent.url}/metrics`)).text()
    expect(sampleSum(metrics, 'shoal_agent_swarm_pieces_total', { source: 'seed' })).toBeGreaterThan(0)
    for (const service of [registry, tracker, agent]) {
      const health = await fetch(`${service.url}/healthz`)
      expect(health.status).toBe(200)
      await health.arrayBuffer()
      expect(service.process.exitStatus(), service.process.name).toBeUndefined()
      // Garbage is the client's fault: nothing was logged as a server error (pino level 50+).
      const errors = service.process.lines().filter((line) => /"level":(5|6)\d/.test(line))
      expect(errors, service.process.name).toEqual([])
    }
  })
})
