/**
 * Writes a .airgap file (spec/airgap-format.md), once, under a temporary name.
 *
 * Two ways to fill it. Appended: members go in as they are put, one after the
 * other (tests, small jobs). Planned (`layout()`): once every blob's descriptor
 * is known, the whole file is laid out in a fixed order (by digest), whatever
 * order the bytes arrive in: manifests given in memory are compressed and
 * written at once; already-compressed blobs (by media type) get a reserved
 * region of raw frames, whose size follows from the descriptor alone, filled by
 * positional writes from parallel range requests; other blobs (configs,
 * uncompressed layers) are compressed after the planned region, one after the
 * other, in digest order (small ones are fetched at once and wait in memory for
 * their turn). Same inputs and creation time, same bytes.
 */
import { createHash } from 'node:crypto';
import { open, readdir, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  FORMAT_VERSION,
  MANIFEST_MEMBER,
  MANIFEST_PAYLOAD_TYPE,
  SIGNATURE_MEMBER,
  type BundleImage,
  type BundleManifest,
  type BundleMember,
} from '../bundle/manifest.js';
import type { Descriptor } from '../oci/types.js';
import { ANNOTATION_REF_NAME, MediaType } from '../oci/media-types.js';
import type { DsseEnvelope } from '../sign/dsse-types.js';
import { isPayloadOf, serializeEnvelope } from '../sign/dsse.js';
import type { ManifestBytes, PutBlobOptions, PutResult, WritableContentStore } from '../store/store.js';
import { digestHex, sha256Digest, VerifyingStream, verifyBuffer } from '../util/digest.js';
import { BundleError, DigestMismatchError } from '../util/errors.js';
import { FileOutput, type PositionalOutput } from './positional-file.js';
import { volumeName, VolumeOutput } from './volumes.js';
import { fillRawRegion, RawGeometry } from './raw-fill.js';
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
  /** Write volumes `<path>.001`, `.002`, ... of at most this many bytes instead of one file. */
  volumeSize?: number;
}

export interface FinishOptions {
  tool: BundleManifest['tool'];
  /** Optional manifest fields set by the caller (an update's `base`, source kinds' `sources`, `skipped`). */
  fields?: Pick<BundleManifest, 'base' | 'sources' | 'skipped'>;
  /** Signs the manifest bytes; without it the envelope carries no signatures. */
  sign?: (payload: Buffer) => Promise<DsseEnvelope>;
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
  private out: PositionalOutput | undefined;
  /** The output, kept after close() for commit or discard. */
  private sink: PositionalOutput | undefined;
  /** File position where the pending (appended) bytes begin. */
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
  /** Set by layout(): every planned member by digest. */
  private regions: Map<string, Region> | undefined;
  /** Members to go after the planned region, laid out but not yet ordered (closeLayout() orders them). */
  private tailToOrder: { digest: string; region: Region; startAfter: (previous: Promise<void>) => void; settled: Promise<void> }[] = [];
  private layoutClosed = false;
  /** Resolved by closeLayout(): nothing is appended after the planned region before. */
  private readonly laidOut: Promise<void>;
  private openAppends!: () => void;
  private aborting: Promise<void> | undefined;
  /** Bytes of small tail members that may wait in memory for their turn. */
  private readAheadRoom = TAIL_READ_AHEAD_ROOM;

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
    this.laidOut = new Promise((resolve) => (this.openAppends = resolve));
  }

  /**
   * Create `<finalPath>.partial-<pid>` next to `finalPath`; finish() renames it into place.
   * A `<finalPath>.partial-<pid>` of a process that no longer runs (a run that was killed)
   * is removed first: `staleRemoved` names them.
   */
  static async create(finalPath: string, opts: ArchiveWriterOptions = {}): Promise<ArchiveWriter> {
    const suffix = `.partial-${process.pid}`;
    const tempPath = opts.volumeSize ? `${volumeName(finalPath, 1).replace(/1$/, '*')}${suffix}` : path.join(path.dirname(finalPath), `${path.basename(finalPath)}${suffix}`);
    const stale = await removeStaleTemporaries(finalPath);
    const w = new ArchiveWriter(finalPath, tempPath, opts);
    w.staleRemoved = stale;
    w.sink = opts.volumeSize ? new VolumeOutput(finalPath, opts.volumeSize, suffix) : await FileOutput.create(tempPath, finalPath);
    w.out = w.sink;
    try {
      await w.writeBufferMember(OCI_LAYOUT_MEMBER, OCI_LAYOUT_CONTENT, OCI_LAYOUT_MEDIA_TYPE, false);
    } catch (err) {
      await w.abort();
      throw err;
    }
    return w;
  }

  /** Temporary files of killed runs removed by create(). */
  staleRemoved: string[] = [];

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

  /** Planned writers run every range request under the copy's transfer slots themselves. */
  get schedulesTransfers(): boolean {
    return this.regions !== undefined;
  }

  putBlob(_repo: string, desc: Descriptor, open: () => Promise<Readable>, opts: PutBlobOptions = {}): Promise<PutResult> {
    const region = this.regions?.get(desc.digest);
    if (region) return this.fillRegion(region, desc, open, opts);
    return this.append(async () => {
      if (this.memberByDigest.has(desc.digest)) return 'exists';
      const member = await this.writeStreamMember(desc, open);
      this.memberByDigest.set(desc.digest, member);
      return 'written';
    });
  }

  putManifest(_repo: string, desc: Descriptor, bytes: Buffer, _tags: string[]): Promise<PutResult> {
    const region = this.regions?.get(desc.digest);
    if (region?.kind === 'inline') {
      try {
        verifyBuffer(bytes, desc.digest, desc.size, `manifest ${desc.digest}`);
      } catch (err) {
        return Promise.reject(err);
      }
      return Promise.resolve(region.put++ === 0 ? 'written' : 'exists');
    }
    return this.append(async () => {
      if (this.memberByDigest.has(desc.digest)) return 'exists';
      verifyBuffer(bytes, desc.digest, desc.size, `manifest ${desc.digest}`);
      const member = await this.writeBufferMember(blobPath(desc.digest), bytes, desc.mediaType, false);
      this.memberByDigest.set(desc.digest, member);
      return 'written';
    });
  }

  /**
   * Fix the layout of members to come, before their bytes arrive: `entries`
   * are blobs and manifests of the bundle (duplicates are fine), with their
   * bytes when they are already in memory. Members with bytes are written now;
   * blobs whose media type says they are compressed get their region reserved;
   * the rest are streamed, compressed, after the planned region in digest order.
   * Called again, it lays the new entries out after those before (a batch of
   * images whose manifests came later); closeLayout() ends the planned region,
   * and only then does the rest begin. The same batches give the same bytes.
   */
  async layout(entries: readonly LayoutEntry[]): Promise<void> {
    this.assertOpen();
    if (this.layoutClosed) throw new BundleError('internal: the layout is closed');
    if (!this.regions && this.members.length !== 1) throw new BundleError('internal: layout() must come before any member is put');
    const regions = this.regions ?? new Map<string, Region>();
    const unique = new Map<string, LayoutEntry>();
    for (const e of entries) {
      if (!Number.isSafeInteger(e.desc.size) || e.desc.size < 0) throw new BundleError(`invalid size ${e.desc.size} for blob ${e.desc.digest}`);
      if (regions.has(e.desc.digest)) continue; // laid out by an earlier batch
      const prior = unique.get(e.desc.digest);
      if (!prior || (!prior.bytes && e.bytes)) unique.set(e.desc.digest, e);
    }
    const byDigest = (a: LayoutEntry, b: LayoutEntry): number => (a.desc.digest < b.desc.digest ? -1 : a.desc.digest > b.desc.digest ? 1 : 0);
    const planned = [...unique.values()].filter((e) => e.bytes || isCompressedMediaType(e.desc.mediaType)).sort(byDigest);
    const tail = [...unique.values()].filter((e) => !e.bytes && !isCompressedMediaType(e.desc.mediaType)).sort(byDigest);
    await this.flush();
    const rawChunk = Math.min(this.chunkSize, RAW_CHUNK_SIZE);
    let file = this.flushed;
    let writes: Buffer[] = [];
    let writesAt = file;
    const writeOut = async (): Promise<void> => {
      if (writes.length) await this.out!.write(writes, writesAt);
      writes = [];
    };
    for (const e of planned) {
      const name = blobPath(e.desc.digest);
      const headerBlocks = encodeFileHeader(name, e.desc.size, this.created);
      const header = this.compressor.compress(headerBlocks);
      const region: Region = { kind: e.bytes ? 'inline' : 'raw', fileStart: file, fileSize: 0, tarStart: this.tarPos, frameStart: this.frames.length, frameCount: 0, member: undefined!, state: 'pending', put: 0 };
      if (writes.length === 0) writesAt = file;
      writes.push(header);
      this.frames.push({ compressedSize: header.length, decompressedSize: headerBlocks.length });
      this.tarPos += headerBlocks.length;
      file += header.length;
      const offset = this.tarPos;
      if (e.bytes) {
        verifyBuffer(e.bytes, e.desc.digest, e.desc.size, `${e.desc.digest}`);
        for (const f of this.dataFrames(e.bytes, false)) {
          writes.push(...f.buffers);
          this.frames.push(f.entry);
          file += f.entry.compressedSize;
          this.tarPos += f.entry.decompressedSize;
        }
        region.state = 'done';
        if (writes.length > 256) await writeOut();
      } else {
        await writeOut();
        const geo = new RawGeometry(e.desc.size, rawChunk, file);
        region.dataStart = file;
        region.frameContent = rawChunk;
        for (let i = 0; i < geo.frames; i++) this.frames.push({ compressedSize: geo.frameSize(i), decompressedSize: geo.frameDecompressed(i) });
        file += geo.totalSize();
        this.tarPos += e.desc.size + padding(e.desc.size);
      }
      region.fileSize = file - region.fileStart;
      region.frameCount = this.frames.length - region.frameStart;
      region.member = { path: name, digest: e.desc.digest, size: e.desc.size, mediaType: e.desc.mediaType, offset };
      this.members.push(region.member);
      if (region.state === 'done') {
        this.memberByDigest.set(e.desc.digest, region.member);
        this.dataBytes += e.desc.size;
      }
      regions.set(e.desc.digest, region);
    }
    await writeOut();
    this.flushed = file;
    // The rest follow in digest order (of every batch), each once the one before it is settled.
    for (const e of tail) {
      let settle!: () => void;
      const settled = new Promise<void>((r) => (settle = r));
      let startAfter!: (previous: Promise<void>) => void;
      const previous = new Promise<void>((r) => (startAfter = r));
      const region: Region = { kind: 'tail', fileStart: 0, fileSize: 0, tarStart: 0, frameStart: 0, frameCount: 0, member: undefined!, state: 'pending', put: 0, previous, settle };
      regions.set(e.desc.digest, region);
      this.tailToOrder.push({ digest: e.desc.digest, region, startAfter, settled });
    }
    this.regions = regions;
  }

  /** End the planned region: the members after it go in, in digest order, as they come. */
  closeLayout(): void {
    if (this.layoutClosed) return;
    this.layoutClosed = true;
    let previous: Promise<void> = Promise.resolve();
    for (const t of this.tailToOrder.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0))) {
      t.startAfter(previous);
      previous = t.settled;
    }
    this.tailToOrder = [];
    this.openAppends();
  }

  /** A member appended at the end: after the planned region, once it is closed. */
  private append<T>(job: () => Promise<T>): Promise<T> {
    if (!this.regions || this.layoutClosed) return this.enqueue(job);
    return this.laidOut.then(() => this.enqueue(job));
  }

  private fillRegion(region: Region, desc: Descriptor, open: () => Promise<Readable>, opts: PutBlobOptions): Promise<PutResult> {
    if (region.state === 'done') return Promise.resolve(region.put++ === 0 ? 'written' : 'exists');
    if (region.kind === 'tail') {
      region.job ??= this.writeTail(region, desc, open, opts);
    } else {
      region.job ??= fillRawRegion(this.out!, { desc, dataStart: region.dataStart!, frameContent: region.frameContent! }, {
        open,
        openRange: opts.openRange,
        slots: opts.slots,
        onBytes: opts.onBytes,
        rangesServed: opts.rangesServed,
      }).then(
        () => {
          region.state = 'done';
          this.memberByDigest.set(desc.digest, region.member);
          this.dataBytes += desc.size;
        },
        (err: unknown) => {
          region.state = 'failed';
          region.job = undefined; // a later put may try again
          throw err;
        },
      );
    }
    return region.job.then(() => (region.put++ === 0 ? 'written' : 'exists'));
  }

  /**
   * A blob written after the planned region, in its turn. A small one (a config)
   * is read at once, while there is room, and waits in memory for its turn: the
   * small blobs of the tail are not fetched one after the other.
   */
  private async writeTail(region: Region, desc: Descriptor, open: () => Promise<Readable>, opts: PutBlobOptions): Promise<void> {
    let early: Promise<Buffer> | undefined;
    let giveBack = (): void => undefined;
    if (desc.size <= TAIL_READ_AHEAD_MAX && this.readAheadRoom >= desc.size) {
      this.readAheadRoom -= desc.size;
      giveBack = () => {
        this.readAheadRoom += desc.size;
        giveBack = () => undefined;
      };
      early = readWhole(desc, open, opts.slots);
      early.catch(() => undefined); // fails the member in its turn
    }
    try {
      await region.previous;
      const release = opts.slots && !early ? await opts.slots.acquire() : () => undefined;
      try {
        const bytes = early && (await early);
        const member = await this.enqueue(() => this.writeStreamMember(desc, bytes ? async () => Readable.from([bytes], { objectMode: false }) : open));
        region.member = member;
        region.state = 'done';
        this.memberByDigest.set(desc.digest, member);
      } finally {
        release();
      }
    } catch (err) {
      region.state = 'failed';
      throw err;
    } finally {
      giveBack();
      region.settle!();
    }
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
  async finish(opts: FinishOptions): Promise<{ path: string; size: number; manifest: BundleManifest; files: string[] }> {
    this.assertOpen();
    this.closeLayout();
    this.state = 'finishing';
    try {
      await this.queue.catch(() => undefined);
      if (this.regions) {
        await Promise.allSettled([...this.regions.values()].map((r) => r.job));
        await this.queue.catch(() => undefined);
        await this.closeHoles();
      }
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
        ...opts.fields,
      };
      const manifestBytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
      // The envelope carries the manifest again, in base64: checked and written without further whole copies.
      const envelope: DsseEnvelope = opts.sign
        ? await opts.sign(manifestBytes)
        : { payloadType: MANIFEST_PAYLOAD_TYPE, payload: manifestBytes.toString('base64'), signatures: [] };
      if (envelope.payloadType !== MANIFEST_PAYLOAD_TYPE || !isPayloadOf(envelope.payload, manifestBytes)) {
        throw new BundleError('the signer returned an envelope for a different payload');
      }
      const envelopeBytes = serializeEnvelope(envelope);
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
      const out = this.out!;
      await out.truncate(this.flushed); // nothing of a failed member may linger past the end
      await out.sync();
      await out.close();
      this.out = undefined;
      const files = await out.commit();
      await syncDir(path.dirname(this.path));
      this.state = 'done';
      return { path: files.length === 1 && files[0] === this.path ? this.path : files[0]!, size: this.flushed, manifest, files };
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /** Stop and delete the temporary file. Safe to call more than once (every call resolves once it is gone). */
  abort(): Promise<void> {
    if (this.state === 'done') return Promise.resolve();
    this.aborting ??= (async () => {
      this.state = 'aborted';
      const out = this.out;
      this.out = undefined;
      this.pending = [];
      this.pendingBytes = 0;
      if (out) await out.close().catch(() => undefined);
      await this.sink?.discard();
    })();
    return this.aborting;
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
    if (!this.out) throw new BundleError(`archive ${this.path} is closed`);
    const bufs = this.pending;
    const total = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    await this.out.write(bufs, this.flushed);
    this.flushed += total;
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
    if (!this.out) return; // aborted meanwhile: the file is gone anyway
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
      await this.out.truncate(m.file);
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

  /** The data frames of a member held in memory (raw when it looks compressed), its padding in the last. */
  private dataFrames(data: Buffer, singleFrame: boolean): { buffers: Buffer[]; entry: SeekEntry }[] {
    const out: { buffers: Buffer[]; entry: SeekEntry }[] = [];
    const pad = Buffer.alloc(padding(data.length));
    const raw = looksCompressed(data);
    const step = singleFrame ? Math.max(data.length, 1) : raw ? Math.min(this.chunkSize, RAW_CHUNK_SIZE) : this.chunkSize;
    for (let pos = 0; pos < data.length; pos += step) {
      const end = Math.min(data.length, pos + step);
      const parts = [data.subarray(pos, end)];
      if (end === data.length && pad.length) parts.push(pad);
      if (raw) {
        const { buffers, size, contentSize } = encodeRawFrame(parts);
        out.push({ buffers, entry: { compressedSize: size, decompressedSize: contentSize } });
      } else {
        const frame = this.compressor.compress(parts);
        out.push({ buffers: [frame], entry: { compressedSize: frame.length, decompressedSize: end - pos + (end === data.length ? pad.length : 0) } });
      }
    }
    return out;
  }

  /**
   * Planned regions whose blob never arrived (an image given up under
   * --continue-on-error) leave holes: move everything after each hole down over
   * it, so the file is exactly what a layout without those blobs gives.
   */
  private async closeHoles(): Promise<void> {
    const holes = [...this.regions!.values()].filter((r) => r.kind === 'raw' && r.state !== 'done').sort((a, b) => a.fileStart - b.fileStart);
    if (holes.length === 0) return;
    await this.flush();
    const out = this.out!;
    const end = this.flushed;
    const move = async (from: number, to: number, length: number): Promise<void> => {
      const step = 8 * 1024 * 1024;
      for (let done = 0; done < length; done += step) {
        const n = Math.min(step, length - done);
        await out.write([await out.read(n, from + done)], to + done);
      }
    };
    let removedFile = 0;
    for (let i = 0; i < holes.length; i++) {
      const h = holes[i]!;
      removedFile += h.fileSize;
      const cursor = h.fileStart + h.fileSize;
      const next = holes[i + 1]?.fileStart ?? end;
      if (next > cursor) await move(cursor, cursor - removedFile, next - cursor);
    }
    const gone = new Set(holes.map((h) => h.member));
    const tarHoles = holes.map((h) => ({ at: h.tarStart, size: this.frames.slice(h.frameStart, h.frameStart + h.frameCount).reduce((n, f) => n + f.decompressedSize, 0) }));
    const dropFrames = new Set<number>();
    for (const h of holes) for (let f = h.frameStart; f < h.frameStart + h.frameCount; f++) dropFrames.add(f);
    const kept = this.frames.filter((_, i) => !dropFrames.has(i));
    this.frames.length = 0;
    this.frames.push(...kept);
    const keptMembers = this.members.filter((m) => !gone.has(m));
    this.members.length = 0;
    for (const m of keptMembers) {
      const shift = tarHoles.filter((t) => t.at < m.offset).reduce((n, t) => n + t.size, 0);
      this.members.push({ ...m, offset: m.offset - shift });
    }
    this.tarPos -= tarHoles.reduce((n, t) => n + t.size, 0);
    this.flushed -= removedFile;
    await out.truncate(this.flushed);
  }

  /** A small member from memory: one header frame, data in chunkSize frames (one frame when `singleFrame`). */
  private async writeBufferMember(name: string, data: Buffer, mediaType: string, singleFrame: boolean): Promise<BundleMember> {
    const start = this.mark();
    try {
      this.emitCompressedFrame(encodeFileHeader(name, data.length, this.created));
      const offset = this.tarPos;
      for (const f of this.dataFrames(data, singleFrame)) {
        for (const b of f.buffers) this.push(b);
        this.frames.push(f.entry);
        this.tarPos += f.entry.decompressedSize;
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

/** Tail members up to this size are read as soon as they are asked for... */
const TAIL_READ_AHEAD_MAX = 1024 * 1024;
/** ...while those waiting for their turn hold no more than this. */
const TAIL_READ_AHEAD_ROOM = 32 * 1024 * 1024;

/** A small blob's bytes, read under a transfer slot (checked against its digest when it is written). */
async function readWhole(desc: Descriptor, open: () => Promise<Readable>, slots: PutBlobOptions['slots']): Promise<Buffer> {
  const release = slots ? await slots.acquire() : () => undefined;
  let stream: Readable | undefined;
  try {
    stream = await open();
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of stream) {
      const b = Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array);
      if ((n += b.length) > desc.size) throw new DigestMismatchError(desc.digest, `more than ${desc.size} bytes`, `blob ${desc.digest}`);
      chunks.push(b);
    }
    return Buffer.concat(chunks);
  } catch (err) {
    stream?.destroy();
    throw err;
  } finally {
    release();
  }
}

/** One planned member. */
interface Region {
  /** inline: written by layout(); raw: reserved, filled by positional writes; tail: streamed after the planned region. */
  kind: 'inline' | 'raw' | 'tail';
  fileStart: number;
  fileSize: number;
  /** Tar offset of its header. */
  tarStart: number;
  frameStart: number;
  frameCount: number;
  member: BundleMember;
  state: 'pending' | 'done' | 'failed';
  /** How many puts have asked for it (the first one "wrote" it). */
  put: number;
  job?: Promise<void>;
  dataStart?: number;
  frameContent?: number;
  /** Tail members: settled when the one before is; settle() when this one is. */
  previous?: Promise<void>;
  settle?: () => void;
}

export interface LayoutEntry {
  desc: Descriptor;
  /** The verified bytes, when already in memory (manifests, small blobs). */
  bytes?: Buffer;
}

/**
 * Media types whose content is compressed already: stored in raw frames,
 * whose size the descriptor alone fixes. (Whatever the bytes turn out to be,
 * raw frames are valid; this only decides where compression is tried.)
 */
export function isCompressedMediaType(mediaType: string | undefined): boolean {
  if (!mediaType) return false;
  return /(?:[+.](?:gzip|zstd|xz|bzip2|lz4)|\.tar\.gz|[+/](?:x-)?gzip)$/i.test(mediaType);
}

/** `blobs/sha256/<hex>` for a sha256 digest. */
export function blobPath(digest: string): string {
  return `blobs/sha256/${digestHex(digest)}`;
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

/** Remove `<finalPath>.partial-<pid>` files whose process is gone; the paths removed. */
async function removeStaleTemporaries(finalPath: string): Promise<string[]> {
  const dir = path.dirname(finalPath);
  // `<name>.partial-<pid>`, or for volumes `<name>.<nnn>.partial-<pid>`.
  const pattern = new RegExp(`^${path.basename(finalPath).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\.\\d{3})?\\.partial-(\\d+)$`);
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m) continue;
    const pid = Number(m[2]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || processRuns(pid)) continue;
    const file = path.join(dir, name);
    await rm(file, { force: true });
    removed.push(file);
  }
  return removed;
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // it runs, as someone else
  }
}
