export { RegistryClient, MAX_MANIFEST_BYTES, nextLink, type RegistryOptions, type FetchedManifest } from './client.js';
export { RegistryHttpError, RegistryNetworkError, RegistryAuthError, describeRequest } from './errors.js';
export { findCredentials, authFileCandidates, normaliseAuthKey, type Credentials } from './authfile.js';
export { parseWwwAuthenticate, repositoryScope, type Challenge } from './auth.js';
export { parseRetryAfter, DEFAULT_RETRY, type RetryPolicy } from './http.js';
export type { TlsOptions } from './tls.js';
