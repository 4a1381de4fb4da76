/** Options every registry connection takes (mirrors podman/skopeo flags). */
import type { Credentials } from './authfile.js';
import type { TlsOptions } from './tls.js';

export interface RegistryOptions extends TlsOptions {
  /** Auth file to use instead of the podman/skopeo search order. */
  authfile?: string;
  /** Attempts per request, first included (default 5). */
  retries?: number;
  /** First backoff delay in ms (default 250); mostly for tests. */
  retryDelayMs?: number;
  userAgent?: string;
  /** How many transfers the caller runs at once (informational). */
  concurrency?: number;
  /** Connections open to one registry host at most (requests beyond wait for one); default: unbounded. */
  maxConnections?: number;
  /** Upload blobs larger than this in PATCH chunks of this size (default: monolithic). */
  chunkSize?: number;
  /**
   * Idle timeout in ms (default 120 s): a connection on which nothing arrives for this
   * long (no answer, or a body that stops) fails the attempt, which is then retried.
   */
  timeoutMs?: number;
  /** Credentials to use instead of any auth file. */
  credentials?: Credentials;
}
