/**
 * shoal's registry composed straight from its storage and HTTP layers, without the CLI:
 * a filesystem StorageRegistry under createRegistryApp on a plain http.Server. The
 * benchmark can run it with `--shoal-entry direct` to measure those two layers alone
 * (and before the CLI exists). Prints the same `{"msg":"listening","service":"registry"}`
 * line as `shoal registry` and stops on SIGTERM/SIGINT.
 *
 * usage: node bin/run-ts.js bench/registry/shoal-direct-server.ts --data DIR [--listen 127.0.0.1:0]
 */
import { createServer } from 'node:http'
import { parseArgs } from 'node:util'
import { createRegistryApp } from '../../registry/src/http/app.js'
import { createFilesystemDriver, createStorageRegistry } from '../../registry/src/storage/index.js'

const { values } = parseArgs({
  options: { data: { type: 'string' }, listen: { type: 'string', default: '127.0.0.1:0' } },
})
if (!values.data) {
  process.stderr.write('usage: shoal-direct-server.ts --data DIR [--listen HOST:PORT]\n')
  process.exit(2)
}
const separator = values.listen.lastIndexOf(':')
const host = values.listen.slice(0, separator)
const port = Number(values.listen.slice(separator + 1))

const registry = createStorageRegistry({ driver: createFilesystemDriver({ root: values.data }) })
await registry.start()
const app = createRegistryApp({ registry })
const server = createServer(app.callback())
server.listen(port, host, () => {
  const address = server.address()
  const bound = address && typeof address === 'object' ? address.port : port
  process.stdout.write(
    JSON.stringify({ msg: 'listening', service: 'registry', url: `http://${host}:${bound}` }) + '\n',
  )
})

let stopping = false
const stop = (): void => {
  if (stopping) return
  stopping = true
  server.closeAllConnections()
  server.close(() => {
    registry.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  })
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
