import { BundleError } from '../util/errors.js';

/** One entry of a Distribution error body: `{"errors":[{"code","message","detail"}]}`. */
export interface RegistryErrorEntry {
  code: string;
  message?: string;
}

/** Names a request for messages: method, and the URL path with only harmless query parameters. */
export function describeRequest(method: string, url: URL): string {
  const safe = ['n', 'last', 'mount', 'from', 'digest'];
  const q = new URLSearchParams();
  for (const [k, v] of url.searchParams) if (safe.includes(k)) q.append(k, v);
  const qs = q.toString();
  return `${method} ${url.protocol}//${url.host}${url.pathname}${qs ? `?${qs}` : ''}`;
}

/** Parse the `errors[]` of a registry JSON error body; tolerant of anything else. */
export function parseRegistryErrors(body: string): RegistryErrorEntry[] {
  if (!body) return [];
  try {
    const parsed = JSON.parse(body) as unknown;
    const errors = (parsed as { errors?: unknown }).errors;
    if (!Array.isArray(errors)) return [];
    const out: RegistryErrorEntry[] = [];
    for (const e of errors) {
      if (e && typeof e === 'object' && typeof (e as { code?: unknown }).code === 'string') {
        const msg = (e as { message?: unknown }).message;
        out.push({ code: (e as { code: string }).code, message: typeof msg === 'string' ? msg : undefined });
      }
    }
    return out;
  } catch {
    return [];
  }
}

/** A registry answered with a status we did not expect. */
export class RegistryHttpError extends BundleError {
  /** The pause the registry asked for (Retry-After), if it did. */
  retryAfterMs?: number;

  constructor(
    readonly request: string,
    readonly status: number,
    readonly errors: RegistryErrorEntry[],
    readonly attempts = 1,
    hint?: string,
  ) {
    const why = errors.length
      ? errors.map((e) => `${e.code}${e.message ? `: ${e.message}` : ''}`).join('; ')
      : '';
    const tries = attempts > 1 ? ` (after ${attempts} attempts)` : '';
    super(`${request} failed: HTTP ${status}${why ? ` ${why}` : ''}${tries}`, 1, hint);
  }

  hasCode(code: string): boolean {
    return this.errors.some((e) => e.code === code);
  }
}

/** The network failed under a request (refused, reset, TLS, timeout). */
export class RegistryNetworkError extends BundleError {
  constructor(
    readonly request: string,
    readonly code: string,
    detail: string,
    readonly attempts = 1,
  ) {
    const tries = attempts > 1 ? ` (after ${attempts} attempts)` : '';
    super(`${request} failed: ${detail}${detail.includes(code) ? '' : ` (${code})`}${tries}`, 1);
  }
}

/** Credentials were refused, or the registry wants some we do not have. */
export class RegistryAuthError extends BundleError {
  constructor(message: string, hint?: string) {
    super(message, 1, hint);
  }
}
