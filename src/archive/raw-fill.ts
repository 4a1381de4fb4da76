/**
 * Fills a blob's reserved region of the archive with raw zstd frames, from
 * several HTTP range requests at once when the source serves ranges, writing
 * each frame at its planned position as soon as its bytes are in. Every byte is
 * hashed in blob order (frames that arrive ahead of their turn are read back
 * from the file when it comes), and the blob counts only when the whole of it
 * matches its digest. A part that breaks off is resumed alone by the source
 * (the registry client's one retry policy), from where it stopped.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/types.js';
import type { Limiter } from '../copy/limit.js';
import type { ByteRange, RangeResult } from '../store/store.js';
import { VerifyingStream } from '../util/digest.js';
import { BundleError, DigestMismatchError } from '../util/errors.js';
import type { PositionalOutput } from './positional-file.js';
import { padding } from './tar.js';
import { encodeRawFrame, rawFrameContent, rawFrameSize } from './zstd-frames.js';

/**
 * Frames per range request: 4 frames of 1 MiB, so a 100 MB layer is fetched
 * over about 24 requests, and the last few parts in flight at the end of a
 * download (when fewer than the link's worth of connections are busy) are short.
 */
export const PART_FRAMES = 4;

export interface RawRegion {
  desc: Descriptor;
  /** File offset of the first data frame. */
  dataStart: number;
  /** Content bytes per frame; the last frame holds the rest plus the tar padding. */
  frameContent: number;
}

export interface BlobSources {
  /** The whole blob; a VerifyingStream for its digest is not hashed again. */
  open(): Promise<Readable>;
  openRange?: (range: ByteRange) => Promise<RangeResult>;
  slots?: Limiter;
  onBytes?: (n: number) => void;
  /** Frames per range request (default PART_FRAMES). */
  partFrames?: number;
  /** The source has answered range requests already: every part may start at once. */
  rangesServed?: boolean;
}

/** Thrown when a source sent more bytes than asked for: never retried. */
class OversizeError extends BundleError {}

/** Frames that make up a blob's region: how many, and where each one lies. */
export class RawGeometry {
  readonly frames: number;
  private readonly fullFrameSize: number;

  constructor(
    readonly size: number,
    readonly frameContent: number,
    readonly dataStart: number,
  ) {
    this.frames = size === 0 ? 0 : Math.ceil(size / frameContent);
    this.fullFrameSize = rawFrameSize(frameContent);
  }

  contentStart(i: number): number {
    return i * this.frameContent;
  }

  contentEnd(i: number): number {
    return Math.min(this.size, (i + 1) * this.frameContent);
  }

  fileOffset(i: number): number {
    return this.dataStart + i * this.fullFrameSize;
  }

  /** Stored bytes of frame i (with the padding in the last). */
  frameSize(i: number): number {
    return i === this.frames - 1 ? rawFrameSize(this.contentEnd(i) - this.contentStart(i) + padding(this.size)) : this.fullFrameSize;
  }

  /** Decompressed bytes of frame i. */
  frameDecompressed(i: number): number {
    return this.contentEnd(i) - this.contentStart(i) + (i === this.frames - 1 ? padding(this.size) : 0);
  }

  /** Stored bytes of all data frames. */
  totalSize(): number {
    return this.frames === 0 ? 0 : this.fileOffset(this.frames - 1) - this.dataStart + this.frameSize(this.frames - 1);
  }
}

/** Hashes frames in blob order; frames done ahead of their turn are read back from the output. */
class OrderedHasher {
  private readonly hash = createHash('sha256');
  private next = 0;
  private readonly ready = new Set<number>();
  private draining: Promise<void> | undefined;
  private failure: unknown;

  constructor(private readonly readBack: (i: number) => Promise<Buffer[]>) {}

  /** Frame i is written; `pieces` is its content, still in memory. */
  done(i: number, pieces: readonly Buffer[]): Promise<void> | undefined {
    if (i < this.next) return undefined; // a frame written again after a retry: hashed already
    if (!this.draining && i === this.next) {
      for (const p of pieces) this.hash.update(p);
      this.next++;
      if (this.ready.has(this.next)) this.draining = this.drain();
      return this.draining;
    }
    this.ready.add(i);
    return undefined;
  }

  private async drain(): Promise<void> {
    try {
      while (this.ready.has(this.next)) {
        const pieces = await this.readBack(this.next);
        for (const p of pieces) this.hash.update(p);
        this.ready.delete(this.next);
        this.next++;
      }
    } catch (err) {
      this.failure ??= err; // the blob fails as a whole: its bytes could not be proven
      throw err;
    } finally {
      this.draining = undefined;
    }
  }

  async digest(frames: number): Promise<string> {
    while (this.draining) await this.draining.catch(() => undefined);
    if (this.failure) throw this.failure;
    if (this.next !== frames) throw new Error(`internal: ${this.next} of ${frames} frames hashed`);
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/** Fill the data frames of `region` in `out`; resolves once every byte is written and proven. */
export async function fillRawRegion(out: PositionalOutput, region: RawRegion, src: BlobSources): Promise<void> {
  const { desc } = region;
  const geo = new RawGeometry(desc.size, region.frameContent, region.dataStart);
  const what = `blob ${desc.digest}`;
  const pad = Buffer.alloc(padding(desc.size));
  // Frames read back are hashed at once, one at a time: one scratch buffer serves them all
  // (a fresh buffer per frame would churn the heap and its garbage collector for nothing).
  let scratch: Buffer | undefined;
  const hasher = new OrderedHasher(async (i) => {
    scratch ??= Buffer.allocUnsafe(geo.frameSize(0));
    const frame = await out.read(geo.frameSize(i), geo.fileOffset(i), scratch);
    const content = rawFrameContent(frame) ?? [];
    return trim(content, geo.contentEnd(i) - geo.contentStart(i));
  });

  const writeFrame = async (i: number, pieces: Buffer[]): Promise<void> => {
    const parts = i === geo.frames - 1 && pad.length ? [...pieces, pad] : pieces;
    await out.write(encodeRawFrame(parts).buffers, geo.fileOffset(i));
  };

  /**
   * Frames `from`..`to`-1 from `stream`, which starts at frame `from`'s first byte.
   * `hashed` false: the stream proves itself. `cut`: the stream goes on past the part (stop there).
   */
  const consume = async (stream: Readable, from: number, to: number, hashed: boolean, cut = false): Promise<void> => {
    let i = from;
    let pieces: Buffer[] = [];
    let have = 0;
    let need = geo.contentEnd(i) - geo.contentStart(i);
    for await (const chunk of stream) {
      let buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
      while (buf.length > 0) {
        if (i >= to && cut) {
          stream.destroy();
          return;
        }
        if (i >= to) throw new OversizeError(`${what}: the source sent more bytes than asked for`);
        const take = Math.min(buf.length, need - have);
        pieces.push(take === buf.length ? buf : buf.subarray(0, take));
        have += take;
        buf = buf.subarray(take);
        if (have === need) {
          await writeFrame(i, pieces);
          if (hashed) {
            src.onBytes?.(need); // a stream that proves itself reports its own progress
            await hasher.done(i, pieces);
          }
          pieces = [];
          have = 0;
          i++;
          need = i < to ? geo.contentEnd(i) - geo.contentStart(i) : 0;
        }
      }
    }
    if (i < to) throw new BundleError(`${what}: the source's answer ended after ${geo.contentStart(i) + have - geo.contentStart(from)} bytes`);
  };

  const acquire = async (): Promise<() => void> => (src.slots ? src.slots.acquire() : () => undefined);
  const partFrames = src.partFrames ?? PART_FRAMES;

  const finishHash = async (): Promise<void> => {
    const actual = await hasher.digest(geo.frames);
    if (actual !== desc.digest) throw new DigestMismatchError(desc.digest, actual, what);
  };

  /** One request for the whole blob. */
  const whole = async (stream: Readable, release: () => void, hashed: boolean): Promise<void> => {
    try {
      await consume(stream, 0, geo.frames, hashed);
    } catch (err) {
      stream.destroy();
      throw err;
    } finally {
      release();
    }
    if (hashed) await finishHash();
  };

  if (!src.openRange || geo.frames <= partFrames) {
    const release = await acquire();
    let stream: Readable;
    try {
      stream = await src.open();
    } catch (err) {
      release();
      throw err;
    }
    const proves = stream instanceof VerifyingStream && stream.expectedDigest === desc.digest && stream.expectedSize === desc.size;
    return whole(stream, release, !proves);
  }

  const openRange = src.openRange;
  const rangeOf = (from: number, to: number): ByteRange => ({ start: geo.contentStart(from), end: geo.contentEnd(to - 1) });
  /** A part's stream; a source that sent the whole blob instead (from its start) is cut at the part's end. */
  const openPart = async (from: number, to: number): Promise<{ stream: Readable; cut: boolean }> => {
    const r = await openRange(rangeOf(from, to));
    return { stream: r.stream, cut: r.whole };
  };

  /**
   * Frames [first, end) over one range request. A part that breaks off is
   * resumed by the source itself (the registry client asks for the rest of the
   * range, under its one retry policy), never by fetching other parts again.
   */
  const runPart = async (first: number, end: number, pre?: { stream: Readable; release: () => void }): Promise<void> => {
    const release = pre?.release ?? (await acquire());
    let stream = pre?.stream;
    try {
      let cut = false;
      if (!stream) ({ stream, cut } = await openPart(first, end));
      await consume(stream, first, end, true, cut);
    } catch (err) {
      stream?.destroy();
      throw err;
    } finally {
      release();
    }
  };

  const firstEnd = Math.min(partFrames, geo.frames);
  const settleParts = async (parts: Promise<void>[]): Promise<void> => {
    const settled = await Promise.allSettled(parts);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    await finishHash();
  };
  const rest = (): Promise<void>[] => {
    const parts: Promise<void>[] = [];
    for (let f = firstEnd; f < geo.frames; f += partFrames) parts.push(runPart(f, Math.min(geo.frames, f + partFrames)));
    return parts;
  };
  if (src.rangesServed) return settleParts([runPart(0, firstEnd), ...rest()]);
  // Otherwise the first part goes alone: its answer says whether the source serves ranges at all.
  const release = await acquire();
  let first: RangeResult;
  try {
    first = await openRange(rangeOf(0, firstEnd));
  } catch (err) {
    release();
    throw err;
  }
  if (first.whole) return whole(first.stream, release, true);
  return settleParts([runPart(0, firstEnd, { stream: first.stream, release }), ...rest()]);
}

function trim(pieces: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  for (const p of pieces) {
    if (n <= 0) break;
    out.push(p.length <= n ? p : p.subarray(0, n));
    n -= Math.min(n, p.length);
  }
  return out;
}
