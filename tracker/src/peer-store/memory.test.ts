import { createMemoryPeerStore } from './memory.js'
import { describePeerStoreConformance } from './conformance.js'

describePeerStoreConformance('memory', async () => {
  const store = createMemoryPeerStore()
  await store.start()
  return { store, cleanup: () => store.stop() }
})
