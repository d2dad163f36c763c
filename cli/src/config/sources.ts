/**
 * The three places a setting can come from besides its default (a config file, the
 * environment, command-line flags) and how they are layered: flags > environment >
 * file > defaults. Values from the environment and flags arrive as strings and are
 * converted by the setting's kind; a value that does not convert is passed on as it
 * is, so that the component's parser reports it together with every other problem.
 */
import { readFile } from 'node:fs/promises'
import { extname } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { ConfigError } from '../../../protocol/src/index.js'
import type { Setting } from './settings.js'

/** The config file's top-level keys: one section per component. */
export const CONFIG_SECTIONS = ['registry', 'tracker', 'agent'] as const
/** A component's config section name. */
export type ConfigSection = (typeof CONFIG_SECTIONS)[number]

/** Values from one source, nested like the schema, with where each leaf came from. */
export interface ConfigLayer {
  values: Record<string, unknown>
  /** Dotted setting path -> human description of its source. */
  origins: Map<string, string>
}

/** The contents of a config file, split by section. */
export interface ConfigFile {
  path: string
  sections: Partial<Record<ConfigSection, Record<string, unknown>>>
}

/**
 * Reads a YAML or JSON config file (JSON is YAML, so both go through one parser;
 * `.json` files are parsed strictly). Throws ConfigError when the file cannot be read,
 * does not parse, or has top-level keys other than the component sections.
 */
export async function readConfigFile(path: string): Promise<ConfigFile> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError([`${path}: cannot read config file: ${(err as Error).message}`])
  }
  let doc: unknown
  try {
    doc = extname(path) === '.json' ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    throw new ConfigError([
      `${path}: not valid ${extname(path) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`,
    ])
  }
  if (doc === null || doc === undefined) return { path, sections: {} }
  if (!isPlainObject(doc)) {
    throw new ConfigError([`${path}: expected a mapping with sections ${CONFIG_SECTIONS.join(', ')}`])
  }
  const problems: string[] = []
  const sections: ConfigFile['sections'] = {}
  for (const [key, value] of Object.entries(doc)) {
    if (!(CONFIG_SECTIONS as readonly string[]).includes(key)) {
      problems.push(`${key}: unknown section in ${path} (expected ${CONFIG_SECTIONS.join(', ')})`)
    } else if (value === null) {
      sections[key as ConfigSection] = {}
    } else if (!isPlainObject(value)) {
      problems.push(`${key}: expected a mapping of settings in ${path}`)
    } else {
      sections[key as ConfigSection] = value
    }
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return { path, sections }
}

/** The layer of a config file's section; every leaf is attributed to the file. */
export function fileLayer(file: ConfigFile | undefined, section: ConfigSection): ConfigLayer {
  const values = file?.sections[section] ?? {}
  const origins = new Map<string, string>()
  if (file) {
    const mark = (value: unknown, path: string[]) => {
      if (isPlainObject(value) && path.length < 4) {
        for (const [k, v] of Object.entries(value)) mark(v, [...path, k])
      } else if (path.length > 0) {
        origins.set(path.join('.'), `file ${file.path}`)
      }
    }
    mark(values, [])
  }
  return { values, origins }
}

/** The layer of the environment variables that name a setting. */
export function envLayer(settings: Setting[], env: NodeJS.ProcessEnv): ConfigLayer {
  const layer: ConfigLayer = { values: {}, origins: new Map() }
  for (const setting of settings) {
    const raw = env[setting.env]
    if (raw === undefined || raw === '') continue
    setPath(layer.values, setting.path, fromString(setting, raw))
    layer.origins.set(setting.path.join('.'), `environment ${setting.env}`)
  }
  return layer
}

/**
 * The layer of command-line flags. `flags` maps a setting's flag name (`gc-interval-ms`)
 * to what the user gave: a string, or an array of strings for repeatable flags.
 */
export function flagLayer(settings: Setting[], flags: Record<string, unknown>): ConfigLayer {
  const layer: ConfigLayer = { values: {}, origins: new Map() }
  for (const setting of settings) {
    const raw = flags[setting.flag]
    if (raw === undefined) continue
    let value: unknown
    if (Array.isArray(raw)) {
      value =
        setting.kind === 'url-array'
          ? raw.map((item) => parseUrlSpec(String(item)))
          : raw.map((item) => String(item))
    } else {
      value = fromString(setting, String(raw))
    }
    setPath(layer.values, setting.path, value)
    layer.origins.set(setting.path.join('.'), `flag --${setting.flag}`)
  }
  return layer
}

/** Deep-merges layers, later ones winning; arrays are replaced, not concatenated. */
export function mergeLayers(layers: ConfigLayer[]): ConfigLayer {
  const merged: ConfigLayer = { values: {}, origins: new Map() }
  for (const layer of layers) {
    merged.values = deepMerge(merged.values, layer.values)
    for (const [path, origin] of layer.origins) {
      for (const key of [...merged.origins.keys()]) {
        if (key === path || key.startsWith(`${path}.`)) merged.origins.delete(key)
      }
      merged.origins.set(path, origin)
    }
  }
  return merged
}

/**
 * Rewrites a ConfigError's problems (`path: message`) to name the section and, when
 * known, where the offending value came from.
 */
export function attributeProblems(
  error: ConfigError,
  section: ConfigSection,
  origins: Map<string, string>,
): ConfigError {
  return new ConfigError(
    error.problems.map((problem) => {
      const colon = problem.indexOf(': ')
      const path = colon > 0 ? problem.slice(0, colon) : ''
      let origin: string | undefined
      for (let p = path; p.length > 0; p = p.includes('.') ? p.slice(0, p.lastIndexOf('.')) : '') {
        origin = origins.get(p)
        if (origin) break
      }
      const qualified = path === '(root)' ? `${section}${problem.slice(colon)}` : `${section}.${problem}`
      return origin ? `${qualified} (from ${origin})` : qualified
    }),
  )
}

/** Converts a setting's string form; returns the string unchanged when it does not convert. */
export function fromString(setting: Setting, raw: string): unknown {
  const text = raw.trim()
  switch (setting.kind) {
    case 'number': {
      const n = Number(text.replaceAll('_', ''))
      return text !== '' && Number.isFinite(n) ? n : raw
    }
    case 'boolean': {
      const lower = text.toLowerCase()
      if (['true', '1', 'yes', 'on'].includes(lower)) return true
      if (['false', '0', 'no', 'off'].includes(lower)) return false
      return raw
    }
    case 'string-array':
      return text.startsWith('[') ? parseJsonOr(text) : splitList(text)
    case 'url-array':
      return text.startsWith('[') ? parseJsonOr(text) : splitList(text).map(parseUrlSpec)
    case 'json':
      return parseJsonOr(text)
    default:
      return raw
  }
}

/**
 * Parses `[prefix=]url`, with optional credentials in the URL's user info
 * (`docker.io=https://user:secret@registry-1.docker.io`), into `{ url, prefix?,
 * username?, password? }`. A string that is not a URL is kept as `url` so that the
 * schema reports it.
 */
export function parseUrlSpec(spec: string): Record<string, string> {
  const text = spec.trim()
  const scheme = text.indexOf('://')
  const eq = text.indexOf('=')
  const result: Record<string, string> = {}
  let url = text
  if (eq > 0 && (scheme < 0 || eq < scheme)) {
    result.prefix = text.slice(0, eq)
    url = text.slice(eq + 1)
  }
  try {
    const parsed = new URL(url)
    if (parsed.username || parsed.password) {
      result.username = decodeURIComponent(parsed.username)
      result.password = decodeURIComponent(parsed.password)
      parsed.username = ''
      parsed.password = ''
      url = parsed.href.replace(/\/$/, '')
    }
  } catch {
    // Not a URL: left for the schema to report.
  }
  return { url, ...result }
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0)
}

function parseJsonOr(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target
  for (const key of path.slice(0, -1)) {
    const next = node[key]
    if (!isPlainObject(next)) node[key] = {}
    node = node[key] as Record<string, unknown>
  }
  node[path[path.length - 1]!] = value
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(over)) {
    const current = out[key]
    out[key] = isPlainObject(current) && isPlainObject(value) ? deepMerge(current, value) : value
  }
  return out
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
