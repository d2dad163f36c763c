/**
 * Test helper: a Redis to test against. Uses REDIS_URL when set (CI provides one);
 * otherwise starts a throw-away redis-server on a free loopback port, without
 * persistence, and stops it by PID. Test-only.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createServer, Socket } from 'node:net'

/** A Redis for one test file. */
export interface TestRedis {
  url: string
  /** Stops the server when this helper started it. Safe to call twice. */
  stop(): Promise<void>
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const address = s.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      s.close(() => resolve(port))
    })
  })
}

async function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket()
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => done(false))
    socket.once('error', () => done(false))
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'))
    socket.once('data', (d) => done(d.toString().startsWith('+PONG')))
  })
}

/** Starts (or borrows, via REDIS_URL) a Redis; throws when redis-server does not come up within 10 s. */
export async function startTestRedis(): Promise<TestRedis> {
  const fromEnv = process.env.REDIS_URL
  if (fromEnv !== undefined && fromEnv !== '') return { url: fromEnv, stop: async () => {} }
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    const child: ChildProcess = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--loglevel',
        'warning',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    let exited = false
    const exitedPromise = new Promise<void>((resolve) =>
      child.once('exit', () => {
        exited = true
        resolve()
      }),
    )
    child.once('error', () => {
      exited = true
    })
    const deadline = Date.now() + 10_000
    while (!exited && Date.now() < deadline) {
      if (await ping(port)) {
        return {
          url: `redis://127.0.0.1:${port}`,
          async stop() {
            if (exited || child.pid === undefined) return
            process.kill(child.pid, 'SIGTERM')
            await exitedPromise
          },
        }
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    if (!exited && child.pid !== undefined) {
      process.kill(child.pid, 'SIGKILL')
      await exitedPromise
    }
  }
  throw new Error('redis-server did not start')
}
