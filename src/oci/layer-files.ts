/**
 * Files read out of image layers as they stream by: the layer (gzip, zstd or
 * plain tar, told apart by its first bytes) is hashed against its digest,
 * decompressed and untarred on the fly, never unpacked to disk. Entries nobody
 * asked for are drained as they pass, so memory stays flat whatever the layer's
 * size; only the files a caller keeps are held, each up to a size limit.
 *
 * Used by the OpenShift sources: the release payload's `release-manifests/`
 * files and the operator catalog's `/configs`.
 */
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import binding from 'zstd-napi/binding.js';
import type { Descriptor } from './types.js';
import type { ContentStore } from '../store/store.js';
import { verified } from '../util/digest.js';
import { BundleError } from '../util/errors.js';

/** One entry of a layer's tar, as it streams by. */
export interface LayerEntry {
  /** Path inside the image, without a leading `/` or `./`. */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'link' | 'other';
  size: number;
  /** Only for files: the entry's bytes. Drained by the reader when the callback leaves it unread. */
  stream: AsyncIterable<Buffer>;
}

/** What a whiteout entry removes: `{dir}/.wh.{name}` one path, `{dir}/.wh..wh..opq` the folder's earlier contents. */
export function whiteoutTarget(path: string): { path: string; opaque: boolean } | undefined {
  const slash = path.lastIndexOf('/');
  const dir = slash < 0 ? '' : path.slice(0, slash);
  const base = path.slice(slash + 1);
  if (base === '.wh..wh..opq') return { path: dir, opaque: true };
  if (base.startsWith('.wh.')) return { path: (dir ? `${dir}/` : '') + base.slice(4), opaque: false };
  return undefined;
}

export function normalizeLayerPath(name: string): string {
  return name.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');
}

const GZIP = [0x1f, 0x8b];
const ZSTD = [0x28, 0xb5, 0x2f, 0xfd];

function startsWith(buf: Buffer, magic: number[]): boolean {
  return buf.length >= magic.length && magic.every((b, i) => buf[i] === b);
}

/**
 * Streaming zstd decompression on the binding itself (the standalone build
 * swaps `zstd-napi/binding.js` for its embedded addon; the package's own stream
 * classes would load the addon from disk).
 */
class ZstdDecompress extends Transform {
  private readonly dctx = new binding.DCtx();
  private inFrame = false;
  private static readonly OUT = binding.dStreamOutSize();

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      let src = chunk;
      for (;;) {
        const dst = Buffer.allocUnsafe(ZstdDecompress.OUT);
        const [ret, produced, consumed] = this.dctx.decompressStream(dst, src);
        if (produced > 0) this.push(dst.subarray(0, produced));
        src = src.subarray(consumed);
        if (src.length === 0 && (produced < dst.length || ret === 0)) {
          this.inFrame = ret !== 0;
          break;
        }
      }
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    cb(this.inFrame ? new Error('the zstd stream ends inside a frame') : null);
  }
}

/** A decompressor chosen by the first bytes: gzip, zstd, or none (a plain tar). */
function decompressorFor(head: Buffer): NodeJS.ReadWriteStream {
  if (startsWith(head, GZIP)) return createGunzip({ chunkSize: 64 * 1024 });
  if (startsWith(head, ZSTD)) return new ZstdDecompress();
  return new PassThrough();
}

/**
 * Stream every entry of a tar layer (compressed or not) through `onEntry`. The
 * source's first chunk picks the decompressor. Resolves once the whole source has
 * been read (so a verifying source has proven its digest); rejects when the
 * source, the decompressor or the tar is broken, or `onEntry` throws.
 */
export async function forEachLayerEntry(source: Readable, what: string, onEntry: (entry: LayerEntry) => Promise<void> | void): Promise<void> {
  // The source may fail (say, its digest) before the pipeline below is attached: keep that error.
  let early: unknown;
  source.on('error', (err) => {
    early ??= err;
  });
  const head = new PassThrough({ highWaterMark: 1 << 20 });
  const extract = tar.extract();
  let decided = false;
  let decompressor: NodeJS.ReadWriteStream | undefined;
  const chosen = new Promise<NodeJS.ReadWriteStream>((resolve, reject) => {
    const buffered: Buffer[] = [];
    let length = 0;
    const decide = (): void => {
      if (decided) return;
      decided = true;
      source.off('data', onData);
      source.off('end', decide);
      source.off('error', reject);
      decompressor = decompressorFor(Buffer.concat(buffered));
      head.write(Buffer.concat(buffered));
      resolve(decompressor);
    };
    const onData = (chunk: Buffer): void => {
      buffered.push(chunk);
      length += chunk.length;
      if (length >= 4) {
        source.pause();
        decide();
      }
    };
    source.on('data', onData);
    source.once('end', decide);
    source.once('error', reject);
  });
  const dec = await chosen;
  const consume = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      const type = h.type === 'file' || h.type === 'contiguous-file' ? 'file' : h.type === 'directory' ? 'directory' : h.type === 'symlink' ? 'symlink' : h.type === 'link' ? 'link' : 'other';
      const path = normalizeLayerPath(h.name);
      try {
        await onEntry({ path, type, size: h.size ?? 0, stream: entry as AsyncIterable<Buffer> });
      } finally {
        // Whatever the callback left unread is skipped (the next entry waits for it).
        entry.resume();
      }
    }
  })();
  // If the consumer fails, stop the pipeline too.
  consume.catch((err: unknown) => extract.destroy(err instanceof Error ? err : new Error(String(err))));
  const wrap = (err: unknown): BundleError =>
    err instanceof BundleError ? err : new BundleError(`${what}: cannot read the layer: ${err instanceof Error ? err.message : String(err)}`);
  const flowing = pipeline(source, head, dec, extract).catch((err: unknown) => {
    throw wrap(early ?? err);
  });
  await Promise.all([flowing, consume]);
  if (early) throw wrap(early);
}

/** A file's bytes, refused past `max` bytes. */
export async function readEntry(entry: LayerEntry, max: number, what: string): Promise<Buffer> {
  if (entry.size > max) throw new BundleError(`${what}: ${entry.path} is ${entry.size} bytes, more than the ${max} allowed`);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of entry.stream) {
    n += (c as Buffer).length;
    if (n > max) throw new BundleError(`${what}: ${entry.path} is more than the ${max} bytes allowed`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * The files `wanted` (paths without a leading `/`) as the image's layers leave
 * them: later layers replace earlier files and whiteouts remove them. Layers are
 * read from the top down and reading stops as soon as every wanted path is
 * settled (found, or removed by a whiteout), so a file in the last layer costs
 * one layer's download, not the image's. Each layer read is checked against its
 * digest before anything read from it is returned.
 */
export async function readImageFiles(
  store: ContentStore,
  repo: string,
  layers: Descriptor[],
  wanted: readonly string[],
  what: string,
  maxFileBytes = 32 * 1024 * 1024,
): Promise<Map<string, Buffer>> {
  const open = new Set(wanted);
  const files = new Map<string, Buffer>();
  for (let i = layers.length - 1; i >= 0 && open.size > 0; i--) {
    const layer = layers[i]!;
    const label = `${what} layer ${layer.digest}`;
    const raw = await store.openBlob(repo, layer);
    const found = new Map<string, Buffer>();
    const removed: { path: string; opaque: boolean }[] = [];
    await forEachLayerEntry(verified(raw, layer.digest, layer.size, label), label, async (entry) => {
      const wh = whiteoutTarget(entry.path);
      if (wh) removed.push(wh);
      else if (entry.type === 'file' && open.has(entry.path)) found.set(entry.path, await readEntry(entry, maxFileBytes, label));
    });
    for (const p of [...open]) {
      const bytes = found.get(p);
      if (bytes) files.set(p, bytes);
      // `.wh.name` removes the path and what was under it; an opaque folder keeps itself but loses what lower layers put in it.
      else if (!removed.some((wh) => (!wh.opaque && p === wh.path) || p.startsWith(wh.path ? `${wh.path}/` : ''))) continue;
      open.delete(p);
    }
  }
  return files;
}

/** A small blob's bytes (a config, a signature), checked against its digest; refused past `max` bytes. */
export async function readSmallBlob(store: ContentStore, repo: string, desc: Descriptor, what: string, max = 16 * 1024 * 1024): Promise<Buffer> {
  if (desc.size > max) throw new BundleError(`${what}: ${desc.size} bytes, more than the ${max} allowed`);
  const chunks: Buffer[] = [];
  for await (const c of verified(await store.openBlob(repo, desc), desc.digest, desc.size, what)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
