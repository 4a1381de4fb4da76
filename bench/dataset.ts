/**
 * Builds the benchmark's image set once into an OCI layout under bench/cache/,
 * from real files of this machine (gzip -1 tar layers, streamed: no layer is
 * ever held in memory) plus some incompressible data, as real images have.
 *
 * Set (sizes are fractions of BENCH_SCALE GiB of compressed, unique blobs):
 *   bench/app-a:1.0  [base-os, app-a, tiny-a]
 *   bench/app-b:1.0  [base-os, app-b, tiny-b]
 *   bench/app-c:1.0  [base-os, app-a, app-c]          (shares two layers)
 *   bench/multi:1.0  index: linux/amd64 [base-os, multi-amd64, tiny-c]
 *                           linux/arm64 [base-arm, multi-arm64]
 *   bench/big:1.0    [big]                            (one layer >= 0.53 GiB at scale 1)
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, type Stats } from 'node:fs';
import { lstat, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { LayoutBuilder, type Blob } from '../test/helpers/images.js';

/** Bump when the generated set changes shape, to invalidate old caches. */
const GENERATOR_VERSION = 3;
const GIB = 1024 ** 3;
const LAYER_MEDIA_TYPE = 'application/vnd.oci.image.layer.v1.tar+gzip';
const RANDOM_CHUNK = 4 * 1024 * 1024;

/** Roots whose regular files become layer content, in order of use. */
const FILE_ROOTS = ['/usr/lib/x86_64-linux-gnu', '/usr/share', '/usr/bin', '/usr/lib', '/usr/libexec', '/usr/include', '/usr/sbin', '/opt'];

interface LayerSpec {
  name: string;
  /** Target compressed size as a fraction of the scale (GiB); tiny layers use `bytes`. */
  fraction?: number;
  bytes?: number;
  /** Share of the compressed target that is incompressible data. */
  random: number;
}

const LAYERS: LayerSpec[] = [
  { name: 'big', fraction: 0.53, random: 0.4 },
  { name: 'base-os', fraction: 0.17, random: 0.1 },
  { name: 'base-arm', fraction: 0.06, random: 0.1 },
  { name: 'app-a', fraction: 0.08, random: 0.5 },
  { name: 'app-b', fraction: 0.08, random: 0.3 },
  { name: 'app-c', fraction: 0.06, random: 0.2 },
  { name: 'multi-amd64', fraction: 0.03, random: 0.3 },
  { name: 'multi-arm64', fraction: 0.03, random: 0.3 },
  { name: 'tiny-a', bytes: 200 * 1024, random: 0 },
  { name: 'tiny-b', bytes: 64 * 1024, random: 0 },
  { name: 'tiny-c', bytes: 8 * 1024, random: 0 },
];

/** image name -> layers (or an index of platform images). */
const IMAGES: Record<string, string[] | Record<string, string[]>> = {
  'app-a': ['base-os', 'app-a', 'tiny-a'],
  'app-b': ['base-os', 'app-b', 'tiny-b'],
  'app-c': ['base-os', 'app-a', 'app-c'],
  multi: { 'linux/amd64': ['base-os', 'multi-amd64', 'tiny-c'], 'linux/arm64': ['base-arm', 'multi-arm64'] },
  big: ['big'],
};

/** Repository (under the registry) and tag each image is seeded as. */
export const IMAGE_REFS: { ref: string; repo: string; tag: string }[] = Object.keys(IMAGES).map((ref) => ({ ref, repo: `bench/${ref}`, tag: '1.0' }));

export interface Dataset {
  layoutDir: string;
  /** Sum of the sizes of every blob in the layout (layers, configs, manifests, index). */
  uniqueBlobBytes: number;
  blobCount: number;
  biggestLayer: number;
  /** Stable id of this set (digest of index.json). */
  id: string;
  generatedSeconds: number | null;
}

interface LayerResult extends Blob {
  diffId: string;
  uncompressed: number;
}

class Tap extends Transform {
  bytes = 0;
  constructor(private readonly hash: Hash) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

class FilePool {
  private files: { path: string; size: number; mode: number }[] = [];
  private next = 0;

  async load(maxBytes: number): Promise<void> {
    let total = 0;
    const seen = new Set<string>();
    const walk = async (dir: string): Promise<void> => {
      if (total >= maxBytes) return;
      let names: string[];
      try {
        names = (await readdir(dir)).sort();
      } catch {
        return;
      }
      for (const n of names) {
        if (total >= maxBytes) return;
        const p = path.join(dir, n);
        let st: Stats;
        try {
          st = await lstat(p);
        } catch {
          continue;
        }
        if (st.isDirectory()) {
          if (!FILE_ROOTS.includes(p)) await walk(p);
        } else if (st.isFile() && st.size > 0 && st.size < 32 * 1024 * 1024 && !seen.has(p)) {
          seen.add(p);
          this.files.push({ path: p, size: st.size, mode: st.mode & 0o7777 });
          total += st.size;
        }
      }
    };
    for (const r of FILE_ROOTS) await walk(r);
    if (this.files.length === 0) throw new Error(`no readable files under ${FILE_ROOTS.join(', ')}`);
  }

  take(): { path: string; size: number; mode: number } {
    const f = this.files[this.next % this.files.length]!;
    this.next++;
    return f;
  }
}

function addEntry(pack: tar.Pack, header: Partial<tar.Header> & { name: string }, body: Buffer | NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve, reject) => {
    if (Buffer.isBuffer(body)) {
      pack.entry(header, body, (err) => (err ? reject(err) : resolve()));
      return;
    }
    const entry = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    body.on('error', reject);
    body.pipe(entry);
  });
}

async function makeLayer(blobDir: string, spec: LayerSpec, target: number, pool: FilePool): Promise<LayerResult> {
  const tmp = path.join(blobDir, `.tmp-${spec.name}-${process.pid}`);
  const pack = tar.pack();
  const uHash = createHash('sha256');
  const zHash = createHash('sha256');
  const uTap = new Tap(uHash);
  const zTap = new Tap(zHash);
  const done = pipeline(pack, uTap, createGzip({ level: 1 }), zTap, createWriteStream(tmp));
  const mtime = new Date('2024-01-01T00:00:00Z');
  const realTarget = target * (1 - spec.random);
  // Entries given as buffers are queued by tar-stream without backpressure: wait until the
  // gzip side has caught up, so memory stays bounded and the compressed size tracks the target.
  let submitted = 0;
  const add = async (header: Partial<tar.Header> & { name: string; size: number }, body: Buffer | NodeJS.ReadableStream): Promise<void> => {
    await addEntry(pack, header, body);
    submitted += header.size;
    while (submitted - uTap.bytes > 2 * 1024 * 1024) await new Promise((r) => setTimeout(r, 2));
  };
  // Always at least one real file, so every layer looks like a filesystem.
  do {
    const f = pool.take();
    // Read at the size seen when walking; skip a file that changed since.
    const st = await stat(f.path).catch(() => undefined);
    if (!st || st.size !== f.size) continue;
    await add({ name: f.path.slice(1), size: f.size, mode: f.mode, mtime, uid: 0, gid: 0 }, createReadStream(f.path));
  } while (zTap.bytes < realTarget);
  // A unique marker: two layers never come out byte-identical, even if the pool wrapped around.
  await add({ name: `etc/bench-layer-${spec.name}`, size: 32, mode: 0o644, mtime }, Buffer.from(randomBytes(16).toString('hex')));
  let i = 0;
  while (zTap.bytes < target) {
    const data = randomBytes(Math.min(RANDOM_CHUNK, Math.max(4096, target - zTap.bytes)));
    await add({ name: `opt/bench/${spec.name}/data-${String(i++).padStart(4, '0')}.bin`, size: data.length, mode: 0o644, mtime }, data);
  }
  pack.finalize();
  await done;
  const hex = zHash.digest('hex');
  await rename(tmp, path.join(blobDir, hex));
  return { digest: `sha256:${hex}`, size: zTap.bytes, mediaType: LAYER_MEDIA_TYPE, diffId: `sha256:${uHash.digest('hex')}`, uncompressed: uTap.bytes };
}

async function runPool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let it = queue.shift(); it !== undefined; it = queue.shift()) await fn(it);
    }),
  );
}

async function summarize(layoutDir: string, generatedSeconds: number | null): Promise<Dataset> {
  const blobDir = path.join(layoutDir, 'blobs', 'sha256');
  let uniqueBlobBytes = 0;
  let blobCount = 0;
  let biggestLayer = 0;
  for (const n of await readdir(blobDir)) {
    if (n.startsWith('.')) continue;
    const st = await stat(path.join(blobDir, n));
    uniqueBlobBytes += st.size;
    blobCount++;
    biggestLayer = Math.max(biggestLayer, st.size);
  }
  const id = createHash('sha256').update(await readFile(path.join(layoutDir, 'index.json'))).digest('hex').slice(0, 16);
  return { layoutDir, uniqueBlobBytes, blobCount, biggestLayer, id, generatedSeconds };
}

/** The cached set for this scale, generated first if missing. */
export async function ensureDataset(cacheDir: string, scale: number, log: (s: string) => void): Promise<Dataset> {
  const layoutDir = path.join(cacheDir, `layout-scale-${scale}`);
  const stampFile = path.join(layoutDir, 'bench-dataset.json');
  const stamp = await readFile(stampFile, 'utf8').then((s) => JSON.parse(s) as { version: number; scale: number }).catch(() => undefined);
  if (stamp && stamp.version === GENERATOR_VERSION && stamp.scale === scale) {
    log(`dataset: reusing ${path.relative(process.cwd(), layoutDir)}`);
    return summarize(layoutDir, null);
  }
  const t0 = performance.now();
  await rm(layoutDir, { recursive: true, force: true });
  const b = await new LayoutBuilder(layoutDir).init();
  const blobDir = path.join(layoutDir, 'blobs', 'sha256');
  const targets = new Map(LAYERS.map((l) => [l.name, l.bytes ?? Math.round((l.fraction ?? 0) * scale * GIB)]));
  const totalTarget = [...targets.values()].reduce((a, c) => a + c, 0);
  log(`dataset: generating ${(totalTarget / 1e9).toFixed(2)} GB of gzip layers from real files into ${path.relative(process.cwd(), layoutDir)} (once)`);
  const pool = new FilePool();
  // ~0.36 compression ratio for these files: walk enough of them for the real part, with margin.
  await pool.load(totalTarget * 3.5);
  const layers = new Map<string, LayerResult>();
  await runPool(LAYERS, 2, async (spec) => {
    const t = performance.now();
    const r = await makeLayer(blobDir, spec, targets.get(spec.name)!, pool);
    layers.set(spec.name, r);
    log(`  layer ${spec.name.padEnd(12)} ${(r.size / 1e6).toFixed(1).padStart(8)} MB gzip (${(r.uncompressed / 1e6).toFixed(1)} MB tar) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  });

  const image = async (names: string[], platform: { os: string; architecture: string; variant?: string }, label: string): Promise<Blob> => {
    const ls = names.map((n) => layers.get(n)!);
    const config = {
      created: '2024-01-01T00:00:00Z',
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'], Labels: { 'bench.image': label } },
      rootfs: { type: 'layers', diff_ids: ls.map((l) => l.diffId) },
      history: names.map((n) => ({ created: '2024-01-01T00:00:00Z', created_by: `bench layer ${n}` })),
    };
    const cfg = await b.blob(Buffer.from(JSON.stringify(config)), 'application/vnd.oci.image.config.v1+json');
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: cfg.mediaType, digest: cfg.digest, size: cfg.size },
      layers: ls.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    };
    return b.blob(Buffer.from(JSON.stringify(manifest, null, 2)), manifest.mediaType);
  };
  const parsePlatform = (p: string): { os: string; architecture: string; variant?: string } => {
    const [os, architecture, variant] = p.split('/') as [string, string, string | undefined];
    return variant ? { os, architecture, variant } : { os, architecture };
  };
  for (const [name, def] of Object.entries(IMAGES)) {
    if (Array.isArray(def)) {
      b.tag(name, await image(def, { os: 'linux', architecture: 'amd64' }, name));
    } else {
      const entries = [];
      for (const [p, names] of Object.entries(def)) entries.push({ manifest: await image(names, parsePlatform(p), `${name}-${p}`), platform: parsePlatform(p) });
      b.tag(name, await b.indexOf(entries));
    }
  }
  await b.save();
  const seconds = (performance.now() - t0) / 1000;
  await writeFile(stampFile, JSON.stringify({ version: GENERATOR_VERSION, scale, seconds }));
  const ds = await summarize(layoutDir, seconds);
  log(`dataset: ${ds.blobCount} blobs, ${(ds.uniqueBlobBytes / 1e9).toFixed(3)} GB, in ${seconds.toFixed(1)} s`);
  return ds;
}
