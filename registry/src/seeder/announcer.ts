/**
 * Tells the swarm what the seed holds: announces every held blob to the tracker as a
 * complete seed (at start, when a blob is committed, then again at the interval the
 * tracker answers), and provides every blob in the DHT (at start, at commit, and again
 * every `reprovideIntervalMs`). Failures are logged and retried; they never stop the
 * registry.
 */
import type { Logger } from 'pino'
import { Bitfield, type Digest } from '../../../protocol/src/index.js'
import type { TrackerClient } from '../../../protocol/src/tracker-client/index.js'
import { MAX_MULTIADDRS } from '../../../protocol/src/tracker-api.js'

/** What the announcer needs of the seed. */
export interface AnnouncerComponents {
  /** Absent: no tracker announces. */
  tracker?: TrackerClient
  /** The seed's libp2p identity and DHT. */
  node: {
    peerId: { toString(): string }
    getMultiaddrs(): Array<{ toString(): string }>
    provide(digest: Digest, options?: { signal?: AbortSignal }): Promise<void>
  }
  /** Every held blob. */
  list(options?: { signal?: AbortSignal }): AsyncIterable<Digest>
  /** The piece count of a held blob (its piece map), or undefined when not held. */
  pieceCount(digest: Digest, options?: { signal?: AbortSignal }): Promise<number | undefined>
  /** The seed's upload load (active uploads), sent with each announce. */
  uploadLoad(): number
  logger?: Logger
  /** Called after each announce attempt. */
  onAnnounce?: (result: 'ok' | 'error') => void
  /**
   * Called with each answer's `spread` (the pieces at least two agents hold; undefined
   * when the answer names none), decoded against the blob's piece count.
   */
  onSpread?: (digest: Digest, pieces: Bitfield | undefined) => void
}

/** Options of the announcer. */
export interface AnnouncerInit {
  /** How often every blob is provided in the DHT again. @default 21600000 (6 h) */
  reprovideIntervalMs?: number
  /** Retry delay after a failed announce. @default 10000 */
  retryMs?: number
  /** Deadline of one DHT provide. @default 30000 */
  provideTimeoutMs?: number
  /** Announces and provides run at once at most. @default 4 */
  concurrency?: number
}

/** The announcer's lifecycle. */
export interface Announcer {
  /** Announces and provides every held blob (in the background), and keeps doing so. */
  start(): Promise<void>
  /** Stops all timers and tells the tracker (best effort) that the seed leaves. */
  stop(): Promise<void>
  /** Announces and provides a newly committed blob now. */
  blobAdded(digest: Digest): void
  /** Blobs with an announce schedule (announced at least once or being announced). */
  announced(): Digest[]
}

/** Creates the announcer. */
export function createAnnouncer(components: AnnouncerComponents, init: AnnouncerInit = {}): Announcer {
  const { tracker, node, logger } = components
  const reprovideMs = init.reprovideIntervalMs ?? 6 * 60 * 60 * 1000
  const retryMs = init.retryMs ?? 10_000
  const provideTimeoutMs = init.provideTimeoutMs ?? 30_000
  const concurrency = init.concurrency ?? 4
  const timers = new Map<Digest, NodeJS.Timeout>()
  /** Blobs announced to the tracker (told `stopped` at stop). */
  const known = new Set<Digest>()
  let reprovideTimer: NodeJS.Timeout | undefined
  let lifetime = new AbortController()
  let running = false
  // A small work queue so a registry with thousands of blobs does not announce them all at once.
  const queue: Array<() => Promise<void>> = []
  let active = 0

  function enqueue(task: () => Promise<void>): void {
    queue.push(task)
    pump()
  }

  function pump(): void {
    while (running && active < concurrency && queue.length > 0) {
      const task = queue.shift()!
      active++
      void task()
        .catch((err: unknown) => {
          if (!lifetime.signal.aborted) logger?.warn({ err }, 'seed announce task failed')
        })
        .finally(() => {
          active--
          pump()
        })
    }
  }

  function multiaddrs(): string[] {
    return node
      .getMultiaddrs()
      .map((a) => a.toString())
      .slice(0, MAX_MULTIADDRS)
  }

  function schedule(digest: Digest, ms: number): void {
    if (!running) return
    clearTimeout(timers.get(digest))
    const timer = setTimeout(() => enqueue(() => announce(digest)), ms)
    timer.unref()
    timers.set(digest, timer)
  }

  async function announce(digest: Digest, event?: 'started' | 'completed' | 'stopped'): Promise<void> {
    if (tracker === undefined || !running) return
    const signal = lifetime.signal
    const count = await components.pieceCount(digest, { signal })
    if (count === undefined) {
      // No longer held (garbage collected): stop announcing it.
      clearTimeout(timers.get(digest))
      timers.delete(digest)
      known.delete(digest)
      return
    }
    try {
      const answer = await tracker.announce(
        {
          peerId: node.peerId.toString(),
          multiaddrs: multiaddrs(),
          digest,
          role: 'seed',
          state: 'complete',
          piecesHeld: count,
          pieceCount: count,
          uploadLoad: components.uploadLoad(),
          ...(event ? { event } : {}),
        },
        { signal },
      )
      components.onAnnounce?.('ok')
      if (components.onSpread !== undefined) {
        let spread: Bitfield | undefined
        try {
          spread = answer.spread === undefined ? undefined : Bitfield.fromBase64(answer.spread, count)
        } catch (err) {
          logger?.warn({ err, digest }, 'the tracker sent a spread bitfield that does not decode; ignored')
        }
        components.onSpread(digest, spread)
      }
      schedule(digest, Math.max(1000, answer.intervalMs))
    } catch (err) {
      if (signal.aborted) return
      components.onAnnounce?.('error')
      logger?.warn({ err, digest }, 'seed announce failed, retrying')
      schedule(digest, retryMs)
    }
  }

  async function provide(digest: Digest): Promise<void> {
    if (!running) return
    try {
      await node.provide(digest, {
        signal: AbortSignal.any([lifetime.signal, AbortSignal.timeout(provideTimeoutMs)]),
      })
    } catch (err) {
      if (!lifetime.signal.aborted) logger?.debug({ err, digest }, 'DHT provide failed')
    }
  }

  async function everyBlob(each: (digest: Digest) => void): Promise<void> {
    try {
      for await (const digest of components.list({ signal: lifetime.signal })) each(digest)
    } catch (err) {
      if (!lifetime.signal.aborted) logger?.warn({ err }, 'could not list the held blobs')
    }
  }

  return {
    async start() {
      if (running) return
      running = true
      lifetime = new AbortController()
      void everyBlob((digest) => {
        if (tracker) {
          known.add(digest)
          enqueue(() => announce(digest, 'started'))
        }
        enqueue(() => provide(digest))
      })
      reprovideTimer = setInterval(
        () => void everyBlob((digest) => enqueue(() => provide(digest))),
        reprovideMs,
      )
      reprovideTimer.unref()
    },

    async stop() {
      if (!running) return
      const digests = [...known]
      running = false
      lifetime.abort(new Error('seed stopped'))
      clearInterval(reprovideTimer)
      for (const t of timers.values()) clearTimeout(t)
      timers.clear()
      known.clear()
      queue.length = 0
      if (tracker && digests.length > 0) {
        const signal = AbortSignal.timeout(2_000)
        await Promise.allSettled(
          digests.slice(0, 256).map((digest) =>
            tracker.announce(
              {
                peerId: node.peerId.toString(),
                multiaddrs: multiaddrs(),
                digest,
                role: 'seed',
                state: 'complete',
                event: 'stopped',
              },
              { signal },
            ),
          ),
        )
      }
    },

    blobAdded(digest) {
      if (!running) return
      if (tracker) {
        known.add(digest)
        enqueue(() => announce(digest, 'completed'))
      }
      enqueue(() => provide(digest))
    },

    announced() {
      return [...known]
    },
  }
}
