/**
 * Derives the list of settings of a component from its zod config schema, and from
 * each setting's path its environment variable and command-line flag, so that files,
 * environment and flags always name the same settings:
 *
 *   path `gcIntervalMs` of section `registry`  ->  SHOAL_REGISTRY_GC_INTERVAL_MS, --gc-interval-ms
 *   path `store.redisUrl` of section `tracker` ->  SHOAL_TRACKER_STORE_REDIS_URL, --store-redis-url
 *
 * Array settings take a repeatable flag named in the singular (`upstreams` ->
 * `--upstream`), and a comma-separated (or JSON) environment variable.
 */
import type { z } from 'zod'

/** How a setting's string form (from the environment or a flag) is turned into a value. */
export type SettingKind = 'string' | 'number' | 'boolean' | 'enum' | 'string-array' | 'url-array' | 'json'

/** One leaf setting of a component's configuration. */
export interface Setting {
  /** Path of the setting inside its section, e.g. `['gcIntervalMs']`. */
  path: string[]
  kind: SettingKind
  /** Environment variable, e.g. `SHOAL_REGISTRY_GC_INTERVAL_MS`. */
  env: string
  /** Long flag without dashes, e.g. `gc-interval-ms` (singular for arrays). */
  flag: string
  description: string
  /** The default as JSON-compatible value, undefined when there is none. */
  defaultValue: unknown
  /** Allowed values of an enum setting. */
  choices?: string[]
  /** For `url-array` settings: the element field that the `name=` part of `name=url` fills. */
  specKey?: string
}

type AnySchema = z.core.$ZodType

function def(schema: AnySchema): z.core.$ZodTypeDef & Record<string, unknown> {
  return schema._zod.def as z.core.$ZodTypeDef & Record<string, unknown>
}

function describe(schema: AnySchema): string | undefined {
  return (schema as { description?: string }).description
}

/** camelCase -> UPPER_SNAKE. */
function upperSnake(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()
}

/** camelCase -> kebab-case. */
function kebab(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase()
}

function singular(name: string): string {
  return name.endsWith('s') ? name.slice(0, -1) : name
}

/**
 * Lists every leaf setting of `schema` (a zod object schema) for the config section
 * `section` (`registry`, `tracker`, `agent`). Nested objects become dotted paths;
 * arrays and optional values are leaves.
 */
export function listSettings(section: string, schema: AnySchema): Setting[] {
  const settings: Setting[] = []
  walk(schema, [], undefined, undefined)
  return settings

  function walk(
    node: AnySchema,
    path: string[],
    description: string | undefined,
    defaultValue: unknown,
  ): void {
    const d = def(node)
    const text = describe(node) ?? description
    switch (d.type) {
      case 'default':
      case 'prefault': {
        const value = d.defaultValue
        walk(d.innerType as AnySchema, path, text, typeof value === 'function' ? value() : value)
        return
      }
      case 'optional':
      case 'nullable':
      case 'readonly':
        walk(d.innerType as AnySchema, path, text, defaultValue)
        return
      case 'pipe':
        walk(d.in as AnySchema, path, text, defaultValue)
        return
      case 'object': {
        const shape = d.shape as Record<string, AnySchema>
        for (const [key, child] of Object.entries(shape)) {
          walk(child, [...path, key], undefined, undefined)
        }
        return
      }
      case 'array': {
        const element = d.element as AnySchema
        const elementDef = def(unwrap(element))
        if (elementDef.type === 'object' && 'url' in (elementDef.shape as object)) {
          const shape = elementDef.shape as Record<string, AnySchema>
          add(path, 'url-array', text, defaultValue, undefined, 'host' in shape ? 'host' : 'prefix')
        } else if (elementDef.type === 'string' || elementDef.type === 'enum') {
          add(path, 'string-array', text, defaultValue)
        } else {
          add(path, 'json', text, defaultValue)
        }
        return
      }
      case 'number':
      case 'int':
        add(path, 'number', text, defaultValue)
        return
      case 'boolean':
        add(path, 'boolean', text, defaultValue)
        return
      case 'enum': {
        const entries = d.entries as Record<string, string>
        add(path, 'enum', text, defaultValue, Object.values(entries))
        return
      }
      case 'literal': {
        const values = d.values as unknown[]
        add(path, 'enum', text, defaultValue, values.map(String))
        return
      }
      case 'string':
        add(path, 'string', text, defaultValue)
        return
      default:
        add(path, 'json', text, defaultValue)
    }
  }

  function add(
    path: string[],
    kind: SettingKind,
    description: string | undefined,
    defaultValue: unknown,
    choices?: string[],
    specKey?: string,
  ) {
    const last = path[path.length - 1] ?? ''
    const flagPath =
      kind === 'string-array' || kind === 'url-array' ? [...path.slice(0, -1), singular(last)] : path
    settings.push({
      path,
      kind,
      env: ['SHOAL', section, ...path].map(upperSnake).join('_'),
      flag: flagPath.map(kebab).join('-'),
      description: description ?? '',
      defaultValue,
      ...(choices ? { choices } : {}),
      ...(specKey ? { specKey } : {}),
    })
  }
}

function unwrap(node: AnySchema): AnySchema {
  const d = def(node)
  if (d.type === 'optional' || d.type === 'default' || d.type === 'nullable')
    return unwrap(d.innerType as AnySchema)
  return node
}
