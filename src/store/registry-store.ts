/**
 * A remote registry as a content store, on top of RegistryClient.
 */
import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/types.js';
import { DigestMismatchError, NotFoundError } from '../util/errors.js';
import { RegistryClient, type RegistryOptions } from '../registry/client.js';
import type { ByteRange, ManifestBytes, PutBlobOptions, PutResult, RangeResult, ResolveOptions, WritableContentStore } from './store.js';

export type { RegistryOptions } from '../registry/client.js';

export class RegistryStore implements WritableContentStore {
  readonly description: string;
  /** Manifests a resolve read, by `repo@digest`. */
  private readonly readAhead = new ManifestCache();
  /**
   * What the last resolve of a tag found (its digest, or null: no such tag), by
   * `repo:tag`, taken by the putManifest that follows so it does not ask again.
   */
  private readonly tagsSeen = new Map<string, string | null>();

  constructor(readonly client: RegistryClient) {
    this.description = `registry ${client.registry}`;
  }

  /**
   * A HEAD, or with `fetch` a GET whose bytes are kept for the fetchManifest
   * that follows (once: a manifest's bytes never change under its digest, and
   * none is held longer than until it is asked for).
   */
  async resolve(repo: string, reference: string, opts: ResolveOptions = {}): Promise<Descriptor> {
    let desc: Descriptor | undefined;
    if (opts.fetch) {
      const m = await this.client.findManifest(repo, reference);
      if (m) {
        this.readAhead.keep(`${repo}@${m.digest}`, m);
        desc = { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
      }
    } else desc = await this.client.headManifest(repo, reference);
    if (!reference.includes(':')) this.sawTag(`${repo}:${reference}`, desc?.digest ?? null);
    if (!desc) {
      throw new NotFoundError(`${this.client.registry}/${repo}${reference.includes(':') ? '@' : ':'}${reference} not found`);
    }
    return desc;
  }

  async fetchManifest(repo: string, desc: Descriptor): Promise<ManifestBytes> {
    const m = this.readAhead.take(`${repo}@${desc.digest}`) ?? (await this.client.getManifest(repo, desc.digest));
    if (desc.size !== undefined && desc.size !== m.bytes.length) {
      throw new DigestMismatchError(desc.digest, `${m.bytes.length} bytes instead of ${desc.size}`, `manifest ${this.client.registry}/${repo}@${desc.digest}`);
    }
    return m;
  }

  async hasBlob(repo: string, desc: Descriptor): Promise<boolean> {
    return (await this.client.headBlob(repo, desc.digest)) !== undefined;
  }

  async openBlob(repo: string, desc: Descriptor): Promise<Readable> {
    return this.client.getBlob(repo, desc.digest);
  }

  async openBlobRange(repo: string, desc: Descriptor, range: ByteRange): Promise<RangeResult> {
    const r = await this.client.getBlobRange(repo, desc.digest, range.start, range.end);
    return { stream: r.body, whole: r.whole };
  }

  async putBlob(repo: string, desc: Descriptor, open: () => Promise<Readable>, opts: PutBlobOptions = {}): Promise<PutResult> {
    if ((await this.client.headBlob(repo, desc.digest)) !== undefined) return 'exists';
    for (const from of opts.mountFrom ?? []) {
      if (from === repo) continue;
      if (await this.client.mountBlob(repo, desc.digest, from)) return 'mounted';
    }
    for (const from of opts.mayHoldIn ?? []) {
      if (from === repo || opts.mountFrom?.includes(from)) continue;
      if ((await this.client.headBlob(from, desc.digest)) !== undefined && (await this.client.mountBlob(repo, desc.digest, from))) return 'mounted';
    }
    // The client re-opens the source when the upload is worth another attempt (its retry policy decides).
    await this.client.uploadBlob(repo, desc.digest, desc.size, open);
    return 'written';
  }

  async putManifest(repo: string, desc: Descriptor, bytes: Buffer, tags: string[]): Promise<PutResult> {
    const refs = tags.length ? tags : [desc.digest];
    let wrote = false;
    for (const ref of refs) {
      const seen = this.tagsSeen.get(`${repo}:${ref}`);
      this.tagsSeen.delete(`${repo}:${ref}`);
      const existing = seen !== undefined ? seen : (await this.client.headManifest(repo, ref))?.digest;
      if (existing === desc.digest) continue;
      await this.client.putManifest(repo, ref, bytes, desc.mediaType);
      wrote = true;
    }
    return wrote ? 'written' : 'exists';
  }

  private sawTag(key: string, digest: string | null): void {
    this.tagsSeen.delete(key);
    this.tagsSeen.set(key, digest);
    // Tags resolved but never written (a pull, an image already there) are forgotten oldest first.
    if (this.tagsSeen.size > 4096) this.tagsSeen.delete(this.tagsSeen.keys().next().value!);
  }

  /** Every repository the registry lists (`/v2/_catalog`, all pages). */
  listRepositories(pageSize?: number): Promise<string[]> {
    return this.client.catalog({ pageSize });
  }

  /** Every tag of a repository (`tags/list`, all pages). */
  listTags(repo: string, pageSize?: number): Promise<string[]> {
    return this.client.listTags(repo, { pageSize });
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}

/** A store for `registry` (as the user wrote it: docker.io maps to its API host, credentials stay under docker.io). */
export function createRegistryStore(registry: string, opts: RegistryOptions = {}): RegistryStore {
  return new RegistryStore(new RegistryClient(registry, opts));
}

/** Manifests kept in memory by key until taken, the oldest dropped beyond a total size. */
class ManifestCache {
  private readonly entries = new Map<string, ManifestBytes>();
  private bytes = 0;

  constructor(private readonly limit = 8 * 1024 * 1024) {}

  keep(key: string, m: ManifestBytes): void {
    if (this.entries.has(key) || m.bytes.length > this.limit) return;
    this.entries.set(key, m);
    this.bytes += m.bytes.length;
    for (const [k, old] of this.entries) {
      if (this.bytes <= this.limit) break;
      this.entries.delete(k);
      this.bytes -= old.bytes.length;
    }
  }

  take(key: string): ManifestBytes | undefined {
    const m = this.entries.get(key);
    if (m) {
      this.entries.delete(key);
      this.bytes -= m.bytes.length;
    }
    return m;
  }
}
