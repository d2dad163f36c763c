/**
 * The registry's pull-through cache mode: createPullThroughRegistry wraps the local
 * storage registry and fills it from upstream registries.
 */
export {
  createPullThroughRegistry,
  type PullThroughComponents,
  type PullThroughInit,
} from './pull-through.js'
export { createUpstreamRouter, isDockerHub, type UpstreamConfig, validateUpstreams } from './upstreams.js'
