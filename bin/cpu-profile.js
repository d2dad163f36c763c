// SHOAL_CPU_PROFILE_DIR=<dir>: profile this shoal process's main thread from start to
// exit and write <dir>/shoal-<pid>.cpuprofile (open it in Chrome DevTools or read it
// with bench/lib/cpu-profile.ts). For processes started by scripts that cannot pass
// node flags, such as the agents of the cluster testbed; `node --cpu-prof` does the
// same where node's own flags can be given. With SHOAL_CPU_PROFILE_ON=SIGUSR2 as well,
// profiling starts only when the process gets that signal (say, once every agent of a
// testbed is up and the pull begins: a profile from start spends the first minutes on
// module loading and makes 50 agents start several times slower). The next SIGUSR2
// stops it and writes <dir>/shoal-<pid>-<n>.cpuprofile (n counts the windows from 1),
// and the one after that starts a new window: one process can give the start of a
// pull and its middle as separate profiles.
// SHOAL_CPU_PROFILE_INTERVAL_US sets the sampling interval (V8's default is 1000 us): the
// profiler's sampling thread of a testbed agent took about half as much CPU as the agent
// itself at the default, which starves a machine running 25 of them.
import { mkdirSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { join } from 'node:path'

/** Starts profiling when SHOAL_CPU_PROFILE_DIR is set; the profile is written at exit. */
export function startCpuProfileFromEnv() {
  const dir = process.env.SHOAL_CPU_PROFILE_DIR
  if (!dir) return
  const trigger = process.env.SHOAL_CPU_PROFILE_ON
  if (trigger !== undefined && trigger !== 'SIGUSR2')
    throw new Error(`SHOAL_CPU_PROFILE_ON must be SIGUSR2 or unset, not ${JSON.stringify(trigger)}`)
  const intervalText = process.env.SHOAL_CPU_PROFILE_INTERVAL_US
  const interval = intervalText === undefined ? undefined : Number(intervalText)
  if (interval !== undefined && !(Number.isInteger(interval) && interval > 0))
    throw new Error(
      `SHOAL_CPU_PROFILE_INTERVAL_US must be a whole number of microseconds, not ${JSON.stringify(intervalText)}`,
    )
  const session = new Session()
  let connected = false
  let started = false
  let windows = 0
  const start = () => {
    if (started) return
    started = true
    windows++
    if (!connected) {
      session.connect()
      session.post('Profiler.enable')
      if (interval !== undefined) session.post('Profiler.setSamplingInterval', { interval })
      connected = true
    }
    session.post('Profiler.start')
  }
  /** Stops the running window and writes it; `numbered` names it by its window. */
  const stop = (numbered) => {
    if (!started) return
    started = false
    // The in-process inspector answers synchronously, so this finishes before exit.
    session.post('Profiler.stop', (err, result) => {
      if (err) return
      mkdirSync(dir, { recursive: true })
      const name = numbered || windows > 1 ? `shoal-${process.pid}-${windows}` : `shoal-${process.pid}`
      writeFileSync(join(dir, `${name}.cpuprofile`), JSON.stringify(result.profile))
    })
  }
  if (trigger === undefined) start()
  else process.on(trigger, () => (started ? stop(true) : start()))
  process.on('exit', () => stop(false))
}
