/**
 * Turns a component's settings into commander options (`--gc-interval-ms <ms>`, a
 * repeatable `--upstream <spec>`), and reads what the user gave back into flag values
 * for flagLayer. Defaults are not given to commander, so that an unset flag does not
 * hide the environment or the file; they are shown in the help text instead.
 */
import { type Command, Option } from 'commander'
import type { Setting } from './settings.js'

function placeholder(setting: Setting): string {
  switch (setting.kind) {
    case 'number':
      return setting.flag.endsWith('-ms') ? '<ms>' : setting.flag.endsWith('-bytes') ? '<bytes>' : '<n>'
    case 'boolean':
      return '<bool>'
    case 'url-array':
      // The agent maps image hosts (host=url, required); the registry maps optional prefixes.
      return setting.specKey === 'host' ? '<host=url>' : '<[prefix=]url>'
    case 'string-array':
      return '<value>'
    case 'enum':
      return '<value>'
    default:
      if (setting.flag === 'listen' || setting.flag.endsWith('-listen')) return '<host:port>'
      if (setting.flag.endsWith('-dir')) return '<dir>'
      if (setting.flag.endsWith('-url')) return '<url>'
      return '<value>'
  }
}

/** The `(env ..., default ...)` tail of a setting's help text. */
export function settingHelp(setting: Setting): string {
  const dflt =
    setting.defaultValue === undefined ||
    (Array.isArray(setting.defaultValue) && setting.defaultValue.length === 0)
      ? ''
      : `, default ${JSON.stringify(setting.defaultValue)}`
  const choices = setting.choices ? `: ${setting.choices.join(' | ')}` : ''
  return `${setting.description}${choices} (env ${setting.env}${dflt})`
}

/**
 * Adds one option per setting to `command`, skipping flags listed in `except`.
 * Returns the settings whose options were added.
 */
export function addSettingOptions(command: Command, settings: Setting[], except: string[] = []): Setting[] {
  const added: Setting[] = []
  for (const setting of settings) {
    if (except.includes(setting.flag)) continue
    const option = new Option(`--${setting.flag} ${placeholder(setting)}`, settingHelp(setting))
    if (setting.kind === 'string-array' || setting.kind === 'url-array') {
      option.argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    }
    command.addOption(option)
    added.push(setting)
  }
  return added
}

/**
 * Reads the values the user gave for `settings` from commander's parsed options,
 * keyed by flag name (`gc-interval-ms`) as flagLayer expects.
 */
export function readSettingFlags(
  opts: Record<string, unknown>,
  settings: Setting[],
): Record<string, unknown> {
  const flags: Record<string, unknown> = {}
  for (const setting of settings) {
    const value = opts[attributeName(setting.flag)]
    if (value !== undefined) flags[setting.flag] = value
  }
  return flags
}

/** Commander's attribute name for a long flag: kebab-case -> camelCase. */
export function attributeName(flag: string): string {
  return flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())
}
