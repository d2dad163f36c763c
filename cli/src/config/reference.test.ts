import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { referenceSections } from '../parts/reference-sections.js'
import { REFERENCE_BEGIN, REFERENCE_END, renderReference, replaceReference } from './reference.js'

describe('configuration reference', () => {
  it('docs/CONFIGURATION.md lists exactly the settings of the schemas (run npm run docs:config)', async () => {
    const document = await readFile(new URL('../../../docs/CONFIGURATION.md', import.meta.url), 'utf8')
    // Compare with table padding taken out, so a hand-aligned table still matches.
    const normalize = (text: string) => text.replace(/-{3,}/g, '---').replace(/ {2,}/g, ' ')
    expect(normalize(document)).toContain(normalize(renderReference(referenceSections)))
    for (const { settings } of referenceSections) {
      for (const setting of settings) expect(document).toContain(`\`${setting.env}\``)
    }
  })

  it('replaces only the generated part', () => {
    const doc = `intro\n${REFERENCE_BEGIN}\nold\n${REFERENCE_END}\noutro`
    expect(replaceReference(doc, `${REFERENCE_BEGIN}\nnew\n${REFERENCE_END}`)).toBe(
      `intro\n${REFERENCE_BEGIN}\nnew\n${REFERENCE_END}\noutro`,
    )
    expect(() => replaceReference('no markers', 'x')).toThrow()
  })
})
