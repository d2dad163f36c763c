// SHOAL_CPU_PROFILE_DIR=<dir>: profile this shoal process's main thread from start to
// exit and write <dir>/shoal-<pid>.cpuprofile (open it in Chrome DevTools or read it
// with bench/lib/cpu-profile.ts). For processes started by scripts that cannot pass
// node flags, such as the agents of the cluster testbed; `node --cpu-prof` does the
// same where node's own flags can be given.
import { mkdirSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { join } from 'node:path'

/** Starts profiling when SHOAL_CPU_PROFILE_DIR is set; the profile is written at exit. */
export function startCpuProfileFromEnv() {
  const dir = process.env.SHOAL_CPU_PROFILE_DIR
  if (!dir) return
  const session = new Session()
  session.connect()
  session.post('Profiler.enable')
  session.post('Profiler.start')
  process.on('exit', () => {
    // The in-process inspector answers synchronously, so this finishes before exit.
    session.post('Profiler.stop', (err, result) => {
      if (err) return
      mkdirSync(dir, { recursive: true })
      writeFileSync(join(dir, `shoal-${process.pid}.cpuprofile`), JSON.stringify(result.profile))
    })
  })
}
