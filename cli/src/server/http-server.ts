/**
 * Serves one part's Koa app on a node:http server. `/healthz` and `/metrics` are
 * answered here, before the app sees the request, so every part has them and no
 * app can shadow them.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type Koa from 'koa'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { parseListenAddress } from '../../../registry/src/config.js'

/** The server could not bind its listen address; the message says why in plain words. */
export class ListenError extends Error {
  readonly code: string | undefined
  constructor(message: string, code?: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ListenError'
    this.code = code
  }
}

/** A bound HTTP server. */
export interface HttpService {
  /** Base URL the server is reachable at, e.g. `http://127.0.0.1:41234`. */
  url: string
  server: Server
  /**
   * Stops accepting connections, lets requests in flight finish for up to
   * `graceMs`, then drops what is left. Safe to call twice.
   */
  close(graceMs?: number): Promise<void>
}

/** What startHttpService serves. */
export interface HttpServiceInit {
  /** Name of the part, logged with the listening line (`registry`, `tracker`, `agent`). */
  service: string
  app: Koa
  /** `host:port`; port 0 picks a free port. */
  listen: string
  metrics: Registry
  logger: Logger
}

/**
 * Binds `listen`, serving `/healthz`, `/metrics` and the app, and logs
 * `{"msg":"listening","service":...,"url":...}` once bound. Throws ListenError when the
 * address is malformed, in use or not allowed.
 */
export async function startHttpService(init: HttpServiceInit): Promise<HttpService> {
  const address = parseListenAddress(init.listen)
  if (!address) throw new ListenError(`${init.service}: "${init.listen}" is not a host:port listen address`)
  const appHandler = init.app.callback()

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0]
    if (path === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
      respond(res, req, 200, 'application/json', '{"status":"ok"}')
    } else if (path === '/metrics' && (req.method === 'GET' || req.method === 'HEAD')) {
      init.metrics.metrics().then(
        (text) => respond(res, req, 200, init.metrics.contentType, text),
        (err: unknown) => {
          init.logger.error({ err }, 'collecting metrics failed')
          respond(res, req, 500, 'text/plain', 'collecting metrics failed\n')
        },
      )
    } else {
      void appHandler(req, res)
    }
  })
  // Blob uploads and downloads may take long; the header timeout still guards against idle sockets.
  server.requestTimeout = 0
  // Keep idle connections well past the clients' own keep-alive (undici: 4 s) so a
  // client never reuses a socket the server is closing at that moment; under CPU
  // starvation Node's 5 s default raced with it ("other side closed" in the testbed).
  server.keepAliveTimeout = 65_000
  server.headersTimeout = 66_000

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new ListenError(describeListenError(init.service, init.listen, err), err.code, { cause: err }))
    }
    server.once('error', onError)
    server.listen({ host: address.host, port: address.port }, () => {
      server.off('error', onError)
      resolve()
    })
  })
  server.on('error', (err) => init.logger.error({ err }, 'http server error'))

  const bound = server.address() as AddressInfo
  const host = bound.family === 'IPv6' || bound.address.includes(':') ? `[${bound.address}]` : bound.address
  const url = `http://${host}:${bound.port}`
  // A child logger that already names the service must not repeat the key in the line.
  const named = init.logger.bindings().service === init.service
  init.logger.info(named ? { url } : { service: init.service, url }, 'listening')

  let closing: Promise<void> | undefined
  return {
    url,
    server,
    close(graceMs = 5_000) {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs)
        // Keep-alive connections whose request finishes after close() began would otherwise linger.
        const sweeper = setInterval(() => server.closeIdleConnections(), 50)
        timer.unref()
        sweeper.unref()
        server.close(() => {
          clearTimeout(timer)
          clearInterval(sweeper)
          resolve()
        })
        server.closeIdleConnections()
      })
      return closing
    },
  }
}

function respond(
  res: ServerResponse,
  req: IncomingMessage,
  status: number,
  contentType: string,
  body: string,
): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) })
  res.end(req.method === 'HEAD' ? undefined : body)
}

function describeListenError(service: string, listen: string, err: NodeJS.ErrnoException): string {
  const prefix = `${service}: cannot listen on ${listen}`
  switch (err.code) {
    case 'EADDRINUSE':
      return `${prefix}: the address is already in use (is another shoal or registry running? choose another with --listen, or port 0 for any free port)`
    case 'EACCES':
      return `${prefix}: permission denied (ports below 1024 need privileges)`
    case 'EADDRNOTAVAIL':
      return `${prefix}: no local interface has this address`
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `${prefix}: the host name does not resolve`
    default:
      return `${prefix}: ${err.message}`
  }
}
