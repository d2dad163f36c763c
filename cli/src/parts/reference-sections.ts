/** The sections the configuration reference documents, one per part the CLI runs. */
import type { ReferenceSection } from '../config/reference.js'
import { agentSection } from './agent-part.js'
import { registrySection } from './registry-part.js'
import { trackerSection } from './tracker-part.js'

/** Every documented config section, in the order the reference shows them. */
export const referenceSections: ReferenceSection[] = [
  { section: 'registry', command: 'shoal registry', settings: registrySection.settings },
  { section: 'tracker', command: 'shoal tracker', settings: trackerSection.settings },
  { section: 'agent', command: 'shoal agent', settings: agentSection.settings },
]
