/**
 * A private dockerd for end-to-end tests, inside a network namespace that has only
 * `lo`, so a docker.io pull that falls back past a mirror cannot leave the machine. It
 * has its own data-root, exec-root, pidfile and socket under the test's temp dir, no
 * bridge or iptables changes, and talks to a private containerd started in the same
 * namespace. The client is Debian's /usr/bin/docker (a newer /usr/local/bin/docker may
 * shadow it).
 */
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { type Containerd, startContainerd } from './containerd.js'
import { createNetns, type NetworkNamespace } from './netns.js'
import {
  type CommandResult,
  type ManagedProcess,
  type RunCommandOptions,
  runCommand,
  startProcess,
  waitFor,
} from './processes.js'

/** The Docker client matching Debian's dockerd. */
export const DOCKER_CLIENT = '/usr/bin/docker'

/** Options for {@link startDockerd}. */
export interface StartDockerdInit {
  /** A folder owned by this dockerd and its containerd. */
  dir: string
  /**
   * The namespace to run in. When absent, one with only `lo` is created and deleted by
   * stop().
   */
  netns?: NetworkNamespace
  /** @default 'vfs' */
  storageDriver?: 'vfs' | 'overlay2'
  /** e.g. `['http://127.0.0.1:5001']`; mirrors apply to docker.io images only. */
  registryMirrors?: string[]
  /** e.g. `['127.0.0.1:5000']`: registries dockerd may talk plain HTTP to. */
  insecureRegistries?: string[]
  /** More daemon.json keys. */
  extraConfig?: Record<string, unknown>
  /** @default 60000 */
  startTimeoutMs?: number
}

/** A running private dockerd. */
export interface Dockerd {
  /** The unix socket path (`docker -H unix://<socket>`). */
  readonly socket: string
  readonly netns: NetworkNamespace
  readonly containerd: Containerd
  readonly process: ManagedProcess
  /** Runs `/usr/bin/docker -H unix://<socket> ...args`; throws CommandFailedError unless `allowFailure`. */
  docker(args: readonly string[], options?: RunCommandOptions): Promise<CommandResult>
  /** `docker pull <ref>`; throws CommandFailedError on failure. */
  pull(ref: string, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<CommandResult>
  /** `docker image inspect <ref>`, parsed. Throws when the image is absent. */
  inspectImage(ref: string): Promise<DockerImageInspect>
  /** `docker run --rm --network none <ref> [args]`, returning what the container printed. */
  run(ref: string, options?: { args?: string[]; signal?: AbortSignal; timeoutMs?: number }): Promise<string>
  /** Removes every image (forcibly), so the next pull fetches every blob again. */
  removeAllImages(): Promise<void>
  /** Stops dockerd, then its containerd, by PID, and deletes a namespace it created. Safe to call twice. */
  stop(): Promise<void>
}

/** The parts of `docker image inspect` the tests read. */
export interface DockerImageInspect {
  Id: string
  RepoTags: string[]
  RepoDigests: string[]
  Architecture: string
  Os: string
  Size: number
  Config: { Cmd: string[] | null }
  RootFS: { Type: string; Layers: string[] }
}

/**
 * Starts containerd and dockerd inside a loopback-only namespace and waits until
 * `docker version` answers. Throws (with the log tail) when either fails to start;
 * everything already started is stopped first.
 */
export async function startDockerd(init: StartDockerdInit): Promise<Dockerd> {
  const dir = init.dir
  await mkdir(dir, { recursive: true })
  const ownNetns = init.netns === undefined
  const netns = init.netns ?? (await createNetns())
  let containerd: Containerd | undefined
  let proc: ManagedProcess | undefined
  const socket = join(dir, 'docker.sock')

  const docker = (args: readonly string[], options: RunCommandOptions = {}): Promise<CommandResult> => {
    const wrapped = netns.wrap(DOCKER_CLIENT, ['-H', `unix://${socket}`, ...args])
    return runCommand(wrapped.command, wrapped.args, options)
  }

  const stopAll = async (): Promise<void> => {
    const errors: unknown[] = []
    for (const step of [
      () => proc?.stop({ timeoutMs: 20_000 }),
      () => containerd?.stop(),
      () => (ownNetns ? netns.delete() : undefined),
    ]) {
      try {
        await step()
      } catch (err) {
        errors.push(err)
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'stopping dockerd failed')
  }

  try {
    // Random namespaces: runc keeps state per containerd namespace under /run/containerd,
    // which every containerd on the machine shares.
    const namespace = `e2e-docker-${randomBytes(4).toString('hex')}`
    containerd = await startContainerd({ dir: join(dir, 'containerd'), netns, namespace })
    const config = {
      'data-root': join(dir, 'data'),
      'exec-root': join(dir, 'exec'),
      pidfile: join(dir, 'docker.pid'),
      hosts: [`unix://${socket}`],
      'storage-driver': init.storageDriver ?? 'vfs',
      iptables: false,
      ip6tables: false,
      'ip-forward': false,
      'ip-masq': false,
      bridge: 'none',
      'registry-mirrors': init.registryMirrors ?? [],
      'insecure-registries': init.insecureRegistries ?? [],
      containerd: containerd.socket,
      'containerd-namespace': namespace,
      'containerd-plugins-namespace': `${namespace}-plugins`,
      ...init.extraConfig,
    }
    const configPath = join(dir, 'daemon.json')
    await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`)
    proc = await startProcess({
      name: 'dockerd',
      ...netns.wrap('dockerd', ['--config-file', configPath]),
      logDir: dir,
      stopTimeoutMs: 20_000,
    })
    await waitFor(
      async () => (await docker(['version'], { allowFailure: true, timeoutMs: 10_000 })).code === 0,
      {
        timeoutMs: init.startTimeoutMs ?? 60_000,
        intervalMs: 250,
        description: 'dockerd to answer docker version',
        process: proc,
      },
    )
  } catch (err) {
    await stopAll().catch(() => undefined)
    throw err
  }

  let stopped = false
  const startedProcess = proc
  const startedContainerd = containerd
  return {
    socket,
    netns,
    containerd: startedContainerd,
    process: startedProcess,
    docker,
    pull: (ref, options = {}) =>
      docker(['pull', ref], { signal: options.signal, timeoutMs: options.timeoutMs ?? 300_000 }),
    inspectImage: async (ref) => {
      const { stdout } = await docker(['image', 'inspect', ref])
      const parsed = JSON.parse(stdout) as DockerImageInspect[]
      if (!parsed[0]) throw new Error(`docker image inspect ${ref} returned nothing`)
      return parsed[0]
    },
    run: async (ref, options = {}) => {
      const result = await docker(['run', '--rm', '--network', 'none', ref, ...(options.args ?? [])], {
        signal: options.signal,
        timeoutMs: options.timeoutMs ?? 120_000,
      })
      return result.stdout
    },
    removeAllImages: async () => {
      const ids = (await docker(['image', 'ls', '-a', '-q'])).stdout
        .split('\n')
        .filter((id) => id.trim() !== '')
      if (ids.length > 0) await docker(['image', 'rm', '-f', ...new Set(ids)])
    },
    stop: async () => {
      if (stopped) return
      stopped = true
      await stopAll()
    },
  }
}
