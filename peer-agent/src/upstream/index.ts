/** The agent's way to the registries themselves: host mapping, direct sources and the private-repository gate. */
export {
  type AccessChecker,
  type AccessCheckerComponents,
  type AccessCheckerInit,
  type AccessRequest,
  createAccessChecker,
} from './access.js'
export {
  createUpstreamResolver,
  type ResolvedUpstream,
  type UpstreamMapping,
  type UpstreamResolver,
  type UpstreamResolverInit,
} from './resolver.js'
export {
  createUpstreamBlobSource,
  createUpstreamManifestSource,
  type UpstreamSourceComponents,
  type UpstreamSourceInit,
} from './upstream-source.js'
