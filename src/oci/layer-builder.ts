/**
 * One new image layer, built deterministically and streamed: a gzip-compressed
 * tar of the given files, whiteouts and directories.
 *
 * API:
 *   buildLayer(layer: NewLayer, opts: { mtime: Date; tmpDir?: string; memoryLimit?: number }): Promise<BuiltLayer>
 *   BuiltLayer = { digest, size, diffId, open(): Promise<Readable>, close(): Promise<void> }
 *
 * Determinism: entries sorted by path (component by component, an opaque
 * whiteout first in its directory), every parent directory of a path written
 * as its own entry (mode 0755), files mode 0644 unless given, uid/gid 0, no
 * user or group names, every mtime the one given, gzip level 6 with Node's
 * zlib (no name or time in the gzip header). The same inputs give the same
 * bytes, so the same digest.
 *
 * Streaming: the tar is generated entry by entry into gzip; one pass hashes
 * the uncompressed tar (the diff_id) and the gzip (the digest). The gzip is
 * kept in memory while it is smaller than `memoryLimit` (default 4 MiB), and
 * otherwise spills to one temporary file (under `tmpDir`, default the OS temp
 * folder) that `close()` removes (and, failing that, the process's exit). Files given as `fromFile` are streamed from
 * disk, never read whole.
 *
 * Whiteouts follow the OCI layer spec: deleting `a/b` from lower layers is an
 * empty file `a/.wh.b`; hiding everything lower layers have under `a/` (an
 * opaque directory) is `a/.wh..wh..opq`, listed first in `a/`.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, rmSync, type WriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { encodeEntryHeader, padding, TAR_BLOCK } from '../archive/tar.js';
import { BundleError } from '../util/errors.js';

/** A regular file of the new layer: its bytes in memory, or a local file streamed from disk. */
export type LayerFile = { path: string; mode?: number } & ({ data: Buffer } | { fromFile: string });

export interface NewLayer {
  files: LayerFile[];
  /** Paths lower layers have that the image must no longer have (`a/.wh.b`). */
  whiteouts?: string[];
  /** Directories whose lower-layer contents are all hidden (`dir/.wh..wh..opq`); this layer's own files there stay. */
  opaqueDirs?: string[];
  /**
   * Directories to write as entries (mode default 0755). Parents of files are
   * written without being named here (mode 0755); parents of whiteouts are not
   * written at all, so a lower layer's directory (say /tmp, 1777) keeps its mode.
   */
  directories?: (string | { path: string; mode?: number })[];
}

export interface BuiltLayer {
  /** sha256 of the gzip bytes. */
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar (the config's rootfs.diff_ids entry). */
  diffId: string;
  /** The gzip bytes, from the start, each call. */
  open(): Promise<Readable>;
  /** Remove the temporary file, if one was needed. */
  close(): Promise<void>;
}

export interface BuildLayerOptions {
  /** The mtime of every entry (seconds precision). */
  mtime: Date;
  tmpDir?: string;
  /** Largest gzip kept in memory (default 4 MiB). */
  memoryLimit?: number;
}

export const OPAQUE_WHITEOUT = '.wh..wh..opq';
export const WHITEOUT_PREFIX = '.wh.';

type Entry =
  | { kind: 'dir'; path: string; parts: string[]; mode: number }
  | { kind: 'file'; path: string; parts: string[]; mode: number; data?: Buffer; fromFile?: string };

/** `a/b/c` from what the caller wrote (`/a/b/c`, `a//b/c/`); refuses `..`, `.` and empty paths. */
export function normaliseLayerPath(p: string, what = 'path'): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0) throw new BundleError(`layer ${what} ${JSON.stringify(p)} names no file`);
  if (parts.some((s) => s === '..')) throw new BundleError(`layer ${what} ${JSON.stringify(p)} must not contain ..`);
  if (parts.some((s) => s.startsWith(WHITEOUT_PREFIX))) {
    throw new BundleError(`layer ${what} ${JSON.stringify(p)}: names starting with .wh. are whiteouts; list them as whiteouts`);
  }
  return parts.join('/');
}

/** Component-wise order; the opaque marker first among its siblings. */
function compareParts(a: string[], b: string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    if (x === OPAQUE_WHITEOUT) return -1;
    if (y === OPAQUE_WHITEOUT) return 1;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

/** Every entry of the layer, sorted, parents implied, conflicts refused. */
export function layerEntries(layer: NewLayer): Entry[] {
  const entries = new Map<string, Entry>();
  const addDir = (path: string, mode = 0o755): void => {
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      const had = entries.get(p);
      if (had?.kind === 'file') throw new BundleError(`layer path ${p} is both a file and a directory`);
      if (!had) entries.set(p, { kind: 'dir', path: p, parts: parts.slice(0, i), mode: 0o755 });
    }
    (entries.get(path) as Extract<Entry, { kind: 'dir' }>).mode = mode;
  };
  const addFile = (path: string, e: Omit<Extract<Entry, { kind: 'file' }>, 'kind' | 'path' | 'parts'>, what: string, withParents = true): void => {
    if (entries.has(path)) throw new BundleError(`layer ${what} ${path} is given twice (or is also a directory)`);
    const parts = path.split('/');
    if (withParents && parts.length > 1) addDir(parts.slice(0, -1).join('/'));
    entries.set(path, { kind: 'file', path, parts, ...e });
  };
  const checkMode = (mode: number, what: string): number => {
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new BundleError(`layer ${what}: mode ${mode} is not a file mode`);
    return mode;
  };
  for (const f of layer.files) {
    const path = normaliseLayerPath(f.path, 'file');
    const mode = checkMode(f.mode ?? 0o644, `file ${path}`);
    if ('data' in f) addFile(path, { mode, data: f.data }, 'file');
    else addFile(path, { mode, fromFile: f.fromFile }, 'file');
  }
  // Named directories after files: their mode wins over the implied 0755.
  for (const d of layer.directories ?? []) {
    const path = normaliseLayerPath(typeof d === 'string' ? d : d.path, 'directory');
    addDir(path, checkMode(typeof d === 'string' ? 0o755 : (d.mode ?? 0o755), `directory ${path}`));
  }
  const empty = Buffer.alloc(0);
  for (const w of layer.whiteouts ?? []) {
    const path = normaliseLayerPath(w, 'whiteout');
    if (entries.has(path)) throw new BundleError(`layer path ${path} is both added and whited out`);
    const parts = path.split('/');
    const marker = [...parts.slice(0, -1), `${WHITEOUT_PREFIX}${parts[parts.length - 1]!}`].join('/');
    addFile(marker, { mode: 0o644, data: empty }, 'whiteout', false);
  }
  for (const d of layer.opaqueDirs ?? []) {
    const path = normaliseLayerPath(d, 'opaque directory');
    addFile(`${path}/${OPAQUE_WHITEOUT}`, { mode: 0o644, data: empty }, 'opaque directory', false);
  }
  // A whiteout of a path that is a parent of an added file contradicts itself.
  for (const e of entries.values()) {
    const name = e.parts[e.parts.length - 1]!;
    if (name.startsWith(WHITEOUT_PREFIX) && name !== OPAQUE_WHITEOUT) {
      const target = [...e.parts.slice(0, -1), name.slice(WHITEOUT_PREFIX.length)].join('/');
      if (entries.has(target)) throw new BundleError(`layer path ${target} is both added and whited out`);
    }
  }
  return [...entries.values()].sort((a, b) => compareParts(a.parts, b.parts));
}

async function* tarChunks(entries: Entry[], mtime: Date): AsyncGenerator<Buffer> {
  for (const e of entries) {
    if (e.kind === 'dir') {
      yield encodeEntryHeader({ name: `${e.path}/`, size: 0, mode: e.mode, mtime, type: 'directory' });
      continue;
    }
    if (e.data) {
      yield encodeEntryHeader({ name: e.path, size: e.data.length, mode: e.mode, mtime, type: 'file' });
      if (e.data.length > 0) yield e.data;
      if (padding(e.data.length) > 0) yield Buffer.alloc(padding(e.data.length));
      continue;
    }
    const file = e.fromFile!;
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) throw new BundleError(`layer file ${e.path}: ${file} is not a readable file`);
    yield encodeEntryHeader({ name: e.path, size: st.size, mode: e.mode, mtime, type: 'file' });
    let seen = 0;
    for await (const chunk of createReadStream(file)) {
      seen += (chunk as Buffer).length;
      if (seen > st.size) break;
      yield chunk as Buffer;
    }
    if (seen !== st.size) throw new BundleError(`layer file ${e.path}: ${file} changed size while it was read`);
    if (padding(st.size) > 0) yield Buffer.alloc(padding(st.size));
  }
  yield Buffer.alloc(TAR_BLOCK * 2);
}

/** Temporary folders not yet removed: removed at exit whatever happens (an interrupt, a caller that forgot close()). */
const liveTempDirs = new Set<string>();
let exitHooked = false;

function trackTempDir(dir: string): void {
  liveTempDirs.add(dir);
  if (exitHooked) return;
  exitHooked = true;
  process.once('exit', () => {
    for (const d of liveTempDirs) rmSync(d, { recursive: true, force: true });
  });
}

/** Hashes and counts what passes through. */
class Tap extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/** Keeps what it is given in memory up to a limit, then moves it all to a temporary file. */
class SpillSink extends Writable {
  chunks: Buffer[] | undefined = [];
  private held = 0;
  file?: string;
  private out?: WriteStream;

  constructor(
    private readonly limit: number,
    private readonly tmpDir: string,
  ) {
    super();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.chunks) {
      this.chunks.push(chunk);
      this.held += chunk.length;
      if (this.held <= this.limit) {
        cb();
        return;
      }
      void this.spill().then(() => cb(), cb);
      return;
    }
    if (this.out!.write(chunk)) cb();
    else this.out!.once('drain', () => cb());
  }

  private async spill(): Promise<void> {
    const dir = await mkdtemp(join(this.tmpDir, 'bundle-layer-'));
    trackTempDir(dir);
    this.file = join(dir, 'layer.tar.gz');
    this.out = createWriteStream(this.file, { flags: 'wx', mode: 0o600 });
    const held = this.chunks!;
    this.chunks = undefined;
    for (const c of held) {
      if (!this.out.write(c)) await new Promise<void>((r) => this.out!.once('drain', () => r()));
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.out) {
      cb();
      return;
    }
    this.out.end((err?: Error | null) => cb(err));
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.out && !this.out.closed) this.out.destroy();
    cb(err);
  }
}

/** Build the layer: one pass over the content, hashing the tar and its gzip. */
export async function buildLayer(layer: NewLayer, opts: BuildLayerOptions): Promise<BuiltLayer> {
  const entries = layerEntries(layer);
  const mtime = new Date(Math.floor(opts.mtime.getTime() / 1000) * 1000);
  if (Number.isNaN(mtime.getTime()) || mtime.getTime() < 0) throw new BundleError(`layer time ${String(opts.mtime)} is not a valid date after 1970`);
  const tarTap = new Tap();
  const gzTap = new Tap();
  const sink = new SpillSink(opts.memoryLimit ?? 4 << 20, opts.tmpDir ?? tmpdir());
  const removeFile = async (): Promise<void> => {
    if (!sink.file) return;
    const dir = join(sink.file, '..');
    await rm(dir, { recursive: true, force: true });
    liveTempDirs.delete(dir);
  };
  try {
    await pipeline(Readable.from(tarChunks(entries, mtime), { objectMode: false }), tarTap, createGzip({ level: 6 }), gzTap, sink);
  } catch (err) {
    await removeFile();
    throw err;
  }
  const memory = sink.chunks ? Buffer.concat(sink.chunks) : undefined;
  const file = sink.file;
  return {
    digest: `sha256:${gzTap.hash.digest('hex')}`,
    size: gzTap.bytes,
    diffId: `sha256:${tarTap.hash.digest('hex')}`,
    open: () => Promise.resolve(memory ? Readable.from([memory]) : createReadStream(file!)),
    close: removeFile,
  };
}
