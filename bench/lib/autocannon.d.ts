// The few parts of autocannon's programmatic API the benchmarks use (it ships no types).
declare module 'autocannon' {
  interface AutocannonOptions {
    url: string
    connections?: number
    duration?: number
    pipelining?: number
    method?: string
    headers?: Record<string, string>
  }
  interface AutocannonStat {
    average: number
    mean: number
    total: number
    p50: number
    p99: number
  }
  interface AutocannonResult {
    requests: AutocannonStat
    latency: AutocannonStat
    duration: number
    errors: number
    timeouts: number
    non2xx: number
    '2xx': number
  }
  function autocannon(options: AutocannonOptions): Promise<AutocannonResult>
  export default autocannon
}
