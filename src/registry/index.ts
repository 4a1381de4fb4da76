/** The registry client's public surface. */
export { RegistryClient, MAX_MANIFEST_BYTES, nextLink, type FetchedManifest } from './client.js';
export type { RegistryOptions } from './options.js';
export { RegistryHttpError, RegistryNetworkError, RegistryAuthError, describeRequest } from './errors.js';
export { findCredentials, authFileCandidates, normaliseAuthKey, type Credentials } from './authfile.js';
export { parseWwwAuthenticate, repositoryScope, type Challenge } from './auth.js';
export { parseRetryAfter, DEFAULT_RETRY, RetryPolicy, Attempts, isTransient, type RetrySettings } from './retry.js';
export { schemesFor, type TlsOptions } from './tls.js';
