/** The repository root (the folder above bin/). */
export const ROOT: string
/** The module the bundle starts from. */
export const ENTRY: string
/** A fingerprint of the sources, the lockfile and the build settings. */
export function sourceFingerprint(): string
/** Returns the path of the bundle's entry module, building it first when it is missing. */
export function bundleSources(options?: { cacheDir?: string }): Promise<string>
