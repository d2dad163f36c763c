/**
 * Renders the configuration reference (docs/CONFIGURATION.md's tables) from the
 * schemas, so that the document lists exactly the settings, variables, flags and
 * defaults the code has. `npm run docs:config` rewrites the generated part; a unit
 * test fails when the document is stale.
 */
import type { Setting } from './settings.js'

/** Marks the start and end of the generated part of docs/CONFIGURATION.md. */
export const REFERENCE_BEGIN = '<!-- BEGIN GENERATED: npm run docs:config -->'
export const REFERENCE_END = '<!-- END GENERATED -->'

/** One section of the reference: a component and its settings. */
export interface ReferenceSection {
  section: string
  /** The command that takes these settings as flags, e.g. `shoal registry`. */
  command: string
  settings: Setting[]
}

function formatDefault(value: unknown): string {
  if (value === undefined) return '(none)'
  if (Array.isArray(value) && value.length === 0) return '(none)'
  return `\`${typeof value === 'string' ? value : JSON.stringify(value)}\``
}

function sentence(text: string): string {
  return text.length === 0 ? text : `${text[0]!.toUpperCase()}${text.slice(1)}.`
}

function escapeCell(text: string): string {
  return text.replaceAll('|', '\\|')
}

/** The generated markdown, markers included. */
export function renderReference(sections: ReferenceSection[]): string {
  const out: string[] = [REFERENCE_BEGIN]
  for (const { section, command, settings } of sections) {
    out.push(
      '',
      `### \`${section}\``,
      '',
      `Flags belong to \`${command}\`.`,
      '',
      '| Setting | Environment variable | Flag | Default | Meaning |',
      '| --- | --- | --- | --- | --- |',
    )
    for (const setting of settings) {
      const choices = setting.choices ? ` One of ${setting.choices.map((c) => `\`${c}\``).join(', ')}.` : ''
      out.push(
        `| \`${section}.${setting.path.join('.')}\` | \`${setting.env}\` | \`--${setting.flag}\` | ${formatDefault(setting.defaultValue)} | ${escapeCell(sentence(setting.description))}${choices} |`,
      )
    }
  }
  out.push('', REFERENCE_END)
  return out.join('\n')
}

/** Replaces the generated part of `document` with `reference`; throws when the markers are missing. */
export function replaceReference(document: string, reference: string): string {
  const begin = document.indexOf(REFERENCE_BEGIN)
  const end = document.indexOf(REFERENCE_END)
  if (begin < 0 || end < begin) throw new Error('the document has no generated-reference markers')
  return document.slice(0, begin) + reference + document.slice(end + REFERENCE_END.length)
}
