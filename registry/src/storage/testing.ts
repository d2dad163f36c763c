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

/** The small surface of RegistryService the helpers below need. */
interface Pusher {
  startUpload(repository: string): Promise<{ id: string }>
  completeUpload(
    repository: string,
    id: string,
    digest: string,
    body?: AsyncIterable<Uint8Array>,
  ): Promise<{ digest: Digest; size: number }>
  putManifest(
    repository: string,
    reference: string,
    mediaType: string | undefined,
    body: Uint8Array,
  ): Promise<{ digest: Digest }>
}

/** Uploads `bytes` monolithically into `repository`. */
export async function pushBlob(r: Pusher, repository: string, bytes: Uint8Array): Promise<Digest> {
  const u = await r.startUpload(repository)
  return (await r.completeUpload(repository, u.id, digestOf(bytes), bodyOf(bytes))).digest
}

/** Pushes a small image (config + layers) and its manifest under `reference`. */
export async function pushImage(
  r: Pusher,
  repository: string,
  reference: string,
  init: { layers?: Uint8Array[]; seed?: number; extra?: Record<string, unknown> } = {},
): Promise<{ digest: Digest; body: Buffer; config: Descriptor; layers: Descriptor[] }> {
  const seed = init.seed ?? 1
  const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }))
  const layerBytes = init.layers ?? [blobFixture(64 + seed, seed).bytes]
  await pushBlob(r, repository, configBytes)
  for (const l of layerBytes) await pushBlob(r, repository, l)
  const config = descriptorOf(MEDIA_TYPES.ociConfig, configBytes)
  const layers = layerBytes.map((l) => descriptorOf(MEDIA_TYPES.ociLayerGzip, l))
  const body = imageManifest(config, layers, init.extra)
  const { digest } = await r.putManifest(repository, reference, MEDIA_TYPES.ociManifest, body)
  return { digest, body, config, layers }
}
