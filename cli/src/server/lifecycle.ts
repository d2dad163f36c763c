/**
 * Running parts in this process: start a node and serve it, stop them all in reverse
 * order, and stop cleanly on SIGINT/SIGTERM.
 */
import type Koa from 'koa'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { startHttpService } from './http-server.js'

/** What every part's composition root (createRegistryNode, createTrackerNode, ...) returns. */
export interface ServiceNode {
  app: Koa
  start(): Promise<void>
  stop(): Promise<void>
}

/** A part that is started and served. */
export interface RunningPart {
  service: string
  url: string
  /** Closes the HTTP server, then stops the node. Safe to call twice. */
  stop(): Promise<void>
}

/** What runPart needs. */
export interface RunPartInit {
  service: string
  node: ServiceNode
  listen: string
  metrics: Registry
  logger: Logger
}

/**
 * Starts the node, then serves its app (so no request arrives before the node is
 * ready). If serving fails the node is stopped again and the error (ListenError) is thrown.
 */
export async function runPart(init: RunPartInit): Promise<RunningPart> {
  await init.node.start()
  let http: Awaited<ReturnType<typeof startHttpService>>
  try {
    http = await startHttpService({
      service: init.service,
      app: init.node.app,
      listen: init.listen,
      metrics: init.metrics,
      logger: init.logger,
    })
  } catch (err) {
    await init.node.stop().catch(() => {})
    throw err
  }
  let stopping: Promise<void> | undefined
  return {
    service: init.service,
    url: http.url,
    stop() {
      stopping ??= (async () => {
        await http.close()
        await init.node.stop()
      })()
      return stopping
    },
  }
}

/** Stops parts in the reverse of their start order; every part is stopped even if one fails. */
export async function stopParts(parts: RunningPart[], logger: Logger): Promise<void> {
  let failed = false
  for (const part of [...parts].reverse()) {
    try {
      await part.stop()
    } catch (err) {
      failed = true
      logger.error({ err, service: part.service }, 'stopping failed')
    }
  }
  if (failed) throw new Error('one or more parts did not stop cleanly')
}

/**
 * On the first SIGINT or SIGTERM runs `stop` and exits 0 (1 if stopping failed); a
 * second signal exits at once with 130. Returns a function that removes the handlers.
 */
export function exitOnSignals(stop: () => Promise<void>, logger: Logger): () => void {
  let stopping = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal, exiting without waiting')
      process.exit(130)
    }
    stopping = true
    logger.info({ signal }, 'stopping')
    stop().then(
      () => {
        logger.info('stopped')
        process.exit(0)
      },
      (err: unknown) => {
        logger.error({ err }, 'stopping failed')
        process.exit(1)
      },
    )
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return () => {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
