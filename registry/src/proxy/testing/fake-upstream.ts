/**
 * An in-memory fake of an upstream OCI registry, reached through an injected fetch:
 * enough of the pull API (manifests, blobs with ranges, tag lists) for unit tests of
 * the pull-through cache, with switches to fail, rate limit, corrupt or hold blobs.
 */
import { type Digest, digestOf, MEDIA_TYPES } from '../../../../protocol/src/index.js'

/** How the fake answers every request. */
export type FakeMode = 'ok' | 'down' | 429 | 503

/** The fake upstream. */
export interface FakeUpstream {
  fetch: typeof fetch
  /** Requests seen, as `METHOD /path`. */
  calls: string[]
  count(prefix: string): number
  mode: FakeMode
  /** Send wrong bytes for blobs. */
  corrupt: boolean
  /** When set, blob bodies send their first half and wait for this before the rest. */
  hold: Promise<void> | undefined
  addBlob(repository: string, data: Uint8Array): Digest
  addManifest(repository: string, body: Uint8Array, mediaType: string, tag?: string): Digest
  /** Pushes an image (config, one layer, manifest) under `tag`; returns its parts. */
  addImage(
    repository: string,
    tag: string,
    seed: string,
  ): { config: Uint8Array; layer: Uint8Array; manifest: Uint8Array; manifestDigest: Digest }
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  })
}

/** Creates a fake upstream. */
export function createFakeUpstream(): FakeUpstream {
  const blobs = new Map<string, Uint8Array>()
  const manifests = new Map<string, { body: Uint8Array; mediaType: string }>()
  const tags = new Map<string, string>()
  const calls: string[] = []

  const fake: FakeUpstream = {
    calls,
    count: (prefix) => calls.filter((c) => c.startsWith(prefix)).length,
    mode: 'ok',
    corrupt: false,
    hold: undefined,
    addBlob(repository, data) {
      const digest = digestOf(data)
      blobs.set(`${repository}@${digest}`, data)
      return digest
    },
    addManifest(repository, body, mediaType, tag) {
      const digest = digestOf(body)
      manifests.set(`${repository}@${digest}`, { body, mediaType })
      if (tag !== undefined) tags.set(`${repository}:${tag}`, digest)
      return digest
    },
    addImage(repository, tag, seed) {
      const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }))
      const layer = Buffer.alloc(64 * 1024, seed)
      fake.addBlob(repository, config)
      fake.addBlob(repository, layer)
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MEDIA_TYPES.ociManifest,
          config: { mediaType: MEDIA_TYPES.ociConfig, digest: digestOf(config), size: config.byteLength },
          layers: [{ mediaType: MEDIA_TYPES.ociLayerGzip, digest: digestOf(layer), size: layer.byteLength }],
        }),
      )
      const manifestDigest = fake.addManifest(repository, manifest, MEDIA_TYPES.ociManifest, tag)
      return { config, layer, manifest, manifestDigest }
    },
    fetch: async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input))
      const method = init?.method ?? 'GET'
      calls.push(`${method} ${url.pathname}`)
      if (fake.mode === 'down') {
        throw new TypeError('fetch failed', {
          cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
        })
      }
      if (fake.mode !== 'ok')
        return json(fake.mode, { errors: [{ code: 'UNAVAILABLE', message: 'try later' }] })
      if (url.pathname === '/v2/') return json(200, {})
      const tagList = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname)
      if (tagList) {
        const repo = tagList[1] as string
        const list = [...tags.keys()]
          .filter((k) => k.startsWith(`${repo}:`))
          .map((k) => k.slice(repo.length + 1))
        if (list.length === 0) return json(404, { errors: [{ code: 'NAME_UNKNOWN' }] })
        return json(200, { name: repo, tags: list.sort() })
      }
      const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname)
      if (!m) return json(404, { errors: [{ code: 'NOT_FOUND' }] })
      const [, repo, kind, ref] = m as unknown as [string, string, string, string]
      if (kind === 'manifests') {
        const digest = ref.includes(':') ? ref : tags.get(`${repo}:${ref}`)
        const entry = digest === undefined ? undefined : manifests.get(`${repo}@${digest}`)
        if (digest === undefined || entry === undefined)
          return json(404, { errors: [{ code: 'MANIFEST_UNKNOWN' }] })
        const headers = {
          'content-type': entry.mediaType,
          'docker-content-digest': digest,
          'content-length': String(entry.body.byteLength),
        }
        return new Response(method === 'HEAD' ? null : entry.body, { status: 200, headers })
      }
      const data = blobs.get(`${repo}@${ref}`)
      if (data === undefined) return json(404, { errors: [{ code: 'BLOB_UNKNOWN' }] })
      const bytes = fake.corrupt ? Buffer.from(data).fill(0x7a) : data
      const range = init?.headers ? new Headers(init.headers).get('range') : null
      if (method === 'HEAD') {
        return new Response(null, { status: 200, headers: { 'content-length': String(bytes.byteLength) } })
      }
      if (range !== null) {
        const r = /^bytes=(\d+)-(\d*)$/.exec(range)
        const start = Number(r?.[1])
        const end = r?.[2] ? Number(r[2]) : bytes.byteLength - 1
        return new Response(bytes.subarray(start, end + 1), {
          status: 206,
          headers: {
            'content-range': `bytes ${start}-${end}/${bytes.byteLength}`,
            'content-length': String(end - start + 1),
          },
        })
      }
      const hold = fake.hold
      const half = Math.floor(bytes.byteLength / 2)
      const body = new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(bytes.slice(0, half))
          if (hold !== undefined) await hold
          controller.enqueue(bytes.slice(half))
          controller.close()
        },
      })
      return new Response(body, { status: 200, headers: { 'content-length': String(bytes.byteLength) } })
    },
  }
  return fake
}
