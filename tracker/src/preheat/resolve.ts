/**
 * Resolves a preheat job's image on its registry (protocol/src/registry-client, with the
 * job's credentials): the manifest by tag or digest, the index entries matching the
 * platforms (or all of them), and the set of blobs (configs and layers) to preheat.
 * Failures become a readable reason: a missing image, refused credentials, an
 * unreachable registry, or no index entry for the platforms asked for.
 */
import type { Digest } from '../../../protocol/src/index.js'
import {
  ManifestUnknownError,
  NameUnknownError,
  parseManifest,
  DeniedError,
  UnauthorizedError,
} from '../../../protocol/src/index.js'
import type { PreheatBlob } from '../../../protocol/src/preheat-api.js'
import { createRegistryClient } from '../../../protocol/src/registry-client/index.js'

/** What an image resolves to. */
export interface ResolvedImage {
  manifestDigest: Digest
  /** Manifests (index entries) taken. */
  manifests: Digest[]
  blobs: PreheatBlob[]
}

/** Where and how to resolve. */
export interface ResolveRequest {
  registryUrl: string
  repository: string
  reference: string
  /** `all` or `os/arch[/variant]` entries. */
  platforms: string[]
  username?: string
  password?: string
  token?: string
}

/** Thrown with a readable reason when an image cannot be resolved. */
export class ResolveError extends Error {
  override name = 'ResolveError'
}

function platformKey(p: { os?: string; architecture?: string; variant?: string } | undefined): string {
  if (p === undefined) return ''
  return [p.os, p.architecture, p.variant].filter((x) => x !== undefined && x !== '').join('/')
}

/** Resolves an image to its blobs; throws ResolveError with the reason. */
export async function resolveImage(
  request: ResolveRequest,
  options: { signal?: AbortSignal; fetch?: typeof fetch } = {},
): Promise<ResolvedImage> {
  const client = createRegistryClient({
    url: request.registryUrl,
    ...(request.username !== undefined ? { username: request.username } : {}),
    ...(request.password !== undefined ? { password: request.password } : {}),
    ...(request.token !== undefined ? { token: request.token } : {}),
    ...(options.fetch ? { fetch: options.fetch } : {}),
    userAgent: 'shoal-tracker-preheat',
  })
  const image = `${request.repository}:${request.reference}`
  const signal = options.signal
  async function get(reference: string) {
    try {
      return await client.getManifest(request.repository, reference, signal ? { signal } : {})
    } catch (err) {
      if (signal?.aborted) throw err
      if (err instanceof ManifestUnknownError || err instanceof NameUnknownError)
        throw new ResolveError(`image not found: ${image} on ${request.registryUrl}`)
      if (err instanceof UnauthorizedError || err instanceof DeniedError)
        throw new ResolveError(
          `registry ${request.registryUrl} refused the credentials for ${request.repository}: ${(err as Error).message}`,
        )
      throw new ResolveError(
        `could not fetch ${image} from ${request.registryUrl}: ${(err as Error).message}`,
      )
    }
  }
  const top = await get(request.reference)
  let parsed: ReturnType<typeof parseManifest>
  try {
    parsed = parseManifest(top.body, top.mediaType)
  } catch (err) {
    throw new ResolveError(`${image} is not a valid manifest: ${(err as Error).message}`)
  }
  const blobs = new Map<Digest, PreheatBlob>()
  const manifests: Digest[] = []
  const addImage = (m: ReturnType<typeof parseManifest>) => {
    for (const d of [...(m.config ? [m.config] : []), ...m.layers]) {
      if (!blobs.has(d.digest))
        blobs.set(d.digest, { digest: d.digest, size: d.size, mediaType: d.mediaType })
    }
  }
  if (!parsed.isIndex) {
    manifests.push(top.digest)
    addImage(parsed)
  } else {
    const all = request.platforms.length === 0 || request.platforms.includes('all')
    const wanted = new Set(request.platforms)
    const entries = parsed.manifests.filter((d) => {
      if (all) return true
      const key = platformKey(d.platform)
      // os/arch matches every variant; os/arch/variant only that one.
      const short = key.split('/').slice(0, 2).join('/')
      return wanted.has(key) || wanted.has(short)
    })
    if (entries.length === 0)
      throw new ResolveError(`${image} has no entry for platform ${request.platforms.join(', ')}`)
    for (const entry of entries) {
      const child = await get(entry.digest)
      let m: ReturnType<typeof parseManifest>
      try {
        m = parseManifest(child.body, child.mediaType)
      } catch (err) {
        throw new ResolveError(`${entry.digest} is not a valid manifest: ${(err as Error).message}`)
      }
      if (m.isIndex) continue
      manifests.push(entry.digest)
      addImage(m)
    }
  }
  return { manifestDigest: top.digest, manifests, blobs: [...blobs.values()] }
}
