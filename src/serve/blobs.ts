/**
 * Blob bytes for `bundle serve`, never wrong ones.
 *
 * - A whole blob streams out of the archive through a VerifyingStream
 *   (src/util/digest.ts), which holds its last chunk back until the digest is
 *   proven: a client never receives all of a blob that fails, so with the
 *   Content-Length it was promised it sees a broken transfer, never bad bytes.
 * - A range of a blob whose digest has not been proven yet is cut out of the
 *   whole blob as it streams past the hash: the range's last chunk is held back
 *   until the whole blob has been read and proven, so the first range request
 *   of a blob costs reading all of it.
 * - Each proof is remembered (a set of digests, a few bytes each) while the
 *   file is unchanged (same size, mtime and inode), so later ranges of a proven
 *   blob are read straight from their frames through the seek table. A blob
 *   that fails is remembered too and answered with an error from then on.
 */
import { stat } from 'node:fs/promises';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { ArchiveCorruptError, type ArchiveReader } from '../archive/reader.js';
import { blobPath } from '../archive/writer.js';
import type { BundleMember } from '../bundle/manifest.js';
import { WeightedLimiter } from '../copy/limit.js';
import type { Descriptor } from '../oci/types.js';
import type { ContentStore } from '../store/store.js';
import { VerifyingStream } from '../util/digest.js';
import { DigestMismatchError } from '../util/errors.js';

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

/**
 * Memory for blob streams in flight, shared by all clients. A stream pins
 * about four of its member's frames (the one being sent, the one read ahead,
 * the piece held back until the digest is proven and pieces queued for the
 * socket may each pin another); once the budget is spent, further streams wait
 * their turn (first come, first served) instead of growing the heap. 48 MiB:
 * twelve streams of stored 1 MiB frames at once, three of 4 MiB compressed ones
 * (about 170 MB peak RSS for 50 clients of one large layer, measured by
 * test/serve.test.ts); the CPU, not the count of streams, bounds throughput.
 */
export const STREAM_MEMORY_BUDGET = 48 * 1024 * 1024;
const FRAMES_PER_STREAM = 4;

export class BlobSource {
  private readonly proven = new Set<string>();
  private readonly failed = new Map<string, string>();
  private fileStamp: string | undefined;
  private readonly budget: WeightedLimiter;

  constructor(
    private readonly reader: ArchiveReader,
    budget = STREAM_MEMORY_BUDGET,
  ) {
    this.budget = new WeightedLimiter(budget);
  }

  /** Blobs made at start-up (a devfile stack's rewritten artifact), read from their own store. */
  private readonly extra = new Map<string, { desc: Descriptor; store: ContentStore }>();

  /** Serve `desc` from `store` too (small blobs made by the server itself; always verified whole). */
  addExtra(desc: Descriptor, store: ContentStore): void {
    this.extra.set(desc.digest, { desc, store });
  }

  /** Size of a blob the archive (or an extra store) holds, or undefined. */
  size(digest: string): number | undefined {
    return this.reader.member(blobPath(digest))?.size ?? this.extra.get(digest)?.desc.size;
  }

  /** Why a blob is known to be bad, if it is. */
  failure(digest: string): string | undefined {
    return this.failed.get(digest);
  }

  /** Whether the blob's digest has been proven since the file was last seen to change. */
  async isProven(digest: string): Promise<boolean> {
    await this.checkFileUnchanged();
    return this.proven.has(digest);
  }

  /**
   * A stream of the blob's bytes (or of `range`), each proven before the last
   * piece is released; it errors instead of ending when the proof fails.
   */
  async open(digest: string, range?: ByteRange): Promise<{ stream: Readable; verifiedWhole: boolean }> {
    const member = this.reader.member(blobPath(digest));
    const extra = member ? undefined : this.extra.get(digest);
    if (!member && !extra) throw new Error(`no blob ${digest}`);
    const weight = member ? FRAMES_PER_STREAM * this.frameSizeAt(member.offset) : Math.min(extra!.desc.size, 1 << 20);
    const release = await this.budget.acquire(weight);
    try {
      const opened = member
        ? await this.openReserved(member, digest, range)
        : this.verifiedWhole(await extra!.store.openBlob('', extra!.desc), digest, extra!.desc.size, range);
      opened.stream.once('close', release);
      return opened;
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Decompressed size of the frame holding tar offset `offset` (every data frame of a member but its last has this size). */
  private frameSizeAt(offset: number): number {
    const frames = this.reader.frames;
    let lo = 0;
    let hi = frames.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (frames[mid]!.decompressedOffset <= offset) lo = mid;
      else hi = mid - 1;
    }
    return frames[lo]?.decompressedSize ?? 0;
  }

  private async openReserved(member: BundleMember, digest: string, range: ByteRange | undefined): Promise<{ stream: Readable; verifiedWhole: boolean }> {
    if (range && (await this.isProven(digest))) {
      return { stream: this.reader.openRange(member.offset + range.start, range.end - range.start + 1), verifiedWhole: false };
    }
    return this.verifiedWhole(this.reader.openMember(member.path), digest, member.size, range);
  }

  /** The whole blob through a VerifyingStream, cut down to `range` when given (released only once proven). */
  private verifiedWhole(source: Readable, digest: string, size: number, range: ByteRange | undefined): { stream: Readable; verifiedWhole: boolean } {
    // Little buffering: each piece pins its frame's buffer, and a server runs many streams.
    const verifying = new VerifyingStream(digest, size, `blob ${digest}`, undefined, { writableHighWaterMark: 1, readableHighWaterMark: 1 });
    source.on('error', (err: Error) => verifying.destroy(err));
    verifying.on('error', (err: Error) => {
      source.destroy();
      if (err instanceof DigestMismatchError || err instanceof ArchiveCorruptError) this.failed.set(digest, err.message);
    });
    verifying.on('end', () => this.proven.add(digest));
    source.pipe(verifying);
    if (!range) return { stream: verifying, verifiedWhole: true };
    const slice = new RangeSlice(range);
    verifying.on('error', (err: Error) => slice.destroy(err));
    slice.on('close', () => verifying.destroy());
    verifying.pipe(slice);
    return { stream: slice, verifiedWhole: true };
  }

  /** Forget every proof when the file (or a volume) changed under us: it is opened once and read in place. */
  private async checkFileUnchanged(): Promise<void> {
    const stats = await Promise.all(this.reader.input.paths.map((p) => stat(p)));
    const stamp = stats.map((st) => `${st.ino}:${st.size}:${st.mtimeMs}`).join(' ');
    if (this.fileStamp !== undefined && this.fileStamp !== stamp) {
      this.proven.clear();
      this.failed.clear();
    }
    this.fileStamp = stamp;
  }
}

/**
 * Passes on the bytes of `range` out of a whole blob flowing through it, and
 * swallows the rest; the range's last piece is released only when the whole
 * input has ended cleanly (the upstream VerifyingStream proved the digest).
 */
class RangeSlice extends Transform {
  private pos = 0;
  private held: Buffer | undefined;

  constructor(private readonly range: ByteRange) {
    super({ readableObjectMode: true, writableObjectMode: true, highWaterMark: 1 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const from = Math.max(this.range.start - this.pos, 0);
    const to = Math.min(this.range.end + 1 - this.pos, chunk.length);
    this.pos += chunk.length;
    if (to <= from) {
      cb();
      return;
    }
    const previous = this.held;
    this.held = chunk.subarray(from, to);
    cb(null, previous);
  }

  override _flush(cb: TransformCallback): void {
    const last = this.held;
    this.held = undefined;
    cb(null, last);
  }
}
