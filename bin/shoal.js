#!/usr/bin/env node
// The shoal command. Runs the TypeScript sources through tsx so that a fresh clone
// needs no build step; the polyfill must load before any libp2p module.
import './polyfill.js'
import { register } from 'tsx/esm/api'

register()
await import('../cli/src/main.ts')
