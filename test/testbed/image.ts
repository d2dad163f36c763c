/**
 * Benchmark images written straight into an OCI layout: `layers` uncompressed tar
 * layers, each holding one file of random bytes (random bytes do not compress, so the
 * size on the wire is the size asked for), plus a config that lists their diff ids.
 * The result is a real image: skopeo pushes it and containerd unpacks it.
 */
import { createHash, randomFillSync } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Digest } from '../../protocol/src/index.js'
import type { BlobDescriptor } from '../helpers/images.js'

/** An image in an OCI layout on disk. */
export interface BenchImage {
  layout: string
  tag: string
  /** `oci:<layout>:<tag>`, for skopeo. */
  ociRef: string
  manifestDigest: Digest
  config: BlobDescriptor
  layers: BlobDescriptor[]
  /** Config plus layers: the bytes a pull moves (the manifest aside). */
  totalBytes: number
}

const LAYER_MEDIA_TYPE = 'application/vnd.oci.image.layer.v1.tar'

/** A ustar header for one regular file `name` of `size` bytes. */
export function tarHeader(name: string, size: number): Buffer {
  const header = Buffer.alloc(512)
  const field = (offset: number, length: number, value: string): void => {
    header.write(value, offset, length, 'ascii')
  }
  const octal = (value: number, length: number): string => value.toString(8).padStart(length - 1, '0') + '\0'
  field(0, 100, name)
  field(100, 8, octal(0o644, 8))
  field(108, 8, octal(0, 8))
  field(116, 8, octal(0, 8))
  field(124, 12, octal(size, 12))
  field(136, 12, octal(0, 12))
  field(148, 8, '        ')
  field(156, 1, '0')
  field(257, 6, 'ustar\0')
  field(263, 2, '00')
  let sum = 0
  for (const byte of header) sum += byte
  field(148, 8, sum.toString(8).padStart(6, '0') + '\0 ')
  return header
}

async function writeBlob(
  layout: string,
  chunks: Iterable<Buffer>,
): Promise<{ digest: Digest; size: number }> {
  const temp = join(layout, 'blobs', `tmp-${process.pid}-${Date.now()}`)
  const hash = createHash('sha256')
  const out = createWriteStream(temp)
  let size = 0
  for (const chunk of chunks) {
    hash.update(chunk)
    size += chunk.length
    if (!out.write(chunk)) await new Promise<void>((resolve) => out.once('drain', () => resolve()))
  }
  await new Promise<void>((resolve, reject) =>
    out.end((err?: Error | null) => (err ? reject(err) : resolve())),
  )
  const hex = hash.digest('hex')
  await rename(temp, join(layout, 'blobs', 'sha256', hex))
  return { digest: `sha256:${hex}`, size }
}

function* randomTar(name: string, bytes: number): Generator<Buffer> {
  yield tarHeader(name, bytes)
  const chunkSize = 1 << 20
  for (let left = bytes; left > 0; ) {
    const chunk = Buffer.allocUnsafe(Math.min(chunkSize, left))
    randomFillSync(chunk)
    left -= chunk.length
    yield chunk
  }
  const padding = (512 - (bytes % 512)) % 512
  yield Buffer.alloc(padding + 1024)
}

/**
 * Writes an image of about `totalBytes` split evenly over `layers` random layers into a
 * new OCI layout at `dir`. Digests differ at every call.
 * @throws {RangeError} when layers < 1 or totalBytes < layers
 */
export async function writeBenchImage(init: {
  dir: string
  totalBytes: number
  layers: number
  tag?: string
}): Promise<BenchImage> {
  if (!Number.isInteger(init.layers) || init.layers < 1)
    throw new RangeError('layers must be a positive integer')
  if (init.totalBytes < init.layers) throw new RangeError('the image must have at least one byte per layer')
  const tag = init.tag ?? 'v1'
  const layout = init.dir
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true })
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  const layers: BlobDescriptor[] = []
  const base = Math.floor(init.totalBytes / init.layers)
  for (let i = 0; i < init.layers; i++) {
    // The tar framing adds about 1.5 KiB per layer; take it out of the payload.
    const payload = Math.max(
      1,
      (i === init.layers - 1 ? init.totalBytes - base * (init.layers - 1) : base) - 2048,
    )
    const blob = await writeBlob(layout, randomTar(`layer-${i}.bin`, payload))
    layers.push({ mediaType: LAYER_MEDIA_TYPE, ...blob })
  }
  const configJson = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/layer-0.bin'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    }),
  )
  const config = {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    ...(await writeBlob(layout, [configJson])),
  }
  const manifestJson = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config,
      layers,
    }),
  )
  const manifest = await writeBlob(layout, [manifestJson])
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  )
  return {
    layout,
    tag,
    ociRef: `oci:${layout}:${tag}`,
    manifestDigest: manifest.digest,
    config,
    layers,
    totalBytes: config.size + layers.reduce((sum, l) => sum + l.size, 0),
  }
}
