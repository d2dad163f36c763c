/**
 * In-process locks for the storage layer: a writer-preferring read/write lock that
 * lets pushes link content concurrently (shared) while the GC sweep runs alone
 * (exclusive), and a keyed mutex that serialises work on one upload session.
 */

/** A writer-preferring read/write lock. */
export class ReadWriteLock {
  private readers = 0
  private writer = false
  private readonly waitingWriters: Array<() => void> = []
  private readonly waitingReaders: Array<() => void> = []

  /** Runs `fn` holding the lock shared with other readers. */
  async shared<T>(fn: () => Promise<T>): Promise<T> {
    if (this.writer || this.waitingWriters.length > 0) {
      await new Promise<void>((resolve) => this.waitingReaders.push(resolve))
    } else {
      this.readers++
    }
    try {
      return await fn()
    } finally {
      this.readers--
      this.wake()
    }
  }

  /** Runs `fn` holding the lock alone. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.writer || this.readers > 0) {
      await new Promise<void>((resolve) => this.waitingWriters.push(resolve))
    } else {
      this.writer = true
    }
    try {
      return await fn()
    } finally {
      this.writer = false
      this.wake()
    }
  }

  private wake(): void {
    if (this.writer || this.readers > 0) return
    const w = this.waitingWriters.shift()
    if (w) {
      this.writer = true
      w()
      return
    }
    while (this.waitingReaders.length > 0) {
      this.readers++
      this.waitingReaders.shift()!()
    }
  }
}

/** Serialises async work per key; keys with nothing pending hold no memory. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>()

  /** Runs `fn` after every earlier call for the same key has settled. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve()
    let release!: () => void
    const mine = new Promise<void>((resolve) => {
      release = resolve
    })
    const tail = prev.then(() => mine)
    this.tails.set(key, tail)
    await prev
    try {
      return await fn()
    } finally {
      release()
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
  }
}
