/**
 * HTTP for registry traffic. One undici Agent per RegistryClient (it pools
 * connections per origin). Requests whose body can be sent again (none, a
 * Buffer or a string) are retried here, drawing on the request's attempt
 * budget (src/registry/retry.ts); a streamed body is sent once per call, and
 * the client retries it by re-opening its source with the same budget.
 */
import type { Readable } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';
import { describeRequest, RegistryNetworkError } from './errors.js';
import { errorCode, isRetryableStatus, parseRetryAfter, RetryPolicy, type Attempts } from './retry.js';

export { errorCode, parseRetryAfter } from './retry.js';

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** A Buffer or string body is replayable; a Readable is sent once. */
  body?: Buffer | string | Readable;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Readable & { text(): Promise<string>; dump(opts?: { limit: number }): Promise<void> };
  /** How many attempts the request has taken so far. */
  attempts: number;
  url: URL;
}

export interface RequestOptions {
  /** The request's attempt budget, when it is shared with a layer above (default: a fresh one). */
  attempts?: Attempts;
  /** False: one attempt, never retried (probes, best-effort cleanup). */
  retries?: boolean;
}

/** A network error's message with its cause, for a one-line error. */
export function networkDetail(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : '';
  return cause && !msg.includes(cause) ? `${msg}: ${cause}` : msg;
}

export class HttpTransport {
  constructor(
    readonly dispatcher: Dispatcher,
    readonly retry: RetryPolicy = new RetryPolicy(),
    readonly userAgent = 'bundle',
  ) {}

  /**
   * Send a request; retries connection errors, 408, 429 and 5xx while the body
   * can be replayed and the budget allows. Resolves with the final response
   * whatever its status (the caller reads or dumps the body); rejects with
   * RegistryNetworkError.
   */
  async request(req: HttpRequest, opts: RequestOptions = {}): Promise<HttpResponse> {
    const replayable = req.body === undefined || typeof req.body === 'string' || Buffer.isBuffer(req.body);
    const mayRetry = replayable && opts.retries !== false;
    const attempts = opts.attempts ?? this.retry.begin();
    const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
    for (;;) {
      await attempts.next(req.signal);
      let res: Dispatcher.ResponseData;
      try {
        res = await this.dispatcher.request({
          origin: req.url.origin,
          path: `${req.url.pathname}${req.url.search}`,
          method: req.method as Dispatcher.HttpMethod,
          headers,
          body: req.body ?? null,
          signal: req.signal ?? null,
          // undici closes the connection after a HEAD (for servers that send a body anyway);
          // registries do not, and a HEAD (cosign look-ups, blob checks) would otherwise cost
          // a new connection, its handshakes and a place under the connection cap each time.
          ...(req.method === 'HEAD' ? { reset: false } : {}),
        });
      } catch (err) {
        if (req.signal?.aborted) throw err;
        const failure = new RegistryNetworkError(describeRequest(req.method, req.url), errorCode(err), networkDetail(err), attempts.count);
        if (mayRetry && attempts.canRetry(failure)) continue;
        throw failure;
      }
      // Overloaded: the whole registry connection slows down, not only this request.
      if (res.statusCode === 429 || (res.statusCode === 503 && res.headers['retry-after'] !== undefined)) {
        attempts.policy.slowDown(parseRetryAfter(res.headers['retry-after']));
      }
      if (mayRetry && attempts.left > 0 && isRetryableStatus(res.statusCode)) {
        await res.body.dump().catch(() => undefined);
        attempts.retryAfter(parseRetryAfter(res.headers['retry-after']));
        continue;
      }
      return {
        status: res.statusCode,
        headers: res.headers,
        body: res.body as HttpResponse['body'],
        attempts: attempts.count,
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
