/**
 * TCP congestion control in the testbed's namespaces. A new namespace starts with the
 * machine's choice (`net.ipv4.tcp_congestion_control`), which differs between machines
 * (bbr on some hosts, cubic, Linux's default, on most), and a namespace may only pick
 * one the machine lists in `net.ipv4.tcp_allowed_congestion_control` (else EPERM). The
 * testbed adds the algorithm it was asked for to that list for its lifetime and puts
 * the list back when it is removed.
 */
import { readFile, writeFile } from 'node:fs/promises'

const SYSCTL = '/proc/sys/net/ipv4'

/** The algorithms the kernel has (built in or loaded). */
export async function availableCongestionControls(): Promise<string[]> {
  return (await readFile(`${SYSCTL}/tcp_available_congestion_control`, 'utf8')).split(/\s+/).filter(Boolean)
}

/** The machine's own choice, which new namespaces inherit. */
export async function machineCongestionControl(): Promise<string> {
  return (await readFile(`${SYSCTL}/tcp_congestion_control`, 'utf8')).trim()
}

/**
 * Lets namespaces choose `name` (adds it to the allowed list unless it is there);
 * returns a function that restores the list. Throws when the kernel lacks `name`.
 */
export async function allowCongestionControl(name: string): Promise<() => Promise<void>> {
  const available = await availableCongestionControls()
  if (!available.includes(name)) {
    throw new Error(
      `TCP congestion control ${name} is not available here (the kernel has ${available.join(', ')})`,
    )
  }
  const path = `${SYSCTL}/tcp_allowed_congestion_control`
  const before = (await readFile(path, 'utf8')).trim()
  const allowed = before.split(/\s+/).filter(Boolean)
  if (allowed.includes(name)) return async () => {}
  await writeFile(path, [...allowed, name].join(' '))
  return async () => {
    await writeFile(path, before).catch(() => {})
  }
}
