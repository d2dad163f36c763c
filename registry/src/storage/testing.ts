/**
 * Test helpers for the storage layer: generated blobs and manifests, and a way to drain
 * a stream. Used by the storage unit tests; fine for other suites too.
 */
import type { Readable } from 'node:stream'
import { type Descriptor, type Digest, digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'

/** Bytes of a generated blob of `size` bytes and their digest. */
export function blobFixture(size: number, seed = 1): { bytes: Buffer; digest: Digest } {
  const bytes = Buffer.alloc(size)
  let x = seed >>> 0 || 1
  for (let i = 0; i < size; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    bytes[i] = x & 0xff
  }
  return { bytes, digest: digestOf(bytes) }
}

/** Reads a stream to the end. */
export async function drain(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array))
  return Buffer.concat(chunks)
}

/** A descriptor of some bytes. */
export function descriptorOf(mediaType: string, bytes: Uint8Array): Descriptor {
  return { mediaType, digest: digestOf(bytes), size: bytes.byteLength }
}

/** An OCI image manifest body referencing `config` and `layers`. */
export function imageManifest(
  config: Descriptor,
  layers: Descriptor[],
  extra: Record<string, unknown> = {},
): Buffer {
  return Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config, layers, ...extra }),
  )
}

/** An OCI index body referencing `manifests`. */
export function imageIndex(manifests: Descriptor[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests, ...extra }),
  )
}

/** An upload body yielding `parts` in order. */
export async function* bodyOf(...parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p
}
