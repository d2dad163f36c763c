/**
 * Maps the upstream host a client named (`docker.io`, `ghcr.io`, `127.0.0.1:5000`) to
 * the registry the agent fetches from: a configured upstream with its credentials, or,
 * for every host not listed, the seed registry.
 */
import { createRegistryClient, type RegistryClient } from '../../../protocol/src/registry-client/index.js'
import type { BlobOrigin } from '../mirror/sources.js'

/** One configured upstream host mapping. */
export interface UpstreamMapping {
  host: string
  url: string
  username?: string
  password?: string
}

/** Options of createUpstreamResolver. */
export interface UpstreamResolverInit {
  /** The seed registry's URL. */
  seedUrl: string
  /** Hosts mapped to their own registries. */
  upstreams?: UpstreamMapping[]
  /**
   * Ask the seed for `<host>/<repository>` for hosts other than the seed's own, as a
   * seed running as a pull-through cache with host prefixes expects.
   * @default false
   */
  seedNamePrefix?: boolean
  /** The fetch the registry clients use. @default globalThis.fetch */
  fetch?: typeof fetch
  /** User-Agent of upstream requests. @default 'shoal-agent' */
  userAgent?: string
}

/** The registry one host maps to. */
export interface ResolvedUpstream {
  /** The host asked for. */
  host: string
  /** Base URL of the registry the agent fetches from. */
  url: string
  /** 'seed' for the seed registry, 'upstream' for a configured upstream. */
  origin: Extract<BlobOrigin, 'seed' | 'upstream'>
  /** True when the agent has its own credentials for this registry. */
  hasCredentials: boolean
  /** The repository name to ask this registry for. */
  repository(name: string): string
  /**
   * The client to fetch with. Without configured credentials a client's Authorization
   * is passed through (so a client that may read a private repository can pull it
   * through the agent); with them, the agent's own credentials are used.
   */
  client(authorization?: string): RegistryClient
}

/** Resolves hosts to registries. */
export interface UpstreamResolver {
  /** The host of the seed registry (`127.0.0.1:5000`). */
  readonly seedHost: string
  resolve(host: string): ResolvedUpstream
}

/** Creates a resolver; clients are created once per registry and reused. */
export function createUpstreamResolver(init: UpstreamResolverInit): UpstreamResolver {
  const baseFetch = init.fetch ?? globalThis.fetch
  const userAgent = init.userAgent ?? 'shoal-agent'
  const seedHost = new URL(init.seedUrl).host
  const byHost = new Map<string, ResolvedUpstream>()

  function build(
    host: string,
    url: string,
    origin: 'seed' | 'upstream',
    credentials: { username?: string; password?: string },
    repository: (name: string) => string,
  ): ResolvedUpstream {
    const hasCredentials = credentials.username !== undefined && credentials.password !== undefined
    const shared = createRegistryClient({ url, ...credentials, fetch: baseFetch, userAgent })
    return {
      host,
      url: shared.url,
      origin,
      hasCredentials,
      repository,
      client(authorization) {
        if (hasCredentials || authorization === undefined) return shared
        return createRegistryClient({ url, fetch: withAuthorization(baseFetch, authorization), userAgent })
      },
    }
  }

  for (const mapping of init.upstreams ?? []) {
    const { url, credentials } = splitCredentials(mapping.url, mapping)
    byHost.set(
      mapping.host,
      build(mapping.host, url, 'upstream', credentials, (name) => name),
    )
  }
  const seedPlain = build(seedHost, init.seedUrl, 'seed', {}, (name) => name)

  return {
    seedHost,
    resolve(host) {
      const mapped = byHost.get(host)
      if (mapped !== undefined) return mapped
      if (!init.seedNamePrefix || host === seedHost) return seedPlain
      let prefixed = byHost.get(`seed:${host}`)
      if (prefixed === undefined) {
        prefixed = { ...seedPlain, host, repository: (name) => `${host}/${name}` }
        byHost.set(`seed:${host}`, prefixed)
      }
      return prefixed
    },
  }
}

/**
 * Takes credentials out of a URL's user info (fetch refuses URLs that carry them);
 * explicitly given credentials win.
 */
function splitCredentials(
  raw: string,
  given: { username?: string; password?: string },
): { url: string; credentials: { username?: string; password?: string } } {
  const url = new URL(raw)
  const fromUrl =
    url.username !== '' || url.password !== ''
      ? { username: decodeURIComponent(url.username), password: decodeURIComponent(url.password) }
      : {}
  url.username = ''
  url.password = ''
  const hasGiven = given.username !== undefined || given.password !== undefined
  const credentials = hasGiven ? { username: given.username, password: given.password } : fromUrl
  return { url: url.toString(), credentials }
}

/** A fetch that sends `authorization` on every request that does not set its own. */
function withAuthorization(base: typeof fetch, authorization: string): typeof fetch {
  return (input, init = {}) => {
    const headers = new Headers(init.headers)
    if (!headers.has('authorization')) headers.set('authorization', authorization)
    return base(input, { ...init, headers })
  }
}
