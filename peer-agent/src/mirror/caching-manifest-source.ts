/**
 * Manifests for the mirror: tags are mutable, so a manifest by tag is resolved upstream
 * on every request; a manifest by digest is immutable, so it is served from the
 * on-disk manifest cache when held (checked against its digest) and cached after its
 * first fetch. Every manifest fetched by tag is cached under its digest too, which is
 * what containerd asks for next.
 */
import type { Logger } from 'pino'
import { type Digest, parseReference } from '../../../protocol/src/index.js'
import type { ManifestCache } from './manifest-cache.js'
import type { Manifest, ManifestSource } from './sources.js'

/** Collaborators of the caching manifest source. */
export interface CachingManifestSourceComponents {
  cache: ManifestCache
  /** Where manifests come from when not cached (the upstream registry). */
  upstream: ManifestSource
  logger?: Logger
}

/** Creates the caching manifest source. */
export function createCachingManifestSource(components: CachingManifestSourceComponents): ManifestSource {
  const { cache, upstream, logger } = components

  async function keep(manifest: Manifest): Promise<void> {
    try {
      await cache.put(manifest)
    } catch (err) {
      // A manifest that cannot be cached is still served; the next request asks upstream again.
      logger?.warn({ err, digest: manifest.digest }, 'could not cache manifest')
    }
  }

  async function byDigest(digest: Digest): Promise<Manifest | undefined> {
    return cache.get(digest)
  }

  return {
    async head(ref, options = {}) {
      const parsed = parseReference(ref.reference)
      if (parsed.kind === 'digest') {
        const cached = await byDigest(parsed.digest)
        if (cached !== undefined)
          return { digest: cached.digest, mediaType: cached.mediaType, size: cached.size }
      }
      return upstream.head(ref, options)
    },

    async get(ref, options = {}) {
      const parsed = parseReference(ref.reference)
      if (parsed.kind === 'digest') {
        const cached = await byDigest(parsed.digest)
        if (cached !== undefined) return cached
      }
      const manifest = await upstream.get(ref, options)
      await keep(manifest)
      return manifest
    },
  }
}
