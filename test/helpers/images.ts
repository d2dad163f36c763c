/**
 * Test images built without internet: a busybox rootfs and an optional layer of random
 * bytes turned into an OCI layout with umoci, pushed and pulled with skopeo, plus small
 * fetch-based helpers that push blobs and hand-written manifests over the OCI
 * distribution API.
 */
import { createHash, randomFillSync } from 'node:crypto'
import { createReadStream, createWriteStream, rmSync } from 'node:fs'
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { type Digest, digestOf, MEDIA_TYPES } from '../../protocol/src/index.js'
import type { NetworkNamespace } from './netns.js'
import { type CommandResult, findBinary, type RunCommandOptions, runCommand } from './processes.js'

/** The default message the test image's command prints. */
export const TEST_IMAGE_MESSAGE = 'hello from shoal'

/** Busybox applets linked in the test rootfs's /bin. */
const APPLETS = ['sh', 'echo', 'cat', 'ls', 'sleep', 'true', 'wc', 'sha256sum', 'head']

/** A layer or config as a manifest lists it. */
export interface BlobDescriptor {
  mediaType: string
  digest: Digest
  size: number
}

/** An image in an OCI layout on disk. */
export interface TestImage {
  /** The OCI layout folder. */
  layout: string
  tag: string
  /** `oci:<layout>:<tag>`, the skopeo reference. */
  ociRef: string
  /** What the image's default command prints. */
  message: string
  manifestDigest: Digest
  /** The manifest's exact bytes. */
  manifest: Buffer
  config: BlobDescriptor
  /** The layers, base (busybox) first. */
  layers: BlobDescriptor[]
}

/** Options for {@link buildTestImage}. */
export interface BuildTestImageInit {
  /** A folder the image is built in (the layout goes to `<dir>/layout`). */
  dir: string
  /** @default 'v1' */
  tag?: string
  /** The image runs `/bin/echo <message>`. @default TEST_IMAGE_MESSAGE */
  message?: string
  /** Adds a layer holding `/data/random.bin` of this many random bytes. @default 0 (none) */
  randomLayerBytes?: number
}

async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const chunkSize = 1 << 20
  let left = bytes
  const source = (async function* () {
    while (left > 0) {
      const chunk = Buffer.allocUnsafe(Math.min(chunkSize, left))
      randomFillSync(chunk)
      left -= chunk.length
      yield chunk
    }
  })()
  await pipeline(source, createWriteStream(path))
}

/**
 * Reads the image tagged `tag` in an OCI layout: its manifest bytes and digest, config
 * and layers. Throws if the tag is not in the layout's index.
 */
export async function readLayoutImage(layout: string, tag: string): Promise<Omit<TestImage, 'message'>> {
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as {
    manifests: Array<BlobDescriptor & { annotations?: Record<string, string> }>
  }
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)
  if (!entry) throw new Error(`tag ${tag} not found in OCI layout ${layout}`)
  const manifest = await readLayoutBlob(layout, entry.digest)
  const parsed = JSON.parse(manifest.toString('utf8')) as { config: BlobDescriptor; layers: BlobDescriptor[] }
  return {
    layout,
    tag,
    ociRef: `oci:${layout}:${tag}`,
    manifestDigest: entry.digest,
    manifest,
    config: parsed.config,
    layers: parsed.layers,
  }
}

/** The path of a blob in an OCI layout. */
export function layoutBlobPath(layout: string, digest: Digest): string {
  const [algorithm, hex] = digest.split(':') as [string, string]
  return join(layout, 'blobs', algorithm, hex)
}

/** Reads a blob from an OCI layout; throws ENOENT if it is absent. */
export async function readLayoutBlob(layout: string, digest: Digest): Promise<Buffer> {
  return readFile(layoutBlobPath(layout, digest))
}

/** The sha256 digest of a file, streamed. */
export async function fileDigest(path: string): Promise<Digest> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return `sha256:${hash.digest('hex')}`
}

/**
 * Builds an image with umoci: a rootfs holding the host's static busybox and its applet
 * links, whose command prints `message`, plus an optional random-bytes layer. Digests
 * differ at every build (timestamps). Throws CommandFailedError if a tool fails.
 */
export async function buildTestImage(
  init: BuildTestImageInit,
  options: { signal?: AbortSignal } = {},
): Promise<TestImage> {
  const tag = init.tag ?? 'v1'
  const message = init.message ?? TEST_IMAGE_MESSAGE
  const busybox = findBinary('busybox')
  if (!busybox) throw new Error('busybox not found (install busybox-static)')
  const layout = join(init.dir, 'layout')
  const bundle = join(init.dir, 'bundle')
  const run = (args: string[]): Promise<CommandResult> =>
    runCommand('umoci', args, { signal: options.signal, timeoutMs: 300_000 })

  await mkdir(init.dir, { recursive: true })
  await run(['init', '--layout', layout])
  await run(['new', '--image', `${layout}:base`])
  await run(['unpack', '--rootless', '--image', `${layout}:base`, bundle])
  const bin = join(bundle, 'rootfs', 'bin')
  await mkdir(bin, { recursive: true })
  await copyFile(busybox, join(bin, 'busybox'))
  await chmod(join(bin, 'busybox'), 0o755)
  for (const applet of APPLETS) await symlink('busybox', join(bin, applet))
  await run(['repack', '--image', `${layout}:base`, bundle])
  await run([
    'config',
    '--image',
    `${layout}:base`,
    '--tag',
    tag,
    '--config.cmd',
    '/bin/echo',
    '--config.cmd',
    message,
  ])
  if (init.randomLayerBytes && init.randomLayerBytes > 0) {
    const file = join(init.dir, 'random.bin')
    await writeRandomFile(file, init.randomLayerBytes)
    await run(['insert', '--image', `${layout}:${tag}`, '--tag', tag, file, '/data/random.bin'])
    await rm(file, { force: true })
  }
  await run(['rm', '--image', `${layout}:base`])
  await run(['gc', '--layout', layout])
  await rm(bundle, { recursive: true, force: true })
  return { ...(await readLayoutImage(layout, tag)), message }
}

let cacheDir: string | undefined
const cache = new Map<string, Promise<TestImage>>()

/**
 * Like {@link buildTestImage}, but builds each distinct image once per test process
 * and hands the same layout to every caller (treat it as read-only). The cache lives in
 * a temp dir removed by {@link clearTestImageCache} or when the process exits.
 */
export async function getTestImage(init: Omit<BuildTestImageInit, 'dir'> = {}): Promise<TestImage> {
  const key = JSON.stringify([
    init.tag ?? 'v1',
    init.message ?? TEST_IMAGE_MESSAGE,
    init.randomLayerBytes ?? 0,
  ])
  let built = cache.get(key)
  if (!built) {
    if (cacheDir === undefined) {
      const dir = await mkdtemp(join(tmpdir(), 'shoal-e2e-images-'))
      cacheDir = dir
      process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
    }
    built = buildTestImage({ ...init, dir: join(cacheDir, `image-${cache.size}`) })
    cache.set(key, built)
    built.catch(() => cache.delete(key))
  }
  return built
}

/** Removes every image {@link getTestImage} built. */
export async function clearTestImageCache(): Promise<void> {
  cache.clear()
  if (cacheDir !== undefined) {
    const dir = cacheDir
    cacheDir = undefined
    await rm(dir, { recursive: true, force: true })
  }
}

/** Options shared by the skopeo wrappers. */
export interface SkopeoOptions {
  /** Run skopeo inside this namespace (to reach a registry on its loopback). */
  netns?: NetworkNamespace
  signal?: AbortSignal
  timeoutMs?: number
}

async function skopeo(args: string[], options: SkopeoOptions): Promise<CommandResult> {
  const runOptions: RunCommandOptions = { signal: options.signal, timeoutMs: options.timeoutMs ?? 300_000 }
  const full = ['--insecure-policy', ...args]
  if (options.netns) return options.netns.exec('skopeo', full, runOptions)
  return runCommand('skopeo', full, runOptions)
}

/**
 * Copies an image with `skopeo copy` between any two transports (`oci:`, `dir:`,
 * `docker://`), TLS verification off on both sides (plain-HTTP registries on loopback).
 * `format: 'v2s2'` converts to Docker schema-2 media types; `all` copies every image of
 * an index. Throws CommandFailedError when skopeo fails.
 */
export async function skopeoCopy(
  source: string,
  destination: string,
  options: SkopeoOptions & { format?: 'oci' | 'v2s2'; all?: boolean } = {},
): Promise<void> {
  const args = ['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false']
  if (options.format) args.push('--format', options.format)
  if (options.all) args.push('--all')
  await skopeo([...args, source, destination], options)
}

/**
 * The exact manifest bytes of `ref` (`skopeo inspect --raw`, TLS verification off) and
 * their digest. Throws CommandFailedError when the manifest cannot be read.
 */
export async function inspectRaw(
  ref: string,
  options: SkopeoOptions = {},
): Promise<{ digest: Digest; raw: Buffer }> {
  const result = await skopeo(['inspect', '--raw', '--tls-verify=false', ref], options)
  return { digest: digestOf(result.stdoutBytes), raw: result.stdoutBytes }
}

/** Where {@link pushImage} put an image. */
export interface PushedImage {
  /** `<host>/<repository>:<tag>`, as containerd and docker name it. */
  reference: string
  /** The digest of the manifest the registry now serves for the tag. */
  digest: Digest
  /** The manifest bytes the registry serves. */
  manifest: Buffer
}

/**
 * Pushes a layout image to `docker://<host>/<repository>:<tag>` with skopeo (in its own
 * OCI media types, or Docker schema 2 with `format: 'v2s2'`), then reads back the
 * manifest the registry serves. `host` is `127.0.0.1:<port>`.
 */
export async function pushImage(
  image: Pick<TestImage, 'ociRef' | 'tag'>,
  init: { host: string; repository: string; tag?: string; format?: 'oci' | 'v2s2' },
  options: SkopeoOptions = {},
): Promise<PushedImage> {
  const reference = `${init.host}/${init.repository}:${init.tag ?? image.tag}`
  await skopeoCopy(image.ociRef, `docker://${reference}`, { ...options, format: init.format })
  const { digest, raw } = await inspectRaw(`docker://${reference}`, options)
  return { reference, digest, manifest: raw }
}

async function expectStatus(response: Response, expected: number[], what: string): Promise<void> {
  if (!expected.includes(response.status)) {
    const body = await response.text().catch(() => '')
    throw new Error(
      `${what}: HTTP ${response.status} (expected ${expected.join(' or ')}): ${body.slice(0, 500)}`,
    )
  }
}

/**
 * Uploads a blob to `<registryUrl>/v2/<repository>/blobs/uploads/` in one monolithic
 * POST + PUT and returns its descriptor. Throws when the registry refuses.
 */
export async function uploadBlob(
  registryUrl: string,
  repository: string,
  bytes: Uint8Array,
  mediaType: string = 'application/octet-stream',
): Promise<BlobDescriptor> {
  const digest = digestOf(bytes)
  const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' })
  await expectStatus(start, [202], `starting a blob upload to ${repository}`)
  await start.arrayBuffer()
  const location = start.headers.get('location')
  if (!location) throw new Error('blob upload started without a Location header')
  const url = new URL(location, registryUrl)
  url.searchParams.set('digest', digest)
  const put = await fetch(url, {
    method: 'PUT',
    body: bytes,
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.byteLength) },
  })
  await expectStatus(put, [201], `finishing the upload of ${digest}`)
  await put.arrayBuffer()
  return { mediaType, digest, size: bytes.byteLength }
}

/**
 * PUTs manifest bytes under `reference` (a tag or digest) and returns their digest.
 * Throws when the registry refuses (the error carries its body).
 */
export async function putManifest(
  registryUrl: string,
  repository: string,
  reference: string,
  bytes: Uint8Array,
  mediaType: string,
): Promise<Digest> {
  const response = await fetch(`${registryUrl}/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    body: bytes,
    headers: { 'content-type': mediaType },
  })
  await expectStatus(response, [201], `putting manifest ${repository}:${reference}`)
  await response.arrayBuffer()
  return digestOf(bytes)
}

/**
 * GETs a manifest with the common Accept headers; returns its bytes, content type and
 * Docker-Content-Digest. Throws on a non-200 answer.
 */
export async function getManifest(
  registryUrl: string,
  repository: string,
  reference: string,
): Promise<{ bytes: Buffer; mediaType: string; digestHeader: string | null }> {
  const accept = [
    MEDIA_TYPES.ociIndex,
    MEDIA_TYPES.ociManifest,
    MEDIA_TYPES.dockerManifestList,
    MEDIA_TYPES.dockerManifest,
  ].join(', ')
  const response = await fetch(`${registryUrl}/v2/${repository}/manifests/${reference}`, {
    headers: { accept },
  })
  await expectStatus(response, [200], `getting manifest ${repository}:${reference}`)
  return {
    bytes: Buffer.from(await response.arrayBuffer()),
    mediaType: response.headers.get('content-type') ?? '',
    digestHeader: response.headers.get('docker-content-digest'),
  }
}

/** GETs a blob's bytes; throws on a non-200 answer. */
export async function getBlob(registryUrl: string, repository: string, digest: Digest): Promise<Buffer> {
  const response = await fetch(`${registryUrl}/v2/${repository}/blobs/${digest}`)
  await expectStatus(response, [200], `getting blob ${digest} from ${repository}`)
  return Buffer.from(await response.arrayBuffer())
}
