/** Preheat on the agent: heartbeats to the tracker and the tasks its answers carry. */
export * from './worker.js'
export * from './blob-stats.js'
