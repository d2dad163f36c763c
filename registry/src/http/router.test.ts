import { describe, expect, it } from 'vitest'
import { matchRoute } from './router.js'

const D = `sha256:${'a'.repeat(64)}`

describe('matchRoute', () => {
  it('matches every endpoint from the right, with slashes in names', () => {
    expect(matchRoute('/v2/')).toEqual({ route: 'base' })
    expect(matchRoute('/v2')).toEqual({ route: 'base' })
    expect(matchRoute('/v2/_catalog')).toEqual({ route: 'catalog' })
    expect(matchRoute('/v2/a/b/c/manifests/latest')).toEqual({
      route: 'manifest',
      name: 'a/b/c',
      reference: 'latest',
    })
    expect(matchRoute(`/v2/a/blobs/${D}`)).toEqual({ route: 'blob', name: 'a', digest: D })
    expect(matchRoute('/v2/a/b/blobs/uploads/')).toEqual({ route: 'uploads', name: 'a/b' })
    expect(matchRoute('/v2/a/b/blobs/uploads')).toEqual({ route: 'uploads', name: 'a/b' })
    expect(matchRoute('/v2/a/blobs/uploads/xyz')).toEqual({ route: 'upload', name: 'a', id: 'xyz' })
    expect(matchRoute('/v2/a/b/tags/list')).toEqual({ route: 'tags', name: 'a/b' })
    expect(matchRoute(`/v2/a/referrers/${D}`)).toEqual({ route: 'referrers', name: 'a', digest: D })
  })

  it('lets names contain the endpoint keywords', () => {
    expect(matchRoute('/v2/blobs/manifests/x')).toEqual({ route: 'manifest', name: 'blobs', reference: 'x' })
    expect(matchRoute('/v2/x/manifests/tags/list')).toEqual({ route: 'tags', name: 'x/manifests' })
    expect(matchRoute(`/v2/blobs/uploads/blobs/${D}`)).toEqual({
      route: 'blob',
      name: 'blobs/uploads',
      digest: D,
    })
    expect(matchRoute('/v2/tags/blobs/uploads/')).toEqual({ route: 'uploads', name: 'tags' })
  })

  it('decodes references but keeps names raw', () => {
    expect(matchRoute('/v2/a/blobs/sha256%3Aabc')).toEqual({ route: 'blob', name: 'a', digest: 'sha256:abc' })
    expect(matchRoute('/v2/a%2Fb/manifests/x')).toEqual({ route: 'manifest', name: 'a%2Fb', reference: 'x' })
    expect(matchRoute('/v2/a/manifests/%E0%A4%A')).toEqual({
      route: 'manifest',
      name: 'a',
      reference: '%E0%A4%A',
    })
  })

  it('matches nothing else', () => {
    for (const path of [
      '/',
      '/v1/',
      '/v2x/',
      '/v2/a',
      '/v2/a/manifests',
      '/v2/a/tags/lists',
      '/v2/a/blobs',
      '/v2/a/other/x',
      '/v2/_catalog/x',
    ]) {
      expect(matchRoute(path), path).toBeUndefined()
    }
  })
})
