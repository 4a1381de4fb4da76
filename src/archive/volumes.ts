/**
 * Bundles in volumes, for small or FAT32 media: `NAME.001`, `NAME.002`, ... each at
 * most the volume size, whose concatenation is the single-file bundle byte for byte
 * (so `cat NAME.0* | zstd -dc | tar x` works). A volume is a plain slice of the file:
 * no header of its own, nothing to join on disk first.
 *
 * Reading: a RandomAccessInput over one file or over a set of volumes found beside
 * the one named (and in `--volumes-dir` folders), with the volume that holds any byte.
 * Writing: VolumeOutput spreads positional writes over the volume files.
 */
import { read as fsRead } from 'node:fs';
import { open as openFile, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { BundleError, errorMessage, UsageError } from '../util/errors.js';
import type { PositionalOutput } from './positional-file.js';

/** The name of volume `n` (1-based) of `file`: `july.airgap.003`. */
export function volumeName(file: string, n: number): string {
  return `${file}.${String(n).padStart(3, '0')}`;
}

/** `july.airgap.003` -> { stem: 'july.airgap', index: 3 }. */
export function parseVolumeName(file: string): { stem: string; index: number } | undefined {
  const m = /^(.+)\.(\d{3,})$/.exec(file);
  if (!m) return undefined;
  const index = Number(m[2]);
  return index >= 1 ? { stem: m[1]!, index } : undefined;
}

/** Random reads of a bundle, whether one file or several volumes. */
export interface RandomAccessInput {
  readonly size: number;
  /** The files, in order (one for a single-file bundle), and their sizes. */
  readonly paths: readonly string[];
  readonly sizes: readonly number[];
  readAt(position: number, length: number, into?: Buffer): Promise<Buffer>;
  /** The volume holding byte `position`: its number (1-based) and path. */
  volumeAt(position: number): { index: number; path: string };
  close(): Promise<void>;
}

async function readFully(fh: FileHandle, buf: Buffer, offset: number, length: number, position: number, label: string): Promise<void> {
  let got = 0;
  while (got < length) {
    const n = await new Promise<number>((resolve, reject) => {
      // The callback fs.read on the raw fd costs the main thread less per call than FileHandle.read.
      fsRead(fh.fd, buf, offset + got, length - got, position + got, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
    });
    if (n === 0) throw new Error(`unexpected end of ${label} at byte ${position + got}`);
    got += n;
  }
}

interface Part {
  path: string;
  fh: FileHandle;
  start: number;
  size: number;
}

/** One file, or volumes read as one. */
export class SlicedInput implements RandomAccessInput {
  readonly size: number;
  readonly paths: readonly string[];
  readonly sizes: readonly number[];

  private constructor(private readonly parts: Part[]) {
    this.size = parts.reduce((n, p) => n + p.size, 0);
    this.paths = parts.map((p) => p.path);
    this.sizes = parts.map((p) => p.size);
  }

  static async open(paths: readonly string[]): Promise<SlicedInput> {
    const parts: Part[] = [];
    let start = 0;
    try {
      for (const p of paths) {
        const fh = await openFile(p, 'r');
        const st = await fh.stat();
        parts.push({ path: p, fh, start, size: st.size });
        if (!st.isFile()) throw new UsageError(`${p} is not a regular file`);
        start += st.size;
      }
    } catch (err) {
      await Promise.all(parts.map((x) => x.fh.close().catch(() => undefined)));
      throw err;
    }
    return new SlicedInput(parts);
  }

  private partAt(position: number): number {
    let lo = 0;
    let hi = this.parts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.parts[mid]!.start <= position) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  volumeAt(position: number): { index: number; path: string } {
    const i = this.partAt(Math.min(Math.max(0, position), Math.max(0, this.size - 1)));
    return { index: i + 1, path: this.parts[i]!.path };
  }

  async readAt(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    if (position + length > this.size) throw new Error(`unexpected end of ${this.parts.at(-1)?.path ?? 'input'} at byte ${this.size}`);
    let done = 0;
    let i = this.partAt(position);
    while (done < length) {
      const p = this.parts[i]!;
      const at = position + done - p.start;
      const n = Math.min(length - done, p.size - at);
      if (n > 0) await readFully(p.fh, buf, done, n, at, p.path);
      done += Math.max(0, n);
      i++;
      if (done < length && i >= this.parts.length) throw new Error(`unexpected end of ${p.path}`);
    }
    return buf;
  }

  async close(): Promise<void> {
    await Promise.all(this.parts.map((p) => p.fh.close().catch(() => undefined)));
  }
}

/**
 * The files of the bundle `file` names: `file` itself, or, when it is a volume (or
 * does not exist but `file.001` does), every volume of the set, found beside it or in
 * `dirs`. A gap in the numbering is named by number.
 */
export async function findBundleFiles(file: string, dirs: readonly string[] = []): Promise<string[]> {
  const direct = await stat(file).catch(() => undefined);
  let stem: string;
  if (direct?.isFile() && !parseVolumeName(path.basename(file))) return [file];
  const parsed = parseVolumeName(file);
  if (direct && parsed) stem = parsed.stem;
  else if (!direct && (await stat(volumeName(file, 1)).catch(() => undefined))) stem = file;
  else if (direct) return [file];
  else if (dirs.length === 0) return [file]; // let the opener report it missing
  else stem = parsed?.stem ?? file;
  const base = path.basename(stem);
  const found = new Map<number, string>();
  for (const dir of [path.dirname(stem), ...dirs]) {
    const names = await readdir(dir).catch((err: unknown) => {
      throw new UsageError(`--volumes-dir ${dir}: ${errorMessage(err)}`);
    });
    for (const n of names) {
      if (!n.startsWith(`${base}.`)) continue;
      const v = parseVolumeName(n);
      if (v && v.stem === base && !found.has(v.index)) found.set(v.index, path.join(dir, n));
    }
  }
  if (found.size === 0) return [file];
  const last = Math.max(...found.keys());
  const missing: number[] = [];
  for (let i = 1; i <= last; i++) if (!found.has(i)) missing.push(i);
  if (missing.length) {
    const names = missing.map((i) => path.basename(volumeName(stem, i)));
    throw new BundleError(
      `volume${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${base} ${missing.length > 1 ? 'are' : 'is'} missing (${names.join(', ')}); ` +
        `found ${[...found.keys()].sort((a, b) => a - b).join(', ')} in ${[path.dirname(stem), ...dirs].join(', ')}`,
      1,
      'give --volumes-dir for each disk that holds volumes of this bundle',
    );
  }
  return [...found.keys()].sort((a, b) => a - b).map((i) => found.get(i)!);
}

/**
 * After the seek table says how long the bundle is: name a volume that is short or
 * missing at the end. All volumes but the last are written full, so one shorter than
 * the first is short; a set that ends early lacks its last volume(s).
 */
export function volumeSizeProblems(input: RandomAccessInput): string[] {
  const sizes = input.sizes;
  if (sizes.length < 2) return [];
  const full = Math.max(...sizes.slice(0, -1));
  const out: string[] = [];
  sizes.forEach((s, i) => {
    const last = i === sizes.length - 1;
    if ((!last && s !== full) || (last && s > full)) {
      out.push(`volume ${i + 1} (${input.paths[i]}) is ${s} bytes, but the volumes before the last hold ${full}: it is truncated or does not belong to this set`);
    }
  });
  return out;
}

/** Positional writes spread over volume files of at most `volumeSize` bytes, written under temporary names. */
export class VolumeOutput implements PositionalOutput {
  private readonly files = new Map<number, FileHandle>();
  private size = 0;

  constructor(
    /** The final name stem: volumes are `${finalPath}.001`, ... */
    readonly finalPath: string,
    readonly volumeSize: number,
    private readonly tempSuffix: string,
  ) {
    if (!Number.isSafeInteger(volumeSize) || volumeSize < 1) throw new RangeError('volume size must be a positive integer');
  }

  tempPath(n: number): string {
    return `${volumeName(this.finalPath, n)}${this.tempSuffix}`;
  }

  private async handle(n: number): Promise<FileHandle> {
    let fh = this.files.get(n);
    if (!fh) {
      fh = await openFile(this.tempPath(n), 'w+', 0o644);
      this.files.set(n, fh);
    }
    return fh;
  }

  async write(buffers: readonly Buffer[], position: number): Promise<void> {
    let pos = position;
    for (const b of buffers) {
      let off = 0;
      while (off < b.length) {
        const n = Math.floor(pos / this.volumeSize) + 1;
        const at = pos - (n - 1) * this.volumeSize;
        const len = Math.min(b.length - off, this.volumeSize - at);
        const fh = await this.handle(n);
        let w = 0;
        while (w < len) {
          const { bytesWritten } = await fh.write(b, off + w, len - w, at + w);
          if (bytesWritten <= 0) throw new Error(`short write to ${this.tempPath(n)}`);
          w += bytesWritten;
        }
        off += len;
        pos += len;
      }
    }
    this.size = Math.max(this.size, pos);
  }

  async read(length: number, position: number, into?: Buffer): Promise<Buffer> {
    const buf = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const pos = position + done;
      const n = Math.floor(pos / this.volumeSize) + 1;
      const at = pos - (n - 1) * this.volumeSize;
      const len = Math.min(length - done, this.volumeSize - at);
      await readFully(await this.handle(n), buf, done, len, at, this.tempPath(n));
      done += len;
    }
    return buf;
  }

  /** Cut the set to `size` bytes: later volumes go, the last is cut. */
  async truncate(size: number): Promise<void> {
    const count = Math.max(1, Math.ceil(size / this.volumeSize));
    for (const [n, fh] of [...this.files]) {
      if (n > count) {
        await fh.close();
        this.files.delete(n);
        await rm(this.tempPath(n), { force: true });
      }
    }
    const last = await this.handle(count);
    await last.truncate(size - (count - 1) * this.volumeSize);
    this.size = size;
  }

  async sync(): Promise<void> {
    for (const fh of this.files.values()) await fh.sync();
  }

  async close(): Promise<void> {
    const all = [...this.files.values()];
    this.files.clear();
    await Promise.all(all.map((fh) => fh.close().catch(() => undefined)));
  }

  /** The volumes' final names, in order (after truncate). */
  volumeCount(): number {
    return Math.max(1, Math.ceil(this.size / this.volumeSize));
  }

  /** Rename every temporary volume into place, the last one (which ends the bundle) last; returns the final paths. */
  async commit(): Promise<string[]> {
    const out: string[] = [];
    const count = this.volumeCount();
    for (let n = 1; n <= count; n++) {
      await rename(this.tempPath(n), volumeName(this.finalPath, n));
      out.push(volumeName(this.finalPath, n));
    }
    // Volumes of an earlier set under the same name (--force) would read as part of this one.
    for (let n = count + 1; await stat(volumeName(this.finalPath, n)).catch(() => undefined); n++) await rm(volumeName(this.finalPath, n));
    return out;
  }

  /** Remove every temporary volume. */
  async discard(): Promise<void> {
    await this.close();
    const dir = path.dirname(this.finalPath);
    const prefix = `${path.basename(this.finalPath)}.`;
    for (const n of await readdir(dir).catch(() => [] as string[])) {
      if (n.startsWith(prefix) && n.endsWith(this.tempSuffix)) await rm(path.join(dir, n), { force: true });
    }
  }
}

/** `4GiB`, `700MB`, `5MiB`, `1048576`, or `fat32` (4 GiB minus one byte). */
export function parseVolumeSize(text: string): number {
  const t = text.trim().toLowerCase();
  if (t === 'fat32') return 4 * 1024 ** 3 - 1;
  const m = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?$/.exec(t);
  if (!m) throw new UsageError(`--volume-size ${text}: expected a size such as 4GiB, 700MB or 5MiB, or fat32`);
  const unit = m[2] ?? 'b';
  const factor: Record<string, number> = { b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3, t: 1e12, tb: 1e12, tib: 1024 ** 4 };
  const n = Math.floor(Number(m[1]) * factor[unit]!);
  if (n < 1024 * 1024) throw new UsageError(`--volume-size ${text}: at least 1 MiB`);
  return n;
}
