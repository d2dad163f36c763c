/**
 * A private containerd for end-to-end tests: its own root, state, socket and `opt`
 * plugin path under the test's temp dir, CRI disabled, optionally inside a network
 * namespace; `ctr` wrappers (pull through a hosts dir or plain HTTP, run, remove); and
 * a writer for `certs.d/<host>/hosts.toml` mirror files.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { NetworkNamespace } from './netns.js'
import {
  type CommandResult,
  type ManagedProcess,
  type RunCommandOptions,
  runCommand,
  startProcess,
  waitFor,
} from './processes.js'

/** Options for {@link startContainerd}. */
export interface StartContainerdInit {
  /** A folder owned by this containerd (root, state, socket, opt, log). */
  dir: string
  /** Start it inside this namespace (its clients then see that namespace's loopback). */
  netns?: NetworkNamespace
  /** The containerd namespace `ctr` commands use. @default a random `e2e-<hex>` */
  namespace?: string
  /** @default 'overlayfs' */
  snapshotter?: 'overlayfs' | 'native'
  /** @default 30000 */
  startTimeoutMs?: number
}

/** Options for {@link Containerd.pull}. */
export interface PullOptions {
  /** A folder holding `<host>/hosts.toml` files (ctr 1.6 reads it itself). */
  hostsDir?: string
  /** Talk HTTP to the registry. */
  plainHttp?: boolean
  /** e.g. 'linux/amd64'; default is the host platform. */
  platform?: string
  /** Fetch every platform of an index. */
  allPlatforms?: boolean
  signal?: AbortSignal
  timeoutMs?: number
}

/** A running private containerd. */
export interface Containerd {
  /** The gRPC socket path, for `ctr -a` or dockerd's `containerd` option. */
  readonly socket: string
  readonly namespace: string
  readonly snapshotter: string
  readonly process: ManagedProcess
  readonly dir: string
  /**
   * Runs `ctr -a <socket> -n <namespace> ...args` (inside the namespace when there is
   * one). Throws CommandFailedError on failure unless `allowFailure`.
   */
  ctr(args: readonly string[], options?: RunCommandOptions): Promise<CommandResult>
  /** `ctr images pull` (and unpack); throws CommandFailedError on failure. */
  pull(ref: string, options?: PullOptions): Promise<CommandResult>
  /**
   * `ctr run --rm <ref> <id> [args]` and returns what the container printed. Throws
   * CommandFailedError when the container cannot start or exits non-zero.
   */
  run(
    ref: string,
    options?: { args?: string[]; id?: string; signal?: AbortSignal; timeoutMs?: number },
  ): Promise<string>
  /** The image names in the namespace (`ctr images ls -q`). */
  listImages(): Promise<string[]>
  /** Removes images by name; missing ones are ignored. */
  removeImages(refs: readonly string[]): Promise<void>
  /** Removes content blobs by digest; missing ones are ignored. */
  removeContent(digests: readonly string[]): Promise<void>
  /** Removes every image and every blob in the content store (the store is shared by all namespaces). */
  reset(): Promise<void>
  /** Kills leftover tasks, then stops containerd by PID. Safe to call twice. */
  stop(): Promise<void>
}

/**
 * The containerd 1.6 config (version 2) for a private daemon rooted at `dir`. The `opt`
 * plugin path is moved under `dir` so nothing lands in /opt.
 */
export function containerdConfig(dir: string): string {
  return [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '',
    '[grpc]',
    `  address = ${JSON.stringify(join(dir, 'containerd.sock'))}`,
    '',
    '[ttrpc]',
    `  address = ${JSON.stringify(join(dir, 'containerd.sock.ttrpc'))}`,
    '',
    '[debug]',
    '  address = ""',
    '',
    '[metrics]',
    '  address = ""',
    '',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${JSON.stringify(join(dir, 'opt'))}`,
    '',
  ].join('\n')
}

/**
 * Starts containerd with its own root, state and socket under `init.dir` and waits until
 * `ctr version` answers. Throws (with the log tail) if it exits or is not ready in time.
 */
export async function startContainerd(init: StartContainerdInit): Promise<Containerd> {
  const dir = init.dir
  await mkdir(dir, { recursive: true })
  const configPath = join(dir, 'config.toml')
  await writeFile(configPath, containerdConfig(dir))
  const socket = join(dir, 'containerd.sock')
  const namespace = init.namespace ?? `e2e-${randomBytes(4).toString('hex')}`
  const snapshotter = init.snapshotter ?? 'overlayfs'
  const command = init.netns
    ? init.netns.wrap('containerd', ['--config', configPath])
    : { command: 'containerd', args: ['--config', configPath] }
  const proc = await startProcess({ name: 'containerd', ...command, logDir: dir, stopTimeoutMs: 15_000 })

  const ctr = (args: readonly string[], options: RunCommandOptions = {}): Promise<CommandResult> => {
    const full = ['-a', socket, '-n', namespace, ...args]
    if (init.netns) return init.netns.exec('ctr', full, options)
    return runCommand('ctr', full, options)
  }

  try {
    await waitFor(async () => (await ctr(['version'], { timeoutMs: 5_000, allowFailure: true })).code === 0, {
      timeoutMs: init.startTimeoutMs ?? 30_000,
      description: 'containerd to answer ctr version',
      process: proc,
    })
  } catch (err) {
    await proc.stop()
    throw err
  }

  let stopped = false
  const lines = (text: string): string[] =>
    text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0)

  const daemon: Containerd = {
    socket,
    namespace,
    snapshotter,
    process: proc,
    dir,
    ctr,
    pull: (ref, options = {}) => {
      const args = ['images', 'pull', '--snapshotter', snapshotter]
      if (options.hostsDir) args.push('--hosts-dir', options.hostsDir)
      if (options.plainHttp) args.push('--plain-http')
      if (options.platform) args.push('--platform', options.platform)
      if (options.allPlatforms) args.push('--all-platforms')
      return ctr([...args, ref], { signal: options.signal, timeoutMs: options.timeoutMs ?? 300_000 })
    },
    run: async (ref, options = {}) => {
      const id = options.id ?? `t-${randomBytes(4).toString('hex')}`
      const result = await ctr(
        ['run', '--rm', '--snapshotter', snapshotter, ref, id, ...(options.args ?? [])],
        {
          signal: options.signal,
          timeoutMs: options.timeoutMs ?? 120_000,
        },
      )
      return result.stdout
    },
    listImages: async () => lines((await ctr(['images', 'ls', '-q'])).stdout),
    removeImages: async (refs) => {
      if (refs.length > 0) await ctr(['images', 'rm', ...refs], { allowFailure: true })
    },
    removeContent: async (digests) => {
      if (digests.length > 0) await ctr(['content', 'rm', ...digests], { allowFailure: true })
    },
    reset: async () => {
      await daemon.removeImages(await daemon.listImages())
      const content = lines((await ctr(['content', 'ls', '-q'])).stdout)
      await daemon.removeContent(content)
    },
    stop: async () => {
      if (stopped) return
      stopped = true
      if (proc.exitStatus() === undefined) {
        // Shims outlive containerd: kill and delete any task a failed test left running.
        const tasks = await ctr(['tasks', 'ls', '-q'], { allowFailure: true, timeoutMs: 10_000 }).catch(
          () => undefined,
        )
        for (const id of lines(tasks?.stdout ?? '')) {
          await ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { allowFailure: true, timeoutMs: 10_000 })
          await ctr(['tasks', 'delete', '-f', id], { allowFailure: true, timeoutMs: 10_000 })
        }
        const containers = await ctr(['containers', 'ls', '-q'], {
          allowFailure: true,
          timeoutMs: 10_000,
        }).catch(() => undefined)
        const ids = lines(containers?.stdout ?? '')
        if (ids.length > 0)
          await ctr(['containers', 'delete', ...ids], { allowFailure: true, timeoutMs: 10_000 })
      }
      await proc.stop()
    },
  }
  return daemon
}

/** One mirror in a hosts.toml file. */
export interface HostsMirror {
  /** e.g. `http://127.0.0.1:5001` */
  url: string
  /** @default ['pull', 'resolve'] */
  capabilities?: Array<'pull' | 'resolve' | 'push'>
  skipVerify?: boolean
  /** Extra headers sent to the mirror. */
  header?: Record<string, string>
}

/**
 * Writes `<hostsDir>/<host>/hosts.toml` telling containerd to try `mirrors` in order
 * before `server` (the upstream itself, `https://<host>` when not given) for images
 * named `<host>/...`. Returns the file's path. Pass `hostsDir` to `ctr --hosts-dir`.
 */
export async function writeHostsToml(init: {
  hostsDir: string
  /** The registry host as image names spell it: `127.0.0.1:5000`, `docker.io`, or `_default`. */
  host: string
  /** The upstream's URL. */
  server?: string
  mirrors: HostsMirror[]
}): Promise<string> {
  const lines: string[] = []
  const server = init.server ?? (init.host === 'docker.io' ? 'https://registry-1.docker.io' : undefined)
  if (server) lines.push(`server = ${JSON.stringify(server)}`, '')
  for (const mirror of init.mirrors) {
    lines.push(`[host.${JSON.stringify(mirror.url)}]`)
    lines.push(`  capabilities = ${JSON.stringify(mirror.capabilities ?? ['pull', 'resolve'])}`)
    if (mirror.skipVerify) lines.push('  skip_verify = true')
    if (mirror.header && Object.keys(mirror.header).length > 0) {
      lines.push(`  [host.${JSON.stringify(mirror.url)}.header]`)
      for (const [name, value] of Object.entries(mirror.header)) {
        lines.push(`    ${JSON.stringify(name)} = [${JSON.stringify(value)}]`)
      }
    }
    lines.push('')
  }
  const dir = join(init.hostsDir, init.host)
  await mkdir(dir, { recursive: true })
  const path = join(dir, 'hosts.toml')
  await writeFile(path, lines.join('\n'))
  return path
}
