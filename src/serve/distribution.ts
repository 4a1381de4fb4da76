/**
 * The read-only OCI Distribution API over a bundle (distribution-spec v1.1):
 * `/v2/`, manifests and blobs by tag or digest (HEAD, GET, single ranges),
 * tags and the catalog with `n`/`last` pagination and `Link` headers, and the
 * referrers API. Every write is answered 405 with the API's UNSUPPORTED error.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { ArchiveReader } from '../archive/reader.js';
import { MediaType } from '../oci/media-types.js';
import { isSha256Digest, verifyBuffer } from '../util/digest.js';
import { errorMessage } from '../util/errors.js';
import type { BlobSource, ByteRange } from './blobs.js';
import type { Repository, RepositoryView } from './repositories.js';

/** What a handled request reports for the log. */
export interface Outcome {
  status: number;
  bytes: number;
  error?: string;
}

const API_HEADERS = { 'Docker-Distribution-API-Version': 'registry/2.0' };
/** Largest page of tags or repositories (a larger `n` is clamped, as Distribution does). */
const MAX_PAGE = 1000;

type ErrorCode =
  | 'BLOB_UNKNOWN'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'NAME_INVALID'
  | 'PAGINATION_NUMBER_INVALID'
  | 'RANGE_INVALID'
  | 'UNSUPPORTED'
  | 'UNKNOWN';

export class DistributionApi {
  constructor(
    private readonly view: RepositoryView,
    private readonly blobs: BlobSource,
    private readonly reader: ArchiveReader,
  ) {}

  /** Handle a request under `/v2/`. */
  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<Outcome> {
    const method = req.method ?? 'GET';
    const path = url.pathname;
    const read = method === 'GET' || method === 'HEAD';
    if (!read) {
      return this.error(res, method, 405, 'UNSUPPORTED', `this registry is a read-only view of a bundle: ${method} is not supported`, { Allow: 'GET, HEAD' });
    }
    if (path === '/v2/' || path === '/v2') return this.json(res, method, 200, {});
    if (path === '/v2/_catalog') return this.catalog(res, method, url);
    let m: RegExpExecArray | null;
    if ((m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path))) return this.manifest(res, method, m[1]!, decodeURIComponent(m[2]!));
    if (/^\/v2\/(.+)\/blobs\/uploads(\/.*)?$/.test(path)) {
      return this.error(res, method, 405, 'UNSUPPORTED', 'this registry is a read-only view of a bundle: uploads are not supported', { Allow: 'GET, HEAD' });
    }
    if ((m = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(path))) return this.blob(req, res, method, m[1]!, decodeURIComponent(m[2]!));
    if ((m = /^\/v2\/(.+)\/tags\/list$/.exec(path))) return this.tags(res, method, m[1]!, url);
    if ((m = /^\/v2\/(.+)\/referrers\/([^/]+)$/.exec(path))) return this.referrers(res, method, m[1]!, decodeURIComponent(m[2]!), url);
    return this.error(res, method, 404, 'UNSUPPORTED', `no such endpoint: ${path}`);
  }

  private repo(res: ServerResponse, method: string, name: string): Repository | Outcome {
    const repo = this.view.repositories.get(name);
    if (!repo) return this.error(res, method, 404, 'NAME_UNKNOWN', `repository ${name} is not in this bundle`, {}, { name });
    return repo;
  }

  private async manifest(res: ServerResponse, method: string, name: string, reference: string): Promise<Outcome> {
    const repo = this.repo(res, method, name);
    if (!isRepository(repo)) return repo;
    let digest: string | undefined;
    if (reference.includes(':')) {
      if (!isSha256Digest(reference)) return this.error(res, method, 400, 'DIGEST_INVALID', `unsupported digest ${reference} (sha256 only)`);
      if (repo.manifests.has(reference)) digest = reference;
    } else {
      digest = repo.tags.get(reference);
    }
    const info = digest ? this.view.manifests.get(digest) : undefined;
    if (!digest || !info) return this.error(res, method, 404, 'MANIFEST_UNKNOWN', `manifest ${name}:${reference} is not in this bundle`, {}, { name, reference });
    // Manifests are small: read whole and checked against the digest before a byte is sent.
    let bytes: Buffer;
    try {
      const desc = { digest, mediaType: info.mediaType, size: info.size };
      ({ bytes } = await (this.view.storeOf(digest) ?? this.reader).fetchManifest('', desc));
      verifyBuffer(bytes, digest, info.size, `manifest ${digest}`);
    } catch (err) {
      return this.error(res, method, 500, 'UNKNOWN', `manifest ${digest} cannot be served: ${errorMessage(err)}`);
    }
    res.writeHead(200, {
      ...API_HEADERS,
      'Content-Type': info.mediaType,
      'Content-Length': bytes.length,
      'Docker-Content-Digest': digest,
      ETag: `"${digest}"`,
    });
    res.end(method === 'HEAD' ? undefined : bytes);
    return { status: 200, bytes: method === 'HEAD' ? 0 : bytes.length };
  }

  private async blob(req: IncomingMessage, res: ServerResponse, method: string, name: string, digest: string): Promise<Outcome> {
    const repo = this.repo(res, method, name);
    if (!isRepository(repo)) return repo;
    if (!isSha256Digest(digest)) return this.error(res, method, 400, 'DIGEST_INVALID', `unsupported digest ${digest} (sha256 only)`);
    const size = this.blobs.size(digest);
    // Manifests are blobs too (Distribution serves them under /blobs/ as well).
    const known = repo.blobs.has(digest) || repo.manifests.has(digest);
    if (!known || size === undefined) return this.error(res, method, 404, 'BLOB_UNKNOWN', `blob ${digest} is not in repository ${name}`, {}, { digest });
    const bad = this.blobs.failure(digest);
    if (bad) return this.error(res, method, 500, 'UNKNOWN', `blob ${digest} failed its digest check and is not served`);
    const headers: Record<string, string | number> = {
      ...API_HEADERS,
      'Content-Type': MediaType.OctetStream,
      'Docker-Content-Digest': digest,
      'Accept-Ranges': 'bytes',
      ETag: `"${digest}"`,
      'Cache-Control': 'max-age=31536000',
    };
    let range: ByteRange | undefined;
    const rangeHeader = req.headers.range;
    if (rangeHeader !== undefined) {
      const parsed = parseRange(rangeHeader, size);
      if (parsed === 'unsatisfiable') {
        return this.error(res, method, 416, 'RANGE_INVALID', `range ${rangeHeader} is outside the blob's ${size} bytes`, { 'Content-Range': `bytes */${size}` });
      }
      range = parsed;
    }
    const status = range ? 206 : 200;
    const length = range ? range.end - range.start + 1 : size;
    if (range) headers['Content-Range'] = `bytes ${range.start}-${range.end}/${size}`;
    headers['Content-Length'] = length;
    if (method === 'HEAD' || length === 0) {
      res.writeHead(status, headers);
      res.end();
      return { status, bytes: 0 };
    }
    const { stream } = await this.blobs.open(digest, range);
    res.writeHead(status, headers);
    let sent = 0;
    stream.on('data', (c: Buffer) => (sent += c.length));
    try {
      await pipeline(stream, res);
      return { status, bytes: sent };
    } catch (err) {
      // Headers are gone: the client sees the body break off short of Content-Length.
      res.destroy();
      return { status, bytes: sent, error: errorMessage(err) };
    }
  }

  private tags(res: ServerResponse, method: string, name: string, url: URL): Outcome {
    const repo = this.repo(res, method, name);
    if (!isRepository(repo)) return repo;
    const page = paginate([...repo.tags.keys()].sort(), url);
    if (typeof page === 'string') return this.error(res, method, 400, 'PAGINATION_NUMBER_INVALID', page);
    return this.json(res, method, 200, { name, tags: page.items }, page.next ? { Link: `</v2/${name}/tags/list?${page.next}>; rel="next"` } : {});
  }

  private catalog(res: ServerResponse, method: string, url: URL): Outcome {
    const page = paginate(this.view.names(), url);
    if (typeof page === 'string') return this.error(res, method, 400, 'PAGINATION_NUMBER_INVALID', page);
    return this.json(res, method, 200, { repositories: page.items }, page.next ? { Link: `</v2/_catalog?${page.next}>; rel="next"` } : {});
  }

  private referrers(res: ServerResponse, method: string, name: string, digest: string, url: URL): Outcome {
    const repo = this.repo(res, method, name);
    if (!isRepository(repo)) return repo;
    if (!isSha256Digest(digest)) return this.error(res, method, 400, 'DIGEST_INVALID', `unsupported digest ${digest} (sha256 only)`);
    const artifactType = url.searchParams.get('artifactType') ?? undefined;
    const manifests = this.view.referrersOf(repo, digest, artifactType);
    const body = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
    return this.json(res, method, 200, body, artifactType !== undefined ? { 'OCI-Filters-Applied': 'artifactType' } : {}, MediaType.OciIndex);
  }

  private json(res: ServerResponse, method: string, status: number, body: unknown, extra: Record<string, string> = {}, type = 'application/json'): Outcome {
    const bytes = Buffer.from(JSON.stringify(body));
    res.writeHead(status, { ...API_HEADERS, 'Content-Type': type, 'Content-Length': bytes.length, ...extra });
    res.end(method === 'HEAD' ? undefined : bytes);
    return { status, bytes: method === 'HEAD' ? 0 : bytes.length };
  }

  private error(
    res: ServerResponse,
    method: string,
    status: number,
    code: ErrorCode,
    message: string,
    extra: Record<string, string> = {},
    detail?: unknown,
  ): Outcome {
    const out = this.json(res, method, status, { errors: [{ code, message, ...(detail !== undefined ? { detail } : {}) }] }, extra);
    return { ...out, error: status >= 500 ? message : undefined };
  }
}

function isRepository(x: Repository | Outcome): x is Repository {
  return (x as Repository).tags !== undefined;
}

/**
 * One `bytes=` range (first-last, first-, or -suffix) clamped to the blob, or
 * 'unsatisfiable'. Anything else, several ranges included, is ignored (undefined:
 * the whole blob is sent, which HTTP allows).
 */
export function parseRange(header: string, size: number): ByteRange | 'unsatisfiable' | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(size - suffix, 0), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

/** `n` and `last` as Distribution reads them; the next page's query, if there is more. */
function paginate(all: string[], url: URL): { items: string[]; next?: string } | string {
  const nParam = url.searchParams.get('n');
  const last = url.searchParams.get('last');
  let n = MAX_PAGE;
  if (nParam !== null) {
    if (!/^\d+$/.test(nParam)) return `n=${nParam} is not a whole number`;
    n = Math.min(Number(nParam), MAX_PAGE);
  }
  const from = last === null ? 0 : all.findIndex((x) => x > last);
  const rest = from < 0 ? [] : all.slice(from);
  const items = rest.slice(0, n);
  if (n === 0 || rest.length <= n) return { items };
  return { items, next: `n=${n}&last=${encodeURIComponent(items[items.length - 1]!)}` };
}
