/**
 * `node bin/run-ts.js bench/transfer/swarm-in-process.ts`: a seed registry, a tracker and
 * N agents in this one process (the swarm suites' cluster, test/integration/
 * swarm-cluster.ts) on loopback, all agents pulling one blob at once. Prints the wall
 * time and this process's CPU seconds per GB the agents received: the cost of the agent's
 * whole piece path (scheduler, piece protocol, noise, yamux, cache, mirror) without
 * shaped links, other processes or per-process JIT warm-up (docs/BENCHMARKS.md, cluster,
 * fifth round). Then it stays idle for IDLE seconds (default 10) with every
 * connection open and reports the CPU the idle swarm burns per agent (connection
 * upkeep, announces, DHT). N and MB from the environment (default 8 agents, 40 MiB);
 * RATE=<bytes/s> caps every agent's uploads (uploadRateBytesPerSec) to see what a
 * byte costs when links are slow (the work that goes with time rather than bytes);
 * PROF=<file> writes a CPU profile of the pull, PROF_IDLE=<file> one of the idle time.
 */
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { blobFixture } from '../../protocol/src/testing/fixtures.js'
import { startCluster } from '../../test/integration/swarm-cluster.js'

const agentCount = Number(process.env.N ?? 8)
const mib = Number(process.env.MB ?? 40)
const rate = Number(process.env.RATE ?? 0)
const cluster = await startCluster({})
try {
  const blob = blobFixture(mib * 1024 * 1024, 7)
  await cluster.push('team/app', blob.bytes, blob.digest)
  const agents = []
  for (let i = 0; i < agentCount; i++) {
    agents.push(await cluster.addAgent(rate > 0 ? { uploadRateBytesPerSec: rate } : {}))
  }
  // Let the agents settle (tracker announces, DHT bootstrap) before the clock starts.
  await new Promise((resolve) => setTimeout(resolve, 2_000))
  const session = process.env.PROF ? new Session() : undefined
  if (session) {
    session.connect()
    await session.post('Profiler.enable')
    await session.post('Profiler.setSamplingInterval', { interval: 500 })
    await session.post('Profiler.start')
  }
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await Promise.all(agents.map((agent) => cluster.pull(agent, 'team/app', blob.digest)))
  const cpu = process.cpuUsage(cpu0)
  const seconds = (performance.now() - t0) / 1000
  const cpuSeconds = (cpu.user + cpu.system) / 1e6
  const gb = (agentCount * blob.size) / 1e9
  console.log(
    JSON.stringify({
      agents: agentCount,
      blobMiB: mib,
      uploadRateBytesPerSec: rate,
      seconds: Number(seconds.toFixed(2)),
      cpuSeconds: Number(cpuSeconds.toFixed(2)),
      cpuSecondsPerGb: Number((cpuSeconds / gb).toFixed(1)),
    }),
  )
  if (session && process.env.PROF) {
    const { profile } = await session.post('Profiler.stop')
    writeFileSync(process.env.PROF, JSON.stringify(profile))
  }
  const idleSeconds = Number(process.env.IDLE ?? 10)
  const idleSession = process.env.PROF_IDLE ? new Session() : undefined
  if (idleSession) {
    idleSession.connect()
    await idleSession.post('Profiler.enable')
    await idleSession.post('Profiler.start')
  }
  const idle0 = process.cpuUsage()
  await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000))
  const idle = process.cpuUsage(idle0)
  const idleCpu = (idle.user + idle.system) / 1e6
  console.log(
    JSON.stringify({
      idleSeconds,
      idleCpuSeconds: Number(idleCpu.toFixed(2)),
      idleCpuPercentPerAgent: Number(((100 * idleCpu) / idleSeconds / agentCount).toFixed(2)),
    }),
  )
  if (idleSession && process.env.PROF_IDLE) {
    const { profile } = await idleSession.post('Profiler.stop')
    writeFileSync(process.env.PROF_IDLE, JSON.stringify(profile))
  }
} finally {
  await cluster.stop()
}
