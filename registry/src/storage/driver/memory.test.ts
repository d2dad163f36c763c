import { createMemoryDriver } from './memory.js'
import { describeDriverConformance } from './conformance.js'

describeDriverConformance('memory', async () => ({ driver: createMemoryDriver(), cleanup: async () => {} }))
