#!/usr/bin/env node
// Runs one TypeScript entry point (benchmarks, the simulator, scripts) through tsx.
import './polyfill.js'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { register } from 'tsx/esm/api'

const entry = process.argv[2]
if (!entry) {
  console.error('usage: run-ts.js <file.ts> [args...]')
  process.exit(2)
}
process.argv.splice(2, 1)
register()
await import(pathToFileURL(resolve(entry)).href)
