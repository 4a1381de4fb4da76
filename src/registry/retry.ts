/**
 * The one retry policy of a registry connection. Every attempt of every
 * request to the registry passes through it, whichever layer makes it: the
 * transport replaying a request whose body it still has, the client resuming
 * a blob download that broke off (a Range request from where it stopped), or
 * the client starting a streamed upload over from its source.
 *
 * `attempts` (`--retries`) bounds the attempts per request, the first
 * included: a request is tried at most that many times however many layers
 * are involved, because they all draw from one `Attempts` budget per request.
 * Answering an authentication challenge or following a redirect is a step of
 * the protocol, not a retry, and costs nothing.
 *
 * What is retried is decided by the error's type, never its message:
 * connection failures and 408, 429 and 5xx answers (but 501 and 505). Digest
 * mismatches, authentication errors and every other 4xx are final.
 */
import { RegistryHttpError, RegistryNetworkError } from './errors.js';

export interface RetrySettings {
  /** Total attempts per request, first one included (default 5). */
  attempts: number;
  /** First backoff delay; doubles each retry, with jitter (default 250 ms). */
  baseDelayMs: number;
  /** Cap for one backoff delay (default 10 s). */
  maxDelayMs: number;
  /** Cap for a server's Retry-After (default 60 s). */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetrySettings = { attempts: 5, baseDelayMs: 250, maxDelayMs: 10_000, maxRetryAfterMs: 60_000 };

/** Network error codes worth another try (connection and mid-body failures; not TLS trust errors). */
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);

/** The `code` of an error or of one of its causes ('ERR_NETWORK' when there is none). */
export function errorCode(err: unknown): string {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e && typeof e === 'object'; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return 'ERR_NETWORK';
}

export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 408 || (status >= 500 && status !== 501 && status !== 505);
}

/** Whether a failed attempt is worth another one, by the error's type. */
export function isTransient(err: unknown): boolean {
  if (err instanceof RegistryHttpError) return isRetryableStatus(err.status);
  if (err instanceof RegistryNetworkError) return RETRYABLE_CODES.has(err.code);
  return false;
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  const trimmed = v.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const when = Date.parse(trimmed);
  if (Number.isNaN(when)) return undefined;
  return Math.max(0, when - now);
}

/** Exponential backoff with jitter (50-100% of the nominal delay). */
export function backoffDelay(settings: RetrySettings, retry: number): number {
  const nominal = Math.min(settings.maxDelayMs, settings.baseDelayMs * 2 ** retry);
  return Math.round(nominal / 2 + Math.random() * (nominal / 2));
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal?.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class RetryPolicy {
  readonly settings: RetrySettings;

  constructor(settings: Partial<RetrySettings> = {}) {
    this.settings = { ...DEFAULT_RETRY, ...settings };
    this.settings.attempts = Math.max(1, Math.floor(this.settings.attempts));
  }

  get maxAttempts(): number {
    return this.settings.attempts;
  }

  /** The attempt budget of one request. */
  begin(): Attempts {
    return new Attempts(this);
  }

  /** Until when (epoch ms) every request to this registry waits: set by a 429. */
  private pausedUntil = 0;
  /** 429s in a row without a Retry-After, for the pause's backoff; forgotten a minute after the last. */
  private strikes = 0;
  private lastStrike = 0;

  /**
   * The registry said it is overloaded (429, or 503 with Retry-After): every
   * request to it, not only the one that was told, waits until the pause is
   * over (the Retry-After, or an exponential backoff when it gave none).
   */
  slowDown(retryAfterMs: number | undefined): void {
    const now = Date.now();
    if (now - this.lastStrike > 60_000) this.strikes = 0;
    this.lastStrike = now;
    const pause = retryAfterMs !== undefined ? Math.min(retryAfterMs, this.settings.maxRetryAfterMs) : backoffDelay(this.settings, this.strikes++);
    this.pausedUntil = Math.max(this.pausedUntil, now + pause);
  }

  /**
   * Called once before every attempt of every request of this registry (first
   * attempts and protocol steps with `retry` 0): waits out a registry-wide
   * pause (see slowDown), and a retry (`retry` > 0) also its own delay: the
   * server's Retry-After when it sent one (capped), else exponential backoff.
   */
  async admit(retry: number, retryAfterMs: number | undefined, signal?: AbortSignal): Promise<void> {
    let until = this.pausedUntil;
    if (retry > 0) {
      const delay = retryAfterMs !== undefined ? Math.min(retryAfterMs, this.settings.maxRetryAfterMs) : backoffDelay(this.settings, retry - 1);
      until = Math.max(until, Date.now() + delay);
    }
    // The pause may be extended while we wait (another 429).
    for (let now = Date.now(); until > now; now = Date.now()) {
      await sleep(until - now, signal);
      until = Math.max(until, this.pausedUntil);
    }
  }
}

/** The attempts of one request, shared by every layer that may try it again. */
export class Attempts {
  private used = 0;
  private retryAfterMs: number | undefined;
  /** The next attempt has been through the policy already (ready() was called). */
  private admitted = false;
  /** The next attempt follows a protocol step, not a failure: no backoff. */
  private free = false;

  constructor(readonly policy: RetryPolicy) {}

  /** Attempts made so far. */
  get count(): number {
    return this.used;
  }

  /** Attempts still allowed. */
  get left(): number {
    return this.policy.maxAttempts - this.used;
  }

  /** Whether another attempt may follow a failure `err`: attempts left, and an error worth retrying. */
  canRetry(err: unknown): boolean {
    return this.left > 0 && isTransient(err);
  }

  /** The server asked for this pause (Retry-After) before the next attempt. */
  retryAfter(ms: number | undefined): void {
    this.retryAfterMs = ms;
  }

  /**
   * Wait as the policy says before the next attempt, without starting it yet
   * (e.g. before opening a new upload session for a retried upload).
   */
  async ready(signal?: AbortSignal): Promise<void> {
    if (this.admitted) return;
    await this.policy.admit(this.free ? 0 : this.used, this.retryAfterMs, signal);
    this.retryAfterMs = undefined;
    this.free = false;
    this.admitted = true;
  }

  /** Start the next attempt (waiting first when it is a retry). */
  async next(signal?: AbortSignal): Promise<void> {
    if (this.left <= 0) throw new Error('no attempts left for this request');
    await this.ready(signal);
    this.admitted = false;
    this.used++;
  }

  /**
   * The last attempt was answered with a step of the protocol (an
   * authentication challenge, a redirect), not a failure: it is not counted,
   * and the next attempt follows at once.
   */
  uncount(): void {
    if (this.used > 0) this.used--;
    this.retryAfterMs = undefined;
    this.free = true;
  }
}
