/**
 * Where the writer's bytes go: positional writes into one output (a single file
 * today; a set of volume files later). Everything the writer does to its output
 * goes through this interface, so splitting a bundle across volumes needs only
 * another implementation.
 */
import { read as fsRead } from 'node:fs';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';

export interface PositionalOutput {
  /** Write `buffers` (logically concatenated) at `position`; resolves when all are handed to the OS. */
  write(buffers: readonly Buffer[], position: number): Promise<void>;
  /** Read exactly `length` bytes at `position` (bytes written earlier), into `into` when given (reused scratch). */
  read(length: number, position: number, into?: Buffer): Promise<Buffer>;
  truncate(size: number): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
  /** After close(): put the output under its final name(s); returns them. */
  commit(): Promise<string[]>;
  /** Close and delete whatever was written under temporary names. */
  discard(): Promise<void>;
}

/** writev takes at most IOV_MAX (1024) buffers per call. */
const IOV_MAX = 1024;

/** Written bytes after which the data already written is flushed to disk in the background. */
const SYNC_BEHIND = 64 * 1024 * 1024;

export class FileOutput implements PositionalOutput {
  /** Bytes written since the last background flush began. */
  private unsynced = 0;
  /** A background flush under way (its failure is reported by sync()). */
  private flushing: Promise<unknown> | undefined;

  private constructor(
    readonly path: string,
    private readonly finalPath: string,
    private readonly fh: FileHandle,
  ) {}

  /** Write `path` (a temporary name); commit() renames it to `finalPath`. */
  static async create(path: string, finalPath: string): Promise<FileOutput> {
    // Read and write: frames written ahead of their turn are read back to be hashed.
    return new FileOutput(path, finalPath, await open(path, 'w+', 0o644));
  }

  async commit(): Promise<string[]> {
    await rename(this.path, this.finalPath);
    return [this.finalPath];
  }

  async discard(): Promise<void> {
    await this.settled();
    await this.fh.close().catch(() => undefined);
    await rm(this.path, { force: true });
  }

  async write(buffers: readonly Buffer[], position: number): Promise<void> {
    let i = 0;
    let pos = position;
    while (i < buffers.length) {
      let batch = buffers.slice(i, i + IOV_MAX);
      let left = 0;
      for (const b of batch) left += b.length;
      i += batch.length;
      while (left > 0) {
        const { bytesWritten } = await this.fh.writev(batch, pos);
        if (bytesWritten <= 0) throw new Error(`short write to ${this.path}`);
        pos += bytesWritten;
        left -= bytesWritten;
        if (left > 0) batch = skipBytes(batch, bytesWritten);
        this.unsynced += bytesWritten;
      }
    }
    this.syncBehind();
  }

  /**
   * Flush what is written so far while more is still arriving, so that the
   * final sync() has only the last part left to write out (one flush at a time).
   */
  private syncBehind(): void {
    if (this.unsynced < SYNC_BEHIND || this.flushing) return;
    this.unsynced = 0;
    const flush = this.fh.datasync().finally(() => {
      if (this.flushing === flush) this.flushing = undefined;
    });
    flush.catch(() => undefined); // sync() flushes again and reports
    this.flushing = flush;
  }

  /** Let a background flush finish (before the descriptor is synced again or closed). */
  private async settled(): Promise<void> {
    await this.flushing?.catch(() => undefined);
  }

  async read(length: number, position: number, into?: Buffer): Promise<Buffer> {
    const buf = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = await new Promise<number>((resolve, reject) => {
        fsRead(this.fh.fd, buf, got, length - got, position + got, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
      });
      if (n === 0) throw new Error(`unexpected end of ${this.path} at byte ${position + got}`);
      got += n;
    }
    return buf;
  }

  truncate(size: number): Promise<void> {
    return this.fh.truncate(size);
  }

  async sync(): Promise<void> {
    await this.settled();
    await this.fh.sync();
  }

  async close(): Promise<void> {
    await this.settled();
    await this.fh.close();
  }
}

function skipBytes(bufs: readonly Buffer[], skip: number): Buffer[] {
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
