/**
 * A read-only store of small blobs held in memory: artifacts the tool makes
 * itself (release signatures, a few KiB each) before the copy engine carries
 * them into the archive like any other image.
 */
import { Readable } from 'node:stream';
import type { Descriptor } from '../oci/types.js';
import { sha256Digest } from '../util/digest.js';
import { BundleError } from '../util/errors.js';
import type { ContentStore, ManifestBytes } from './store.js';

export class MemoryStore implements ContentStore {
  private readonly blobs = new Map<string, Buffer>();
  private readonly names = new Map<string, Descriptor>();

  constructor(readonly description = 'built in memory') {}

  /** Keep a blob; returns its descriptor. */
  add(bytes: Buffer, mediaType: string): Descriptor {
    const digest = sha256Digest(bytes);
    this.blobs.set(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  }

  /** Name a manifest so `resolve` finds it. */
  tag(name: string, desc: Descriptor): void {
    this.names.set(name, desc);
  }

  async resolve(_repo: string, reference: string): Promise<Descriptor> {
    const d = this.names.get(reference);
    if (!d) throw new BundleError(`${this.description}: no ${reference}`);
    return d;
  }

  async fetchManifest(_repo: string, desc: Descriptor): Promise<ManifestBytes> {
    return { bytes: this.get(desc), mediaType: desc.mediaType, digest: desc.digest };
  }

  async hasBlob(_repo: string, desc: Descriptor): Promise<boolean> {
    return this.blobs.has(desc.digest);
  }

  async openBlob(_repo: string, desc: Descriptor): Promise<Readable> {
    return Readable.from([this.get(desc)]);
  }

  private get(desc: Descriptor): Buffer {
    const b = this.blobs.get(desc.digest);
    if (!b) throw new BundleError(`${this.description}: no blob ${desc.digest}`);
    return b;
  }
}
