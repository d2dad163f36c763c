/**
 * Webhooks: every event is POSTed as JSON to each configured URL that wants its type.
 * A delivery that fails (network error, timeout, a non-2xx answer) is retried with
 * exponential backoff (initialBackoffMs, doubling, capped at maxBackoffMs, with jitter)
 * up to maxAttempts in total, then dropped and counted. Deliveries run in the
 * background, a bounded number waiting at once; nothing blocks the registry.
 */
import type { Logger } from 'pino'
import { Counter, type Registry } from 'prom-client'
import type { RegistryEvent, RegistryEventType } from './types.js'

/** Options of the webhook notifier. */
export interface WebhookNotifierInit {
  urls: string[]
  /** Event types sent. @default every type */
  events?: RegistryEventType[]
  /** Attempts per delivery, the first included. @default 6 */
  maxAttempts?: number
  /** @default 500 */
  initialBackoffMs?: number
  /** @default 30000 */
  maxBackoffMs?: number
  /** Deadline of one attempt. @default 5000 */
  timeoutMs?: number
  /** Deliveries waiting or in flight at most; more are dropped. @default 1000 */
  maxPending?: number
}

/** The webhook notifier. */
export interface WebhookNotifier {
  notify(event: RegistryEvent): void
  /** Resolves when nothing is pending (tests). */
  idle(): Promise<void>
  /** Abandons pending retries. */
  stop(): Promise<void>
}

/** Creates the notifier. */
export function createWebhookNotifier(
  components: { logger?: Logger; metrics?: Registry; fetch?: typeof fetch },
  init: WebhookNotifierInit,
): WebhookNotifier {
  const doFetch = components.fetch ?? globalThis.fetch
  const types = new Set(init.events ?? ['push', 'pull', 'delete', 'preheat'])
  const maxAttempts = init.maxAttempts ?? 6
  const initialBackoffMs = init.initialBackoffMs ?? 500
  const maxBackoffMs = init.maxBackoffMs ?? 30_000
  const timeoutMs = init.timeoutMs ?? 5000
  const maxPending = init.maxPending ?? 1000
  const stopping = new AbortController()
  const pending = new Set<Promise<void>>()
  const name = 'shoal_registry_webhook_deliveries_total'
  const deliveries =
    components.metrics === undefined
      ? undefined
      : ((components.metrics.getSingleMetric(name) as Counter<'result'> | undefined) ??
        new Counter({
          name,
          help: 'Webhook deliveries, by result: delivered, retried (one failed attempt), dropped.',
          labelNames: ['result'],
          registers: [components.metrics],
        }))

  async function deliver(url: string, event: RegistryEvent): Promise<void> {
    const body = JSON.stringify(event)
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      if (stopping.signal.aborted) return
      let why: string
      try {
        const res = await doFetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'shoal-registry-webhook' },
          body,
          signal: AbortSignal.any([stopping.signal, AbortSignal.timeout(timeoutMs)]),
        })
        await res.body?.cancel()
        if (res.ok) {
          deliveries?.inc({ result: 'delivered' })
          return
        }
        why = `answered ${res.status}`
      } catch (err) {
        why = (err as Error).message
      }
      if (attempt === maxAttempts || stopping.signal.aborted) {
        deliveries?.inc({ result: 'dropped' })
        components.logger?.warn(
          { url, event: event.type, attempts: attempt, why },
          'webhook delivery dropped',
        )
        return
      }
      deliveries?.inc({ result: 'retried' })
      const backoff = Math.min(maxBackoffMs, initialBackoffMs * 2 ** (attempt - 1))
      const delay = backoff / 2 + Math.random() * (backoff / 2)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay)
        stopping.signal.addEventListener(
          'abort',
          () => {
            clearTimeout(t)
            resolve()
          },
          { once: true },
        )
      })
    }
  }

  return {
    notify(event) {
      if (!types.has(event.type) || stopping.signal.aborted) return
      for (const url of init.urls) {
        if (pending.size >= maxPending) {
          deliveries?.inc({ result: 'dropped' })
          continue
        }
        const p: Promise<void> = deliver(url, event).finally(() => pending.delete(p))
        pending.add(p)
      }
    },
    async idle() {
      while (pending.size > 0) await Promise.allSettled([...pending])
    },
    async stop() {
      stopping.abort()
      await Promise.allSettled([...pending])
    },
  }
}
