import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import {
  errorCodes,
  pushBlob,
  pushImage,
  putManifest,
  startTestRegistry,
  type TestRegistry,
} from './testing.js'

describe('registry app: tags, catalog and referrers', () => {
  let reg: TestRegistry
  beforeEach(async () => {
    reg = await startTestRegistry()
  })
  afterEach(async () => {
    await reg.close()
  })

  /** Follows `Link: <...>; rel="next"` from `path` and returns every page's items. */
  async function walk(path: string, key: 'tags' | 'repositories'): Promise<string[][]> {
    const pages: string[][] = []
    let next: string | undefined = path
    while (next !== undefined) {
      const res = await fetch(`${reg.url}${next}`)
      expect(res.status).toBe(200)
      const body = (await res.json()) as Record<string, string[]>
      pages.push(body[key]!)
      const link = res.headers.get('link')
      if (link === null) break
      const match = /^<([^>]+)>; rel="next"$/.exec(link)
      expect(match, link).not.toBeNull()
      next = match![1]
      expect(pages.length).toBeLessThan(10)
    }
    return pages
  }

  it('lists tags with n/last pagination and Link headers', async () => {
    const image = await pushImage(reg.url, 'org/app')
    for (const tag of ['v3', 'v1', 'latest', 'v2', 'edge']) {
      expect((await putManifest(reg.url, 'org/app', tag, image.body)).status).toBe(201)
    }
    const all = await fetch(`${reg.url}/v2/org/app/tags/list`)
    expect(all.status).toBe(200)
    expect(all.headers.get('link')).toBeNull()
    expect(await all.json()).toEqual({ name: 'org/app', tags: ['edge', 'latest', 'v1', 'v2', 'v3'] })

    const first = await fetch(`${reg.url}/v2/org/app/tags/list?n=2`)
    expect(first.headers.get('link')).toBe('</v2/org/app/tags/list?n=2&last=latest>; rel="next"')
    expect(await walk('/v2/org/app/tags/list?n=2', 'tags')).toEqual([
      ['edge', 'latest'],
      ['v1', 'v2'],
      ['v3'],
    ])

    const after = await fetch(`${reg.url}/v2/org/app/tags/list?last=v1`)
    expect(((await after.json()) as { tags: string[] }).tags).toEqual(['v2', 'v3'])
    const exact = await fetch(`${reg.url}/v2/org/app/tags/list?n=5`)
    expect(exact.headers.get('link')).toBeNull()
  })

  it('answers 400 to an invalid n and 404 NAME_UNKNOWN for unknown repositories', async () => {
    const image = await pushImage(reg.url, 'app')
    await putManifest(reg.url, 'app', 'v1', image.body)
    for (const n of ['abc', '-1', '1.5', '', '99999999999']) {
      const res = await fetch(`${reg.url}/v2/app/tags/list?n=${n}`)
      expect(res.status, n).toBe(400)
      expect(await errorCodes(res), n).toEqual(['UNSUPPORTED'])
      const cat = await fetch(`${reg.url}/v2/_catalog?n=${n}`)
      expect(cat.status, n).toBe(400)
    }
    const unknown = await fetch(`${reg.url}/v2/nothing/here/tags/list`)
    expect(unknown.status).toBe(404)
    expect(await errorCodes(unknown)).toEqual(['NAME_UNKNOWN'])
  })

  it('lists the catalog with pagination', async () => {
    for (const name of ['b/two', 'a/one', 'c', 'a/three']) await pushBlob(reg.url, name, Buffer.from(name))
    for (const name of ['b/two', 'a/one', 'c', 'a/three']) {
      const image = await pushImage(reg.url, name)
      await putManifest(reg.url, name, 'v1', image.body)
    }
    const all = await fetch(`${reg.url}/v2/_catalog`)
    expect(await all.json()).toEqual({ repositories: ['a/one', 'a/three', 'b/two', 'c'] })
    const first = await fetch(`${reg.url}/v2/_catalog?n=3`)
    expect(first.headers.get('link')).toBe('</v2/_catalog?n=3&last=b%2Ftwo>; rel="next"')
    expect(await walk('/v2/_catalog?n=3', 'repositories')).toEqual([['a/one', 'a/three', 'b/two'], ['c']])
  })

  it('lists referrers as an image index, filtered by artifactType', async () => {
    const image = await pushImage(reg.url, 'app')
    await putManifest(reg.url, 'app', 'v1', image.body)
    const subject = { mediaType: MEDIA_TYPES.ociManifest, digest: image.digest, size: image.body.byteLength }
    const sig = await pushImage(reg.url, 'app', { subject, artifactType: 'application/x-sig' })
    const sbom = await pushImage(reg.url, 'app', { subject, artifactType: 'application/x-sbom' })
    await putManifest(reg.url, 'app', sig.digest, sig.body)
    await putManifest(reg.url, 'app', sbom.digest, sbom.body)

    const res = await fetch(`${reg.url}/v2/app/referrers/${image.digest}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe(MEDIA_TYPES.ociIndex)
    expect(res.headers.get('oci-filters-applied')).toBeNull()
    const index = (await res.json()) as {
      schemaVersion: number
      mediaType: string
      manifests: Array<{ digest: string; artifactType?: string }>
    }
    expect(index.schemaVersion).toBe(2)
    expect(index.mediaType).toBe(MEDIA_TYPES.ociIndex)
    expect(index.manifests.map((m) => m.digest).sort()).toEqual([sig.digest, sbom.digest].sort())

    const filtered = await fetch(
      `${reg.url}/v2/app/referrers/${image.digest}?artifactType=application/x-sbom`,
    )
    expect(filtered.status).toBe(200)
    expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType')
    const only = (await filtered.json()) as { manifests: Array<{ digest: string; artifactType: string }> }
    expect(only.manifests.map((m) => [m.digest, m.artifactType])).toEqual([
      [sbom.digest, 'application/x-sbom'],
    ])

    const none = await fetch(`${reg.url}/v2/app/referrers/${digestOf('no referrers')}`)
    expect(none.status).toBe(200)
    expect(((await none.json()) as { manifests: unknown[] }).manifests).toEqual([])

    const invalid = await fetch(`${reg.url}/v2/app/referrers/sha256:nothex`)
    expect(invalid.status).toBe(400)
    expect(await errorCodes(invalid)).toEqual(['DIGEST_INVALID'])
  })
})
