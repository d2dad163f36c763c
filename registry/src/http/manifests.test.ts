import { afterEach, describe, expect, it } from 'vitest'
import { digestOf, MEDIA_TYPES } from '../../../protocol/src/index.js'
import {
  errorCodes,
  pushBlob,
  pushImage,
  putManifest,
  rawErrorCodes,
  rawExchange,
  rawRequest,
  startTestRegistry,
  type TestRegistry,
} from './testing.js'

describe.each(['memory', 'filesystem'] as const)('registry app: manifests (%s driver)', (driver) => {
  let reg: TestRegistry | undefined
  afterEach(async () => {
    await reg?.close()
    reg = undefined
  })

  it('PUTs a manifest by tag and serves it by tag and digest with the stored media type', async () => {
    reg = await startTestRegistry({ driver })
    const image = await pushImage(reg.url, 'org/app')
    const put = await putManifest(reg.url, 'org/app', 'v1', image.body)
    expect(put.status).toBe(201)
    expect(put.headers.get('location')).toBe(`/v2/org/app/manifests/${image.digest}`)
    expect(put.headers.get('docker-content-digest')).toBe(image.digest)
    expect(put.headers.get('content-length')).toBe('0')
    expect(put.headers.get('oci-subject')).toBeNull()
    expect(await put.text()).toBe('')

    for (const ref of ['v1', image.digest]) {
      const res = await fetch(`${reg.url}/v2/org/app/manifests/${ref}`, {
        headers: { Accept: MEDIA_TYPES.dockerManifest },
      })
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toBe(MEDIA_TYPES.ociManifest)
      expect(res.headers.get('docker-content-digest')).toBe(image.digest)
      expect(res.headers.get('content-length')).toBe(String(image.body.byteLength))
      expect(res.headers.get('etag')).toBe(`"${image.digest}"`)
      expect(Buffer.from(await res.arrayBuffer()).equals(image.body)).toBe(true)

      const head = await rawRequest(reg.port, 'HEAD', `/v2/org/app/manifests/${ref}`)
      expect(head.status).toBe(200)
      expect(head.headers['content-type']).toBe(MEDIA_TYPES.ociManifest)
      expect(head.headers['docker-content-digest']).toBe(image.digest)
      expect(head.headers['content-length']).toBe(String(image.body.byteLength))
      expect(head.body.byteLength).toBe(0)
    }
  })

  it('answers 304 to a matching If-None-Match', async () => {
    reg = await startTestRegistry({ driver })
    const image = await pushImage(reg.url, 'app')
    await putManifest(reg.url, 'app', 'v1', image.body)
    // fetch adds Cache-Control: no-cache to conditional requests, so use a plain client.
    const res = await rawRequest(reg.port, 'GET', '/v2/app/manifests/v1', {
      'If-None-Match': `"${image.digest}"`,
    })
    expect(res.status).toBe(304)
    expect(res.body.byteLength).toBe(0)
    const other = await rawRequest(reg.port, 'GET', '/v2/app/manifests/v1', { 'If-None-Match': '"sha256:x"' })
    expect(other.status).toBe(200)
  })

  it('stores Docker schema 2 manifests and indexes under their own media types', async () => {
    reg = await startTestRegistry({ driver })
    const config = await pushBlob(reg.url, 'd', Buffer.from('{"os":"linux"}'))
    const layer = await pushBlob(reg.url, 'd', Buffer.from('layer'))
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.dockerManifest,
        config: { ...config, mediaType: MEDIA_TYPES.dockerConfig },
        layers: [{ ...layer, mediaType: MEDIA_TYPES.dockerLayerGzip }],
      }),
    )
    expect((await putManifest(reg.url, 'd', 'amd64', manifest, MEDIA_TYPES.dockerManifest)).status).toBe(201)
    const list = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.dockerManifestList,
        manifests: [
          {
            mediaType: MEDIA_TYPES.dockerManifest,
            digest: digestOf(manifest),
            size: manifest.byteLength,
            platform: { architecture: 'amd64', os: 'linux' },
          },
        ],
      }),
    )
    const put = await putManifest(reg.url, 'd', 'latest', list, MEDIA_TYPES.dockerManifestList)
    expect(put.status).toBe(201)
    const res = await fetch(`${reg.url}/v2/d/manifests/latest`)
    expect(res.headers.get('content-type')).toBe(MEDIA_TYPES.dockerManifestList)
    expect(res.headers.get('docker-content-digest')).toBe(digestOf(list))
  })

  it('answers OCI-Subject when the manifest has a subject', async () => {
    reg = await startTestRegistry({ driver })
    const image = await pushImage(reg.url, 'app')
    await putManifest(reg.url, 'app', 'v1', image.body)
    const subject = { mediaType: MEDIA_TYPES.ociManifest, digest: image.digest, size: image.body.byteLength }
    const sig = await pushImage(reg.url, 'app', { subject, artifactType: 'application/x-sig' })
    const put = await putManifest(reg.url, 'app', sig.digest, sig.body)
    expect(put.status).toBe(201)
    expect(put.headers.get('oci-subject')).toBe(image.digest)
  })

  it('rejects a body whose digest does not match the reference', async () => {
    reg = await startTestRegistry({ driver })
    const image = await pushImage(reg.url, 'app')
    const res = await putManifest(reg.url, 'app', digestOf('something else'), image.body)
    expect(res.status).toBe(400)
    expect(await errorCodes(res)).toEqual(['DIGEST_INVALID'])
    expect((await fetch(`${reg.url}/v2/app/manifests/${image.digest}`)).status).toBe(404)
  })

  it('rejects malformed JSON, unknown media types and missing references', async () => {
    reg = await startTestRegistry({ driver })
    const image = await pushImage(reg.url, 'app')
    const bad = await putManifest(reg.url, 'app', 'v1', Buffer.from('{"schemaVersion": 2,'))
    expect(bad.status).toBe(400)
    expect(await errorCodes(bad)).toEqual(['MANIFEST_INVALID'])

    const bare = JSON.parse(image.body.toString()) as Record<string, unknown>
    delete bare.mediaType
    const unknownType = await putManifest(
      reg.url,
      'app',
      'v1',
      Buffer.from(JSON.stringify(bare)),
      'application/x-foo',
    )
    expect(unknownType.status).toBe(400)
    expect(await errorCodes(unknownType)).toEqual(['MANIFEST_INVALID'])

    const declaredUnknown = Buffer.from(JSON.stringify({ ...bare, mediaType: 'application/x-foo' }))
    const res = await putManifest(reg.url, 'app', 'v1', declaredUnknown, 'application/x-foo')
    expect(res.status).toBe(400)
    expect(await errorCodes(res)).toEqual(['MANIFEST_INVALID'])

    const missing = JSON.parse(image.body.toString()) as { layers: Array<{ digest: string }> }
    missing.layers[0]!.digest = digestOf('not pushed')
    const unknownBlob = await putManifest(reg.url, 'app', 'v1', Buffer.from(JSON.stringify(missing)))
    expect(unknownBlob.status).toBe(400)
    expect(await errorCodes(unknownBlob)).toEqual(['MANIFEST_BLOB_UNKNOWN'])

    expect((await fetch(`${reg.url}/v2/app/manifests/v1`)).status).toBe(404)
  })

  it('rejects a Content-Type that contradicts the body and an index with unknown children', async () => {
    reg = await startTestRegistry({ driver })
    const image = await pushImage(reg.url, 'app')
    const contradicts = await putManifest(reg.url, 'app', 'v1', image.body, MEDIA_TYPES.ociIndex)
    expect(contradicts.status).toBe(400)
    expect(await errorCodes(contradicts)).toEqual(['MANIFEST_INVALID'])
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [
          { mediaType: MEDIA_TYPES.ociManifest, digest: image.digest, size: image.body.byteLength },
        ],
      }),
    )
    const orphan = await putManifest(reg.url, 'app', 'multi', index, MEDIA_TYPES.ociIndex)
    expect(orphan.status).toBe(400)
    expect(await errorCodes(orphan)).toEqual(['MANIFEST_BLOB_UNKNOWN'])
    await putManifest(reg.url, 'app', 'v1', image.body)
    expect((await putManifest(reg.url, 'app', 'multi', index, MEDIA_TYPES.ociIndex)).status).toBe(201)
  })

  it('moves a tag on a second PUT and deletes a tag alone', async () => {
    reg = await startTestRegistry({ driver })
    const one = await pushImage(reg.url, 'app')
    const two = await pushImage(reg.url, 'app')
    await putManifest(reg.url, 'app', 'latest', one.body)
    await putManifest(reg.url, 'app', 'latest', two.body)
    const res = await fetch(`${reg.url}/v2/app/manifests/latest`)
    expect(res.headers.get('docker-content-digest')).toBe(two.digest)
    const del = await fetch(`${reg.url}/v2/app/manifests/latest`, { method: 'DELETE' })
    expect(del.status).toBe(202)
    expect((await fetch(`${reg.url}/v2/app/manifests/latest`)).status).toBe(404)
    expect((await fetch(`${reg.url}/v2/app/manifests/${two.digest}`)).status).toBe(200)
  })

  it('refuses a manifest over maxManifestBytes with 413, by Content-Length and when streamed', async () => {
    reg = await startTestRegistry({ driver, maxManifestBytes: 1024 })
    const image = await pushImage(reg.url, 'app', { annotations: { pad: 'x'.repeat(2000) } })
    const declared = await putManifest(reg.url, 'app', 'big', image.body)
    expect(declared.status).toBe(413)
    expect(await errorCodes(declared)).toEqual(['MANIFEST_INVALID'])

    const parts = [image.body.subarray(0, 1000), image.body.subarray(1000)]
    const streamed = await fetch(`${reg.url}/v2/app/manifests/big`, {
      method: 'PUT',
      headers: { 'Content-Type': MEDIA_TYPES.ociManifest },
      body: new ReadableStream({
        start(controller) {
          for (const p of parts) controller.enqueue(p)
          controller.close()
        },
      }),
      duplex: 'half',
    } as RequestInit)
    expect(streamed.status).toBe(413)
    expect(await errorCodes(streamed)).toEqual(['MANIFEST_INVALID'])

    // Just under the limit is accepted.
    const small = await pushImage(reg.url, 'app')
    expect(small.body.byteLength).toBeLessThan(1024)
    expect((await putManifest(reg.url, 'app', 'small', small.body)).status).toBe(201)
    expect((await fetch(`${reg.url}/v2/app/manifests/big`)).status).toBe(404)
  })

  it('stores nothing when a manifest PUT body breaks off', async () => {
    reg = await startTestRegistry({ driver })
    const image = await pushImage(reg.url, 'app')
    // Declared longer than sent: Node's parser never completes the body; the client
    // closing its side must not leave a half manifest behind.
    await rawExchange(
      reg.port,
      `PUT /v2/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: ${MEDIA_TYPES.ociManifest}\r\n` +
        `Content-Length: ${image.body.byteLength + 10}\r\n\r\n`,
      image.body,
    )
    expect((await fetch(`${reg.url}/v2/app/manifests/v1`)).status).toBe(404)
  })

  it('DELETEs a manifest by digest (202) and then answers 404 MANIFEST_UNKNOWN', async () => {
    reg = await startTestRegistry({ driver })
    const image = await pushImage(reg.url, 'app')
    await putManifest(reg.url, 'app', 'v1', image.body)
    const del = await fetch(`${reg.url}/v2/app/manifests/${image.digest}`, { method: 'DELETE' })
    expect(del.status).toBe(202)
    for (const ref of [image.digest, 'v1']) {
      const res = await fetch(`${reg.url}/v2/app/manifests/${ref}`)
      expect(res.status).toBe(404)
      expect(await errorCodes(res)).toEqual(['MANIFEST_UNKNOWN'])
    }
    const again = await rawRequest(reg.port, 'DELETE', `/v2/app/manifests/${image.digest}`)
    expect(again.status).toBe(404)
    expect(rawErrorCodes(again)).toEqual(['MANIFEST_UNKNOWN'])
  })
})
