/** Registry events: what webhooks receive and preheat rules react to. */

/** Event types. */
export const registryEventTypes = ['push', 'pull', 'delete', 'preheat'] as const
/** An event type. */
export type RegistryEventType = (typeof registryEventTypes)[number]

/** One registry event, as posted to webhooks (JSON). */
export interface RegistryEvent {
  /** Unique id (receivers may use it to drop duplicates after retries). */
  id: string
  type: RegistryEventType
  /** ISO time of the event. */
  at: string
  repository: string
  /** The tag, when the manifest was named by tag. */
  tag?: string
  /** The manifest (or, for a blob delete, the blob) digest. */
  digest?: string
  mediaType?: string
  /** For `preheat`: the job and its outcome. */
  job?: { id: string; state: string; reason?: string; image: string; scope: string }
}

/** Something that takes events. */
export type EventSink = (event: RegistryEvent) => void
