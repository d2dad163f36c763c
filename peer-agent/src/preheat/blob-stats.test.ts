import { Readable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import type { Digest } from '../../../protocol/src/index.js'
import type { BlobSource } from '../mirror/sources.js'
import { createBlobStats } from './blob-stats.js'

const d = (c: string) => `sha256:${c.repeat(64)}` as Digest

describe('blob stats', () => {
  it('counts the bytes each blob got by source, most recent first, bounded', async () => {
    const swarm: BlobSource = {
      stat: async (ref) => ({ digest: ref.digest, size: 8 }),
      async open() {
        const chunks = [Buffer.alloc(4), Buffer.alloc(4)]
        return {
          size: 8,
          stream: Readable.from(chunks),
          range: { start: 0, end: 7 },
          source: 'peer',
          sourceAt: (position: number) => (position < 4 ? 'seed' : 'peer'),
        }
      },
    }
    const upstream: BlobSource = {
      stat: async (ref) => ({ digest: ref.digest, size: 3 }),
      open: async () => ({
        size: 3,
        stream: Readable.from([Buffer.alloc(3)]),
        range: { start: 0, end: 2 },
        source: 'upstream',
      }),
    }
    const stats = createBlobStats({ maxBlobs: 2 })
    const drain = async (s: BlobSource, digest: Digest) => {
      const opened = await s.open({ host: 'h', repository: 'r', digest }, undefined)
      for await (const _ of opened.stream) {
      }
    }
    await drain(stats.wrap(swarm), d('a'))
    await drain(stats.wrap(upstream), d('b'))
    await drain(stats.wrap(upstream), d('a'))
    expect(stats.snapshot()).toEqual([
      { digest: d('a'), peer: 4, seed: 4, upstream: 3 },
      { digest: d('b'), peer: 0, seed: 0, upstream: 3 },
    ])
    await drain(stats.wrap(swarm), d('c'))
    expect(stats.snapshot().map((b) => b.digest)).toEqual([d('c'), d('a')])
  })
})
