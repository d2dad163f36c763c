// The V8 options every shoal process is meant to run with. bin/shoal.js's `#!` line
// spells the same list (a test in bench/registry/servers.test.ts keeps the two equal),
// so `shoal ...`, `npx shoal ...` and `./bin/shoal.js ...` get them; whatever starts
// `node bin/shoal.js ...` itself (test helpers, the cluster testbed) should put
// SHOAL_NODE_OPTIONS before the script. V8 reads both when it creates the heap, so
// they cannot be set from inside a running process.
//
// --max-semi-space-size=4: caps the young generation at two 4 MiB semi-spaces. Node's
//   default lets it grow to two 16 MiB ones while the npm packages load, and it stays
//   there: about 25 MB of resident memory in every process, for no measurable gain.
// --initial-old-space-size=64: the old generation's allocation limit never drops below
//   64 MiB. V8 counts the Buffers that sockets and file reads allocate outside the heap
//   against that limit until the next full collection. With a live heap of ~23 MiB and
//   V8's own limit of ~35 MiB (which it sets after its first full collection, often the
//   memory reducer's while idle), a 512 MiB push through the registry ran 20-40
//   mark-compacts and took 1.8-2.3 s of user CPU instead of 0.8-1.0 s (docs/BENCHMARKS.md,
//   registry, "slow state"); with the floor it runs none. It costs no memory up front:
//   only garbage of up to 64 MiB may wait for the collector.
// (--single-threaded-gc was tried in session 15 and taken out: at N = 50 on the 2-core
//   testbed the pull took 426 s against 375 s without it; docs/BENCHMARKS.md, cluster,
//   fifteenth round.)

/** Node options for every shoal process, in the order bin/shoal.js's `#!` line gives them. */
export const SHOAL_NODE_OPTIONS = Object.freeze(['--max-semi-space-size=4', '--initial-old-space-size=64'])
