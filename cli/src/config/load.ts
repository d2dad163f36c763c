/**
 * Loads one component's configuration from its default values, a config file, the
 * environment and flags (in rising precedence) and validates it with the component's
 * own parser, which reports every problem at once.
 */
import { ConfigError } from '../../../protocol/src/index.js'
import type { Setting } from './settings.js'
import {
  attributeProblems,
  type ConfigFile,
  type ConfigSection,
  envLayer,
  fileLayer,
  flagLayer,
  mergeLayers,
} from './sources.js'

/** What loadSectionConfig needs to know about a component. */
export interface SectionSpec<T> {
  section: ConfigSection
  settings: Setting[]
  /** The component's parser: applies defaults, throws ConfigError listing every problem. */
  parse(raw: unknown): T
}

/** The sources to layer; all optional. */
export interface ConfigSources {
  file?: ConfigFile
  env?: NodeJS.ProcessEnv
  /** Flag values keyed by setting flag name (`gc-interval-ms`). */
  flags?: Record<string, unknown>
  /** Defaults of the command that sit below the file (e.g. `shoal up`'s per-part data folders). */
  base?: Record<string, unknown>
}

/**
 * Merges the sources (flags > env > file > base > schema defaults) and parses the result.
 * Throws ConfigError whose problems name the section, the setting and where the bad
 * value came from (`registry.gcIntervalMs: ... (from environment SHOAL_REGISTRY_GC_INTERVAL_MS)`).
 */
export function loadSectionConfig<T>(spec: SectionSpec<T>, sources: ConfigSources): T {
  const merged = mergeLayers([
    { values: sources.base ?? {}, origins: new Map() },
    fileLayer(sources.file, spec.section),
    envLayer(spec.settings, sources.env ?? {}),
    flagLayer(spec.settings, sources.flags ?? {}),
  ])
  try {
    return spec.parse(merged.values)
  } catch (err) {
    if (err instanceof ConfigError) throw attributeProblems(err, spec.section, merged.origins)
    throw err
  }
}
