/**
 * The containerd hosts.toml that sends a node's pulls of one upstream through the
 * node's agent: containerd tries the mirror first (adding `?ns=<host>` to every
 * request) and falls back to `server`, the upstream itself, when the mirror fails.
 */
import { isRegistryHost } from './config.js'

/** Options of hostsToml. */
export interface HostsTomlInit {
  /** The agent's mirror URL. @default 'http://127.0.0.1:5001' */
  mirror?: string
}

/** What hostsToml produces. */
export interface HostsToml {
  /** The registry host as image names spell it: the folder name under certs.d. */
  host: string
  /** The upstream's URL (`server`). */
  server: string
  /** The file's text. */
  text: string
}

/**
 * Builds the hosts.toml for `upstream`, a registry host (`docker.io`, `ghcr.io`,
 * `127.0.0.1:5000`, which then means https) or a URL (`http://127.0.0.1:5000`).
 * Docker Hub's `server` is https://registry-1.docker.io. Throws TypeError for anything
 * that is neither.
 */
export function hostsToml(upstream: string, init: HostsTomlInit = {}): HostsToml {
  const mirror = new URL(init.mirror ?? 'http://127.0.0.1:5001')
  if (mirror.protocol !== 'http:' && mirror.protocol !== 'https:') {
    throw new TypeError(`the mirror must be an http:// or https:// URL: ${init.mirror}`)
  }
  let host: string
  let server: string
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(upstream)) {
    const url = new URL(upstream)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TypeError(`the upstream must be a registry host or an http(s) URL: ${upstream}`)
    }
    host = url.host
    server = `${url.protocol}//${url.host}`
  } else {
    host = upstream.toLowerCase()
    if (!isRegistryHost(host)) throw new TypeError(`not a registry host: ${upstream}`)
    server = host === 'docker.io' ? 'https://registry-1.docker.io' : `https://${host}`
  }
  if (host === 'registry-1.docker.io' || host === 'index.docker.io') host = 'docker.io'
  const mirrorUrl = `${mirror.protocol}//${mirror.host}`
  const text = [
    `# certs.d/${host}/hosts.toml: pull ${host} images through the shoal agent at ${mirrorUrl}`,
    `server = ${JSON.stringify(server)}`,
    '',
    `[host.${JSON.stringify(mirrorUrl)}]`,
    '  capabilities = ["pull", "resolve"]',
    '',
  ].join('\n')
  return { host, server, text }
}
