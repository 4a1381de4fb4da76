/**
 * Builds small but real test images (gzip tar layers, configs, manifests,
 * indexes) into an OCI layout on disk, and seeds a registry from it with
 * skopeo, the independent tool.
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

const run = promisify(execFile);

export interface Blob {
  digest: string;
  size: number;
  mediaType: string;
}

/** Deterministic bytes that do not compress away (sha256 in counter mode). */
export function pseudoRandom(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let off = 0;
  for (let i = 0; off < size; i++) {
    const h = createHash('sha256').update(`${seed}:${i}`).digest();
    off += h.copy(out, off);
  }
  return out;
}

export async function tarLayer(files: Record<string, Buffer | string>): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => {
    chunks.push(c as Buffer);
  });
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const [name, body] of Object.entries(files)) {
    const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
    pack.entry({ name, size: buf.length, mode: 0o644, mtime: new Date(0) }, buf);
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export class LayoutBuilder {
  readonly index: { mediaType: string; digest: string; size: number; annotations: Record<string, string> }[] = [];
  /** Layer digest -> sha256 of its uncompressed tar, so configs carry real diff_ids. */
  readonly diffIds = new Map<string, string>();

  constructor(readonly dir: string) {}

  async init(): Promise<this> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    return this;
  }

  async blob(data: Buffer, mediaType: string): Promise<Blob> {
    const hex = createHash('sha256').update(data).digest('hex');
    await writeFile(join(this.dir, 'blobs', 'sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length, mediaType };
  }

  async layer(files: Record<string, Buffer | string>): Promise<Blob> {
    const tarBytes = await tarLayer(files);
    const blob = await this.blob(gzipSync(tarBytes, { level: 1 }), 'application/vnd.oci.image.layer.v1.tar+gzip');
    this.diffIds.set(blob.digest, `sha256:${createHash('sha256').update(tarBytes).digest('hex')}`);
    return blob;
  }

  async image(layers: Blob[], platform = { os: 'linux', architecture: 'amd64' }, label = 'test'): Promise<Blob> {
    const config = Buffer.from(
      JSON.stringify({
        ...platform,
        config: { Labels: { 'test.image': label } },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => this.diffIds.get(l.digest) ?? l.digest) },
      }),
    );
    const cfg = await this.blob(config, 'application/vnd.oci.image.config.v1+json');
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: cfg.mediaType, digest: cfg.digest, size: cfg.size },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    };
    return this.blob(Buffer.from(JSON.stringify(manifest, null, 2)), manifest.mediaType);
  }

  async indexOf(entries: { manifest: Blob; platform: { os: string; architecture: string; variant?: string } }[]): Promise<Blob> {
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: entries.map((e) => ({ mediaType: e.manifest.mediaType, digest: e.manifest.digest, size: e.manifest.size, platform: e.platform })),
    };
    return this.blob(Buffer.from(JSON.stringify(index, null, 2)), index.mediaType);
  }

  tag(name: string, b: Blob): void {
    this.index.push({ mediaType: b.mediaType, digest: b.digest, size: b.size, annotations: { 'org.opencontainers.image.ref.name': name } });
  }

  async save(): Promise<void> {
    await writeFile(join(this.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: this.index }, null, 2));
  }
}

export interface TestImageSet {
  layoutDir: string;
  base: Blob;
  /** ref name in the layout -> top descriptor */
  images: Record<string, Blob>;
}

/**
 * Two images sharing one base layer, and a three-platform index
 * (linux/amd64, linux/arm64/v8, linux/ppc64le): `app-one`, `app-two`, `multi`.
 */
export async function buildTestImages(dir: string, opts: { layerBytes?: number } = {}): Promise<TestImageSet> {
  const size = opts.layerBytes ?? 256 * 1024;
  const b = await new LayoutBuilder(dir).init();
  const base = await b.layer({ 'etc/os-release': 'ID=testos\n', 'usr/lib/base.bin': pseudoRandom('base', size) });
  const one = await b.image([base, await b.layer({ 'app/one.bin': pseudoRandom('one', size / 2), 'app/one.txt': 'one\n' })], undefined, 'one');
  const two = await b.image([base, await b.layer({ 'app/two.bin': pseudoRandom('two', size / 2) })], undefined, 'two');
  const amd = await b.image([base, await b.layer({ 'arch.txt': 'amd64\n' })], { os: 'linux', architecture: 'amd64' }, 'multi-amd64');
  const arm = await b.image(
    [await b.layer({ 'usr/lib/arm.bin': pseudoRandom('arm', size / 4) }), await b.layer({ 'arch.txt': 'arm64\n' })],
    { os: 'linux', architecture: 'arm64', variant: 'v8' } as { os: string; architecture: string },
    'multi-arm64',
  );
  const ppc = await b.image([base, await b.layer({ 'arch.txt': 'ppc64le\n' })], { os: 'linux', architecture: 'ppc64le' }, 'multi-ppc64le');
  const multi = await b.indexOf([
    { manifest: amd, platform: { os: 'linux', architecture: 'amd64' } },
    { manifest: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    { manifest: ppc, platform: { os: 'linux', architecture: 'ppc64le' } },
  ]);
  b.tag('app-one', one);
  b.tag('app-two', two);
  b.tag('multi', multi);
  await b.save();
  return { layoutDir: dir, base, images: { 'app-one': one, 'app-two': two, multi } };
}

/** `skopeo copy --all oci:<dir>:<ref> docker://<dest>` (plain HTTP on loopback). */
export async function skopeoCopy(layoutDir: string, ref: string, dest: string, extra: string[] = []): Promise<void> {
  await run('skopeo', ['copy', '--quiet', '--all', '--dest-tls-verify=false', ...extra, `oci:${layoutDir}:${ref}`, `docker://${dest}`]);
}

export async function skopeoInspectRaw(ref: string, extra: string[] = []): Promise<Buffer> {
  const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', ...extra, ref], { encoding: 'buffer', maxBuffer: 16 << 20 });
  return stdout;
}

/**
 * `count` small images in one OCI layout, `example.com/scale/app:<i>`: a shared base layer
 * and a small layer of their own each (scale tests and the bench's scale scenario).
 */
export async function buildManyImages(dir: string, count: number): Promise<{ layoutDir: string; refs: string[] }> {
  const b = await new LayoutBuilder(dir).init();
  const base = await b.layer({ 'etc/os-release': 'ID=scale\n', 'usr/lib/base.bin': pseudoRandom('scale-base', 16 * 1024) });
  const refs: string[] = [];
  for (let i = 0; i < count; i++) {
    const own = await b.layer({ [`app/${i}.txt`]: `image ${i}\n`, [`app/${i}.bin`]: pseudoRandom(`scale-${i}`, 512) });
    const ref = `example.com/scale/app:${i}`;
    b.tag(ref, await b.image([base, own], undefined, `scale-${i}`));
    refs.push(ref);
  }
  await b.save();
  return { layoutDir: dir, refs };
}

/** Digests of every layer the manifests of an OCI layout name. */
export async function layoutLayerDigests(layoutDir: string): Promise<Set<string>> {
  const { readdir, readFile } = await import('node:fs/promises');
  const out = new Set<string>();
  for (const f of await readdir(join(layoutDir, 'blobs', 'sha256'))) {
    const text = await readFile(join(layoutDir, 'blobs', 'sha256', f), 'latin1');
    const layers = text.startsWith('{') ? (JSON.parse(text) as { layers?: unknown }).layers : undefined;
    if (Array.isArray(layers)) for (const l of layers as { digest: string }[]) out.add(l.digest);
  }
  return out;
}
