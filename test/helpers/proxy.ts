/**
 * A loopback HTTP proxy in front of a real registry, for tests: it injects
 * faults (503, 429 + Retry-After, dropped connections), can put the Bearer
 * token flow in front of an unauthenticated registry, paginates tag lists
 * (Distribution 2.8 ignores `n` there) and counts requests.
 */
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { Transform } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { rng } from './seeded.js';

export interface RequestInfo {
  method: string;
  /** URL path without the query. */
  path: string;
  /** Path with query. */
  url: string;
  /** The Range header, when the request had one. */
  range?: string;
}

/**
 * `drop` resets the connection before answering; `truncate` forwards and cuts the answer's body
 * half way; `stall` forwards and sends the answer's headers (and half its body), then nothing,
 * never closing; for a request with a body (an upload), `stall` stops reading it half way and
 * never answers. `corrupt` flips one byte of the answer's body; `delay` holds the request.
 */
export type FaultKind = 503 | 502 | 500 | 429 | 'drop' | 'corrupt' | 'truncate' | 'stall' | 'delay';

/** Faults on a seeded share of the requests: the same requests fail the same way on every run. */
export interface Chaos {
  seed: number;
  /** Share of the matching requests that fail (0.1: one in ten). */
  rate: number;
  kinds: FaultKind[];
  /** Which requests may fail (default: all). */
  match?: (r: RequestInfo) => boolean;
  /** Retry-After sent with 429 (default "1"). */
  retryAfter?: string;
}

export interface Fault {
  match: (r: RequestInfo) => boolean;
  /** How many matching requests fail (then the fault is spent). */
  times: number;
  /**
   * `corrupt` forwards the request and flips one byte of the answer's body;
   * `truncate` forwards it and cuts the connection half-way through the answer's body.
   */
  kind: FaultKind;
  /** For `delay`: how long to hold the request before forwarding it. */
  delayMs?: number;
  /** Retry-After value sent with 429/503. */
  retryAfter?: string;
}

export interface BearerOptions {
  username?: string;
  password?: string;
  /** Hand out tokens without credentials. */
  anonymous?: boolean;
  expiresIn?: number;
  /** Use `access_token` instead of `token` in the token response. */
  accessTokenField?: boolean;
  /**
   * Send clients to this other proxy's token service (its `/token`, plain
   * HTTP) and accept the tokens it issues, instead of serving tokens here.
   */
  tokenServer?: { host: string; tokensIssued: string[] };
}

export interface ProxyOptions {
  faults?: Fault[];
  bearer?: BearerOptions;
  /**
   * Answer blob GETs with a 307 to `<origin>/storage/<repo>/<digest>?sig=...`,
   * like registries backed by object storage do.
   */
  redirectBlobsTo?: string;
  /** Listen with TLS (PEM files, e.g. from selfSignedCert) instead of plain HTTP. */
  tls?: { certFile: string; keyFile: string };
  /** Drop the Range header of every request, like a registry that does not serve ranges. */
  stripRange?: boolean;
  /** Faults on a seeded share of the requests. */
  chaos?: Chaos;
  /** Called as each request arrives, before anything else (a test may kill its client here). */
  onRequest?: (r: RequestInfo) => void;
}

export interface RecordedRequest extends RequestInfo {
  /** The upstream's answer; 0 when none came (the client gave up first), -1 for an injected drop. */
  status: number;
  /** Request body bytes the proxy received from the client and forwarded upstream. */
  bodyBytes: number;
  /** Whether the client sent its whole request body (false: it stopped part way). */
  bodyComplete: boolean;
  /** Whether an Authorization header came with it (never its value). */
  authorized: boolean;
  /** The fault injected into it, if any. */
  fault?: FaultKind;
  /** sha256 of the whole request body forwarded upstream, once the client has sent all of it. */
  bodySha256?: string;
  /** Order of events at the proxy (no clock): when the request arrived, and when its answer was done. */
  arrived: number;
  done?: number;
  /** Wall clock (ms) when it arrived and when its answer was done. */
  arrivedAt: number;
  doneAt?: number;
}

export interface TokenRequest {
  scopes: string[];
  service?: string;
  withCredentials: boolean;
  granted: boolean;
}

export interface RunningProxy {
  host: string;
  requests: RecordedRequest[];
  tokenRequests: TokenRequest[];
  /** Every token issued (so tests can check that no message leaks one). */
  tokensIssued: string[];
  count(method: string, path: string | RegExp): number;
  addFault(f: Fault): void;
  /** Start (or, with undefined, stop) seeded faults; the schedule starts over from its seed. */
  setChaos(c: Chaos | undefined): void;
  reset(): void;
  stop(): Promise<void>;
}

function repoOf(path: string): string | undefined {
  const m = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(path);
  return m?.[1];
}

function flipOneByte(): Transform {
  let flipped = false;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (!flipped && chunk.length > 0) {
        flipped = true;
        const copy = Buffer.from(chunk);
        const at = Math.floor(copy.length / 2);
        copy[at] = copy[at]! ^ 0xff;
        cb(null, copy);
        return;
      }
      cb(null, chunk);
    },
  });
}

/** Passes the first `keep` bytes on, then cuts the connection. */
function cutAfter(keep: number, res: http.ServerResponse): Transform {
  let passed = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      const room = keep - passed;
      if (room <= 0) {
        cb();
        return;
      }
      passed += Math.min(room, chunk.length);
      cb(null, chunk.length > room ? chunk.subarray(0, room) : chunk);
      if (passed >= keep) setTimeout(() => res.socket?.destroy(), 20);
    },
  });
}

function forward(target: string, req: http.IncomingMessage, res: http.ServerResponse, record: RecordedRequest, alter?: 'corrupt' | 'truncate' | 'stall', stripRange = false): void {
  const [hostname, port] = target.split(':');
  const headers = { ...req.headers };
  delete headers['authorization'];
  if (stripRange) delete headers['range'];
  // Behind a TLS front the registry must build its upload Locations with https.
  if ((req.socket as { encrypted?: boolean }).encrypted) headers['x-forwarded-proto'] = 'https';
  const up = http.request(
    { hostname, port: Number(port), method: req.method, path: req.url, headers, agent: false },
    (upRes) => {
      record.status = upRes.statusCode ?? 0;
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      const length = Number(upRes.headers['content-length'] ?? NaN);
      if (alter === 'corrupt') upRes.pipe(flipOneByte()).pipe(res);
      else if (alter === 'truncate' && length > 1) upRes.pipe(cutAfter(Math.floor(length / 2), res)).pipe(res);
      else if (alter === 'stall') {
        // Headers and half the body (when there is one), then nothing: the connection stays open.
        const half = Number.isFinite(length) ? Math.floor(length / 2) : 0;
        let passed = 0;
        upRes.on('data', (c: Buffer) => {
          if (passed < half) res.write(c.subarray(0, half - passed));
          passed += c.length;
        });
        if (half === 0) res.flushHeaders();
      }
      else upRes.pipe(res);
    },
  );
  up.on('error', () => {
    if (!res.headersSent) {
      res.writeHead(502);
      res.end();
    } else res.destroy();
  });
  req.on('aborted', () => up.destroy());
  // Counted here, where the body starts to flow (a delayed request must not lose its body).
  const hash = createHash('sha256');
  req.on('data', (c: Buffer) => {
    record.bodyBytes += c.length;
    hash.update(c);
  });
  req.on('end', () => (record.bodySha256 = `sha256:${hash.digest('hex')}`));
  req.pipe(up);
}

function getJson(target: string, path: string): Promise<{ status: number; body: unknown }> {
  const [hostname, port] = target.split(':');
  return new Promise((resolve, reject) => {
    http
      .get({ hostname, port: Number(port), path, agent: false }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => {
          try {
            resolve({ status: r.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
          } catch (e) {
            reject(e as Error);
          }
        });
      })
      .on('error', reject);
  });
}

/** Requests that would change the registry: blob uploads, mounts, manifest and tag writes. */
export function writeRequests(p: RunningProxy): RecordedRequest[] {
  return p.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD');
}

export async function startProxy(target: string, opts: ProxyOptions = {}): Promise<RunningProxy> {
  const faults: Fault[] = [...(opts.faults ?? [])];
  const requests: RecordedRequest[] = [];
  const tokenRequests: TokenRequest[] = [];
  const tokensIssued: string[] = [];
  const valid = new Set<string>();
  let selfHost = '';
  // The seeded schedule of chaos faults.
  let chaosOpts = opts.chaos;
  let chaosNext = rng(opts.chaos?.seed ?? 0);
  let events = 0;

  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const info: RequestInfo = { method: req.method ?? 'GET', path: url.pathname, url: req.url ?? '/', ...(req.headers.range ? { range: req.headers.range } : {}) };
    const record: RecordedRequest = {
      ...info,
      status: 0,
      bodyBytes: 0,
      bodyComplete: false,
      authorized: req.headers.authorization !== undefined,
      arrived: ++events,
      arrivedAt: Date.now(),
    };
    requests.push(record);
    opts.onRequest?.(info);
    req.on('end', () => (record.bodyComplete = true));
    res.on('close', () => {
      record.done = ++events;
      record.doneAt = Date.now();
    });

    let fault: { kind: FaultKind; delayMs?: number; retryAfter?: string } | undefined = faults.find((f) => f.times > 0 && f.match(info));
    if (fault) (fault as Fault).times--;
    const chaos = chaosOpts;
    if (!fault && chaos && (chaos.match?.(info) ?? true) && chaosNext() < chaos.rate) {
      fault = { kind: chaos.kinds[Math.floor(chaosNext() * chaos.kinds.length)]!, retryAfter: chaos.retryAfter ?? '1' };
    }
    if (fault) {
      record.fault = fault.kind;
      const hasBody = !['GET', 'HEAD'].includes(info.method) && Number(req.headers['content-length'] ?? 0) > 0;
      if (fault.kind === 'stall' && hasBody) {
        // An upload the server stops reading half way, and never answers.
        const half = Math.floor(Number(req.headers['content-length']) / 2);
        let got = 0;
        req.on('data', (c: Buffer) => {
          got += c.length;
          if (got >= half) req.pause();
        });
        return;
      }
      if (fault.kind === 'drop') {
        record.status = -1;
        req.socket.destroy();
        return;
      }
      if (fault.kind === 'corrupt' || fault.kind === 'truncate' || fault.kind === 'stall') {
        forward(target, req, res, record, fault.kind, opts.stripRange);
        return;
      }
      if (fault.kind === 'delay') {
        setTimeout(() => forward(target, req, res, record, undefined, opts.stripRange), fault.delayMs ?? 1000);
        return;
      }
      record.status = fault.kind;
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter;
      const code = fault.kind === 429 ? 'TOOMANYREQUESTS' : 'UNAVAILABLE';
      req.resume();
      res.writeHead(fault.kind, headers);
      res.end(JSON.stringify({ errors: [{ code, message: `injected ${fault.kind}` }] }));
      return;
    }

    const bearer = opts.bearer;
    if (bearer && url.pathname === '/token') {
      const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
      const auth = req.headers.authorization;
      let granted: boolean;
      if (auth?.startsWith('Basic ')) {
        const [u, ...p] = Buffer.from(auth.slice(6), 'base64').toString('utf8').split(':');
        granted = u === bearer.username && p.join(':') === bearer.password;
      } else {
        granted = bearer.anonymous === true;
      }
      tokenRequests.push({ scopes, service: url.searchParams.get('service') ?? undefined, withCredentials: auth !== undefined, granted });
      req.resume();
      if (!granted) {
        record.status = 401;
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ details: 'incorrect username or password' }));
        return;
      }
      const token = randomBytes(24).toString('hex');
      valid.add(token);
      tokensIssued.push(token);
      record.status = 200;
      res.writeHead(200, { 'content-type': 'application/json' });
      const body: Record<string, unknown> = { expires_in: bearer.expiresIn ?? 300 };
      body[bearer.accessTokenField ? 'access_token' : 'token'] = token;
      res.end(JSON.stringify(body));
      return;
    }
    if (bearer && url.pathname.startsWith('/v2/')) {
      const auth = req.headers.authorization;
      const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
      if (!token || !(valid.has(token) || bearer.tokenServer?.tokensIssued.includes(token))) {
        const repo = repoOf(url.pathname);
        const push = !['GET', 'HEAD'].includes(info.method);
        let scope = '';
        if (repo) scope = `,scope="repository:${repo}:${push ? 'pull,push' : 'pull'}"`;
        else if (url.pathname === '/v2/_catalog') scope = ',scope="registry:catalog:*"';
        req.resume();
        record.status = 401;
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': `Bearer realm="http://${bearer.tokenServer?.host ?? selfHost}/token",service="test"${scope}`,
        });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
        return;
      }
    }

    const blobMatch = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    if (opts.redirectBlobsTo && req.method === 'GET' && blobMatch) {
      req.resume();
      record.status = 307;
      res.writeHead(307, { location: `${opts.redirectBlobsTo}/storage/${blobMatch[1]}/${blobMatch[2]}?sig=signed-url-part` });
      res.end();
      return;
    }

    // Distribution 2.8 ignores `n` on tag lists: page them here like newer registries do.
    const tagsMatch = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname);
    if (req.method === 'GET' && tagsMatch && url.searchParams.has('n')) {
      const n = Number(url.searchParams.get('n'));
      const last = url.searchParams.get('last');
      req.resume();
      getJson(target, url.pathname).then(
        ({ status, body }) => {
          record.status = status;
          if (status !== 200) {
            res.writeHead(status, { 'content-type': 'application/json' });
            res.end(JSON.stringify(body));
            return;
          }
          const all = [...(((body as { tags?: string[] }).tags) ?? [])].sort();
          const rest = last ? all.filter((t) => t > last) : all;
          const page = rest.slice(0, n);
          const headers: Record<string, string> = { 'content-type': 'application/json' };
          if (rest.length > n) {
            headers['link'] = `<${url.pathname}?n=${n}&last=${encodeURIComponent(page[page.length - 1]!)}>; rel="next"`;
          }
          res.writeHead(200, headers);
          res.end(JSON.stringify({ name: tagsMatch[1], tags: page }));
        },
        () => {
          record.status = 502;
          res.writeHead(502);
          res.end();
        },
      );
      return;
    }

    forward(target, req, res, record, undefined, opts.stripRange);
  };
  const server = opts.tls
    ? https.createServer({ cert: readFileSync(opts.tls.certFile), key: readFileSync(opts.tls.keyFile) }, handler)
    : http.createServer(handler);

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  selfHost = `127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    host: selfHost,
    requests,
    tokenRequests,
    tokensIssued,
    count(method, path) {
      return requests.filter((r) => r.method === method && (typeof path === 'string' ? r.path === path : path.test(r.path))).length;
    },
    addFault(f) {
      faults.push(f);
    },
    setChaos(c) {
      chaosOpts = c;
      chaosNext = rng(c?.seed ?? 0);
    },
    reset() {
      requests.length = 0;
      tokenRequests.length = 0;
    },
    stop() {
      return new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

export interface BlobStorage {
  /** `http://address:port`: give it to startProxy as `redirectBlobsTo`. */
  origin: string;
  /** The Authorization header of every request that came (undefined: none). */
  authorizations: (string | undefined)[];
  stop(): Promise<void>;
}

/**
 * Blob storage on its own loopback address, as a registry's redirects point to it
 * (`redirectBlobsTo`): serves `/storage/<repo>/<digest>?sig=...` from `registryHost`
 * and records the Authorization header each request carried.
 */
export async function startBlobStorage(registryHost: string, address = '127.0.0.1'): Promise<BlobStorage> {
  const authorizations: (string | undefined)[] = [];
  const server = http.createServer((req, res) => {
    authorizations.push(req.headers.authorization);
    const m = /^\/storage\/(.+)\/(sha256:[a-f0-9]{64})\?sig=signed-url-part$/.exec(req.url ?? '');
    if (!m) {
      res.writeHead(404);
      res.end();
      return;
    }
    http.get(`http://${registryHost}/v2/${m[1]}/blobs/${m[2]}`, (up) => {
      res.writeHead(up.statusCode ?? 502, { 'content-length': up.headers['content-length'] ?? '' });
      up.pipe(res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  return {
    origin: `http://${address}:${(server.address() as AddressInfo).port}`,
    authorizations,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
