/**
 * Which upstream registry serves which local repository: each upstream owns a
 * repository prefix (`hub` maps `hub/library/busybox` to `library/busybox` there), and
 * at most one upstream without a prefix catches every other repository.
 */
import { ConfigError, isRepositoryName } from '../../../protocol/src/index.js'

/** One upstream registry of the pull-through cache. */
export interface UpstreamConfig {
  /** Base URL, e.g. `https://registry-1.docker.io`. */
  url: string
  /**
   * Local repository prefix served by this upstream, stripped before asking it. Without
   * one, the upstream serves every repository no other prefix matches (at most one such).
   */
  prefix?: string
  /** Credentials for basic auth or the token endpoint. */
  username?: string
  password?: string
}

/** A repository resolved to its upstream. */
export interface UpstreamTarget<T> {
  upstream: UpstreamConfig
  /** Index of the upstream in the configured list. */
  index: number
  /** Whatever was attached to the upstream (its client). */
  value: T
  /** The repository name to ask the upstream for. */
  remoteRepository: string
}

/** Resolves repositories to upstreams. */
export interface UpstreamRouter<T> {
  /** The upstream serving `repository`, or undefined for a purely local repository. */
  resolve(repository: string): UpstreamTarget<T> | undefined
}

const DOCKER_HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io'])

/** True when `url` points at Docker Hub, whose single-component names live under `library/`. */
export function isDockerHub(url: string): boolean {
  try {
    return DOCKER_HUB_HOSTS.has(new URL(url).hostname)
  } catch {
    return false
  }
}

/** Throws ConfigError listing every problem of an upstream list. */
export function validateUpstreams(upstreams: UpstreamConfig[]): void {
  const problems: string[] = []
  const seen = new Set<string>()
  let catchAll = 0
  upstreams.forEach((u, i) => {
    try {
      const url = new URL(u.url)
      if (url.protocol !== 'http:' && url.protocol !== 'https:')
        problems.push(`upstreams[${i}].url must be http(s)`)
    } catch {
      problems.push(`upstreams[${i}].url is not a URL: ${String(u.url)}`)
    }
    if (u.prefix === undefined || u.prefix === '') {
      catchAll++
    } else if (!isRepositoryName(u.prefix)) {
      problems.push(`upstreams[${i}].prefix is not a valid repository prefix: ${u.prefix}`)
    } else if (seen.has(u.prefix)) {
      problems.push(`upstreams[${i}].prefix ${u.prefix} is used twice`)
    } else {
      seen.add(u.prefix)
    }
    if ((u.username === undefined) !== (u.password === undefined)) {
      problems.push(`upstreams[${i}] needs both username and password, or neither`)
    }
  })
  if (catchAll > 1) problems.push('at most one upstream may have no prefix')
  if (problems.length > 0) throw new ConfigError(problems)
}

/**
 * Creates a router. The longest matching prefix wins; a repository equal to a prefix
 * (nothing left to ask for) falls to the catch-all upstream, if any.
 */
export function createUpstreamRouter<T>(
  upstreams: UpstreamConfig[],
  attach: (u: UpstreamConfig, index: number) => T,
): UpstreamRouter<T> {
  validateUpstreams(upstreams)
  const entries = upstreams.map((upstream, index) => ({ upstream, index, value: attach(upstream, index) }))
  const prefixed = entries
    .filter((e) => e.upstream.prefix !== undefined && e.upstream.prefix !== '')
    .sort((a, b) => (b.upstream.prefix as string).length - (a.upstream.prefix as string).length)
  const catchAll = entries.find((e) => e.upstream.prefix === undefined || e.upstream.prefix === '')

  const remoteName = (upstream: UpstreamConfig, name: string) =>
    isDockerHub(upstream.url) && !name.includes('/') ? `library/${name}` : name

  return {
    resolve(repository) {
      for (const e of prefixed) {
        const prefix = e.upstream.prefix as string
        if (repository.startsWith(`${prefix}/`)) {
          const rest = repository.slice(prefix.length + 1)
          return { ...e, remoteRepository: remoteName(e.upstream, rest) }
        }
      }
      if (catchAll === undefined) return undefined
      return { ...catchAll, remoteRepository: remoteName(catchAll.upstream, repository) }
    },
  }
}
