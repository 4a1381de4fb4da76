import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { ANNOTATION_REF_NAME } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import { digestHex, isSha256Digest } from '../util/digest.js';
import { BundleError, UsageError } from '../util/errors.js';
import type { ByteRange, ContentStore, ManifestBytes, RangeResult } from './store.js';

const MAX_MANIFEST = 4 << 20;
/** Bytes per read of a blob. */
const READ_CHUNK = 1 << 20;

interface LayoutIndex {
  manifests?: Descriptor[];
}

/** A read-only OCI image layout directory (`oci-layout`, `index.json`, `blobs/`). */
export class OciLayoutStore implements ContentStore {
  readonly description: string;

  private constructor(
    readonly dir: string,
    readonly index: Descriptor[],
  ) {
    this.description = `OCI layout ${dir}`;
  }

  static async open(dir: string): Promise<OciLayoutStore> {
    let layout: { imageLayoutVersion?: string };
    try {
      layout = JSON.parse(await readFile(join(dir, 'oci-layout'), 'utf8')) as { imageLayoutVersion?: string };
    } catch {
      throw new UsageError(`${dir} is not an OCI image layout: no readable oci-layout file`);
    }
    if (!layout.imageLayoutVersion) throw new UsageError(`${dir}/oci-layout has no imageLayoutVersion`);
    let index: LayoutIndex;
    try {
      index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as LayoutIndex;
    } catch {
      throw new UsageError(`${dir} is not an OCI image layout: no readable index.json`);
    }
    return new OciLayoutStore(dir, index.manifests ?? []);
  }

  /** Every image the layout's index.json names, with its ref name when it has one. */
  images(): { refName: string | undefined; desc: Descriptor }[] {
    return this.index.map((d) => ({ refName: d.annotations?.[ANNOTATION_REF_NAME], desc: d }));
  }

  async resolve(_repo: string, reference: string): Promise<Descriptor> {
    const found = this.index.find((d) => d.annotations?.[ANNOTATION_REF_NAME] === reference || d.digest === reference);
    if (!found) {
      const names = this.index.map((d) => d.annotations?.[ANNOTATION_REF_NAME]).filter(Boolean);
      throw new UsageError(`${this.dir}: no image "${reference}" in index.json (it has: ${names.join(', ') || 'no named images'})`);
    }
    return found;
  }

  private blobPath(digest: string): string {
    if (!isSha256Digest(digest)) throw new BundleError(`${this.dir}: unsupported digest ${digest}`);
    return join(this.dir, 'blobs', 'sha256', digestHex(digest));
  }

  async fetchManifest(_repo: string, desc: Descriptor): Promise<ManifestBytes> {
    if (desc.size > MAX_MANIFEST) throw new BundleError(`${this.dir}: manifest ${desc.digest} is larger than 4 MiB`);
    const bytes = await readFile(this.blobPath(desc.digest)).catch(() => {
      throw new BundleError(`${this.dir}: manifest ${desc.digest} is missing from blobs/`);
    });
    return { bytes, mediaType: desc.mediaType, digest: desc.digest };
  }

  async hasBlob(_repo: string, desc: Descriptor): Promise<boolean> {
    try {
      return (await stat(this.blobPath(desc.digest))).size === desc.size;
    } catch {
      return false;
    }
  }

  async openBlob(_repo: string, desc: Descriptor): Promise<Readable> {
    const path = this.blobPath(desc.digest);
    await stat(path).catch(() => {
      throw new BundleError(`${this.dir}: blob ${desc.digest} is missing from blobs/`);
    });
    // A read buffer the size of the blob, up to 1 MiB: a small blob (a config, a small layer)
    // does not take a 1 MiB buffer of its own while it is read.
    return createReadStream(path, { highWaterMark: Math.min(READ_CHUNK, Math.max(1, desc.size)) });
  }

  async openBlobRange(_repo: string, desc: Descriptor, range: ByteRange): Promise<RangeResult> {
    const path = this.blobPath(desc.digest);
    await stat(path).catch(() => {
      throw new BundleError(`${this.dir}: blob ${desc.digest} is missing from blobs/`);
    });
    return { stream: createReadStream(path, { start: range.start, end: range.end - 1, highWaterMark: READ_CHUNK }), whole: false };
  }
}
