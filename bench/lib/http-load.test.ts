import { describe, expect, it } from 'vitest'
import { parseWrkOutput } from './http-load.js'

const WRK_OUTPUT = `Running 5s test @ http://127.0.0.1:5000/v2/bench/manifest/manifests/bench
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.20ms    1.10ms  30.00ms   90.00%
    Req/Sec    12.00k     1.00k   13.00k    80.00%
  Latency Distribution
     50%    3.90ms
     75%    4.50ms
     90%    5.20ms
     99%    1.20s
  60000 requests in 5.00s, 40.00MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 1, read 2, write 0, timeout 3
Requests/sec:  11999.50
Transfer/sec:      8.00MB
`

describe('parseWrkOutput', () => {
  it('reads rate, totals, errors and latency percentiles', () => {
    expect(parseWrkOutput(WRK_OUTPUT)).toEqual({
      requestsPerSecond: 11999.5,
      totalRequests: 60000,
      non2xx: 12,
      errors: 6,
      latencyP50Ms: 3.9,
      latencyP99Ms: 1200,
    })
  })

  it('rejects output without a rate', () => {
    expect(() => parseWrkOutput('unable to connect')).toThrow(/unexpected wrk output/)
  })
})
