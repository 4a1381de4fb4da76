/**
 * Stream helpers for blob uploads: never buffer a whole blob, and never let a
 * registry see the last byte of a stream that failed.
 */
import { Transform, type Readable, type TransformCallback } from 'node:stream';

/**
 * Passes bytes through but holds back the most recent chunk until the source
 * ends cleanly. When the source errors (e.g. a digest check fails at its
 * end), the receiver is left short of Content-Length and cannot commit.
 */
export class HoldBackLast extends Transform {
  private held: Buffer | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const prev = this.held;
    this.held = chunk;
    cb(null, prev);
  }

  override _flush(cb: TransformCallback): void {
    const last = this.held;
    this.held = undefined;
    cb(null, last);
  }
}

/**
 * Cut a stream into Buffers of exactly `size` bytes (the last may be shorter).
 * At most about `size` bytes plus one source chunk are held at a time.
 */
export async function* chunksOf(source: Readable, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const c of source) {
    let chunk = c as Buffer;
    while (chunk.length > 0) {
      const take = Math.min(size - have, chunk.length);
      parts.push(chunk.subarray(0, take));
      have += take;
      chunk = chunk.subarray(take);
      if (have === size) {
        yield Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}
