/** Content routing of the peer agent: the tracker, the DHT and their combination. */
export {
  type CombinedRouter,
  type CombinedRouterComponents,
  type CombinedRouterInit,
  createCombinedRouter,
} from './combined.js'
export { createDhtRouter, type DhtRouter, type DhtRouterComponents, type DhtRouterInit } from './dht.js'
export {
  createTrackerRouter,
  type SelfInfo,
  type TrackerRouter,
  type TrackerRouterComponents,
  type TrackerRouterInit,
} from './tracker.js'
export type { ContentRouter, FindPeersOptions, HoldingState, ProviderRecord } from './types.js'
