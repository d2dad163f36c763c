/** The agent's swarm: blobs from other peers and the seed, as a BlobSource for the mirror. */
export { type AgentSwarm, type AgentSwarmOverrides, createAgentSwarm } from './agent-swarm.js'
export { createSwarmMetrics, type SwarmMetrics } from './metrics.js'
export {
  createPieceMapStore,
  type PieceMapStore,
  type PieceMapStoreComponents,
  type PieceMapStoreInit,
  type SeedInfo,
} from './piece-maps.js'
export {
  createSwarmBlobSource,
  type SwarmBlobSource,
  type SwarmBlobSourceComponents,
  type SwarmBlobSourceInit,
} from './swarm-source.js'
