/**
 * A cache of registry bearer tokens keyed by scope, honouring each token's lifetime
 * (`expires_in`, counted from `issued_at`) with a safety margin so that a token is
 * never sent in its last seconds.
 */

/** Lifetime of a token as a token endpoint reports it. */
export interface TokenLifetime {
  /** Seconds the token is valid for; the Docker token spec's default is 60. */
  expiresInSec?: number
  /** RFC 3339 time the token was issued; defaults to now. */
  issuedAt?: string
}

/** Bearer tokens by key (normally the scope string). */
export interface TokenCache {
  /** The cached token for `key`, or undefined when absent or (nearly) expired. */
  get(key: string): string | undefined
  /** Stores a token with its lifetime; a token already expired is not stored. */
  set(key: string, token: string, lifetime?: TokenLifetime): void
  /** Forgets one token (after the registry refused it). */
  delete(key: string): void
  /** Forgets every token. */
  clear(): void
  /** Number of tokens held (expired ones included until they are next read). */
  readonly size: number
}

/** Options of createTokenCache. */
export interface TokenCacheInit {
  /** Clock, ms since the epoch. @default Date.now */
  now?: () => number
  /** Lifetime assumed when the endpoint does not send expires_in. @default 60 */
  defaultExpiresInSec?: number
  /** Most tokens kept; the oldest entry is evicted beyond it. @default 1000 */
  maxEntries?: number
}

/** Longest margin before expiry at which a token is no longer handed out. */
const MAX_MARGIN_MS = 10_000

/**
 * Creates a token cache. A token is handed out until `issued + lifetime - margin`,
 * where the margin is a tenth of the lifetime (at most 10 s) and `issued` is the
 * earlier of `issuedAt` and the local clock, so that a server clock running ahead does
 * not stretch a token past its real expiry.
 */
export function createTokenCache(init: TokenCacheInit = {}): TokenCache {
  const now = init.now ?? Date.now
  const defaultExpiresInSec = init.defaultExpiresInSec ?? 60
  const maxEntries = init.maxEntries ?? 1000
  const entries = new Map<string, { token: string; usableUntil: number }>()

  return {
    get(key) {
      const entry = entries.get(key)
      if (entry === undefined) return undefined
      if (now() >= entry.usableUntil) {
        entries.delete(key)
        return undefined
      }
      return entry.token
    },
    set(key, token, lifetime = {}) {
      const t = now()
      let expiresInSec = lifetime.expiresInSec
      if (typeof expiresInSec !== 'number' || !Number.isFinite(expiresInSec) || expiresInSec <= 0) {
        expiresInSec = defaultExpiresInSec
      }
      let issued = t
      if (lifetime.issuedAt !== undefined) {
        const parsed = Date.parse(lifetime.issuedAt)
        if (Number.isFinite(parsed)) issued = Math.min(parsed, t)
      }
      const lifetimeMs = expiresInSec * 1000
      const usableUntil = issued + lifetimeMs - Math.min(MAX_MARGIN_MS, lifetimeMs / 10)
      entries.delete(key)
      if (usableUntil <= t) return
      entries.set(key, { token, usableUntil })
      while (entries.size > maxEntries) {
        const oldest = entries.keys().next().value
        if (oldest === undefined) break
        entries.delete(oldest)
      }
    },
    delete(key) {
      entries.delete(key)
    },
    clear() {
      entries.clear()
    },
    get size() {
      return entries.size
    },
  }
}
