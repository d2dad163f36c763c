/**
 * Wraps a RegistryService so that manifest pushes, manifest pulls (GET, not HEAD) and
 * deletes are reported to an EventSink after they succeed. Every other call passes
 * through unchanged.
 */
import { randomUUID } from 'node:crypto'
import { isDigest } from '../../../protocol/src/index.js'
import type { RegistryService } from '../service.js'
import type { EventSink, RegistryEvent } from './types.js'

/** Returns a RegistryService that reports to `sink`. */
export function createObservedRegistry(inner: RegistryService, sink: EventSink): RegistryService {
  const event = (e: Omit<RegistryEvent, 'id' | 'at'>): void => {
    try {
      sink({ id: randomUUID(), at: new Date().toISOString(), ...e })
    } catch {
      // a failing sink never fails the registry operation
    }
  }
  const byRef = (reference: string) => (isDigest(reference) ? { digest: reference } : { tag: reference })
  const overrides: Partial<RegistryService> = {
    async putManifest(repository, reference, mediaType, body, options) {
      const result = await inner.putManifest(repository, reference, mediaType, body, options)
      const digest = (result as { digest?: string }).digest
      event({
        type: 'push',
        repository,
        ...byRef(reference),
        ...(digest === undefined ? {} : { digest }),
        ...(mediaType === undefined ? {} : { mediaType }),
      })
      return result
    },
    async getManifest(repository, reference, options) {
      const record = await inner.getManifest(repository, reference, options)
      const r = record as { digest?: string; mediaType?: string }
      event({
        type: 'pull',
        repository,
        ...byRef(reference),
        ...(r.digest === undefined ? {} : { digest: r.digest }),
        ...(r.mediaType === undefined ? {} : { mediaType: r.mediaType }),
      })
      return record
    },
    async deleteManifest(repository, reference, options) {
      await inner.deleteManifest(repository, reference, options)
      event({ type: 'delete', repository, ...byRef(reference) })
    },
    async deleteBlob(repository, digest, options) {
      await inner.deleteBlob(repository, digest, options)
      event({ type: 'delete', repository, digest })
    },
  }
  return new Proxy(inner, {
    get(target, prop, receiver) {
      if (typeof prop === 'string' && prop in overrides) return overrides[prop as keyof RegistryService]
      const value = Reflect.get(target, prop, receiver)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}
