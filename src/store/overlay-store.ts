/**
 * A read-only store of a few new blobs and manifests laid over another store:
 * what it holds itself it serves, everything else comes from `base`. The
 * image builder uses it so that a built image (new layer, config, manifest on
 * top of a base image's layers) is copied by the copy engine like any other.
 *
 *   new OverlayStore(base: ContentStore, description?: string)
 *   .addBlob(desc, open: () => Promise<Readable>)   .addManifest(desc, bytes)
 */
import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/types.js';
import type { ContentStore, ManifestBytes } from './store.js';

export class OverlayStore implements ContentStore {
  readonly description: string;
  private readonly blobs = new Map<string, () => Promise<Readable>>();
  private readonly manifests = new Map<string, ManifestBytes & { desc: Descriptor }>();

  constructor(
    private readonly base: ContentStore,
    description?: string,
  ) {
    this.description = description ?? base.description;
  }

  addBlob(desc: Descriptor, open: () => Promise<Readable>): void {
    this.blobs.set(desc.digest, open);
  }

  addManifest(desc: Descriptor, bytes: Buffer): void {
    this.manifests.set(desc.digest, { desc, bytes, mediaType: desc.mediaType, digest: desc.digest });
  }

  resolve(repo: string, reference: string): Promise<Descriptor> {
    const own = this.manifests.get(reference);
    return own ? Promise.resolve(own.desc) : this.base.resolve(repo, reference);
  }

  fetchManifest(repo: string, desc: Descriptor): Promise<ManifestBytes> {
    const own = this.manifests.get(desc.digest);
    return own ? Promise.resolve({ bytes: own.bytes, mediaType: own.mediaType, digest: own.digest }) : this.base.fetchManifest(repo, desc);
  }

  hasBlob(repo: string, desc: Descriptor): Promise<boolean> {
    return this.blobs.has(desc.digest) ? Promise.resolve(true) : this.base.hasBlob(repo, desc);
  }

  openBlob(repo: string, desc: Descriptor): Promise<Readable> {
    const own = this.blobs.get(desc.digest);
    return own ? own() : this.base.openBlob(repo, desc);
  }
}
