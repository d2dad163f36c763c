export * from './codec.js'
export * from './reader.js'
