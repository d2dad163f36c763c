import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { createTestBlob, pieceSizeAllowed } from './blob.js'

describe('pieceSizeAllowed', () => {
  it('takes the powers of two a piece map may use', () => {
    expect(pieceSizeAllowed(16 * 1024)).toBe(true)
    expect(pieceSizeAllowed(256 * 1024)).toBe(true)
    expect(pieceSizeAllowed(16 * 1024 * 1024)).toBe(true)
    expect(pieceSizeAllowed(8 * 1024)).toBe(false)
    expect(pieceSizeAllowed(32 * 1024 * 1024)).toBe(false)
    expect(pieceSizeAllowed(384 * 1024)).toBe(false)
    expect(pieceSizeAllowed(0)).toBe(false)
  })
})

describe('createTestBlob', () => {
  it('lays the blob out in the piece size asked for', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-blob-test-'))
    try {
      const job = await createTestBlob(dir, 3 * 1024 * 1024 + 5, 64 * 1024)
      expect(job.pieceSize).toBe(64 * 1024)
      expect(job.pieceHashes).toHaveLength(49)
      const chosen = await createTestBlob(join(dir, 'b'), 1024 * 1024)
      expect(chosen.pieceSize).toBe(256 * 1024)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
