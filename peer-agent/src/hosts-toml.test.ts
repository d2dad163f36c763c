import { describe, expect, it } from 'vitest'
import { hostsToml } from './hosts-toml.js'

describe('hostsToml', () => {
  it('points Docker Hub at registry-1.docker.io with the default mirror', () => {
    const toml = hostsToml('docker.io')
    expect(toml.host).toBe('docker.io')
    expect(toml.server).toBe('https://registry-1.docker.io')
    expect(toml.text).toContain('server = "https://registry-1.docker.io"\n')
    expect(toml.text).toContain('[host."http://127.0.0.1:5001"]\n  capabilities = ["pull", "resolve"]\n')
  })

  it('keeps an upstream URL as the server and names the folder after its host', () => {
    const toml = hostsToml('http://127.0.0.1:5000/ignored', { mirror: 'http://127.0.0.1:6001/' })
    expect(toml.host).toBe('127.0.0.1:5000')
    expect(toml.server).toBe('http://127.0.0.1:5000')
    expect(toml.text).toContain('[host."http://127.0.0.1:6001"]')
    expect(hostsToml('ghcr.io').server).toBe('https://ghcr.io')
  })

  it('refuses what is neither a registry host nor an http(s) URL', () => {
    expect(() => hostsToml('not a host')).toThrow(TypeError)
    expect(() => hostsToml('ftp://x')).toThrow(TypeError)
    expect(() => hostsToml('docker.io', { mirror: 'unix:///x' })).toThrow(TypeError)
  })
})
