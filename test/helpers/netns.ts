/**
 * Network namespaces for end-to-end tests and the cluster testbed: create one with only
 * `lo` up, run commands and daemons inside it, delete it. Daemons enter a namespace with
 * `nsenter --net=/run/netns/<name>` (unlike `ip netns exec`, it keeps the cgroup mounts
 * visible, which dockerd and containerd need). Only loopback and addresses in
 * 198.18.0.0/15 may ever be used inside these namespaces.
 */
import { randomBytes } from 'node:crypto'
import { type CommandResult, type RunCommandOptions, runCommand } from './processes.js'

/** A network namespace this process created. */
export interface NetworkNamespace {
  readonly name: string
  /** `/run/netns/<name>`, for `nsenter --net=`. */
  readonly path: string
  /**
   * The command and arguments that run `command args` inside the namespace; pass them to
   * startProcess or runCommand. The process keeps its PID (nsenter execs, it does not fork).
   */
  wrap(command: string, args?: readonly string[]): { command: string; args: string[] }
  /** Runs a command inside the namespace; see runCommand for what it throws. */
  exec(command: string, args?: readonly string[], options?: RunCommandOptions): Promise<CommandResult>
  /** Deletes the namespace; safe to call twice. Processes inside must be stopped first. */
  delete(): Promise<void>
}

/** Namespace names must be short and unique; tests use this prefix. */
export const NETNS_PREFIX = 'shoal-e2e-'

/** The command line that runs `command args` inside the named namespace. */
export function nsenterCommand(
  name: string,
  command: string,
  args: readonly string[] = [],
): { command: string; args: string[] } {
  return { command: 'nsenter', args: [`--net=/run/netns/${name}`, '--', command, ...args] }
}

/**
 * Creates a network namespace (named `<prefix><random>` unless `name` is given) with
 * only the loopback interface, brought up. Throws if `ip netns add` fails (for example,
 * without root or when the name exists).
 */
export async function createNetns(init: { name?: string; prefix?: string } = {}): Promise<NetworkNamespace> {
  const name = init.name ?? `${init.prefix ?? NETNS_PREFIX}${randomBytes(4).toString('hex')}`
  await runCommand('ip', ['netns', 'add', name])
  let deleted = false
  const ns: NetworkNamespace = {
    name,
    path: `/run/netns/${name}`,
    wrap: (command, args = []) => nsenterCommand(name, command, args),
    exec: (command, args = [], options) => {
      const wrapped = nsenterCommand(name, command, args)
      return runCommand(wrapped.command, wrapped.args, options)
    },
    delete: async () => {
      if (deleted) return
      deleted = true
      await deleteNetns(name)
    },
  }
  try {
    await runCommand('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
  } catch (err) {
    await ns.delete()
    throw err
  }
  return ns
}

/** Deletes a namespace by name; a namespace that no longer exists is not an error. */
export async function deleteNetns(name: string): Promise<void> {
  const result = await runCommand('ip', ['netns', 'delete', name], { allowFailure: true })
  if (result.code !== 0 && !/No such file or directory/.test(result.stderr)) {
    throw new Error(`ip netns delete ${name} failed: ${result.stderr.trim()}`)
  }
}

/** The names of the namespaces that exist now (from `ip netns list`). */
export async function listNetns(): Promise<string[]> {
  const { stdout } = await runCommand('ip', ['netns', 'list'])
  return stdout
    .split('\n')
    .map((line) => line.split(' ')[0]?.trim() ?? '')
    .filter((name) => name.length > 0)
}
