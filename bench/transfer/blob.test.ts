import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { createTestBlob } from './blob.js'

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
