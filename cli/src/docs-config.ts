/**
 * `npm run docs:config`: rewrites the generated settings tables of
 * docs/CONFIGURATION.md from the config schemas.
 */
import { execFileSync } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { renderReference, replaceReference } from './config/reference.js'
import { referenceSections } from './parts/reference-sections.js'

const path = new URL('../../docs/CONFIGURATION.md', import.meta.url)
const document = await readFile(path, 'utf8')
await writeFile(path, replaceReference(document, renderReference(referenceSections)))
// The repository's formatter pads markdown tables; leave the file as `npm run check` wants it.
execFileSync(
  fileURLToPath(new URL('../../node_modules/.bin/biome', import.meta.url)),
  ['format', '--write', fileURLToPath(path)],
  {
    stdio: 'ignore',
  },
)
console.log('docs/CONFIGURATION.md updated')
