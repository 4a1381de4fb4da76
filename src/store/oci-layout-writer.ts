/**
 * A writable OCI image layout directory: the destination of `bundle extract`.
 * Blobs are written under a temporary name and renamed into place only when
 * their stream ended cleanly (the copy engine's streams fail before their end
 * on a wrong digest), so a blob under its digest's name is always whole and
 * right. A blob already there with the right digest is kept: running extract
 * again resumes it. Every path written is made here from a sha256 digest or a
 * fixed name, never from a name found in a bundle, and the folders it writes
 * into are checked not to be symbolic links: nothing lands outside the layout.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ANNOTATION_REF_NAME, MediaType } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import { digestHex, verifyBuffer } from '../util/digest.js';
import { PARTIAL_NAME, writeAtomically } from '../util/atomic-file.js';
import { BundleError, UsageError, errorMessage } from '../util/errors.js';
import type { ManifestBytes, PutResult, WritableContentStore } from './store.js';

const OCI_LAYOUT = '{"imageLayoutVersion":"1.0.0"}';

export class OciLayoutWriter implements WritableContentStore {
  readonly description: string;
  private readonly blobDir: string;

  private constructor(readonly dir: string) {
    this.description = `OCI layout ${dir}`;
    this.blobDir = join(dir, 'blobs', 'sha256');
  }

  /**
   * Open `dir` for writing: created when missing; an existing folder must be
   * empty or an OCI layout already (a resumed or earlier extraction).
   */
  static async open(dir: string): Promise<OciLayoutWriter> {
    const st = await lstat(dir).catch(() => undefined);
    if (st && !st.isDirectory() && !st.isSymbolicLink()) throw new UsageError(`${dir} exists and is not a folder`);
    if (st) {
      const names = await readdir(dir).catch((err: unknown) => {
        throw new UsageError(`cannot read ${dir}: ${errorMessage(err)}`);
      });
      if (names.length > 0 && !names.includes('oci-layout')) {
        throw new UsageError(`${dir} is not empty and not an OCI layout: refusing to write into it`, 'name a new or empty folder, or one an earlier extract wrote');
      }
    }
    const w = new OciLayoutWriter(dir);
    try {
      await mkdir(dir, { recursive: true });
      for (const sub of [join(dir, 'blobs'), w.blobDir]) {
        await mkdir(sub, { recursive: true });
        const s = await lstat(sub);
        if (!s.isDirectory()) throw new UsageError(`refusing to write through ${sub}: it is a symbolic link or not a folder`);
      }
    } catch (err) {
      if (err instanceof BundleError) throw err;
      throw new UsageError(`cannot create the layout in ${dir}: ${errorMessage(err)}`);
    }
    await w.removeStaleTemporaries();
    return w;
  }

  /** Temporary files an interrupted run left behind (`.<name>.partial-<pid>-<n>`). */
  private async removeStaleTemporaries(): Promise<void> {
    for (const folder of [this.dir, this.blobDir]) {
      for (const name of await readdir(folder)) {
        if (PARTIAL_NAME.test(name)) await rm(join(folder, name), { force: true });
      }
    }
  }

  resolve(): Promise<Descriptor> {
    return Promise.reject(new BundleError(`${this.description} is written, not read, here`));
  }

  async fetchManifest(_repo: string, desc: Descriptor): Promise<ManifestBytes> {
    const bytes = await readFile(this.blobPath(desc.digest));
    return { bytes, mediaType: desc.mediaType, digest: desc.digest };
  }

  /** Whether the blob is there whole: right size and, hashed again, right digest. */
  async hasBlob(_repo: string, desc: Descriptor): Promise<boolean> {
    const path = this.blobPath(desc.digest);
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isFile() || st.size !== desc.size) return false;
    const hash = createHash('sha256');
    await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), hash);
    return `sha256:${hash.digest('hex')}` === desc.digest;
  }

  async openBlob(_repo: string, desc: Descriptor): Promise<Readable> {
    return createReadStream(this.blobPath(desc.digest), { highWaterMark: 1 << 20 });
  }

  async putBlob(repo: string, desc: Descriptor, openStream: () => Promise<Readable>): Promise<PutResult> {
    if (await this.hasBlob(repo, desc)) return 'exists';
    await writeAtomically(this.blobPath(desc.digest), async (fh) => {
      const stream = await openStream();
      try {
        for await (const chunk of stream) await fh.write(chunk as Buffer);
      } finally {
        stream.destroy();
      }
    });
    return 'written';
  }

  async putManifest(repo: string, desc: Descriptor, bytes: Buffer): Promise<PutResult> {
    verifyBuffer(bytes, desc.digest, desc.size, `manifest ${desc.digest}`);
    if (await this.hasBlob(repo, desc)) return 'exists';
    await writeAtomically(this.blobPath(desc.digest), (fh) => fh.write(bytes));
    return 'written';
  }

  /**
   * Write `oci-layout` and `index.json` (last, so a layout is complete once it
   * has them): `entries`, after the entries of an existing index.json whose ref
   * names are not among them.
   */
  async writeIndex(entries: Descriptor[]): Promise<void> {
    const names = new Set(entries.map((e) => e.annotations?.[ANNOTATION_REF_NAME]).filter(Boolean));
    let kept: Descriptor[] = [];
    const existing = await readFile(join(this.dir, 'index.json'), 'utf8').catch(() => undefined);
    if (existing !== undefined) {
      try {
        const old = JSON.parse(existing) as { manifests?: Descriptor[] };
        kept = (old.manifests ?? []).filter((d) => {
          const name = d.annotations?.[ANNOTATION_REF_NAME];
          return name ? !names.has(name) : !entries.some((e) => e.digest === d.digest);
        });
      } catch {
        throw new BundleError(`${join(this.dir, 'index.json')} is not valid JSON: remove it or extract into a new folder`);
      }
    }
    const index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [...kept, ...entries] };
    await writeAtomically(join(this.dir, 'oci-layout'), (fh) => fh.write(OCI_LAYOUT));
    await writeAtomically(join(this.dir, 'index.json'), (fh) => fh.write(`${JSON.stringify(index, null, 2)}\n`));
  }

  private blobPath(digest: string): string {
    return join(this.blobDir, digestHex(digest));
  }
}
