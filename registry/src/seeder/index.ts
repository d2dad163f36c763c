/** The registry as the swarm's seed (see README.md in this folder). */
export { type Announcer, type AnnouncerComponents, type AnnouncerInit, createAnnouncer } from './announcer.js'
export { type BlobContent, createBlobContent } from './blob-content.js'
export { loadOrCreateSeedKey } from './key.js'
export { createSeedMetrics, type SeedMetrics } from './metrics.js'
export { createPieceMapStore, type PieceMapStore, type PieceMapStoreInit } from './piece-maps.js'
export {
  createSeedRoutes,
  SEED_ROUTE_PREFIX,
  SIGNED_PIECE_MAP_BINARY_MEDIA_TYPE,
  type SeedRoutesComponents,
} from './routes.js'
export { createSeeder, type Seeder, type SeederComponents, type SeederInit } from './seeder.js'
export { createStorePieceSource } from './store-piece-source.js'
