/** Registry events: webhooks and preheat rules (docs/adr/0005). */
export * from './observed-registry.js'
export * from './preheat-rules.js'
export * from './types.js'
export * from './webhooks.js'
