/** Node options for every shoal process, in the order bin/shoal.js's `#!` line gives them. */
export const SHOAL_NODE_OPTIONS: readonly string[]
