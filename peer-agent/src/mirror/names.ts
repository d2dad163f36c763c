/**
 * How a mirror request names its image: the upstream host comes from containerd's
 * `?ns=<host>` (hosts.toml), and a request without `ns` comes from Docker's
 * registry-mirrors, which only ever mirror Docker Hub. Docker Hub's official images
 * live under `library/`.
 */
import { assertRepositoryName, ParameterInvalidError } from '../../../protocol/src/index.js'
import { isRegistryHost } from '../config.js'

/** The host a request without `ns` means. */
export const DOCKER_HUB = 'docker.io'

/** Names Docker Hub goes by in image references and hosts.toml files. */
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io'])

/**
 * The upstream host a request is for: `ns` lower-cased, Docker Hub's aliases folded
 * into `docker.io`, and `defaultHost` when there is none. Throws ParameterInvalidError
 * for an `ns` that is not a registry host.
 */
export function upstreamHostOf(ns: string | undefined, defaultHost: string = DOCKER_HUB): string {
  if (ns === undefined || ns === '') return defaultHost
  const host = ns.toLowerCase()
  if (!isRegistryHost(host)) throw new ParameterInvalidError(`ns is not a registry host: ${ns.slice(0, 100)}`)
  return DOCKER_HUB_ALIASES.has(host) ? DOCKER_HUB : host
}

/**
 * The repository name on `host`: a one-component Docker Hub name gains `library/`
 * (`busybox` is `library/busybox`). Throws NameInvalidError for a malformed name.
 */
export function repositoryOf(host: string, name: string): string {
  assertRepositoryName(name)
  return host === DOCKER_HUB && !name.includes('/') ? `library/${name}` : name
}
