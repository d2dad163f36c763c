/**
 * `npm run docs:config`: rewrites the generated settings tables of
 * docs/CONFIGURATION.md from the config schemas.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { renderReference, replaceReference } from './config/reference.js'
import { referenceSections } from './parts/reference-sections.js'

const path = new URL('../../docs/CONFIGURATION.md', import.meta.url)
const document = await readFile(path, 'utf8')
await writeFile(path, replaceReference(document, renderReference(referenceSections)))
console.log('docs/CONFIGURATION.md updated')
