/**
 * The two sides of the transfer benchmark run as child processes, so the CPU each
 * side uses can be read from /proc/<pid>/stat. They talk to the parent in JSON lines:
 * requests on stdin, replies on stdout (`{ id, ok, result }` or `{ id, ok: false,
 * error }`); stderr is passed through for errors.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { resolve } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { Session } from 'node:inspector/promises'
import { createInterface } from 'node:readline'

/** A request to a worker: a command name and its arguments. */
export interface WorkerRequest {
  cmd: string
  [key: string]: unknown
}

/** A child process answering WorkerRequests. */
export interface Worker {
  readonly pid: number
  /** Sends a request and resolves with the worker's result. @throws the worker's error */
  request<T>(req: WorkerRequest): Promise<T>
  /** Asks the worker to stop, then waits for it to exit (SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<void>
}

/**
 * Starts `script` (a .ts file run through bin/run-ts.js) as a worker; resolves once it
 * answered a `ping`. `nodeOptions` go before the script (e.g. --cpu-prof).
 */
export async function startWorker(script: string, init: { nodeOptions?: string[] } = {}): Promise<Worker> {
  const child: ChildProcess = spawn(
    process.execPath,
    [...(init.nodeOptions ?? []), resolve('bin/run-ts.js'), script],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  let nextId = 1
  let exitError: Error | undefined
  const exited = new Promise<void>((done) => {
    child.once('exit', (code, signal) => {
      exitError = new Error(`worker ${script} exited (${code ?? signal})`)
      for (const p of pending.values()) p.reject(exitError)
      pending.clear()
      done()
    })
  })
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let msg: { id?: number; ok?: boolean; result?: unknown; error?: string }
    try {
      msg = JSON.parse(line)
    } catch {
      process.stderr.write(`${line}\n`)
      return
    }
    const p = msg.id === undefined ? undefined : pending.get(msg.id)
    if (p === undefined) return
    pending.delete(msg.id!)
    if (msg.ok === true) p.resolve(msg.result)
    else p.reject(new Error(msg.error ?? 'worker failed'))
  })

  const worker: Worker = {
    pid: child.pid ?? -1,
    request<T>(req: WorkerRequest): Promise<T> {
      if (exitError) return Promise.reject(exitError)
      const id = nextId++
      return new Promise<T>((res, rej) => {
        pending.set(id, { resolve: res as (v: unknown) => void, reject: rej })
        child.stdin!.write(`${JSON.stringify({ ...req, id })}\n`)
      })
    },
    async stop(graceMs = 10_000) {
      if (exitError) return
      child.stdin!.end()
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
    },
  }
  await worker.request({ cmd: 'ping' })
  return worker
}

/**
 * The worker side: answers requests from stdin with `handle`, one line each, and calls
 * `close` (then exits) when stdin ends.
 */
export function serveRequests(
  handle: (req: WorkerRequest) => Promise<unknown>,
  close: () => Promise<void>,
): void {
  const lines = createInterface({ input: process.stdin })
  let session: Session | undefined
  // CPU profiles of just the transfers asked for (not start-up or other phases).
  const builtin = async (req: WorkerRequest): Promise<unknown> => {
    if (req.cmd === 'ping') return 'pong'
    if (req.cmd === 'profile-start') {
      session = new Session()
      session.connect()
      await session.post('Profiler.enable')
      await session.post('Profiler.setSamplingInterval', { interval: 200 })
      await session.post('Profiler.start')
      return null
    }
    if (req.cmd === 'profile-stop') {
      if (session === undefined) throw new Error('no profile running')
      const { profile } = await session.post('Profiler.stop')
      session.disconnect()
      session = undefined
      await writeFile(String(req.path), JSON.stringify(profile))
      return null
    }
    return handle(req)
  }
  lines.on('line', (line) => {
    const req = JSON.parse(line) as WorkerRequest & { id: number }
    const reply = builtin(req)
    reply.then(
      (result) => process.stdout.write(`${JSON.stringify({ id: req.id, ok: true, result })}\n`),
      (err: unknown) =>
        process.stdout.write(
          `${JSON.stringify({ id: req.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) })}\n`,
        ),
    )
  })
  lines.on('close', () => {
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`${String(err)}\n`)
        process.exit(1)
      },
    )
  })
}
