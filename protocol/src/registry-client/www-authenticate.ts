/**
 * A parser for the HTTP `WWW-Authenticate` header (RFC 9110 §11.6.1) as registries
 * send it: one or more challenges, each a scheme followed by either a token68 or a
 * comma-separated list of `name=value` parameters whose values may be quoted strings
 * containing commas, spaces and backslash escapes.
 */

/** One authentication challenge. */
export interface AuthChallenge {
  /** The auth scheme, lower-cased (`bearer`, `basic`). */
  scheme: string
  /** Parameters by lower-cased name (`realm`, `service`, `scope`, `error`). */
  params: Record<string, string>
  /** The token68 form, for schemes that send one instead of parameters. */
  token68?: string
}

const TCHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*[ \t]*(?:,|$)/
const PARAM_START = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*=/

/**
 * Parses a `WWW-Authenticate` header value into its challenges. It never throws:
 * malformed parts are skipped, so a damaged header yields the challenges that can be
 * read (possibly none). Several headers joined with ", " parse as one list.
 */
export function parseWwwAuthenticate(header: string | null | undefined): AuthChallenge[] {
  const challenges: AuthChallenge[] = []
  if (typeof header !== 'string') return challenges
  const s = header
  let pos = 0

  const skipWs = () => {
    while (pos < s.length && (s[pos] === ' ' || s[pos] === '\t')) pos++
  }
  const skipSeparators = () => {
    while (pos < s.length && (s[pos] === ' ' || s[pos] === '\t' || s[pos] === ',')) pos++
  }
  const readToken = (): string => {
    const start = pos
    while (pos < s.length && TCHAR.test(s[pos] as string)) pos++
    return s.slice(start, pos)
  }
  // Registries send unquoted URLs (not RFC tokens): take anything up to a comma or space.
  const readBare = (): string => {
    const start = pos
    while (pos < s.length && s[pos] !== ',' && s[pos] !== ' ' && s[pos] !== '\t') pos++
    return s.slice(start, pos)
  }
  const readQuoted = (): string => {
    // Called with s[pos] === '"'. An unterminated string runs to the end of the header.
    pos++
    let out = ''
    while (pos < s.length) {
      const c = s[pos] as string
      if (c === '\\' && pos + 1 < s.length) {
        out += s[pos + 1]
        pos += 2
      } else if (c === '"') {
        pos++
        return out
      } else {
        out += c
        pos++
      }
    }
    return out
  }

  while (pos < s.length) {
    skipSeparators()
    if (pos >= s.length) break
    const scheme = readToken()
    if (scheme === '') {
      // Not a token character where a scheme should start: skip it and resynchronise.
      pos++
      continue
    }
    const challenge: AuthChallenge = { scheme: scheme.toLowerCase(), params: {} }
    challenges.push(challenge)
    skipWs()
    const rest = s.slice(pos)
    if (!PARAM_START.test(rest) || /^[A-Za-z0-9\-._~+/]+=+[ \t]*(?:,|$)/.test(rest)) {
      const m = TOKEN68.exec(rest)
      if (m) {
        challenge.token68 = m[0].replace(/[ \t]*,?$/, '')
        pos += m[0].length
      }
      continue
    }
    // Parameters until the next thing that is not `name=`, which starts a new challenge.
    for (;;) {
      skipWs()
      const nameStart = pos
      const name = readToken()
      skipWs()
      if (name === '' || s[pos] !== '=') {
        pos = nameStart
        break
      }
      pos++
      skipWs()
      const value = s[pos] === '"' ? readQuoted() : readBare()
      challenge.params[name.toLowerCase()] = value
      skipWs()
      if (s[pos] !== ',') {
        // Garbage after a value: drop characters up to the next comma.
        while (pos < s.length && s[pos] !== ',') pos++
      }
      if (pos >= s.length) break
      skipSeparators()
      if (!PARAM_START.test(s.slice(pos))) break
    }
  }
  return challenges
}
