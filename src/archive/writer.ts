/**
 * Writes a .airgap file (spec/airgap-format.md) in one streaming pass.
 */
import { createHash } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import {
  FORMAT_VERSION,
  MANIFEST_MEMBER,
  MANIFEST_PAYLOAD_TYPE,
  SIGNATURE_MEMBER,
  type BundleImage,
  type BundleManifest,
  type SkippedImage,
  type BundleMember,
} from '../bundle/manifest.js';
import type { Descriptor } from '../oci/types.js';
import { ANNOTATION_REF_NAME, MediaType } from '../oci/media-types.js';
import type { DsseEnvelope } from '../sign/dsse-types.js';
import type { ManifestBytes, PutResult, WritableContentStore } from '../store/store.js';
import { digestHex, sha256Digest, VerifyingStream, verifyBuffer } from '../util/digest.js';
import { BundleError, DigestMismatchError } from '../util/errors.js';
import { encodeFileHeader, padding, TAR_BLOCK } from './tar.js';
import { encodeRawFrame, encodeSeekTable, FrameCompressor, type SeekEntry } from './zstd-frames.js';

export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
export const DEFAULT_LEVEL = 3;
/** Largest raw (stored) data frame. */
export const RAW_CHUNK_SIZE = 1024 * 1024;
/** Largest chunk size accepted: frames must stay well inside a decoder's default window limit. */
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;
/** Control members (manifest, signature) live in one data frame each and may not exceed this. */
export const MAX_CONTROL_MEMBER = 64 * 1024 * 1024;
/** Flush buffered output once this much is pending. */
const WRITE_BUFFER = 8 * 1024 * 1024;

export const OCI_LAYOUT_MEMBER = 'oci-layout';
export const INDEX_MEMBER = 'index.json';
export const OCI_LAYOUT_MEDIA_TYPE = 'application/vnd.oci.layout.header.v1+json';
export const DSSE_MEDIA_TYPE = 'application/vnd.dsse.envelope.v1+json';
export const ANNOTATION_SOURCE = 'io.airgap.bundle.source';
export const OCI_LAYOUT_CONTENT = Buffer.from('{"imageLayoutVersion":"1.0.0"}');

export interface ArchiveWriterOptions {
  /** Decompressed bytes per data frame (default 4 MiB). */
  chunkSize?: number;
  /** zstd level for data that is not already compressed (default 3). */
  level?: number;
  /** Creation time: tar mtimes and the manifest's `created` (default now). */
  created?: Date;
}

export interface FinishOptions {
  tool: BundleManifest['tool'];
  /** Optional manifest fields set by the caller (an update's `base`). */
  fields?: Pick<BundleManifest, 'base'>;
  /** Signs the manifest bytes; without it the envelope carries no signatures. */
  sign?: (payload: Buffer) => Promise<DsseEnvelope>;
  /** Source kinds' records (`manifest.sources`), when any kind made one. */
  sources?: Record<string, unknown>;
  /** Images skipped under --skip-missing (`manifest.skipped`). */
  skipped?: SkippedImage[];
}

export interface ArchiveProgress {
  /** Members committed (blobs, manifests, control files). */
  members: number;
  /** Member data bytes committed (decompressed). */
  dataBytes: number;
  /** Bytes of the .airgap file written so far (including the member in progress). */
  fileBytes: number;
}

const COMPRESSED_MAGICS: readonly Buffer[] = [
  Buffer.from([0x1f, 0x8b]), // gzip
  Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), // zstd
  Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), // xz
  Buffer.from([0x42, 0x5a, 0x68]), // bzip2
  Buffer.from([0x04, 0x22, 0x4d, 0x18]), // lz4 frame
];

/** True when `head` starts with the magic of a compressed format (no point compressing again). */
export function looksCompressed(head: Buffer): boolean {
  return COMPRESSED_MAGICS.some((m) => head.length >= m.length && head.subarray(0, m.length).equals(m));
}

class NotReadableError extends BundleError {
  constructor() {
    super('a .airgap file is not readable while it is being written');
  }
}

/** Thrown inside a member write when the source is longer than promised. */
class OversizeError extends Error {}

export class ArchiveWriter implements WritableContentStore {
  readonly description: string;
  private readonly chunkSize: number;
  private readonly created: Date;
  private readonly compressor: FrameCompressor;
  private fh: FileHandle | undefined;
  /** File bytes durably handed to write(). */
  private flushed = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Decompressed (tar) position. */
  private tarPos = 0;
  private readonly frames: SeekEntry[] = [];
  private readonly members: BundleMember[] = [];
  private readonly memberByDigest = new Map<string, BundleMember>();
  private readonly images: BundleImage[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private state: 'open' | 'finishing' | 'done' | 'aborted' = 'open';
  private dataBytes = 0;

  private constructor(
    readonly path: string,
    readonly tempPath: string,
    opts: ArchiveWriterOptions,
  ) {
    this.description = path;
    this.chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    if (!Number.isInteger(this.chunkSize) || this.chunkSize < TAR_BLOCK || this.chunkSize > MAX_CHUNK_SIZE) {
      throw new RangeError(`chunkSize must be an integer between ${TAR_BLOCK} and ${MAX_CHUNK_SIZE}`);
    }
    this.created = new Date(Math.floor((opts.created ?? new Date()).getTime() / 1000) * 1000);
    this.compressor = new FrameCompressor(opts.level ?? DEFAULT_LEVEL);
  }

  /** Create `<finalPath>.partial-<pid>` next to `finalPath`; finish() renames it into place. */
  static async create(finalPath: string, opts: ArchiveWriterOptions = {}): Promise<ArchiveWriter> {
    const tempPath = path.join(path.dirname(finalPath), `${path.basename(finalPath)}.partial-${process.pid}`);
    const w = new ArchiveWriter(finalPath, tempPath, opts);
    w.fh = await open(tempPath, 'w', 0o644);
    try {
      await w.writeBufferMember(OCI_LAYOUT_MEMBER, OCI_LAYOUT_CONTENT, OCI_LAYOUT_MEDIA_TYPE, false);
    } catch (err) {
      await w.abort();
      throw err;
    }
    return w;
  }

  get progress(): ArchiveProgress {
    return { members: this.members.length, dataBytes: this.dataBytes, fileBytes: this.flushed + this.pendingBytes };
  }

  // ---- ContentStore (read side is not available while writing) ----

  resolve(): Promise<Descriptor> {
    return Promise.reject(new NotReadableError());
  }

  fetchManifest(): Promise<ManifestBytes> {
    return Promise.reject(new NotReadableError());
  }

  openBlob(): Promise<Readable> {
    return Promise.reject(new NotReadableError());
  }

  hasBlob(_repo: string, desc: Descriptor): Promise<boolean> {
    return Promise.resolve(this.memberByDigest.has(desc.digest));
  }

  // ---- WritableContentStore ----

  putBlob(_repo: string, desc: Descriptor, open: () => Promise<Readable>): Promise<PutResult> {
    return this.enqueue(async () => {
      if (this.memberByDigest.has(desc.digest)) return 'exists';
      const member = await this.writeStreamMember(desc, open);
      this.memberByDigest.set(desc.digest, member);
      return 'written';
    });
  }

  putManifest(_repo: string, desc: Descriptor, bytes: Buffer, _tags: string[]): Promise<PutResult> {
    return this.enqueue(async () => {
      if (this.memberByDigest.has(desc.digest)) return 'exists';
      verifyBuffer(bytes, desc.digest, desc.size, `manifest ${desc.digest}`);
      const member = await this.writeBufferMember(blobPath(desc.digest), bytes, desc.mediaType, false);
      this.memberByDigest.set(desc.digest, member);
      return 'written';
    });
  }

  /** Record a top-level image; index.json lists it under its refName. Its manifest must be stored before finish(). */
  addImage(image: BundleImage): void {
    this.assertOpen();
    const same = this.images.find((i) => i.refName === image.refName);
    if (same) {
      if (same.digest === image.digest) return;
      throw new BundleError(`two different images named ${image.refName} (${same.digest} and ${image.digest})`);
    }
    this.images.push({ ...image, platforms: [...image.platforms], tags: [...image.tags] });
  }

  /** Write index.json, the manifest, its DSSE envelope, the tar end and the seek table; fsync; rename into place. */
  async finish(opts: FinishOptions): Promise<{ path: string; size: number; manifest: BundleManifest }> {
    this.assertOpen();
    this.state = 'finishing';
    try {
      await this.queue.catch(() => undefined);
      for (const img of this.images) {
        const m = this.memberByDigest.get(img.digest);
        if (!m) throw new BundleError(`image ${img.refName} (${img.digest}) was added but its manifest is not in the bundle`);
      }
      const index = {
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: this.images.map((img) => ({
          mediaType: img.mediaType,
          digest: img.digest,
          size: img.size,
          annotations: { [ANNOTATION_REF_NAME]: img.refName, [ANNOTATION_SOURCE]: img.source },
        })),
      };
      await this.writeBufferMember(INDEX_MEMBER, Buffer.from(`${JSON.stringify(index, null, 2)}\n`), MediaType.OciIndex, false);

      const manifest: BundleManifest = {
        schemaVersion: 1,
        kind: 'AirgapBundleManifest',
        formatVersion: FORMAT_VERSION,
        created: this.created.toISOString().replace('.000Z', 'Z'),
        tool: { ...opts.tool },
        members: this.members.map((m) => ({ ...m })),
        images: this.images.map((i) => ({ ...i })),
        ...(opts.sources && Object.keys(opts.sources).length ? { sources: opts.sources } : {}),
        ...(opts.skipped?.length ? { skipped: opts.skipped } : {}),
        ...opts.fields,
      };
      const manifestBytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
      const payload = manifestBytes.toString('base64');
      const envelope: DsseEnvelope = opts.sign
        ? await opts.sign(manifestBytes)
        : { payloadType: MANIFEST_PAYLOAD_TYPE, payload, signatures: [] };
      if (envelope.payloadType !== MANIFEST_PAYLOAD_TYPE || envelope.payload !== payload) {
        throw new BundleError('the signer returned an envelope for a different payload');
      }
      const envelopeBytes = Buffer.from(`${JSON.stringify(envelope, null, 2)}\n`);
      for (const [name, bytes] of [
        [MANIFEST_MEMBER, manifestBytes],
        [SIGNATURE_MEMBER, envelopeBytes],
      ] as const) {
        if (bytes.length > MAX_CONTROL_MEMBER) throw new BundleError(`${name} would be ${bytes.length} bytes, more than the ${MAX_CONTROL_MEMBER} allowed`);
      }
      await this.writeBufferMember(MANIFEST_MEMBER, manifestBytes, 'application/json', true);
      await this.writeBufferMember(SIGNATURE_MEMBER, envelopeBytes, DSSE_MEDIA_TYPE, true);
      // End of archive: two zero blocks, one frame of their own.
      this.emitCompressedFrame(Buffer.alloc(2 * TAR_BLOCK));
      this.push(encodeSeekTable(this.frames));
      await this.flush();
      const fh = this.fh!;
      await fh.sync();
      await fh.close();
      this.fh = undefined;
      await rename(this.tempPath, this.path);
      await syncDir(path.dirname(this.path));
      this.state = 'done';
      return { path: this.path, size: this.flushed, manifest };
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /** Stop and delete the temporary file. Safe to call more than once. */
  async abort(): Promise<void> {
    if (this.state === 'done' || this.state === 'aborted') return;
    this.state = 'aborted';
    const fh = this.fh;
    this.fh = undefined;
    this.pending = [];
    this.pendingBytes = 0;
    if (fh) await fh.close().catch(() => undefined);
    await rm(this.tempPath, { force: true });
  }

  // ---- internals ----

  private assertOpen(): void {
    if (this.state !== 'open') throw new BundleError(`archive ${this.path} is already ${this.state === 'finishing' ? 'being finished' : this.state}`);
  }

  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    try {
      this.assertOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const run = this.queue.then(() => {
      if (this.state !== 'open' && this.state !== 'finishing') throw new BundleError(`archive ${this.path} is ${this.state}`);
      return job();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private push(buf: Buffer): void {
    this.pending.push(buf);
    this.pendingBytes += buf.length;
  }

  private async flush(): Promise<void> {
    if (!this.fh) throw new BundleError(`archive ${this.path} is closed`);
    const bufs = this.pending;
    const total = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    let written = 0;
    let i = 0;
    // writev takes at most IOV_MAX (1024) buffers per call.
    while (i < bufs.length) {
      const batch = bufs.slice(i, i + 1024);
      let batchBytes = 0;
      for (const b of batch) batchBytes += b.length;
      let done = 0;
      while (done < batchBytes) {
        const { bytesWritten } = await this.fh.writev(done === 0 ? batch : sliceBuffers(batch, done), this.flushed + written + done);
        if (bytesWritten <= 0) throw new Error(`short write to ${this.tempPath}`);
        done += bytesWritten;
      }
      written += batchBytes;
      i += batch.length;
    }
    if (written !== total) throw new Error('internal: write accounting');
    this.flushed += written;
  }

  private async maybeFlush(): Promise<void> {
    if (this.pendingBytes >= WRITE_BUFFER) await this.flush();
  }

  private emitCompressedFrame(data: Buffer | Buffer[]): void {
    const frame = this.compressor.compress(data);
    const size = Buffer.isBuffer(data) ? data.length : data.reduce((n, b) => n + b.length, 0);
    this.push(frame);
    this.frames.push({ compressedSize: frame.length, decompressedSize: size });
    this.tarPos += size;
  }

  private emitRawFrame(parts: Buffer[]): void {
    const { buffers, size, contentSize } = encodeRawFrame(parts);
    for (const b of buffers) this.push(b);
    this.frames.push({ compressedSize: size, decompressedSize: contentSize });
    this.tarPos += contentSize;
  }

  private emitDataFrame(parts: Buffer[], raw: boolean): void {
    if (raw) this.emitRawFrame(parts);
    else this.emitCompressedFrame(parts);
  }

  /** Where the file and tables stood before a member began, to roll back to. */
  private mark(): { file: number; frames: number; tarPos: number } {
    return { file: this.flushed + this.pendingBytes, frames: this.frames.length, tarPos: this.tarPos };
  }

  private async rollback(m: { file: number; frames: number; tarPos: number }): Promise<void> {
    if (!this.fh) return; // aborted meanwhile: the file is gone anyway
    if (m.file >= this.flushed) {
      // Everything of the member is still pending: drop it from the buffer.
      let keep = m.file - this.flushed;
      const kept: Buffer[] = [];
      for (const b of this.pending) {
        if (keep <= 0) break;
        if (b.length <= keep) {
          kept.push(b);
          keep -= b.length;
        } else {
          kept.push(b.subarray(0, keep));
          keep = 0;
        }
      }
      this.pending = kept;
      this.pendingBytes = m.file - this.flushed;
    } else {
      this.pending = [];
      this.pendingBytes = 0;
      await this.fh!.truncate(m.file);
      this.flushed = m.file;
    }
    this.frames.length = m.frames;
    this.tarPos = m.tarPos;
  }

  private commit(member: BundleMember): BundleMember {
    if (member.path !== MANIFEST_MEMBER && member.path !== SIGNATURE_MEMBER) this.members.push(member);
    this.dataBytes += member.size;
    return member;
  }

  /** A small member from memory: one header frame, data in chunkSize frames (one frame when `singleFrame`). */
  private async writeBufferMember(name: string, data: Buffer, mediaType: string, singleFrame: boolean): Promise<BundleMember> {
    const start = this.mark();
    try {
      this.emitCompressedFrame(encodeFileHeader(name, data.length, this.created));
      const offset = this.tarPos;
      const pad = Buffer.alloc(padding(data.length));
      const raw = looksCompressed(data);
      const step = singleFrame ? Math.max(data.length, 1) : this.chunkSize;
      for (let pos = 0; pos < data.length; pos += step) {
        const end = Math.min(data.length, pos + step);
        const parts = [data.subarray(pos, end)];
        if (end === data.length && pad.length) parts.push(pad);
        this.emitDataFrame(parts, raw);
      }
      await this.maybeFlush();
      return this.commit({ path: name, digest: sha256Digest(data), size: data.length, mediaType, offset });
    } catch (err) {
      await this.rollback(start);
      throw err;
    }
  }

  /** A blob from a stream, chunked into frames as it arrives; rolled back on any failure. */
  private async writeStreamMember(desc: Descriptor, openStream: () => Promise<Readable>): Promise<BundleMember> {
    const name = blobPath(desc.digest);
    if (!Number.isSafeInteger(desc.size) || desc.size < 0) throw new BundleError(`invalid size ${desc.size} for blob ${desc.digest}`);
    const start = this.mark();
    let stream: Readable | undefined;
    try {
      this.emitCompressedFrame(encodeFileHeader(name, desc.size, this.created));
      const offset = this.tarPos;
      const hash = createHash('sha256');
      let seen = 0;
      let raw: boolean | undefined;
      let parts: Buffer[] = [];
      let partsBytes = 0;
      const emit = (final: boolean): void => {
        // The last chunk is held back until the end so the tar padding can join it.
        raw ??= looksCompressed(headBytes(parts, 8));
        // Stored (raw) frames are kept small: readers of several blobs at once then hold
        // little each; compressed frames stay large for a better ratio.
        const limit = raw ? Math.min(this.chunkSize, RAW_CHUNK_SIZE) : this.chunkSize;
        while (partsBytes > limit || (final && partsBytes > 0)) {
          const take = Math.min(limit, partsBytes);
          const frameParts: Buffer[] = [];
          let need = take;
          while (need > 0) {
            const p = parts[0]!;
            if (p.length <= need) {
              frameParts.push(p);
              parts.shift();
              need -= p.length;
            } else {
              frameParts.push(p.subarray(0, need));
              parts[0] = p.subarray(need);
              need = 0;
            }
          }
          partsBytes -= take;
          if (final && partsBytes === 0) {
            const pad = padding(desc.size);
            if (pad) frameParts.push(Buffer.alloc(pad));
          }
          this.emitDataFrame(frameParts, raw);
        }
      };
      stream = await openStream();
      // A VerifyingStream for this very digest and size already hashes every byte and
      // fails before its end on a mismatch: hashing again here would only double the cost.
      const verified = stream instanceof VerifyingStream && stream.expectedDigest === desc.digest && stream.expectedSize === desc.size;
      for await (const chunk of stream) {
        const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
        seen += buf.length;
        if (seen > desc.size) throw new OversizeError();
        if (!verified) hash.update(buf);
        parts.push(buf);
        partsBytes += buf.length;
        if (partsBytes > this.chunkSize) {
          emit(false);
          await this.maybeFlush();
        }
      }
      const actual = verified ? desc.digest : `sha256:${hash.digest('hex')}`;
      if (seen !== desc.size || actual !== desc.digest) {
        throw new DigestMismatchError(desc.digest, `${actual} (${seen} of ${desc.size} bytes)`, `blob ${desc.digest}`);
      }
      emit(true);
      parts = [];
      await this.maybeFlush();
      return this.commit({ path: name, digest: desc.digest, size: desc.size, mediaType: desc.mediaType, offset });
    } catch (err) {
      stream?.destroy();
      await this.rollback(start);
      if (err instanceof OversizeError) {
        throw new DigestMismatchError(desc.digest, `more than ${desc.size} bytes`, `blob ${desc.digest}`);
      }
      throw err;
    }
  }
}

/** `blobs/sha256/<hex>` for a sha256 digest. */
export function blobPath(digest: string): string {
  return `blobs/sha256/${digestHex(digest)}`;
}

function sliceBuffers(bufs: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Not supported everywhere (e.g. some network file systems); the rename is still atomic.
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

function headBytes(parts: readonly Buffer[], n: number): Buffer {
  if (parts.length === 0 || parts[0]!.length >= n) return parts[0] ?? Buffer.alloc(0);
  return Buffer.concat(parts.slice(0, n)).subarray(0, n);
}
