/**
 * Reads a .airgap file (spec/airgap-format.md). Opening reads only the seek
 * table and the last five frames; members are streamed on demand by seeking
 * through the seek table, and hashMembers() reads the whole file once.
 */
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { MANIFEST_MEMBER, SIGNATURE_MEMBER, type BundleManifest, type BundleMember } from '../bundle/manifest.js';
import type { Descriptor } from '../oci/types.js';
import type { DsseEnvelope } from '../sign/dsse-types.js';
import type { ContentStore, ManifestBytes } from '../store/store.js';
import { verifyBuffer } from '../util/digest.js';
import { BundleError, errorMessage, UsageError } from '../util/errors.js';
import { decodeHeaderBlock, decodePax, encodeFileHeader, isZeroBlock, padding, TAR_BLOCK } from './tar.js';
import { ANNOTATION_REF_NAME } from '../oci/media-types.js';
import { findBundleFiles, parseVolumeName, SlicedInput, volumeSizeProblems, type RandomAccessInput } from './volumes.js';
import { blobPath } from './writer.js';
import { decodeFrame, decodeSeekTable, parseSeekTableFooter, SEEK_TABLE_FOOTER_SIZE } from './zstd-frames.js';

/** Frames are read in batches of about this many compressed bytes. */
const READ_BATCH = 8 * 1024 * 1024;
/** Batches read ahead of the consumer. */
const READ_AHEAD = 2;
/** Member reads (push runs several at once) read one frame at a time, one ahead: memory stays flat. */
const RANGE_BATCH = 1;
const RANGE_AHEAD = 1;
/** A frame whose compressed size exceeds this is refused (format 1.0 frames are far smaller). */
const MAX_FRAME_COMPRESSED = 256 * 1024 * 1024;
/** Manifests read into memory by fetchManifest/readMember may not exceed this. */
const MAX_IN_MEMORY_MEMBER = 64 * 1024 * 1024;
/** A header frame holds a member's tar header blocks: a ustar block, and a pax header with its (bounded) data. */
const MAX_HEADER_FRAME = 1024 * 1024 + 3 * 512;
/** Number of trailing frames that hold the control members: manifest (2), signature (2), tar end (1). */
export const CONTROL_FRAMES = 5;

export interface FrameInfo {
  /** Offset of the frame in the file. */
  compressedOffset: number;
  compressedSize: number;
  /** Offset of the frame's content in the decompressed stream (the tar). */
  decompressedOffset: number;
  decompressedSize: number;
}

/** A member as hashMembers() sees it: where it is and the sha256 of its data. */
export interface HashedMember {
  path: string;
  size: number;
  offset: number;
  type: string;
  digest: string;
  /** Its header blocks are exactly the ones this format writes for its path and size (spec 2.2). */
  canonicalHeader: boolean;
  /** The tar padding after its data is all zero bytes. */
  zeroPadding: boolean;
}

/** A corrupt archive discovered while reading past open(). */
export class ArchiveCorruptError extends BundleError {}

export class ArchiveReader implements ContentStore {
  readonly description: string;
  readonly frames: readonly FrameInfo[];
  /** The manifest as parsed from the archive: NOT trusted until verified. */
  readonly manifest: BundleManifest;
  /** Exact bytes of airgap/manifest.json. */
  readonly manifestBytes: Buffer;
  /** Exact bytes of airgap/manifest.dsse.json. */
  readonly envelopeBytes: Buffer;
  private readonly byPath: Map<string, BundleMember>;
  private closed = false;

  private constructor(
    readonly path: string,
    /** The file, or the volumes, read as one. */
    readonly input: RandomAccessInput,
    readonly fileSize: number,
    frames: FrameInfo[],
    control: { manifest: BundleManifest; manifestBytes: Buffer; envelopeBytes: Buffer },
  ) {
    this.description = path;
    this.frames = frames;
    this.manifest = control.manifest;
    this.manifestBytes = control.manifestBytes;
    this.envelopeBytes = control.envelopeBytes;
    this.byPath = new Map(this.manifest.members.map((m) => [m.path, m]));
  }

  /**
   * The signature envelope, parsed from its bytes on each use (checked to be a DSSE
   * envelope when the file was opened). Not kept: its payload is the whole manifest
   * again, in base64, and grows with the bundle.
   */
  get envelope(): DsseEnvelope {
    return JSON.parse(this.envelopeBytes.toString('utf8')) as DsseEnvelope;
  }

  /** Open a bundle, reading only its seek table and control members. Any non-bundle input is a UsageError. */
  static async open(file: string, opts: { volumesDirs?: readonly string[] } = {}): Promise<ArchiveReader> {
    return ArchiveReader.openFiles(await findBundleFiles(file, opts.volumesDirs), file);
  }

  /** Open a bundle from its files: one, or its volumes in order. */
  static async openFiles(paths: readonly string[], file = paths[0]!): Promise<ArchiveReader> {
    const notBundle = (why: string): UsageError => new UsageError(`${file} is not an .airgap bundle: ${why}`);
    let fh: RandomAccessInput;
    try {
      fh = await SlicedInput.open(paths);
    } catch (err) {
      if (err instanceof UsageError) throw notBundle(err.message);
      throw new UsageError(`cannot open ${file}: ${errorMessage(err)}`);
    }
    // A set of volumes that is not whole: name the volume, whatever else is wrong.
    const volumes = volumeSizeProblems(fh);
    const lastVolume = parseVolumeName(basename(paths.at(-1)!)) ? ` (the last volume found is ${paths.at(-1)}: a later volume may be missing)` : '';
    try {
      if (volumes.length) throw new BundleError(volumes.join('; '), 1);
      const size = fh.size;
      if (size === 0) throw notBundle('the file is empty');
      if (size < 8 + SEEK_TABLE_FOOTER_SIZE) throw notBundle(`only ${size} bytes, too short to hold a zstd seek table (truncated?)`);
      const footer = await fh.readAt(size - SEEK_TABLE_FOOTER_SIZE, SEEK_TABLE_FOOTER_SIZE);
      let table: ReturnType<typeof parseSeekTableFooter>;
      try {
        table = parseSeekTableFooter(footer);
      } catch {
        throw notBundle(`no zstd seek table at its end (truncated?)${lastVolume}`);
      }
      if (table.tableSize > size) throw notBundle('its seek table claims more frames than the file can hold (truncated?)');
      let entries;
      try {
        entries = decodeSeekTable(await fh.readAt(size - table.tableSize, table.tableSize));
      } catch (err) {
        throw notBundle(`corrupt zstd seek table (${errorMessage(err)})`);
      }
      const frames: FrameInfo[] = new Array<FrameInfo>(entries.length);
      let c = 0;
      let d = 0;
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i]!;
        if (e.compressedSize > MAX_FRAME_COMPRESSED) throw notBundle(`its seek table says frame ${i} is ${e.compressedSize} bytes, implausibly large`);
        frames[i] = { compressedOffset: c, compressedSize: e.compressedSize, decompressedOffset: d, decompressedSize: e.decompressedSize };
        c += e.compressedSize;
        d += e.decompressedSize;
      }
      if (c !== size - table.tableSize) {
        throw notBundle(`its seek table covers ${c} bytes of frames but the file holds ${size - table.tableSize} (truncated or modified?)${lastVolume}`);
      }
      if (frames.length < 2 * 2 + CONTROL_FRAMES) throw notBundle(`only ${frames.length} frames, too few for a bundle`);
      const control = await readControl(fh, frames, notBundle, file);
      return new ArchiveReader(file, fh, size, frames, control);
    } catch (err) {
      await fh.close().catch(() => undefined);
      if (err instanceof UsageError || err instanceof BundleError) throw err;
      throw notBundle(errorMessage(err));
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.input.close();
  }

  /** ` in volume N (path)` for a byte of a bundle in volumes; empty for a single file. */
  inVolume(position: number): string {
    if (this.input.paths.length < 2) return '';
    const v = this.input.volumeAt(position);
    return ` in volume ${v.index} (${v.path})`;
  }

  /** Bundles in volumes: the volumes holding a member's bytes, as `volume N (path)`; empty for a single file. */
  volumesOf(path: string): string[] {
    const m = this.byPath.get(path);
    if (!m || this.input.paths.length < 2) return [];
    const first = this.frames[this.frameAt(Math.max(0, m.offset - 1))]!;
    const last = this.frames[this.frameAt(Math.max(m.offset, m.offset + m.size - 1))]!;
    const from = this.input.volumeAt(first.compressedOffset).index;
    const to = this.input.volumeAt(last.compressedOffset + last.compressedSize - 1).index;
    const out: string[] = [];
    for (let i = from; i <= to; i++) out.push(`volume ${i} (${this.input.paths[i - 1]})`);
    return out;
  }

  /** The manifest entry for a member path (untrusted), if listed. */
  member(path: string): BundleMember | undefined {
    return this.byPath.get(path);
  }

  /**
   * Stream a member's raw bytes, located by the manifest's offset and size
   * (or, for the control members, by their fixed frames). Unverified.
   */
  openMember(path: string): Readable {
    const loc = this.locate(path);
    return this.openRange(loc.offset, loc.size);
  }

  /** Read a whole member into memory (bounded); unverified. */
  async readMember(path: string): Promise<Buffer> {
    const loc = this.locate(path);
    if (loc.size > MAX_IN_MEMORY_MEMBER) throw new BundleError(`${path} is ${loc.size} bytes, too large to read into memory`);
    const chunks: Buffer[] = [];
    for await (const c of this.openRange(loc.offset, loc.size)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** Stream `size` decompressed bytes starting at decompressed `offset`. */
  openRange(offset: number, size: number): Readable {
    const total = this.frames.length ? this.frames[this.frames.length - 1]!.decompressedOffset + this.frames[this.frames.length - 1]!.decompressedSize : 0;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size < 0 || offset + size > total) {
      throw new BundleError(`range ${offset}+${size} lies outside the archive ${this.path} (${total} bytes of tar)`);
    }
    // objectMode: chunks (Buffers) are passed on as they are, never concatenated.
    return Readable.from(this.rangePieces(offset, size), { objectMode: true, highWaterMark: 2 });
  }

  private async *rangePieces(offset: number, size: number): AsyncGenerator<Buffer> {
    if (size === 0) return;
    const first = this.frameAt(offset);
    let skip = offset - this.frames[first]!.decompressedOffset;
    let left = size;
    for await (const parts of this.decodedFrom(first, this.frameAt(offset + size - 1) + 1, RANGE_BATCH, RANGE_AHEAD)) {
      for (const part of parts) {
        if (skip >= part.length) {
          skip -= part.length;
          continue;
        }
        const piece = part.subarray(skip, Math.min(part.length, skip + left));
        skip = 0;
        left -= piece.length;
        yield piece;
        if (left === 0) return;
      }
    }
    throw new ArchiveCorruptError(`${this.path} ends before the requested range`);
  }

  /**
   * One sequential pass over the whole tar: every physical member in order,
   * its data hashed on the way with no stream in between (verify's read).
   * Throws ArchiveCorruptError on a bad frame, a bad tar header, a tar
   * without its end, or data after the end. `from`/`to` restrict it to frames
   * [from, to): `from` must be a member's first header frame, and a range that
   * stops before the last frame ends cleanly at a member boundary, so two
   * ranges can be checked in parallel.
   */
  async *hashMembers(range: { from?: number; to?: number } = {}, onBytes?: (n: number) => void): AsyncGenerator<HashedMember> {
    const from = range.from ?? 0;
    const to = range.to ?? this.frames.length;
    if (from < 0 || to > this.frames.length || from >= to) throw new BundleError(`bad frame range ${from}..${to} of ${this.path}`);
    const src = new ByteSource(this.decodedFrom(from, to, READ_BATCH, READ_AHEAD, true), this.frames[from]!.decompressedOffset);
    const mtime = new Date(this.manifest.created);
    for await (const { header, ...entry } of this.entries(src, to < this.frames.length)) {
      const hash = createHash('sha256');
      let left = entry.size;
      while (left > 0) {
        const piece = src.takeSync(left) ?? ((await src.fill()) ? src.takeSync(left) : null);
        if (!piece) throw new ArchiveCorruptError(`${this.path}: the tar ends in the middle of ${entry.path} (truncated?)`);
        hash.update(piece);
        left -= piece.length;
        onBytes?.(piece.length);
      }
      const pad = padding(entry.size) ? await src.readExact(padding(entry.size)) : Buffer.alloc(0);
      if (!pad) throw new ArchiveCorruptError(`${this.path}: the tar ends in the padding of ${entry.path} (truncated?)`);
      yield { ...entry, digest: `sha256:${hash.digest('hex')}`, canonicalHeader: isCanonicalHeader(header, entry.path, entry.size, mtime), zeroPadding: pad.every((b) => b === 0) };
    }
  }

  /**
   * Tar entries from `src`, each with its raw header blocks; the consumer reads
   * exactly `size` data bytes (and may read the padding) before asking for the
   * next. `partial`: the source stops at a member boundary instead of the
   * end-of-archive blocks.
   */
  private async *entries(src: ByteSource, partial: boolean): AsyncGenerator<Omit<HashedMember, 'digest' | 'canonicalHeader' | 'zeroPadding'> & { header: Buffer }> {
    let pendingName: string | undefined;
    let pendingSize: number | undefined;
    let headerParts: Buffer[] = [];
    for (;;) {
      const block = await src.readExact(TAR_BLOCK);
      if (!block) {
        if (partial && pendingName === undefined && pendingSize === undefined) return;
        throw new ArchiveCorruptError(`${this.path}: the tar ends without its end-of-archive blocks (truncated?)`);
      }
      if (isZeroBlock(block)) {
        if (partial) throw new ArchiveCorruptError(`${this.path}: end-of-archive blocks at offset ${src.position - TAR_BLOCK}, before the last frame`);
        const second = await src.readExact(TAR_BLOCK);
        if (!second || !isZeroBlock(second)) throw new ArchiveCorruptError(`${this.path}: malformed tar end-of-archive`);
        if (await src.readUpTo(1)) throw new ArchiveCorruptError(`${this.path}: data after the tar end-of-archive`);
        return;
      }
      let header;
      try {
        header = decodeHeaderBlock(block);
      } catch (err) {
        throw new ArchiveCorruptError(`${this.path}: bad tar header at offset ${src.position - TAR_BLOCK}: ${errorMessage(err)}`);
      }
      if (!header) throw new ArchiveCorruptError(`${this.path}: bad tar header at offset ${src.position - TAR_BLOCK}`);
      headerParts.push(Buffer.from(block));
      if (header.type === 'pax-header' || header.type === 'pax-global-header' || header.type === 'gnu-long-path') {
        if (header.size > 1024 * 1024) throw new ArchiveCorruptError(`${this.path}: oversized tar extended header`);
        const data = await src.readExact(header.size);
        if (header.size && !data) throw new ArchiveCorruptError(`${this.path}: truncated tar extended header`);
        const pad = await src.readExact(padding(header.size));
        if (padding(header.size) && !pad) throw new ArchiveCorruptError(`${this.path}: truncated tar extended header`);
        if (data) headerParts.push(Buffer.from(data));
        if (pad) headerParts.push(Buffer.from(pad));
        if (header.type === 'pax-header' && data) {
          const pax = decodePax(data);
          if (pax.path !== undefined) pendingName = pax.path;
          if (pax.size !== undefined) pendingSize = Number(pax.size);
        } else if (header.type === 'gnu-long-path' && data) {
          pendingName = data.toString('utf8').replace(/\0+$/, '');
        }
        continue;
      }
      const name = pendingName ?? header.name;
      const size = pendingSize ?? header.size;
      pendingName = pendingSize = undefined;
      if (!Number.isSafeInteger(size) || size < 0) throw new ArchiveCorruptError(`${this.path}: tar header at offset ${src.position - TAR_BLOCK} gives a size of ${String(size)}`);
      const offset = src.position;
      const raw = Buffer.concat(headerParts);
      headerParts = [];
      yield { path: name, size, offset, type: header.type ?? 'unknown', header: raw };
      // Whatever the consumer left of the data and its padding.
      const end = offset + size + padding(size);
      if (src.position < end) await src.skip(end - src.position);
    }
  }

  /**
   * Where two halves of a scan can meet: the first header frame of the listed
   * member whose data starts nearest the middle (undefined when none fits).
   */
  splitFrame(): number | undefined {
    const total = this.frames.length ? this.frames[this.frames.length - 1]!.decompressedOffset : 0;
    let best: number | undefined;
    let bestDistance = Infinity;
    for (const m of this.manifest.members) {
      if (m.size === 0 || m.offset <= 0 || m.offset >= total) continue;
      const distance = Math.abs(m.offset - total / 2);
      if (distance >= bestDistance) continue;
      const h = this.frameAt(m.offset - 1);
      const f = this.frames[h]!;
      if (h === 0 || f.decompressedOffset + f.decompressedSize !== m.offset) continue;
      best = h;
      bestDistance = distance;
    }
    return best;
  }

  /**
   * What the frames hold besides the listed members and the control members,
   * checked from the seek table and the (small) header frames alone, without
   * reading any member's data: every listed member is one header frame naming
   * it with its size, then data frames ending exactly where its padded data
   * ends, members back to back in offset order, then the five control frames.
   * An unlisted member (an extra copy of a control member, say) has no place
   * to hide. Empty when the layout is exactly that.
   */
  async layoutProblems(): Promise<string[]> {
    const frames = this.frames;
    const controlStart = frames.length - CONTROL_FRAMES;
    const members = [...this.manifest.members].sort((a, b) => a.offset - b.offset);
    const headers: { frame: number; member: BundleMember }[] = [];
    let f = 0;
    let pos = 0;
    // Empty frames hold nothing, so they hide nothing: skipped wherever they are.
    const skipEmpty = (): void => {
      while (f < controlStart && frames[f]!.decompressedSize === 0) f++;
    };
    for (const m of members) {
      skipEmpty();
      const h = frames[f];
      if (f >= controlStart || !h || h.decompressedOffset !== pos || h.decompressedOffset + h.decompressedSize !== m.offset || h.decompressedSize > MAX_HEADER_FRAME) {
        return [`the archive holds something the manifest does not list between tar offsets ${pos} and ${m.offset} (before ${m.path})`];
      }
      headers.push({ frame: f, member: m });
      const end = m.offset + m.size + padding(m.size);
      for (f++; f < controlStart && frames[f]!.decompressedOffset < end; f++);
      if ((frames[f]?.decompressedOffset ?? Infinity) !== end) return [`${m.path}: its data frames do not end where its data does (tar offset ${end})`];
      pos = end;
    }
    skipEmpty();
    if (f !== controlStart) {
      return [`the archive holds something the manifest does not list between tar offset ${pos} and ${MANIFEST_MEMBER}`];
    }
    const problems: string[] = [];
    const mtime = new Date(this.manifest.created);
    // Header frames are a few dozen bytes each: read them a batch at a time.
    for (let i = 0; i < headers.length; i += 64) {
      const batch = headers.slice(i, i + 64);
      const raw = await Promise.all(batch.map(({ frame }) => this.readFrame(frame).catch(() => undefined)));
      batch.forEach(({ frame, member }, j) => {
        const head = raw[j];
        const found = head && parseHeaderFrame(head);
        if (!found || found.name !== member.path || found.size !== member.size) {
          problems.push(
            `frame ${frame} should hold the tar header of ${member.path} (${member.size} bytes) but holds ${found ? `${found.name} (${found.size} bytes)` : 'something else'}`,
          );
        } else if (!isCanonicalHeader(head, member.path, member.size, mtime)) {
          problems.push(`frame ${frame}: the tar header of ${member.path} is not the one this format writes (its mode, owner, time or type was changed)`);
        }
      });
    }
    return problems;
  }

  /** One frame's decoded content (for small frames: read whole into memory). */
  private async readFrame(i: number): Promise<Buffer> {
    const f = this.frames[i]!;
    const parts = decodeFrame(await this.input.readAt(f.compressedOffset, f.compressedSize), f.decompressedSize);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  // ---- ContentStore ----

  async resolve(repo: string, reference: string): Promise<Descriptor> {
    const images = this.manifest.images;
    const bare = (s: string): string => s.replace(/@.*$/, '').replace(/:[^/:]*$/, '');
    const img =
      images.find((i) => i.refName === reference || i.source === reference) ??
      images.find((i) => i.source === `${repo}:${reference}` || i.source === `${repo}@${reference}`) ??
      images.find((i) => i.digest === reference && (!repo || bare(i.source) === repo)) ??
      images.find((i) => i.digest === reference) ??
      images.find((i) => bare(i.source) === repo && i.tags.includes(reference));
    if (!img) throw new BundleError(`${this.path} holds no image ${repo ? `${repo} ` : ''}${reference}`);
    return { mediaType: img.mediaType, digest: img.digest, size: img.size, annotations: { [ANNOTATION_REF_NAME]: img.refName } };
  }

  async fetchManifest(_repo: string, desc: Descriptor): Promise<ManifestBytes> {
    const path = blobPath(desc.digest);
    const m = this.byPath.get(path);
    if (!m) throw new BundleError(`${this.path} does not hold manifest ${desc.digest}`);
    const bytes = await this.readMember(path);
    verifyBuffer(bytes, desc.digest, desc.size, `manifest ${desc.digest} in ${this.path}`);
    return { bytes, mediaType: desc.mediaType || m.mediaType, digest: desc.digest };
  }

  async hasBlob(_repo: string, desc: Descriptor): Promise<boolean> {
    return this.byPath.has(blobPath(desc.digest));
  }

  async openBlob(_repo: string, desc: Descriptor): Promise<Readable> {
    const path = blobPath(desc.digest);
    if (!this.byPath.has(path)) throw new BundleError(`${this.path} does not hold blob ${desc.digest}`);
    return this.openMember(path);
  }

  // ---- internals ----

  private locate(path: string): { offset: number; size: number } {
    const n = this.frames.length;
    if (path === MANIFEST_MEMBER) return { offset: this.frames[n - 4]!.decompressedOffset, size: this.manifestBytes.length };
    if (path === SIGNATURE_MEMBER) return { offset: this.frames[n - 2]!.decompressedOffset, size: this.envelopeBytes.length };
    const m = this.byPath.get(path);
    if (!m) throw new BundleError(`${this.path} has no member ${path}`);
    return { offset: m.offset, size: m.size };
  }

  /** Index of the frame holding decompressed offset `offset` (binary search). */
  private frameAt(offset: number): number {
    let lo = 0;
    let hi = this.frames.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.frames[mid]!.decompressedOffset <= offset) lo = mid;
      else hi = mid - 1;
    }
    // Skip empty frames so the returned one really holds `offset`.
    while (lo < this.frames.length - 1 && this.frames[lo]!.decompressedOffset + this.frames[lo]!.decompressedSize <= offset) lo++;
    return lo;
  }

  /**
   * Decoded content of frames `from` .. `to`-1 in order, as zero-copy pieces, one
   * array per frame. Reads batches of whole frames, one batch ahead, so
   * disk reads (in libuv's pool) overlap with the consumer's work.
   */
  private async *decodedFrom(
    from: number,
    to: number = this.frames.length,
    batchBytes = READ_BATCH,
    ahead = READ_AHEAD,
    /**
     * Recycle read buffers: only for consumers that are done with every piece of a
     * frame before asking for the next (hashMembers). Without garbage to collect,
     * memory stays at a few batches whatever the file size.
     */
    recycle = false,
  ): AsyncGenerator<Buffer[]> {
    const pool: Buffer[] = [];
    const frames = this.frames;
    const batchEnd = (start: number): number => {
      let end = start;
      let bytes = 0;
      while (end < to && (end === start || bytes + frames[end]!.compressedSize <= batchBytes)) {
        bytes += frames[end]!.compressedSize;
        end++;
      }
      return end;
    };
    const readBatch = (start: number, end: number): Promise<Buffer> => {
      const off = frames[start]!.compressedOffset;
      const len = frames[end - 1]!.compressedOffset + frames[end - 1]!.compressedSize - off;
      const spare = recycle && len <= batchBytes ? pool.pop() ?? Buffer.allocUnsafe(batchBytes) : undefined;
      const p = this.input.readAt(off, len, spare);
      p.catch(() => undefined); // awaited later; never an unhandled rejection
      return p;
    };
    // Up to READ_AHEAD batches in flight while the consumer works on the current one.
    const inflight: { start: number; end: number; data: Promise<Buffer> }[] = [];
    let nextStart = from;
    const refill = (): void => {
      while (inflight.length < ahead && nextStart < to) {
        const end = batchEnd(nextStart);
        inflight.push({ start: nextStart, end, data: readBatch(nextStart, end) });
        nextStart = end;
      }
    };
    refill();
    let previous: Buffer | undefined;
    while (inflight.length > 0) {
      const batch = inflight.shift()!;
      const buf = await batch.data;
      // Every piece of the previous batch has been consumed by now: its buffer is free.
      if (recycle && previous && previous.buffer.byteLength === batchBytes) pool.push(Buffer.from(previous.buffer, previous.byteOffset, batchBytes));
      previous = buf;
      refill();
      const curStart = batch.start;
      const curEnd = batch.end;
      const base = frames[curStart]!.compressedOffset;
      // Decode lazily, one frame per yield: a batch of small compressed frames may expand a lot.
      for (let i = curStart; i < curEnd; i++) {
        const f = frames[i]!;
        const frame = buf.subarray(f.compressedOffset - base, f.compressedOffset - base + f.compressedSize);
        let parts: Buffer[];
        try {
          parts = decodeFrame(frame, f.decompressedSize);
        } catch (err) {
          throw new ArchiveCorruptError(`${this.path}: frame ${i} at byte ${f.compressedOffset}${this.inVolume(f.compressedOffset)} is corrupt: ${errorMessage(err)}`);
        }
        yield parts;
      }
    }
  }
}

/** Pull-based reader over batches of decoded pieces. */
class ByteSource {
  private parts: Buffer[] = [];
  private idx = 0;
  private done = false;
  /** Decompressed bytes consumed so far. */
  position = 0;
  private failure: Error | undefined;

  constructor(
    private readonly it: AsyncIterator<Buffer[]>,
    start = 0,
  ) {
    this.position = start;
  }

  /** Make a piece available; false at the end of the source. */
  async fill(): Promise<boolean> {
    while (this.idx >= this.parts.length) {
      if (this.failure) throw this.failure;
      if (this.done) return false;
      let r: IteratorResult<Buffer[]>;
      try {
        r = await this.it.next();
      } catch (err) {
        this.failure = err as Error;
        throw err;
      }
      if (r.done) {
        this.done = true;
        return false;
      }
      this.parts = r.value;
      this.idx = 0;
    }
    return true;
  }

  /** Up to `n` bytes from what is already decoded (zero-copy), or null when a fill() is needed. */
  takeSync(n: number): Buffer | null {
    while (this.idx < this.parts.length && this.parts[this.idx]!.length === 0) this.idx++;
    if (this.idx >= this.parts.length) return null;
    const cur = this.parts[this.idx]!;
    let out: Buffer;
    if (n >= cur.length) {
      out = cur;
      this.idx++;
    } else {
      out = cur.subarray(0, n);
      this.parts[this.idx] = cur.subarray(n);
    }
    this.position += out.length;
    return out;
  }

  /** Up to `n` bytes, or null at the end. */
  async readUpTo(n: number): Promise<Buffer | null> {
    const b = this.takeSync(n);
    if (b) return b;
    if (!(await this.fill())) return null;
    return this.takeSync(n);
  }

  /** Exactly `n` bytes; null when the source is at its end; throws when it ends part way. */
  async readExact(n: number): Promise<Buffer | null> {
    const first = await this.readUpTo(n);
    if (!first || first.length === n) return first;
    const parts = [first];
    let got = first.length;
    while (got < n) {
      const p = await this.readUpTo(n - got);
      if (!p) throw new ArchiveCorruptError('the tar ends in the middle of a block (truncated?)');
      parts.push(p);
      got += p.length;
    }
    return Buffer.concat(parts, n);
  }

  async skip(n: number): Promise<void> {
    while (n > 0) {
      const p = await this.readUpTo(n);
      if (!p) throw new ArchiveCorruptError('the tar ends in the middle of a member (truncated?)');
      n -= p.length;
    }
  }
}

interface Control {
  manifest: BundleManifest;
  manifestBytes: Buffer;
  envelopeBytes: Buffer;
}

/** Read and check the last five frames: manifest header + data, signature header + data, tar end. */
async function readControl(fh: RandomAccessInput, frames: FrameInfo[], notBundle: (why: string) => UsageError, file: string): Promise<Control> {
  const n = frames.length;
  const first = frames[n - CONTROL_FRAMES]!;
  const last = frames[n - 1]!;
  const buf = await fh.readAt(first.compressedOffset, last.compressedOffset + last.compressedSize - first.compressedOffset);
  const decoded: Buffer[] = [];
  for (let i = n - CONTROL_FRAMES; i < n; i++) {
    const f = frames[i]!;
    const frame = buf.subarray(f.compressedOffset - first.compressedOffset, f.compressedOffset - first.compressedOffset + f.compressedSize);
    try {
      const parts = decodeFrame(frame, f.decompressedSize);
      decoded.push(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
    } catch (err) {
      throw notBundle(`frame ${i} is corrupt (${errorMessage(err)})`);
    }
  }
  const [mHead, mData, sHead, sData, eof] = decoded as [Buffer, Buffer, Buffer, Buffer, Buffer];
  if (eof.length !== 2 * TAR_BLOCK || !isZeroBlock(eof.subarray(0, TAR_BLOCK)) || !isZeroBlock(eof.subarray(TAR_BLOCK))) {
    throw notBundle('its last frame is not the tar end-of-archive');
  }
  const manifestBytes = controlMember(mHead, mData, MANIFEST_MEMBER, notBundle);
  const envelopeBytes = controlMember(sHead, sData, SIGNATURE_MEMBER, notBundle);
  let manifest: BundleManifest;
  let envelope: DsseEnvelope;
  try {
    manifest = JSON.parse(manifestBytes.toString('utf8')) as BundleManifest;
  } catch {
    throw notBundle(`${MANIFEST_MEMBER} is not valid JSON`);
  }
  try {
    envelope = JSON.parse(envelopeBytes.toString('utf8')) as DsseEnvelope;
  } catch {
    throw notBundle(`${SIGNATURE_MEMBER} is not valid JSON`);
  }
  checkManifestShape(manifest, notBundle, file);
  if (
    !envelope ||
    typeof envelope !== 'object' ||
    typeof envelope.payloadType !== 'string' ||
    typeof envelope.payload !== 'string' ||
    !Array.isArray(envelope.signatures)
  ) {
    throw notBundle(`${SIGNATURE_MEMBER} is not a DSSE envelope`);
  }
  return { manifest, manifestBytes, envelopeBytes };
}

/**
 * The member a header frame introduces: its content must be exactly one member's
 * header blocks (a ustar header, optionally preceded by a pax header and its data).
 * Undefined when it holds anything else.
 */
export function parseHeaderFrame(head: Buffer): { name: string; size: number } | undefined {
  try {
    let pos = 0;
    let paxName: string | undefined;
    let paxSize: string | undefined;
    while (pos + TAR_BLOCK <= head.length) {
      const h = decodeHeaderBlock(head.subarray(pos, pos + TAR_BLOCK));
      pos += TAR_BLOCK;
      if (!h) return undefined;
      if (h.type === 'pax-header') {
        const pax = decodePax(head.subarray(pos, pos + h.size));
        paxName = pax.path;
        paxSize = pax.size;
        pos += h.size + padding(h.size);
        continue;
      }
      if (h.type !== 'file' || pos !== head.length) return undefined;
      return { name: paxName ?? h.name, size: paxSize !== undefined ? Number(paxSize) : h.size };
    }
  } catch {
    // not a header
  }
  return undefined;
}

/**
 * Whether `raw` is exactly the header this format writes for a member (spec 2.2: ustar, mode 0644,
 * owner 0, mtime = the bundle's creation time, a pax header only where needed). Every byte of a
 * header is fixed by the path, the size and the creation time, so any other byte is tampering.
 */
export function isCanonicalHeader(raw: Buffer, path: string, size: number, mtime: Date): boolean {
  if (Number.isNaN(mtime.getTime())) return false;
  try {
    return raw.equals(encodeFileHeader(path, size, mtime));
  } catch {
    return false;
  }
}

/** A control member's bytes from its header frame and single data frame. */
function controlMember(head: Buffer, data: Buffer, expected: string, notBundle: (why: string) => UsageError): Buffer {
  const member = parseHeaderFrame(head);
  if (member?.name !== expected) throw notBundle(`the frames where ${expected} belongs do not hold it`);
  const size = member.size;
  if (data.length !== size + padding(size)) throw notBundle(`${expected} does not fill its frame`);
  return data.subarray(0, size);
}

function checkManifestShape(m: BundleManifest, notBundle: (why: string) => UsageError, file: string): void {
  if (!m || typeof m !== 'object' || m.kind !== 'AirgapBundleManifest' || m.schemaVersion !== 1) {
    throw notBundle(`${MANIFEST_MEMBER} is not an AirgapBundleManifest`);
  }
  if (typeof m.formatVersion !== 'string' || !/^1\.\d+$/.test(m.formatVersion)) {
    // Another major may change the framing itself: nothing in it can be trusted to mean what 1.x says.
    throw new UsageError(
      `${file} is a format ${JSON.stringify(m.formatVersion)} bundle; this tool reads format 1.x only (any 1.<minor>), so it needs a tool that knows that format`,
    );
  }
  if (!Array.isArray(m.members) || !Array.isArray(m.images)) throw notBundle(`${MANIFEST_MEMBER} lacks members or images`);
  for (const mem of m.members) {
    if (
      !mem ||
      typeof mem.path !== 'string' ||
      typeof mem.digest !== 'string' ||
      !Number.isSafeInteger(mem.size) ||
      !Number.isSafeInteger(mem.offset) ||
      mem.size < 0 ||
      mem.offset < 0
    ) {
      throw notBundle(`${MANIFEST_MEMBER} has a malformed member entry`);
    }
  }
  for (const img of m.images) {
    if (!img || typeof img.digest !== 'string' || typeof img.refName !== 'string' || typeof img.source !== 'string' || !Array.isArray(img.tags)) {
      throw notBundle(`${MANIFEST_MEMBER} has a malformed image entry`);
    }
  }
}
