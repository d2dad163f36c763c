/**
 * Starts a server binary as a child process for a benchmark and stops it by its PID.
 * Its stdout and stderr go straight to log files (not through this process), so a
 * chatty server costs the benchmark client nothing; readiness is found by polling.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { openSync, closeSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'

/** A running child process started by `startServiceProcess`. */
export interface ServiceProcess {
  pid: number
  stdoutPath: string
  stderrPath: string
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>
  /**
   * Polls the stdout file until a line satisfies `match` and returns that line.
   * @throws when the process exits first or `timeoutMs` passes
   */
  waitForStdoutLine(match: (line: string) => boolean, timeoutMs: number): Promise<string>
  /** Sends SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. Safe to call twice. */
  stop(graceMs?: number): Promise<void>
}

/** How to start a service process. */
export interface ServiceProcessInit {
  command: string
  args: string[]
  stdoutPath: string
  stderrPath: string
  cwd?: string
  env?: NodeJS.ProcessEnv
}

/**
 * Spawns `command` with its output in the given files.
 * @throws when the process cannot be spawned
 */
export function startServiceProcess(init: ServiceProcessInit): ServiceProcess {
  const out = openSync(init.stdoutPath, 'w')
  const err = openSync(init.stderrPath, 'w')
  let child: ChildProcess
  try {
    child = spawn(init.command, init.args, {
      cwd: init.cwd,
      env: init.env ?? process.env,
      stdio: ['ignore', out, err],
    })
  } finally {
    closeSync(out)
    closeSync(err)
  }
  if (child.pid === undefined) throw new Error(`could not start ${init.command}`)
  const pid = child.pid
  let exitValue: number | string | undefined
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      exitValue = code ?? signal ?? 'unknown'
      resolve(exitValue)
    })
    child.once('error', (error) => {
      exitValue = error.message
      resolve(exitValue)
    })
  })

  return {
    pid,
    stdoutPath: init.stdoutPath,
    stderrPath: init.stderrPath,
    exited,
    async waitForStdoutLine(match, timeoutMs) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const lines = readFileSync(init.stdoutPath, 'utf8').split('\n')
        const found = lines.find((line) => line !== '' && match(line))
        if (found !== undefined) return found
        if (exitValue !== undefined) {
          const stderr = readFileSync(init.stderrPath, 'utf8').slice(-2000)
          throw new Error(`${init.command} exited (${exitValue}) before it was ready:\n${stderr}`)
        }
        if (Date.now() > deadline) throw new Error(`${init.command} was not ready within ${timeoutMs} ms`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    },
    async stop(graceMs = 5000) {
      if (exitValue !== undefined) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
    },
  }
}

/**
 * Asks the kernel for a free loopback TCP port. Another process may take it before it
 * is used; that is acceptable for servers that cannot bind to port 0 themselves.
 */
export async function findFreePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, host, () => {
      const address = server.address()
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port)
        else reject(new Error('no port'))
      })
    })
  })
}

/**
 * Polls `url` until it answers with a status below 500, or throws after `timeoutMs`.
 * @throws when the deadline passes
 */
export async function waitForHttp(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1000) })
      await response.arrayBuffer()
      if (response.status < 500) return
    } catch {}
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
