export * from './digest.js'
export * from './errors.js'
export * from './oci.js'
export * from './oci-errors.js'
