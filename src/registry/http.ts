/**
 * HTTP with bounded retries for registry traffic. One undici Agent per
 * RegistryClient (it pools connections per origin). Only requests whose body
 * can be sent again (none, a Buffer or a string) are retried here; streamed
 * uploads are retried a level up by re-opening their source.
 */
import type { Readable } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';
import { describeRequest, RegistryNetworkError } from './errors.js';

export interface RetryPolicy {
  /** Total attempts, first one included (default 5). */
  attempts: number;
  /** First backoff delay; doubles each retry, with jitter (default 250 ms). */
  baseDelayMs: number;
  /** Cap for one backoff delay (default 10 s). */
  maxDelayMs: number;
  /** Cap for a server's Retry-After (default 60 s). */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 250, maxDelayMs: 10_000, maxRetryAfterMs: 60_000 };

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** A Buffer or string body is replayable; a Readable is sent once and never retried. */
  body?: Buffer | string | Readable;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Readable & { text(): Promise<string>; dump(opts?: { limit: number }): Promise<void> };
  /** How many attempts it took. */
  attempts: number;
  url: URL;
}

/** Network error codes worth another try. */
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
]);

export function errorCode(err: unknown): string {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e && typeof e === 'object'; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return 'ERR_NETWORK';
}

export function isRetryableNetworkError(err: unknown): boolean {
  return RETRYABLE_CODES.has(errorCode(err));
}

export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 408 || (status >= 500 && status !== 501 && status !== 505);
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
export function backoffDelay(policy: RetryPolicy, retry: number): number {
  const nominal = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
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

function networkDetail(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : '';
  return cause && !msg.includes(cause) ? `${msg}: ${cause}` : msg;
}

export class HttpTransport {
  constructor(
    readonly dispatcher: Dispatcher,
    readonly retry: RetryPolicy = DEFAULT_RETRY,
    readonly userAgent = 'bundle',
  ) {}

  /**
   * Send a request; retries connection errors, 5xx and 429 when the body can
   * be replayed. Resolves with the final response whatever its status (the
   * caller reads or dumps the body); rejects with RegistryNetworkError.
   */
  async request(req: HttpRequest, opts: { retries?: boolean } = {}): Promise<HttpResponse> {
    const replayable = req.body === undefined || typeof req.body === 'string' || Buffer.isBuffer(req.body);
    const maxAttempts = replayable && opts.retries !== false ? Math.max(1, this.retry.attempts) : 1;
    const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
    for (let attempt = 1; ; attempt++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await this.dispatcher.request({
          origin: req.url.origin,
          path: `${req.url.pathname}${req.url.search}`,
          method: req.method as Dispatcher.HttpMethod,
          headers,
          body: req.body ?? null,
          signal: req.signal ?? null,
        });
      } catch (err) {
        if (req.signal?.aborted) throw err;
        if (attempt < maxAttempts && isRetryableNetworkError(err)) {
          await sleep(backoffDelay(this.retry, attempt - 1), req.signal);
          continue;
        }
        throw new RegistryNetworkError(describeRequest(req.method, req.url), errorCode(err), networkDetail(err), attempt);
      }
      if (attempt < maxAttempts && isRetryableStatus(res.statusCode)) {
        await res.body.dump().catch(() => undefined);
        const after = parseRetryAfter(res.headers['retry-after']);
        const delay = after !== undefined ? Math.min(after, this.retry.maxRetryAfterMs) : backoffDelay(this.retry, attempt - 1);
        await sleep(delay, req.signal);
        continue;
      }
      return {
        status: res.statusCode,
        headers: res.headers,
        body: res.body as HttpResponse['body'],
        attempts: attempt,
        url: req.url,
      };
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

/** Read a whole (small) response body, refusing more than `limit` bytes. */
export async function readBody(res: HttpResponse, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    const b = chunk as Buffer;
    total += b.length;
    if (total > limit) {
      res.body.destroy();
      return undefined;
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Read a response body as text for an error message (bounded, never throws). */
export async function readErrorText(res: HttpResponse): Promise<string> {
  try {
    const b = await readBody(res, 64 * 1024);
    return b ? b.toString('utf8') : '';
  } catch {
    return '';
  }
}

export function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}
