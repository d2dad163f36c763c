/**
 * The shared OCI Distribution v2 client: registry access with basic auth and the
 * Docker token flow, used by the pull-through cache, the agent, replication, tests
 * and benchmarks.
 */
export * from './client.js'
export * from './response-error.js'
export * from './token-cache.js'
export * from './www-authenticate.js'
