/**
 * A small on-disk cache of manifests by digest. Manifests are content-addressed and
 * immutable, so an entry never goes stale; each is checked against its digest when
 * read, and one that fails is removed.
 *
 *   <root>/<algorithm>/<hex>        the manifest's exact bytes
 *   <root>/<algorithm>/<hex>.json   { "mediaType": "..." }
 *   <root>/tmp/                     writes in progress, renamed into place
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { assertDigest, type Digest, digestOf, parseDigest } from '../../../protocol/src/index.js'
import type { Manifest } from './sources.js'

/** The manifest cache. */
export interface ManifestCache {
  /** Creates the folders (and empties the temporary one). */
  start(): Promise<void>
  /** The cached manifest, or undefined when absent or damaged. */
  get(digest: Digest): Promise<Manifest | undefined>
  /** Stores a manifest whose body hashes to `digest`; throws DigestMismatchError otherwise. */
  put(manifest: Manifest): Promise<void>
}

/** Options of createManifestCache. */
export interface ManifestCacheInit {
  root: string
}

/** Creates a manifest cache rooted at `init.root`. */
export function createManifestCache(init: ManifestCacheInit): ManifestCache {
  const { root } = init
  const tmp = join(root, 'tmp')

  function paths(digest: Digest): { body: string; meta: string; dir: string } {
    const { algorithm, hex } = parseDigest(digest)
    const dir = join(root, algorithm)
    return { dir, body: join(dir, hex), meta: join(dir, `${hex}.json`) }
  }

  async function writeAtomically(path: string, data: Uint8Array | string): Promise<void> {
    const temp = join(tmp, `${Date.now()}-${Math.random().toString(36).slice(2)}`)
    await writeFile(temp, data)
    await rename(temp, path)
  }

  return {
    async start() {
      await rm(tmp, { recursive: true, force: true })
      await mkdir(tmp, { recursive: true })
    },

    async get(digest) {
      const p = paths(digest)
      let body: Buffer
      let mediaType: unknown
      try {
        body = await readFile(p.body)
        mediaType = (JSON.parse(await readFile(p.meta, 'utf8')) as { mediaType?: unknown }).mediaType
      } catch {
        return undefined
      }
      if (typeof mediaType !== 'string' || digestOf(body, parseDigest(digest).algorithm) !== digest) {
        await Promise.all([rm(p.body, { force: true }), rm(p.meta, { force: true })])
        return undefined
      }
      return { digest, mediaType, size: body.byteLength, body }
    },

    async put(manifest) {
      const { algorithm } = parseDigest(manifest.digest)
      assertDigest(manifest.digest, digestOf(manifest.body, algorithm))
      const p = paths(manifest.digest)
      await mkdir(p.dir, { recursive: true })
      // The media type first: a body without its metadata file reads as absent.
      await writeAtomically(p.meta, JSON.stringify({ mediaType: manifest.mediaType }))
      await writeAtomically(p.body, manifest.body)
    },
  }
}
