/**
 * Registry authentication: anonymous, Basic, and the Bearer token flow
 * (`WWW-Authenticate: Bearer realm=..,service=..,scope=..`). Tokens are cached
 * per scope set until shortly before they expire. Messages never carry
 * passwords, tokens or Authorization headers.
 */
import type { Credentials } from './authfile.js';
import { readBody, readErrorText, type HttpTransport } from './http.js';
import { describeRequest, parseRegistryErrors, RegistryAuthError, RegistryHttpError } from './errors.js';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parse a WWW-Authenticate header into challenges. Handles quoted values
 * holding commas and escaped quotes, and several challenges in one header.
 */
export function parseWwwAuthenticate(value: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = value.length;
  const skipWs = (): void => {
    while (i < n && (value[i] === ' ' || value[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && !/[\s,=]/.test(value[i]!)) i++;
    return value.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipWs();
    if (value[i] === ',') {
      i++;
      continue;
    }
    const tok = readToken();
    if (!tok) {
      i++;
      continue;
    }
    skipWs();
    if (value[i] === '=' && current) {
      i++;
      skipWs();
      let v = '';
      if (value[i] === '"') {
        i++;
        while (i < n && value[i] !== '"') {
          if (value[i] === '\\' && i + 1 < n) i++;
          v += value[i];
          i++;
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < n && value[i] !== ',') i++;
        v = value.slice(start, i).trim();
      }
      current.params[tok.toLowerCase()] = v;
    } else {
      // A new challenge: `Scheme` followed by params (or a token68 we ignore).
      current = { scheme: tok.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

export function repositoryScope(repo: string, actions: 'pull' | 'push' | 'pull,push'): string {
  return `repository:${repo}:${actions}`;
}

export const CATALOG_SCOPE = 'registry:catalog:*';

interface CachedToken {
  token: string;
  expiresAt: number;
}

function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

export type CredentialSource = (repo: string | undefined) => Credentials | undefined;

export class Authenticator {
  private mode: 'unknown' | 'basic' | 'bearer' = 'unknown';
  private realm?: URL;
  private service?: string;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();

  constructor(
    /** host[:port] for messages */
    readonly host: string,
    private readonly transport: HttpTransport,
    private readonly credentialsFor: CredentialSource,
    /** Where credentials were looked for, for the hint when none were found. */
    private readonly credentialHint = 'use --authfile or podman login',
    /**
     * Whether credentials may go to a plain-HTTP token realm: only when the
     * registry itself is reached over plain HTTP by permission, or insecure
     * transport was allowed for it. Otherwise they would cross the network in
     * clear though the registry is on https.
     */
    private readonly plainRealmAllowed: () => boolean = () => false,
  ) {}

  /** The Authorization header value to send for a request needing `scopes`, if any is known. */
  async authorization(scopes: string[], repo: string | undefined): Promise<string | undefined> {
    if (this.mode === 'basic') {
      const c = this.credentialsFor(repo);
      return c?.kind === 'basic' ? basicHeader(c.username, c.password) : undefined;
    }
    if (this.mode === 'bearer') {
      const t = await this.token(scopes, repo, false);
      return `Bearer ${t.token}`;
    }
    return undefined;
  }

  /**
   * React to a 401: learn the challenge and return the header to retry with.
   * `afterAuth` is true when the refused request already carried credentials
   * fetched for this very attempt; then there is no point retrying.
   */
  async onUnauthorized(wwwAuthenticate: string | undefined, scopes: string[], repo: string | undefined, afterAuth: boolean): Promise<string> {
    const creds = this.credentialsFor(repo);
    if (afterAuth) throw this.refused(creds, repo);
    const challenges = parseWwwAuthenticate(wwwAuthenticate ?? '');
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params['realm']);
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      let realm: URL;
      try {
        realm = new URL(bearer.params['realm']!);
      } catch {
        throw new RegistryAuthError(`${this.host} sent an invalid token realm in its authentication challenge`);
      }
      if (realm.protocol !== 'https:' && realm.protocol !== 'http:') {
        throw new RegistryAuthError(`${this.host} sent an unsupported token realm scheme ${realm.protocol}`);
      }
      this.mode = 'bearer';
      this.realm = realm;
      this.service = bearer.params['service'];
      const extra = bearer.params['scope'];
      const all = extra ? [...new Set([...scopes, ...extra.split(' ').filter(Boolean)])] : scopes;
      const t = await this.token(all, repo, true, scopes);
      return `Bearer ${t.token}`;
    }
    if (basic || challenges.length === 0) {
      if (creds?.kind !== 'basic') {
        throw new RegistryAuthError(`${this.host} requires authentication and no credentials were found for it`, this.credentialHint);
      }
      this.mode = 'basic';
      return basicHeader(creds.username, creds.password);
    }
    throw new RegistryAuthError(`${this.host} asks for an unsupported authentication scheme "${challenges[0]!.scheme}"`);
  }

  private refused(creds: Credentials | undefined, repo: string | undefined): RegistryAuthError {
    if (!creds) {
      return new RegistryAuthError(
        `authentication to ${this.host} failed: access${repo ? ` to ${repo}` : ''} needs credentials and none were found`,
        this.credentialHint,
      );
    }
    const who = creds.username ? ` as ${creds.username}` : '';
    return new RegistryAuthError(
      `authentication to ${this.host} failed${who}: wrong credentials, or no access${repo ? ` to ${repo}` : ''}?`,
      this.credentialHint,
    );
  }

  private async token(scopes: string[], repo: string | undefined, fresh: boolean, cacheScopes: string[] = scopes): Promise<CachedToken> {
    const key = [...cacheScopes].sort().join(' ');
    if (!fresh) {
      const cached = this.tokens.get(key);
      if (cached && cached.expiresAt > Date.now()) return cached;
      const inflight = this.pending.get(key);
      if (inflight) return inflight;
    } else {
      this.tokens.delete(key);
    }
    const p = this.fetchToken(scopes, repo).then(
      (t) => {
        this.tokens.set(key, t);
        this.pending.delete(key);
        return t;
      },
      (err: unknown) => {
        this.pending.delete(key);
        throw err;
      },
    );
    this.pending.set(key, p);
    return p;
  }

  private async fetchToken(scopes: string[], repo: string | undefined): Promise<CachedToken> {
    const realm = this.realm!;
    const creds = this.credentialsFor(repo);
    if (creds && realm.protocol === 'http:' && !this.plainRealmAllowed()) {
      throw new RegistryAuthError(
        `${this.host} sends its token requests to ${realm.host} over plain HTTP (http://${realm.host}${realm.pathname}): refusing to send credentials there in clear`,
        'the registry is reached over https; fix its token realm, or allow insecure transport for it (--src-tls-verify=false / --dest-tls-verify=false)',
      );
    }
    const url = new URL(realm.href);
    let res;
    const method = creds?.kind === 'identityToken' ? 'POST' : 'GET';
    if (creds?.kind === 'identityToken') {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.token, client_id: 'bundle' });
      if (this.service) form.set('service', this.service);
      if (scopes.length) form.set('scope', scopes.join(' '));
      res = await this.transport.request({
        method: 'POST',
        url,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
      });
    } else {
      if (this.service) url.searchParams.set('service', this.service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (creds?.kind === 'basic') headers['authorization'] = basicHeader(creds.username, creds.password);
      res = await this.transport.request({ method: 'GET', url, headers });
    }
    if (res.status === 401 || res.status === 403) {
      await res.body.dump().catch(() => undefined);
      throw this.refused(creds, repo);
    }
    if (res.status !== 200) {
      const text = await readErrorText(res);
      throw new RegistryHttpError(`${describeRequest(method, new URL(realm.origin + realm.pathname))} (token for ${this.host})`, res.status, parseRegistryErrors(text), res.attempts);
    }
    const body = await readBody(res, 1024 * 1024);
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      parsed = JSON.parse(body?.toString('utf8') ?? '') as typeof parsed;
    } catch {
      throw new RegistryAuthError(`the token service of ${this.host} (${realm.host}) answered with something that is not JSON`);
    }
    const token = typeof parsed.token === 'string' && parsed.token ? parsed.token : parsed.access_token;
    if (typeof token !== 'string' || !token) {
      throw new RegistryAuthError(`the token service of ${this.host} (${realm.host}) returned no token`);
    }
    const expiresIn = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : 60;
    // Renew a little early so a token does not expire in flight.
    const margin = Math.min(30, expiresIn / 4);
    return { token, expiresAt: Date.now() + (expiresIn - margin) * 1000 };
  }

  /** Forget a cached token (e.g. after a 401 on a request that could not be replayed). */
  invalidate(scopes: string[]): void {
    this.tokens.delete([...scopes].sort().join(' '));
  }
}
