/**
 * Child processes for end-to-end tests: daemons started with their output captured to
 * a log file in the test's temp dir, readiness waits that poll with a deadline, stop by
 * PID (SIGTERM, then SIGKILL), one-shot commands, and a LIFO cleanup stack so a failing
 * test still releases everything it started.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { accessSync, constants, createWriteStream } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, isAbsolute, join } from 'node:path'
import { createInterface } from 'node:readline'

/** How a process ended: its exit code, or the signal that killed it. */
export interface ExitStatus {
  code: number | null
  signal: NodeJS.Signals | null
}

/** Options for {@link startProcess}. */
export interface StartProcessInit {
  /** A short name used for the log file (`<logDir>/<name>.log`) and in error messages. */
  name: string
  command: string
  args?: string[]
  /** Folder for the log file, usually the test's temp dir. */
  logDir: string
  cwd?: string
  /** Added to (and overriding) the parent's environment. */
  env?: NodeJS.ProcessEnv
  /**
   * How long {@link ManagedProcess.stop} waits after SIGTERM before sending SIGKILL.
   * @default 10000
   */
  stopTimeoutMs?: number
}

/** A running child process whose stdout and stderr go to a log file. */
export interface ManagedProcess {
  readonly name: string
  readonly pid: number
  /** The file holding everything the process wrote to stdout and stderr. */
  readonly logFile: string
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<ExitStatus>
  /** The exit status once the process has exited, else undefined. */
  exitStatus(): ExitStatus | undefined
  /** The output lines seen so far (stdout and stderr interleaved; the last 20 000 kept). */
  lines(): readonly string[]
  /**
   * Waits until `match` returns a value other than undefined for an output line (past or
   * future) and returns that value. Throws when the deadline passes, the signal aborts,
   * or the process exits first; the error carries the tail of the log.
   */
  waitForLine<T>(
    match: (line: string, stream: 'stdout' | 'stderr') => T | undefined,
    options?: { timeoutMs?: number; description?: string; signal?: AbortSignal },
  ): Promise<T>
  /** The last `n` output lines joined, for error messages. */
  tail(n?: number): string
  /** The whole log file. */
  readLog(): Promise<string>
  /**
   * Stops the process by its PID: SIGTERM, then SIGKILL after the stop timeout. Safe to
   * call twice and after the process has exited; resolves with the exit status.
   */
  stop(options?: { timeoutMs?: number }): Promise<ExitStatus>
}

const MAX_LINES = 20_000
const live = new Set<ChildProcess>()
let exitHookInstalled = false

// If the test runner exits while daemons are still up (a crash or a timeout), kill our
// own children by PID so they do not outlive the run.
function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const child of live) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL')
        } catch {
          // Already gone.
        }
      }
    }
  })
}

/**
 * Spawns `command` with its output captured to `<logDir>/<name>.log`. Resolves once the
 * process has been spawned; throws when it cannot be spawned (for example, a missing
 * binary). Readiness is the caller's business: use waitForLine or {@link waitFor}.
 */
export async function startProcess(init: StartProcessInit): Promise<ManagedProcess> {
  installExitHook()
  const logFile = join(init.logDir, `${init.name}.log`)
  const log = createWriteStream(logFile, { flags: 'a' })
  const child = spawn(init.command, init.args ?? [], {
    cwd: init.cwd,
    env: { ...process.env, ...init.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve())
    child.once('error', reject)
  }).catch((err: unknown) => {
    log.end()
    throw new Error(`${init.name}: cannot start ${init.command}: ${(err as Error).message}`)
  })
  live.add(child)

  const pid = child.pid as number
  const entries: Array<{ line: string; stream: 'stdout' | 'stderr' }> = []
  const listeners = new Set<(line: string, stream: 'stdout' | 'stderr') => void>()
  let status: ExitStatus | undefined
  let closing = 0
  const logClosed = new Promise<void>((resolve) => log.once('close', () => resolve()))
  /** Resolves once the child has exited and its stdout and stderr are read to the end. */
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()))

  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('exit', (code, signal) => {
      status = { code, signal }
      live.delete(child)
      resolve(status)
    })
  })

  for (const stream of ['stdout', 'stderr'] as const) {
    const source = child[stream]
    if (source === null) continue
    closing++
    const reader = createInterface({ input: source, crlfDelay: Number.POSITIVE_INFINITY })
    reader.on('line', (line) => {
      log.write(stream === 'stderr' ? `[err] ${line}\n` : `${line}\n`)
      entries.push({ line, stream })
      if (entries.length > MAX_LINES) entries.splice(0, entries.length - MAX_LINES)
      for (const listener of listeners) listener(line, stream)
    })
    reader.once('close', () => {
      if (--closing === 0) log.end()
    })
  }

  const tail = (n = 40): string =>
    entries
      .slice(-n)
      .map((e) => e.line)
      .join('\n')

  const managed: ManagedProcess = {
    name: init.name,
    pid,
    logFile,
    exited,
    exitStatus: () => status,
    lines: () => entries.map((e) => e.line),
    tail,
    readLog: async () => {
      return readFile(logFile, 'utf8')
    },
    waitForLine: async (match, options = {}) => {
      const timeoutMs = options.timeoutMs ?? 30_000
      const what = options.description ?? 'the expected output line'
      for (const { line, stream } of entries) {
        const value = match(line, stream)
        if (value !== undefined) return value
      }
      return new Promise((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined
        const finish = (err: Error | undefined, value?: unknown): void => {
          listeners.delete(listener)
          clearTimeout(timer)
          options.signal?.removeEventListener('abort', onAbort)
          if (err) reject(err)
          else resolve(value as never)
        }
        const listener = (line: string, stream: 'stdout' | 'stderr'): void => {
          let value: unknown
          try {
            value = match(line, stream)
          } catch (err) {
            finish(err as Error)
            return
          }
          if (value !== undefined) finish(undefined, value)
        }
        const onAbort = (): void => finish(new Error(`${init.name}: aborted while waiting for ${what}`))
        listeners.add(listener)
        timer = setTimeout(
          () => finish(new Error(`${init.name}: no ${what} within ${timeoutMs} ms; log tail:\n${tail()}`)),
          timeoutMs,
        )
        options.signal?.addEventListener('abort', onAbort, { once: true })
        void exited.then(async (s) => {
          // 'exit' may come before the last lines in the pipes are read (a busy machine
          // ran a pull client's last line past it): let them arrive first. A grandchild
          // holding the pipes open must not keep the wait going, hence the bound.
          await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 2_000).unref())])
          finish(
            new Error(
              `${init.name} exited (code ${s.code}, signal ${s.signal}) before ${what}; log tail:\n${tail()}`,
            ),
          )
        })
      })
    },
    stop: async (options = {}) => {
      if (status === undefined) {
        try {
          process.kill(pid, 'SIGTERM')
        } catch {
          // It exited between the check and the kill.
        }
        const timeoutMs = options.timeoutMs ?? init.stopTimeoutMs ?? 10_000
        let timer: NodeJS.Timeout | undefined
        const timedOut = await Promise.race([
          exited.then(() => false),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(true), timeoutMs)
          }),
        ])
        clearTimeout(timer)
        if (timedOut && status === undefined) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // Already gone.
          }
        }
      }
      const result = await exited
      await logClosed
      return result
    },
  }
  return managed
}

/** Options for {@link waitFor}. */
export interface WaitForOptions {
  /** @default 30000 */
  timeoutMs?: number
  /** @default 100 */
  intervalMs?: number
  /** What is awaited, for the timeout message. */
  description?: string
  signal?: AbortSignal
  /** Give up at once (with its log tail) if this process exits while waiting. */
  process?: ManagedProcess
}

/**
 * Polls `check` until it returns a value other than undefined or false, and returns
 * that value. A throwing check counts as "not yet" and its last error is reported when
 * the deadline passes. Throws on timeout, abort, or exit of `options.process`.
 */
export async function waitFor<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  options: WaitForOptions = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 30_000
  const intervalMs = options.intervalMs ?? 100
  const what = options.description ?? 'condition'
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    options.signal?.throwIfAborted()
    try {
      const value = await check()
      if (value !== undefined && value !== false) return value
    } catch (err) {
      lastError = err
    }
    const exit = options.process?.exitStatus()
    if (options.process && exit) {
      throw new Error(
        `${options.process.name} exited (code ${exit.code}, signal ${exit.signal}) while waiting for ${what}; log tail:\n${options.process.tail()}`,
      )
    }
    if (Date.now() >= deadline) {
      const cause = lastError instanceof Error ? `: last error: ${lastError.message}` : ''
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`)
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/** What a finished command printed. */
export interface CommandResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  /** stdout as raw bytes (for digests of what a tool printed). */
  stdoutBytes: Buffer
  stderr: string
}

/** Options for {@link runCommand}. */
export interface RunCommandOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Written to the command's stdin. */
  input?: string | Uint8Array
  /**
   * Killed with SIGKILL after this long.
   * @default 120000
   */
  timeoutMs?: number
  /** Resolve with a non-zero exit instead of throwing. */
  allowFailure?: boolean
  signal?: AbortSignal
}

/** A command that exited non-zero, was killed, or timed out. */
export class CommandFailedError extends Error {
  override readonly name = 'CommandFailedError'
  readonly result: CommandResult
  constructor(message: string, result: CommandResult) {
    super(message)
    this.result = result
  }
}

/**
 * Runs a command to completion and returns its output. Throws CommandFailedError (with
 * the command line and the end of its stderr) when it exits non-zero, unless
 * `allowFailure`; throws when it cannot be spawned or times out.
 */
export async function runCommand(
  command: string,
  args: readonly string[],
  options: RunCommandOptions = {},
): Promise<CommandResult> {
  installExitHook()
  const timeoutMs = options.timeoutMs ?? 120_000
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  live.add(child)
  const out: Buffer[] = []
  const err: Buffer[] = []
  child.stdout.on('data', (b: Buffer) => out.push(b))
  child.stderr.on('data', (b: Buffer) => err.push(b))
  child.stdin.on('error', () => {
    // The command may exit without reading its input.
  })
  child.stdin.end(options.input ?? '')
  let timedOut = false
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  const timer = setTimeout(() => {
    timedOut = true
    kill()
  }, timeoutMs)
  options.signal?.addEventListener('abort', kill, { once: true })
  const line = [command, ...args].join(' ')
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', (e) => reject(new Error(`cannot run ${line}: ${e.message}`)))
      child.once('close', (c, s) => resolve([c, s]))
    })
    const stdoutBytes = Buffer.concat(out)
    const result: CommandResult = {
      code,
      signal,
      stdout: stdoutBytes.toString('utf8'),
      stdoutBytes,
      stderr: Buffer.concat(err).toString('utf8'),
    }
    if (timedOut) throw new CommandFailedError(`timed out after ${timeoutMs} ms: ${line}`, result)
    options.signal?.throwIfAborted()
    if (code !== 0 && !options.allowFailure) {
      const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-15).join('\n')
      throw new CommandFailedError(
        `command failed (code ${code}, signal ${signal}): ${line}\n${detail}`,
        result,
      )
    }
    return result
  } finally {
    clearTimeout(timer)
    options.signal?.removeEventListener('abort', kill)
    live.delete(child)
  }
}

// Which Debian package provides each binary the e2e suites need, for the error message.
const PACKAGE_OF: Record<string, string> = {
  skopeo: 'skopeo',
  umoci: 'umoci',
  ctr: 'containerd',
  containerd: 'containerd',
  'containerd-shim-runc-v2': 'containerd',
  runc: 'runc',
  dockerd: 'docker.io',
  '/usr/bin/docker': 'docker.io',
  'docker-registry': 'docker-registry',
  busybox: 'busybox-static',
  ip: 'iproute2',
  nsenter: 'util-linux',
}

/** The absolute path of `name` on PATH (or `name` itself if absolute and executable), else undefined. */
export function findBinary(name: string): string | undefined {
  const candidates = isAbsolute(name)
    ? [name]
    : (process.env.PATH ?? '').split(delimiter).map((dir) => join(dir, name))
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK)
      return path
    } catch {
      // Try the next one.
    }
  }
  return undefined
}

/**
 * Throws one error naming every missing binary and the Debian package that provides it,
 * and also when not running as root. End-to-end suites call this first so that a bare
 * machine fails loudly instead of skipping.
 */
export function requireBinaries(names: readonly string[], options: { root?: boolean } = {}): void {
  const problems: string[] = []
  const missing = names.filter((name) => findBinary(name) === undefined)
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((name) => PACKAGE_OF[name] ?? name))]
    problems.push(
      `missing binaries: ${missing.join(', ')} (install with: apt-get install -y ${packages.join(' ')})`,
    )
  }
  if ((options.root ?? true) && process.getuid?.() !== 0) {
    problems.push('the end-to-end suites must run as root (namespaces, mounts, containerd, dockerd)')
  }
  if (problems.length > 0) throw new Error(`e2e prerequisites not met: ${problems.join('; ')}`)
}

/** A LIFO stack of cleanup steps. */
export interface Cleanup {
  /** Registers a step; steps run in reverse order of registration. */
  add(step: () => unknown | Promise<unknown>, label?: string): void
  /**
   * Runs and forgets every registered step, newest first, even when some fail; then
   * throws an AggregateError naming the failed steps, if any.
   */
  run(): Promise<void>
}

/** Creates an empty {@link Cleanup} stack. */
export function createCleanup(): Cleanup {
  const steps: Array<{ step: () => unknown | Promise<unknown>; label: string }> = []
  return {
    add(step, label = 'cleanup step') {
      steps.push({ step, label })
    },
    async run() {
      const errors: Error[] = []
      while (steps.length > 0) {
        const { step, label } = steps.pop()!
        try {
          await step()
        } catch (err) {
          errors.push(new Error(`${label}: ${(err as Error).message}`))
        }
      }
      if (errors.length > 0) {
        throw new AggregateError(errors, `cleanup failed: ${errors.map((e) => e.message).join('; ')}`)
      }
    },
  }
}

/** Creates a fresh temp dir under the OS temp dir, named `<prefix>XXXXXX`. */
export async function createTempDir(prefix = 'shoal-e2e-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix))
}

// Mount points in /proc/self/mountinfo escape space, tab, newline and backslash in octal.
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)))
}

/** Mount points at or below `dir` in this process's mount namespace, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '')
  const prefix = dir.endsWith('/') ? dir : `${dir}/`
  return text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map(unescapeMountPath)
    .filter((p) => p === dir || p.startsWith(prefix))
    .sort((a, b) => b.length - a.length)
}

/**
 * Removes a temp dir that daemons may have mounted things in (containerd snapshots,
 * dockerd's layers): unmounts whatever is still mounted below it (lazily), then deletes
 * the tree. Safe on a missing dir.
 */
export async function removeTempDir(dir: string): Promise<void> {
  for (const mount of await mountsUnder(dir)) {
    await runCommand('umount', ['-l', mount], { allowFailure: true, timeoutMs: 10_000 })
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 3 })
}
