/**
 * Test helpers around the real CNCF Distribution registry (Debian's docker-registry
 * binary): start one on 127.0.0.1 with a free port and its own temp storage, optionally
 * with htpasswd basic auth or token auth backed by an in-test token server that signs
 * JWTs the registry accepts; plus a small counting proxy that can fail on demand.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { createSign, randomBytes, randomUUID, X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import bcrypt from 'bcryptjs'

const execFileAsync = promisify(execFile)

/** Path of Debian's Distribution binary. */
export const DISTRIBUTION_BINARY = process.env.SHOAL_DISTRIBUTION_BINARY ?? '/usr/bin/docker-registry'

/** Token auth settings for a Distribution instance. */
export interface DistributionTokenAuth {
  realm: string
  service: string
  issuer: string
  /** Path of the PEM bundle of certificates that sign tokens. */
  rootCertBundle: string
}

/** Options of startDistribution. */
export interface DistributionOptions {
  /** Require basic auth with these users (bcrypt htpasswd). */
  htpasswd?: Record<string, string>
  /** Require bearer tokens (Distribution's `auth.token`). */
  token?: DistributionTokenAuth
  /** Allow DELETE. @default true */
  deleteEnabled?: boolean
  /** How long to wait for GET /v2/ to answer. @default 20000 */
  startTimeoutMs?: number
}

/** A running Distribution registry. */
export interface DistributionInstance {
  /** `http://127.0.0.1:PORT` */
  url: string
  port: number
  pid: number
  /** Temp dir holding config, storage and htpasswd; removed by stop(). */
  dir: string
  /** Stops the process (SIGTERM, then SIGKILL) and removes its files. Safe to call twice. */
  stop(): Promise<void>
  /** Stops the process but keeps its files, so `restart()` serves the same content. */
  halt(): Promise<void>
  /** Starts the process again on the same port with the same storage. */
  restart(): Promise<void>
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

function yaml(config: {
  root: string
  port: number
  deleteEnabled: boolean
  htpasswdPath?: string
  token?: DistributionTokenAuth
}): string {
  const lines = [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(config.root)}`,
    '  delete:',
    `    enabled: ${config.deleteEnabled}`,
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${config.port}`,
    `  secret: ${randomBytes(16).toString('hex')}`,
  ]
  if (config.htpasswdPath !== undefined) {
    lines.push(
      'auth:',
      '  htpasswd:',
      '    realm: shoal-test',
      `    path: ${JSON.stringify(config.htpasswdPath)}`,
    )
  } else if (config.token !== undefined) {
    lines.push(
      'auth:',
      '  token:',
      `    realm: ${JSON.stringify(config.token.realm)}`,
      `    service: ${JSON.stringify(config.token.service)}`,
      `    issuer: ${JSON.stringify(config.token.issuer)}`,
      `    rootcertbundle: ${JSON.stringify(config.token.rootCertBundle)}`,
    )
  }
  return `${lines.join('\n')}\n`
}

async function waitReady(
  url: string,
  child: ChildProcess,
  output: () => string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`docker-registry exited (${child.exitCode ?? child.signalCode}): ${output()}`)
    }
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) })
      await res.body?.cancel()
      if (res.status === 200 || res.status === 401) return
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`docker-registry did not answer on ${url} within ${timeoutMs} ms: ${output()}`)
}

// Registries still running when the test process exits (a crash, a forgotten stop) are
// killed with it rather than left behind.
const running = new Set<ChildProcess>()
let exitHookInstalled = false
function track(child: ChildProcess): void {
  running.add(child)
  child.once('exit', () => running.delete(child))
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.once('exit', () => {
      for (const c of running) if (c.pid !== undefined) c.kill('SIGKILL')
    })
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  process.kill(child.pid, 'SIGTERM')
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGKILL')
    }
  }, 5000)
  await exited
  clearTimeout(timer)
}

/** Starts a Distribution registry; stop it with `stop()` in afterEach. */
export async function startDistribution(options: DistributionOptions = {}): Promise<DistributionInstance> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-distribution-'))
  let htpasswdPath: string | undefined
  if (options.htpasswd !== undefined) {
    htpasswdPath = join(dir, 'htpasswd')
    const lines = Object.entries(options.htpasswd).map(
      ([user, pass]) => `${user}:${bcrypt.hashSync(pass, 4)}`,
    )
    await writeFile(htpasswdPath, `${lines.join('\n')}\n`)
  }
  let port = 0
  let child: ChildProcess | undefined
  let output = ''
  const configPath = join(dir, 'config.yml')

  const launch = async () => {
    output = ''
    const proc = spawn(DISTRIBUTION_BINARY, ['serve', configPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // A clean environment: REGISTRY_* variables would override the config file.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
    })
    const keep = (b: Buffer) => {
      output = (output + b.toString()).slice(-4000)
    }
    proc.stdout?.on('data', keep)
    proc.stderr?.on('data', keep)
    child = proc
    track(proc)
    await waitReady(`http://127.0.0.1:${port}`, proc, () => output, options.startTimeoutMs ?? 20_000)
  }

  // The free port can be taken between probing and binding: retry with another one.
  for (let attempt = 0; ; attempt++) {
    port = await freePort()
    await writeFile(
      configPath,
      yaml({
        root: join(dir, 'data'),
        port,
        deleteEnabled: options.deleteEnabled ?? true,
        htpasswdPath,
        token: options.token,
      }),
    )
    try {
      await launch()
      break
    } catch (err) {
      if (child !== undefined) await stopChild(child)
      if (attempt >= 2) {
        await rm(dir, { recursive: true, force: true })
        throw err
      }
    }
  }

  let stopped = false
  const instance: DistributionInstance = {
    url: `http://127.0.0.1:${port}`,
    port,
    get pid() {
      return child?.pid ?? -1
    },
    dir,
    async halt() {
      if (child !== undefined) await stopChild(child)
    },
    async restart() {
      if (child !== undefined) await stopChild(child)
      await launch()
    },
    async stop() {
      if (stopped) return
      stopped = true
      if (child !== undefined) await stopChild(child)
      await rm(dir, { recursive: true, force: true })
    },
  }
  return instance
}

/** A JWT issuer whose certificate Distribution trusts through `rootCertBundle`. */
export interface TokenIssuer {
  certPath: string
  keyPem: string
  certPem: string
  /** Signs a registry token for `service` granting `access`. */
  sign(claims: {
    issuer: string
    service: string
    subject: string
    access: TokenAccess[]
    expiresInSec?: number
  }): string
}

/** One grant of a registry token. */
export interface TokenAccess {
  type: string
  name: string
  actions: string[]
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url')
}

/** Generates a self-signed RSA certificate and key (openssl) in `dir` and returns a JWT signer for them. */
export async function createTokenIssuer(dir: string): Promise<TokenIssuer> {
  const keyPath = join(dir, 'token.key')
  const certPath = join(dir, 'token.crt')
  await execFileAsync('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    keyPath,
    '-out',
    certPath,
    '-days',
    '2',
    '-subj',
    '/CN=shoal-test-token-issuer',
  ])
  const keyPem = await readFile(keyPath, 'utf8')
  const certPem = await readFile(certPath, 'utf8')
  const certDer = new X509Certificate(certPem).raw
  return {
    certPath,
    keyPem,
    certPem,
    sign({ issuer, service, subject, access, expiresInSec = 300 }) {
      const now = Math.floor(Date.now() / 1000)
      // x5c carries the signing certificate; Distribution checks it against rootcertbundle.
      const header = { alg: 'RS256', typ: 'JWT', x5c: [certDer.toString('base64')] }
      const payload = {
        iss: issuer,
        sub: subject,
        aud: service,
        exp: now + expiresInSec,
        nbf: now - 10,
        iat: now,
        jti: randomUUID(),
        access,
      }
      const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`
      const signature = createSign('RSA-SHA256').update(input).sign(keyPem)
      return `${input}.${b64url(signature)}`
    },
  }
}

/** A running token server. */
export interface TokenServer {
  /** The realm URL (`http://127.0.0.1:PORT/token`). */
  realm: string
  /** Requests received, with their scopes and whether they carried valid credentials. */
  requests: Array<{ scopes: string[]; user?: string }>
  stop(): Promise<void>
}

/**
 * Starts a Docker token endpoint on 127.0.0.1. With `users`, requests with basic
 * credentials must match (401 otherwise) and get every action they ask for; anonymous
 * requests get only `pull` when `anonymousPull` is set, nothing otherwise.
 */
export async function startTokenServer(init: {
  issuer: TokenIssuer
  issuerName: string
  service: string
  users?: Record<string, string>
  anonymousPull?: boolean
  expiresInSec?: number
}): Promise<TokenServer> {
  const requests: TokenServer['requests'] = []
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    const scopes = url.searchParams.getAll('scope')
    let user: string | undefined
    const auth = req.headers.authorization
    if (auth?.startsWith('Basic ')) {
      const [u, ...rest] = Buffer.from(auth.slice(6), 'base64').toString().split(':')
      const p = rest.join(':')
      if (u === undefined || init.users?.[u] !== p) {
        requests.push({ scopes })
        res.writeHead(401, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ details: 'bad credentials' }))
        return
      }
      user = u
    }
    requests.push({ scopes, user })
    const access: TokenAccess[] = []
    for (const scope of scopes) {
      const [type, name, actions] = scope.split(':')
      if (type === undefined || name === undefined || actions === undefined) continue
      const wanted = actions.split(',')
      const granted =
        user !== undefined ? wanted : init.anonymousPull ? wanted.filter((a) => a === 'pull') : []
      access.push({ type, name, actions: granted })
    }
    const expiresIn = init.expiresInSec ?? 300
    const token = init.issuer.sign({
      issuer: init.issuerName,
      service: init.service,
      subject: user ?? '',
      access,
      expiresInSec: expiresIn,
    })
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ token, expires_in: expiresIn, issued_at: new Date().toISOString() }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const port = (server.address() as net.AddressInfo).port
  return {
    realm: `http://127.0.0.1:${port}/token`,
    requests,
    async stop() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** How the counting proxy answers. */
export type ProxyMode = 'forward' | '429' | '503' | 'refuse'

/** A running counting proxy. */
export interface CountingProxy {
  url: string
  /** Requests seen, as `METHOD /path` (query strings dropped). */
  requests: string[]
  /** Number of requests whose `METHOD /path` starts with `prefix`. */
  count(prefix: string): number
  /** Switches behaviour: forward, answer 429 or 503, or reset connections ('refuse'). */
  setMode(mode: ProxyMode): void
  stop(): Promise<void>
}

/**
 * Starts an HTTP proxy on 127.0.0.1 in front of `target` that counts requests and can
 * pretend the upstream is rate limiting, failing or down.
 */
export async function startCountingProxy(target: string): Promise<CountingProxy> {
  const requests: string[] = []
  let mode: ProxyMode = 'forward'
  const targetUrl = new URL(target)
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    requests.push(`${req.method} ${path}`)
    if (mode === 'refuse') {
      req.socket.destroy()
      return
    }
    if (mode === '429' || mode === '503') {
      res.writeHead(Number(mode), { 'content-type': 'application/json', 'retry-after': '1' })
      res.end(
        JSON.stringify({
          errors: [{ code: mode === '429' ? 'TOOMANYREQUESTS' : 'UNAVAILABLE', message: mode }],
        }),
      )
      return
    }
    const upstream = http.request(
      {
        host: targetUrl.hostname,
        port: targetUrl.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers)
        up.pipe(res)
      },
    )
    upstream.on('error', () => res.destroy())
    req.pipe(upstream)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const port = (server.address() as net.AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    count: (prefix) => requests.filter((r) => r.startsWith(prefix)).length,
    setMode(m) {
      mode = m
    },
    async stop() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
