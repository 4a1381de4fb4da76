/**
 * The one registry client: Distribution API v2 against a single registry host.
 */
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { apiHost, DOCKER_HUB } from '../oci/reference.js';
import { isManifestMediaType, MANIFEST_MEDIA_TYPES } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import { BundleError, DigestMismatchError } from '../util/errors.js';
import { Authenticator, CATALOG_SCOPE, repositoryScope } from './auth.js';
import { findCredentials, type Credentials } from './authfile.js';
import { describeRequest, parseRegistryErrors, RegistryHttpError, RegistryNetworkError } from './errors.js';
import { header, HttpTransport, networkDetail, readBody, readErrorText, type HttpResponse } from './http.js';
import { errorCode, parseRetryAfter, RetryPolicy, type Attempts } from './retry.js';
import { createAgent, loadTlsMaterial, schemesFor } from './tls.js';
import type { RegistryOptions } from './options.js';

export type { RegistryOptions } from './options.js';
import { chunksOf, HoldBackLast } from './upload.js';

/** Manifests larger than this are refused. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

interface SendOptions {
  scopes: string[];
  repo?: string;
  headers?: Record<string, string>;
  body?: Buffer | string | Readable;
  /** Follow redirects (GET/HEAD only); cross-origin hops carry no Authorization. */
  follow?: boolean;
  /** False: one attempt (probes, best-effort cleanup). */
  retries?: boolean;
  /** The request's attempt budget, when a caller may try it again (resuming, re-opening a source). */
  attempts?: Attempts;
  signal?: AbortSignal;
}

/** Where a blob's bytes come from for an upload: a stream (sent once), or a way to open it again for each attempt. */
export type BlobSource = Readable | (() => Promise<Readable>);

const TLS_CERT_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function digestOf(bytes: Buffer, algorithm: string): string {
  const alg = algorithm === 'sha512' ? 'sha512' : 'sha256';
  return `${alg}:${createHash(alg).update(bytes).digest('hex')}`;
}

function isDigest(ref: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(ref) && ref.includes(':');
}

function mediaTypeOf(res: HttpResponse): string | undefined {
  const ct = header(res, 'content-type');
  return ct ? ct.split(';')[0]!.trim() : undefined;
}

/** The `rel="next"` target of a Link header, if any. */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (m && /(?:^|;)\s*rel="?next"?\s*(?:;|$)/i.test(m[2]!)) return m[1];
  }
  return undefined;
}

export class RegistryClient {
  /** Registry name as the user wrote it (docker.io for Docker Hub). */
  readonly registry: string;
  /** host[:port] actually contacted. */
  readonly host: string;
  readonly chunkSize?: number;
  /** The one retry policy of every request to this registry (`--retries`). */
  readonly retry: RetryPolicy;
  private readonly transport: HttpTransport;
  private readonly auth: Authenticator;
  private readonly schemes: Array<'https' | 'http'>;
  private originPromise?: Promise<URL>;
  /** The origin in use, once detected. */
  private resolvedOrigin?: URL;
  private readonly credCache = new Map<string, Credentials | undefined>();

  constructor(registry: string, private readonly opts: RegistryOptions = {}) {
    this.registry = registry === 'index.docker.io' || registry === 'registry-1.docker.io' ? DOCKER_HUB : registry;
    this.host = apiHost(this.registry);
    this.chunkSize = opts.chunkSize;
    const material = loadTlsMaterial(this.host, opts);
    this.retry = new RetryPolicy({
      ...(opts.retries !== undefined ? { attempts: opts.retries } : {}),
      ...(opts.retryDelayMs !== undefined ? { baseDelayMs: opts.retryDelayMs } : {}),
    });
    this.transport = new HttpTransport(
      // Connections per registry are capped only when asked (create's
      // --max-connections-per-registry), by callers that never hold a response
      // open while waiting for another request.
      createAgent(material, opts.maxConnections, opts.timeoutMs),
      this.retry,
      opts.userAgent ?? 'bundle',
    );
    this.schemes = schemesFor(this.host, opts);
    this.auth = new Authenticator(
      this.registry,
      this.transport,
      (repo) => this.credentialsFor(repo),
      undefined,
      // Plain HTTP to the registry is itself only ever by permission (loopback, or TLS verification off).
      () => opts.tlsVerify === false || this.resolvedOrigin?.protocol === 'http:',
    );
  }

  private credentialsFor(repo: string | undefined): Credentials | undefined {
    if (this.opts.credentials) return this.opts.credentials;
    const key = repo ?? '';
    if (!this.credCache.has(key)) {
      this.credCache.set(key, findCredentials(this.registry, repo, this.opts.authfile).credentials);
    }
    return this.credCache.get(key);
  }

  /** Which scheme the registry speaks: https, or http where allowed and https fails to connect. */
  private origin(): Promise<URL> {
    if (!this.originPromise) {
      this.originPromise = this.detectOrigin();
      this.originPromise.then(
        (o) => {
          this.resolvedOrigin = o;
        },
        () => {
          this.originPromise = undefined;
        },
      );
    }
    return this.originPromise;
  }

  private async detectOrigin(): Promise<URL> {
    if (this.schemes.length === 1) return new URL(`${this.schemes[0]}://${this.host}/`);
    for (const scheme of this.schemes) {
      const base = new URL(`${scheme}://${this.host}/`);
      try {
        const res = await this.transport.request({ method: 'GET', url: new URL('/v2/', base) }, { retries: false });
        await res.body.dump().catch(() => undefined);
        // A TLS port answers a plain-HTTP request with 400 (Go, nginx): the registry speaks https.
        if (scheme === 'http' && res.status === 400) continue;
        return base;
      } catch (err) {
        // A certificate problem means the server does speak TLS: keep https so the error surfaces.
        if (scheme === 'https' && TLS_CERT_CODES.has(errorCode(err))) return base;
      }
    }
    // Nothing answered: the real request will fail and say why, over plain HTTP when that is allowed.
    return new URL(`${this.schemes.includes('http') ? 'http' : 'https'}://${this.host}/`);
  }

  /** Base URL in use (after scheme detection). */
  async baseUrl(): Promise<string> {
    return (await this.origin()).origin;
  }

  /**
   * Send a request, once the scheme is known. While it is still being found
   * (a loopback registry: plain HTTP first), a request that may be sent twice
   * (GET, HEAD, no body) goes out over the first scheme at once, beside the
   * probe: its answer is kept when the probe agrees, so the probe costs no
   * round trip of its own.
   */
  private async send(method: string, target: string | URL, o: SendOptions): Promise<HttpResponse> {
    const guess = this.originGuess(method, o);
    if (guess) {
      const abandon = new AbortController();
      const early = this.sendTo(guess, method, target, { ...o, signal: abandon.signal });
      early.catch(() => undefined);
      // The right scheme: this is the request (with its retries, its answer or its error).
      if ((await this.origin()).origin === guess.origin) return early;
      abandon.abort();
      await early.then((res) => res.body.dump()).catch(() => undefined);
    }
    return this.sendTo(await this.origin(), method, target, o);
  }

  /** The first scheme to try, while the scheme is unknown, for a request that may be sent twice. */
  private originGuess(method: string, o: SendOptions): URL | undefined {
    if (this.resolvedOrigin || this.schemes.length < 2 || (method !== 'GET' && method !== 'HEAD') || o.body !== undefined) return undefined;
    return new URL(`${this.schemes[0]}://${this.host}/`);
  }

  private async sendTo(origin: URL, method: string, target: string | URL, o: SendOptions): Promise<HttpResponse> {
    let url = typeof target === 'string' ? new URL(target, origin) : target;
    const replayable = o.body === undefined || typeof o.body === 'string' || Buffer.isBuffer(o.body);
    let authz = url.origin === origin.origin ? await this.auth.authorization(o.scopes, o.repo) : undefined;
    let afterAuth = false;
    let redirects = 0;
    const attempts = o.attempts ?? this.retry.begin();
    for (;;) {
      const sameOrigin = url.origin === origin.origin;
      const headers: Record<string, string> = { ...o.headers };
      if (authz && sameOrigin) headers['authorization'] = authz;
      const res = await this.transport.request({ method, url, headers, body: o.body, signal: o.signal }, { retries: o.retries, attempts });
      if (res.status === 401 && sameOrigin) {
        const www = header(res, 'www-authenticate');
        await res.body.dump().catch(() => undefined);
        if (!replayable) {
          this.auth.invalidate(o.scopes);
          throw new RegistryHttpError(describeRequest(method, url), 401, [], res.attempts, 'the registry refused credentials mid-upload; retry');
        }
        authz = await this.auth.onUnauthorized(www, o.scopes, o.repo, afterAuth);
        afterAuth = true;
        attempts.uncount(); // answering the challenge is not a retry
        continue;
      }
      if (o.follow && [301, 302, 303, 307, 308].includes(res.status)) {
        const loc = header(res, 'location');
        await res.body.dump().catch(() => undefined);
        if (!loc) throw new RegistryHttpError(describeRequest(method, url), res.status, [], res.attempts, 'redirect without a Location');
        if (++redirects > 5) throw new BundleError(`${describeRequest(method, url)} failed: too many redirects`);
        url = new URL(loc, url);
        attempts.uncount(); // following a redirect is not a retry
        continue;
      }
      return res;
    }
  }

  private async fail(method: string, res: HttpResponse, hint?: string): Promise<never> {
    const text = method === 'HEAD' ? '' : await readErrorText(res);
    if (method === 'HEAD') await res.body.dump().catch(() => undefined);
    const err = new RegistryHttpError(describeRequest(method, res.url), res.status, parseRegistryErrors(text), res.attempts, hint);
    err.retryAfterMs = parseRetryAfter(header(res, 'retry-after'));
    throw err;
  }

  private repoPath(repo: string, rest: string): string {
    return `/v2/${repo}/${rest}`;
  }

  /** Check the registry answers the v2 API (authenticating if it asks). */
  async ping(): Promise<void> {
    const res = await this.send('GET', '/v2/', { scopes: [] });
    if (res.status !== 200) await this.fail('GET', res);
    await res.body.dump();
  }

  /** A manifest's exact bytes, verified against its digest. */
  async getManifest(repo: string, ref: string): Promise<FetchedManifest> {
    return (await this.readManifest(repo, ref, false))!;
  }

  /** A manifest's exact bytes, verified against its digest, or undefined when it does not exist (one GET: no HEAD first). */
  findManifest(repo: string, ref: string): Promise<FetchedManifest | undefined> {
    return this.readManifest(repo, ref, true);
  }

  private async readManifest(repo: string, ref: string, missingOk: boolean): Promise<FetchedManifest | undefined> {
    const res = await this.send('GET', this.repoPath(repo, `manifests/${ref}`), {
      scopes: [repositoryScope(repo, 'pull')],
      repo,
      headers: { accept: MANIFEST_MEDIA_TYPES.join(', ') },
      follow: true,
    });
    const what = `manifest ${this.registry}/${repo}${isDigest(ref) ? '@' : ':'}${ref}`;
    if (res.status === 404 && missingOk) {
      await res.body.dump().catch(() => undefined);
      return undefined;
    }
    if (res.status === 404) await this.fail('GET', res, `${what} not found`);
    if (res.status !== 200) await this.fail('GET', res);
    const declared = Number(header(res, 'content-length') ?? NaN);
    if (declared > MAX_MANIFEST_BYTES) {
      res.body.destroy();
      throw new BundleError(`${what} is ${declared} bytes, more than the ${MAX_MANIFEST_BYTES} allowed for a manifest`);
    }
    const bytes = await readBody(res, MAX_MANIFEST_BYTES);
    if (!bytes) throw new BundleError(`${what} is larger than the ${MAX_MANIFEST_BYTES} bytes allowed for a manifest`);
    let mediaType = mediaTypeOf(res);
    if (!isManifestMediaType(mediaType)) {
      try {
        const mt = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType;
        if (typeof mt === 'string' && isManifestMediaType(mt)) mediaType = mt;
      } catch {
        // not JSON: reported below
      }
    }
    if (!mediaType || !isManifestMediaType(mediaType)) {
      throw new BundleError(`${what} has unsupported media type ${mediaType ?? '(none)'}`);
    }
    let digest: string;
    if (isDigest(ref)) {
      digest = ref;
      const actual = digestOf(bytes, ref.slice(0, ref.indexOf(':')));
      if (actual !== ref) throw new DigestMismatchError(ref, actual, what);
    } else {
      digest = digestOf(bytes, 'sha256');
      const claimed = header(res, 'docker-content-digest');
      if (claimed && claimed.startsWith('sha256:') && claimed !== digest) throw new DigestMismatchError(claimed, digest, what);
    }
    return { bytes, mediaType, digest };
  }

  /** The descriptor of a manifest, or undefined when it does not exist. */
  async headManifest(repo: string, ref: string): Promise<Descriptor | undefined> {
    const res = await this.send('HEAD', this.repoPath(repo, `manifests/${ref}`), {
      scopes: [repositoryScope(repo, 'pull')],
      repo,
      headers: { accept: MANIFEST_MEDIA_TYPES.join(', ') },
      follow: true,
    });
    await res.body.dump().catch(() => undefined);
    if (res.status === 404) return undefined;
    if (res.status !== 200) await this.fail('HEAD', res);
    const digest = header(res, 'docker-content-digest') ?? (isDigest(ref) ? ref : undefined);
    const mediaType = mediaTypeOf(res);
    const size = Number(header(res, 'content-length') ?? NaN);
    if (!digest || !isManifestMediaType(mediaType) || !Number.isFinite(size)) {
      // Some registries leave headers out of HEAD answers: ask for the bytes.
      const m = await this.getManifest(repo, ref);
      return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
    }
    return { mediaType: mediaType!, digest, size };
  }

  /** Store manifest bytes as they are under a tag or digest; returns the digest. */
  async putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<string> {
    const res = await this.send('PUT', this.repoPath(repo, `manifests/${ref}`), {
      scopes: [repositoryScope(repo, 'pull,push')],
      repo,
      headers: { 'content-type': mediaType },
      body: bytes,
    });
    if (![200, 201, 202, 204].includes(res.status)) await this.fail('PUT', res);
    await res.body.dump().catch(() => undefined);
    const digest = digestOf(bytes, 'sha256');
    const claimed = header(res, 'docker-content-digest');
    if (claimed && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new DigestMismatchError(digest, claimed, `manifest stored at ${this.registry}/${repo}:${ref}`);
    }
    return digest;
  }

  /** Size of a blob, or undefined when the repository does not have it. */
  async headBlob(repo: string, digest: string): Promise<number | undefined> {
    const res = await this.send('HEAD', this.repoPath(repo, `blobs/${digest}`), {
      scopes: [repositoryScope(repo, 'pull')],
      repo,
      follow: true,
    });
    await res.body.dump().catch(() => undefined);
    if (res.status === 404) return undefined;
    if (res.status !== 200) await this.fail('HEAD', res);
    const size = Number(header(res, 'content-length') ?? NaN);
    return Number.isFinite(size) ? size : 0;
  }

  /**
   * The raw, unverified bytes of a blob (redirects to storage followed without
   * our credentials). A download that breaks off is resumed where it stopped
   * (a Range request; a server that ignores Range is read past what we have),
   * each resumption one more attempt of the request.
   */
  async getBlob(repo: string, digest: string): Promise<Readable> {
    const attempts = this.retry.begin();
    const first = await this.openBlobAt(repo, digest, 0, attempts);
    return Readable.from(this.resumingBody(repo, digest, first, attempts), { objectMode: false });
  }

  /** GET a blob from byte `offset` (to `end`, exclusive, when given): 206 for that range, or 200 for the whole blob. */
  private async openBlobAt(repo: string, digest: string, offset: number, attempts: Attempts, end?: number): Promise<HttpResponse> {
    const range = end !== undefined ? `bytes=${offset}-${end - 1}` : offset > 0 ? `bytes=${offset}-` : undefined;
    const res = await this.send('GET', this.repoPath(repo, `blobs/${digest}`), {
      scopes: [repositoryScope(repo, 'pull')],
      repo,
      follow: true,
      attempts,
      headers: range ? { range } : undefined,
    });
    if (res.status === 404) await this.fail('GET', res, `blob ${digest} not found in ${this.registry}/${repo}`);
    if (res.status === 206 && range) {
      const m = /^bytes (\d+)-(\d+)/.exec(header(res, 'content-range') ?? '');
      if (m && Number(m[1]) === offset && (end === undefined || Number(m[2]) === end - 1)) return res;
      res.body.destroy();
      throw new BundleError(`${describeRequest('GET', res.url)}: asked for ${range}, the registry answered ${header(res, 'content-range') ?? 'without a Content-Range'}`);
    }
    if (res.status !== 200) await this.fail('GET', res);
    return res;
  }

  /**
   * The bytes from `start` (to `end`, exclusive, when given) of a blob, from a
   * first answer on; a break is resumed with a Range request where it stopped,
   * each resumption one more attempt of the request.
   */
  private async *resumingBody(repo: string, digest: string, first: HttpResponse, attempts: Attempts, start = 0, end?: number): AsyncGenerator<Buffer> {
    let res = first;
    let offset = start;
    for (;;) {
      // A 200 to a Range request starts from byte 0: skip what is not wanted or was already passed on.
      let skip = res.status === 200 ? offset : 0;
      try {
        for await (const c of res.body) {
          let chunk = c as Buffer;
          if (skip > 0) {
            const n = Math.min(skip, chunk.length);
            skip -= n;
            chunk = chunk.subarray(n);
            if (chunk.length === 0) continue;
          }
          if (end !== undefined && offset + chunk.length >= end) {
            if (end > offset) yield chunk.subarray(0, end - offset);
            offset = end;
            res.body.destroy();
            return;
          }
          offset += chunk.length;
          yield chunk;
        }
        return;
      } catch (err) {
        const failure = new RegistryNetworkError(describeRequest('GET', res.url), errorCode(err), networkDetail(err), attempts.count);
        if (!attempts.canRetry(failure)) throw failure;
      }
      res = await this.openBlobAt(repo, digest, offset, attempts, end);
    }
  }

  /**
   * Bytes [start, end) of a blob (a `Range` request), resumed where it stopped
   * when it breaks off, like getBlob, within the same attempts. `whole` is true
   * when a request for the blob's start was answered with the whole blob (the
   * registry ignores Range): the stream then carries all of it. A later part
   * answered whole is cut to the part.
   */
  async getBlobRange(repo: string, digest: string, start: number, end: number): Promise<{ body: Readable; whole: boolean }> {
    const attempts = this.retry.begin();
    const first = await this.openBlobAt(repo, digest, start, attempts, end);
    const whole = first.status === 200 && start === 0;
    const body = this.resumingBody(repo, digest, first, attempts, start, whole ? undefined : end);
    return { body: Readable.from(body, { objectMode: false }), whole };
  }

  private pushScopes(repo: string, fromRepo?: string): string[] {
    const s = [repositoryScope(repo, 'pull,push')];
    if (fromRepo && fromRepo !== repo) s.push(repositoryScope(fromRepo, 'pull'));
    return s;
  }

  /** Cancel an upload session (best effort). */
  private async cancelUpload(repo: string, location: URL): Promise<void> {
    try {
      const res = await this.send('DELETE', location, { scopes: this.pushScopes(repo), repo, retries: false });
      await res.body.dump().catch(() => undefined);
    } catch {
      // the registry purges abandoned uploads eventually
    }
  }

  private async startUpload(repo: string): Promise<URL> {
    const res = await this.send('POST', this.repoPath(repo, 'blobs/uploads/'), {
      scopes: this.pushScopes(repo),
      repo,
      body: Buffer.alloc(0),
      headers: { 'content-length': '0' },
    });
    if (res.status !== 202 && res.status !== 201) await this.fail('POST', res);
    await res.body.dump().catch(() => undefined);
    const loc = header(res, 'location');
    if (!loc) throw new BundleError(`${describeRequest('POST', res.url)}: the registry returned no upload Location`);
    return new URL(loc, res.url);
  }

  /** Cross-repository mount. True when mounted; false when the registry would not (the session it opened is cancelled). */
  async mountBlob(repo: string, digest: string, fromRepo: string): Promise<boolean> {
    const path = `${this.repoPath(repo, 'blobs/uploads/')}?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(fromRepo)}`;
    const res = await this.send('POST', path, {
      scopes: this.pushScopes(repo, fromRepo),
      repo,
      body: Buffer.alloc(0),
      headers: { 'content-length': '0' },
    });
    if (res.status === 201) {
      await res.body.dump().catch(() => undefined);
      return true;
    }
    if (res.status === 202) {
      await res.body.dump().catch(() => undefined);
      const loc = header(res, 'location');
      if (loc) await this.cancelUpload(repo, new URL(loc, res.url));
      return false;
    }
    if (res.status >= 400 && res.status < 500) {
      // No access to the source repository, or mounting not supported: upload instead.
      await res.body.dump().catch(() => undefined);
      return false;
    }
    return this.fail('POST', res);
  }

  /**
   * Upload a blob: monolithic (one PUT with Content-Length), or in PATCH chunks
   * of `chunkSize` when the blob is larger than that. Never commits when the
   * source stream errors; the upload session is then cancelled. A monolithic
   * PUT that fails in a way worth retrying is started over from a re-opened
   * source when `source` can be opened again, each time one more attempt of
   * that PUT (chunks are Buffers: the transport replays them itself).
   */
  async uploadBlob(repo: string, digest: string, size: number, source: BlobSource, opts: { chunkSize?: number } = {}): Promise<void> {
    const chunkSize = opts.chunkSize ?? this.chunkSize;
    if (chunkSize && chunkSize > 0 && size > chunkSize) {
      await this.uploadChunked(repo, digest, typeof source === 'function' ? await source() : source, chunkSize);
      return;
    }
    const attempts = this.retry.begin();
    let reauthorised = false;
    for (;;) {
      await attempts.ready();
      const location = await this.startUpload(repo);
      let body: Readable;
      try {
        body = typeof source === 'function' ? await source() : source;
      } catch (err) {
        await this.cancelUpload(repo, location);
        throw err;
      }
      const failure = await this.putStream(repo, location, digest, body, size, attempts);
      if (!failure) return;
      await this.cancelUpload(repo, location);
      if (failure.fromSource || typeof source !== 'function') throw failure.error;
      // A token that expired mid-upload was dropped: one more try with a fresh one, not counted as a retry.
      if (failure.error instanceof RegistryHttpError && failure.error.status === 401 && !reauthorised) {
        reauthorised = true;
        attempts.uncount();
        continue;
      }
      if (!attempts.canRetry(failure.error)) throw failure.error;
      if (failure.error instanceof RegistryHttpError) attempts.retryAfter(failure.error.retryAfterMs);
    }
  }

  /** One monolithic PUT of `body`, its last piece held back until the source ends cleanly. */
  private async putStream(repo: string, location: URL, digest: string, body: Readable, size: number, attempts: Attempts): Promise<{ error: unknown; fromSource: boolean } | undefined> {
    let sourceError: unknown;
    body.on('error', (err) => {
      sourceError ??= err;
    });
    const held = new HoldBackLast();
    // Errors of the source are recorded by the listener above; the rest surface through the PUT.
    const piping = pipeline(body, held).catch(() => undefined);
    let putError: unknown;
    try {
      await this.finishUpload(repo, location, digest, held, size, attempts);
    } catch (err) {
      putError = err;
      held.destroy();
    }
    await piping;
    if (!body.destroyed && (sourceError || putError)) body.destroy();
    if (sourceError) return { error: sourceError, fromSource: true };
    if (putError) return { error: putError, fromSource: false };
    return undefined;
  }

  private async uploadChunked(repo: string, digest: string, body: Readable, chunkSize: number): Promise<void> {
    let sourceError: unknown;
    body.on('error', (err) => {
      sourceError ??= err;
    });
    let location: URL | undefined;
    try {
      location = await this.startUpload(repo);
      location = await this.uploadChunks(repo, location, body, chunkSize);
      await this.finishUpload(repo, location, digest, Buffer.alloc(0), 0);
    } catch (err) {
      if (!body.destroyed) body.destroy();
      if (location) await this.cancelUpload(repo, location);
      throw sourceError ?? err;
    }
  }

  private async uploadChunks(repo: string, location: URL, body: Readable, chunkSize: number): Promise<URL> {
    let offset = 0;
    let loc = location;
    for await (const chunk of chunksOf(body, chunkSize)) {
      const res = await this.send('PATCH', loc, {
        scopes: this.pushScopes(repo),
        repo,
        body: chunk,
        headers: {
          'content-type': 'application/octet-stream',
          'content-range': `${offset}-${offset + chunk.length - 1}`,
          'content-length': String(chunk.length),
        },
      });
      if (res.status !== 202 && res.status !== 204) await this.fail('PATCH', res);
      await res.body.dump().catch(() => undefined);
      offset += chunk.length;
      const next = header(res, 'location');
      if (next) loc = new URL(next, res.url);
    }
    return loc;
  }

  private async finishUpload(repo: string, location: URL, digest: string, body: Buffer | Readable, size: number, attempts?: Attempts): Promise<void> {
    const url = new URL(location.href);
    url.searchParams.set('digest', digest);
    const res = await this.send('PUT', url, {
      scopes: this.pushScopes(repo),
      repo,
      body,
      attempts,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    });
    if (![201, 202, 204].includes(res.status)) await this.fail('PUT', res);
    await res.body.dump().catch(() => undefined);
  }

  private async paginate(first: string, scopes: string[], repo: string | undefined, field: 'tags' | 'repositories'): Promise<string[]> {
    const out: string[] = [];
    let target: string | URL = first;
    const seen = new Set<string>();
    for (let page = 0; page < 100_000; page++) {
      const res = await this.send('GET', target, { scopes, repo, headers: { accept: 'application/json' } });
      if (res.status !== 200) await this.fail('GET', res);
      const body = await readBody(res, 64 * 1024 * 1024);
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(body?.toString('utf8') ?? '') as Record<string, unknown>;
      } catch {
        throw new BundleError(`${describeRequest('GET', res.url)}: the registry answered with something that is not JSON`);
      }
      const items = parsed[field];
      if (Array.isArray(items)) for (const t of items) if (typeof t === 'string') out.push(t);
      const next = nextLink(header(res, 'link'));
      if (!next) return out;
      const nextUrl = new URL(next, res.url);
      if (seen.has(nextUrl.href)) return out;
      seen.add(nextUrl.href);
      target = nextUrl;
    }
    return out;
  }

  /** All tags of a repository, following `Link` pagination. */
  async listTags(repo: string, opts: { pageSize?: number } = {}): Promise<string[]> {
    const q = opts.pageSize ? `?n=${opts.pageSize}` : '';
    return this.paginate(this.repoPath(repo, `tags/list${q}`), [repositoryScope(repo, 'pull')], repo, 'tags');
  }

  /** All repositories the registry lists, following `Link` pagination. */
  async catalog(opts: { pageSize?: number } = {}): Promise<string[]> {
    const q = opts.pageSize ? `?n=${opts.pageSize}` : '';
    return this.paginate(`/v2/_catalog${q}`, [CATALOG_SCOPE], undefined, 'repositories');
  }

  async close(): Promise<void> {
    await this.transport.close();
  }
}
