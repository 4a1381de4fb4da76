import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DigestMismatchError } from './errors.js';

export const SHA256_RE = /^sha256:[a-f0-9]{64}$/;

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${sha256Hex(data)}`;
}

export function isSha256Digest(s: string): boolean {
  return SHA256_RE.test(s);
}

/** The hex part of a sha256 digest; throws on anything else. */
export function digestHex(digest: string): string {
  if (!SHA256_RE.test(digest)) throw new Error(`not a sha256 digest: ${digest}`);
  return digest.slice(7);
}

/**
 * A pass-through stream that hashes every byte and, at the end, fails with a
 * DigestMismatchError (before signalling end) if the digest or size is wrong.
 * It holds back its last chunk until the digest is proven, so a consumer never
 * receives the whole of a bad blob: an upload of known length cannot complete,
 * and consumers that commit on a clean end never commit bad bytes.
 */
export class VerifyingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private seen = 0;
  private pending: Buffer | undefined;

  constructor(
    readonly expectedDigest: string,
    readonly expectedSize: number | undefined,
    readonly what: string,
    private readonly onBytes?: (n: number) => void,
    /** How much it buffers on each side (default 1 MiB in, 16 chunks out); a server of many streams keeps it low. */
    buffering: { writableHighWaterMark?: number; readableHighWaterMark?: number } = {},
  ) {
    // Object mode on the readable side: consumers get each Buffer as it is, never a concatenated copy.
    super({ readableObjectMode: true, writableHighWaterMark: 1 << 20, readableHighWaterMark: 16, ...buffering });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    this.onBytes?.(chunk.length);
    if (this.expectedSize !== undefined && this.seen > this.expectedSize) {
      cb(new DigestMismatchError(this.expectedDigest, `more than ${this.expectedSize} bytes`, this.what));
      return;
    }
    this.hash.update(chunk);
    const previous = this.pending;
    this.pending = chunk;
    cb(null, previous);
  }

  override _flush(cb: TransformCallback): void {
    const actual = `sha256:${this.hash.digest('hex')}`;
    if (this.expectedSize !== undefined && this.seen !== this.expectedSize) {
      cb(new DigestMismatchError(this.expectedDigest, `${actual} (${this.seen} of ${this.expectedSize} bytes)`, this.what));
      return;
    }
    if (actual !== this.expectedDigest) {
      cb(new DigestMismatchError(this.expectedDigest, actual, this.what));
      return;
    }
    const last = this.pending;
    this.pending = undefined;
    cb(null, last);
  }

  get bytes(): number {
    return this.seen;
  }
}

/**
 * `source` piped through a VerifyingStream; an error of the source is passed on
 * so the consumer sees it as the stream failing.
 */
export function verified(source: NodeJS.ReadableStream, digest: string, size: number | undefined, what: string, onBytes?: (n: number) => void): VerifyingStream {
  const v = new VerifyingStream(digest, size, what, onBytes);
  source.on('error', (err: Error) => v.destroy(err));
  source.pipe(v);
  return v;
}

/** Throws DigestMismatchError unless `data` hashes to `digest` (and has `size`, when given). */
export function verifyBuffer(data: Buffer, digest: string, size: number | undefined, what: string): void {
  const actual = sha256Digest(data);
  if (actual !== digest || (size !== undefined && size !== data.length)) {
    throw new DigestMismatchError(digest, actual, what);
  }
}
