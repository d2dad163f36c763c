import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { SHOAL_NODE_OPTIONS } from '../../bin/node-options.js'
import { blobContentDir, shebangNodeOptions } from './servers.js'

describe('shebangNodeOptions', () => {
  it('reads the node options of an env -S shebang line', () => {
    expect(shebangNodeOptions('#!/usr/bin/env -S node --a=1  --b\nrest')).toEqual(['--a=1', '--b'])
  })

  it('finds none on a plain node shebang line', () => {
    expect(shebangNodeOptions('#!/usr/bin/env node\n')).toEqual([])
  })

  it('rejects a script that does not start node', () => {
    expect(() => shebangNodeOptions('#!/bin/sh\n')).toThrow(/shebang/)
  })

  it('reads the options bin/shoal.js starts node with', () => {
    const script = readFileSync(new URL('../../bin/shoal.js', import.meta.url), 'utf8')
    expect(shebangNodeOptions(script)).toEqual([...SHOAL_NODE_OPTIONS])
    expect(SHOAL_NODE_OPTIONS).toContain('--max-semi-space-size=4')
    expect(SHOAL_NODE_OPTIONS).toContain('--initial-old-space-size=64')
  })
})

describe('blobContentDir', () => {
  const hex = `ab${'0'.repeat(62)}`

  it("finds a blob in shoal's storage tree", () => {
    expect(blobContentDir('shoal', '/d', `sha256:${hex}`)).toBe(`/d/blobs/sha256/ab/${hex}`)
  })

  it("finds a blob in Distribution's storage tree", () => {
    expect(blobContentDir('distribution', '/d', `sha256:${hex}`)).toBe(
      `/d/docker/registry/v2/blobs/sha256/ab/${hex}`,
    )
  })

  it('rejects what is not a digest, so nothing outside the tree is removed', () => {
    expect(() => blobContentDir('shoal', '/d', 'sha256:../..')).toThrow(/digest/)
    expect(() => blobContentDir('shoal', '/d', '')).toThrow(/digest/)
  })
})
