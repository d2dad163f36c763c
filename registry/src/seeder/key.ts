/**
 * The seed's libp2p identity: an Ed25519 key generated once and kept in a file (mode
 * 0600), so the seed's peer id, which agents trust as the signer of piece maps, stays
 * the same across restarts.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { ConfigError } from '../../../protocol/src/index.js'

/**
 * Reads the key at `path` (libp2p protobuf form), or generates an Ed25519 key and
 * writes it there first, atomically and readable by the owner only. Throws ConfigError
 * when the file exists but does not hold a key.
 */
export async function loadOrCreateSeedKey(path: string): Promise<PrivateKey> {
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (bytes !== undefined) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new ConfigError([`${path}: not a libp2p private key (${(err as Error).message})`])
    }
  }
  const key = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  try {
    await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
  return key
}
