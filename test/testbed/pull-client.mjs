#!/usr/bin/env node
// The testbed's image puller, run inside a node namespace with plain `node` (no tsx:
// fifty of them start at once on two cores). It waits until --start-at (epoch ms, the
// same moment for every node), then pulls the manifest of --repo:--ref from --url and
// every blob it lists, in parallel, checking each blob's sha256, and discards the bytes.
// With --ns it adds `?ns=<host>` as containerd does through a mirror. It writes JSON
// lines to stdout: ready, progress (bytes so far, every 500 ms), then done or error
// (with cpuMs, the client's own CPU time since the start).
// With --exec it runs the command after `--` at the start time instead (e.g. a real
// `ctr images pull`) and reports when it exits (bytes are then unknown: 0).
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import http from 'node:http'
import { parseArgs } from 'node:util'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    exec: { type: 'boolean', default: false },
    url: { type: 'string' },
    repo: { type: 'string' },
    ref: { type: 'string' },
    ns: { type: 'string' },
    'start-at': { type: 'string' },
    'timeout-ms': { type: 'string', default: '1800000' },
  },
})
if (!values.exec && (!values.url || !values.repo || !values.ref)) {
  process.stderr.write('usage: pull-client.mjs --url URL --repo NAME --ref TAG [--ns HOST] [--start-at MS]\n')
  process.exit(2)
}

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ')

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
let bytes = 0

function emit(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`)
}

function target(path) {
  const url = new URL(path, values.url)
  if (values.ns) url.searchParams.set('ns', values.ns)
  return url
}

/**
 * GETs `path` from byte `from` on (a Range request, as containerd resumes), feeding
 * `hash`; resolves to the bytes read (and the body when `keep`), rejects on an error
 * status or a broken connection with `received` set to the bytes read so far.
 */
function getOnce(path, { accept, keep, from, hash }) {
  return new Promise((resolve, reject) => {
    const headers = {}
    if (accept) headers.accept = accept
    if (from > 0) headers.range = `bytes=${from}-`
    let received = 0
    const request = http.get(target(path), { agent, headers }, (response) => {
      const expected = from > 0 ? 206 : 200
      if (response.statusCode !== expected) {
        const chunks = []
        response.on('data', (c) => chunks.push(c))
        response.on('end', () => {
          const err = new Error(
            `GET ${path}: HTTP ${response.statusCode} ${Buffer.concat(chunks).toString().slice(0, 300)}`,
          )
          err.fatal = true
          reject(err)
        })
        return
      }
      const kept = []
      response.on('data', (chunk) => {
        hash.update(chunk)
        received += chunk.length
        bytes += chunk.length
        if (keep) kept.push(chunk)
      })
      response.on('end', () => resolve({ body: keep ? Buffer.concat(kept) : undefined, received }))
      response.on('aborted', () => reject(Object.assign(new Error(`GET ${path}: aborted`), { received })))
      response.on('error', (err) => reject(Object.assign(err, { received })))
    })
    request.on('error', (err) => reject(Object.assign(err, { received })))
  })
}

let retries = 0

/** GETs `path` whole, resuming with Range after a broken connection (up to 5 times). */
async function get(path, { accept, keep }) {
  const hash = createHash('sha256')
  const parts = []
  let size = 0
  for (let attempt = 0; ; attempt++) {
    try {
      const got = await getOnce(path, { accept, keep, from: size, hash })
      size += got.received
      if (keep) parts.push(got.body)
      return { body: keep ? Buffer.concat(parts) : undefined, digest: `sha256:${hash.digest('hex')}`, size }
    } catch (err) {
      // A kept body (the manifest) is small: start it over rather than splice parts.
      if (err.fatal || attempt >= 5 || keep) throw err
      size += err.received ?? 0
      retries++
      emit({ event: 'retry', path, from: size, message: String(err.message) })
    }
  }
}

/** Runs the command after `--`; rejects with the end of its stderr when it fails. */
function execPull() {
  return new Promise((resolve, reject) => {
    const [command, ...args] = positionals
    if (!command) return reject(new Error('--exec needs a command after --'))
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (c) => {
      stderr = (stderr + c).slice(-2000)
    })
    child.on('error', reject)
    child.on('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${command} exited ${code ?? signal}: ${stderr.trim()}`)),
    )
  })
}

async function pull() {
  if (values.exec) return execPull()
  const repo = values.repo
  const manifest = await get(`/v2/${repo}/manifests/${values.ref}`, { accept: ACCEPT, keep: true })
  const parsed = JSON.parse(manifest.body.toString('utf8'))
  if (!parsed.config || !Array.isArray(parsed.layers)) throw new Error('not an image manifest')
  const blobs = [parsed.config, ...parsed.layers]
  await Promise.all(
    blobs.map(async (descriptor) => {
      const got = await get(`/v2/${repo}/blobs/${descriptor.digest}`, { keep: false })
      if (got.digest !== descriptor.digest || got.size !== descriptor.size) {
        throw new Error(`blob ${descriptor.digest}: got ${got.digest} (${got.size} bytes)`)
      }
    }),
  )
}

emit({ event: 'ready', pid: process.pid })
const startAt = Number(values['start-at'] ?? Date.now())
const wait = startAt - Date.now()
if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
const startedAt = Date.now()
// The client's own CPU from the start on (what pulling cost it), reported at the end.
const cpuAtStart = process.cpuUsage()
const cpuMs = () => {
  const used = process.cpuUsage(cpuAtStart)
  return Math.round((used.user + used.system) / 1000)
}
const ticker = setInterval(() => emit({ event: 'progress', bytes }), 500)
const deadline = setTimeout(() => {
  emit({ event: 'error', message: 'timed out', startedAt, finishedAt: Date.now(), bytes })
  process.exit(1)
}, Number(values['timeout-ms']))
try {
  await pull()
  emit({ event: 'done', startedAt, finishedAt: Date.now(), bytes, retries, cpuMs: cpuMs() })
  process.exitCode = 0
} catch (err) {
  emit({
    event: 'error',
    message: String(err?.message ?? err),
    startedAt,
    finishedAt: Date.now(),
    bytes,
    cpuMs: cpuMs(),
  })
  process.exitCode = 1
} finally {
  clearInterval(ticker)
  clearTimeout(deadline)
  agent.destroy()
}
