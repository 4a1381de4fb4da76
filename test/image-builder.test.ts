/**
 * The image builder (src/oci/image-builder.ts) against real parts: base images
 * pushed by skopeo into a real registry, the built image pushed into another
 * real registry, and skopeo, tar and zlib as the witnesses.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { buildTestImages, pseudoRandom, skopeoCopy, skopeoInspectRaw, type TestImageSet } from './helpers/images.js';
import { buildImage, prepareImage, sourceDateEpoch, type ImageBuildSpec } from '../src/oci/image-builder.js';
import { createRegistryStore, type RegistryStore } from '../src/store/registry-store.js';
import { ArchiveWriter } from '../src/archive/writer.js';
import { runBundle } from './helpers/cli.js';
import { buildLayer } from '../src/oci/layer-builder.js';

const run = promisify(execFile);

let work: string;
let src: RunningRegistry;
let dst: RunningRegistry;
let set: TestImageSet;
let baseStore: RegistryStore;
let dstStore: RegistryStore;

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface RawManifest {
  mediaType: string;
  config: { mediaType: string; digest: string; size: number };
  layers: { mediaType: string; digest: string; size: number }[];
  manifests?: { digest: string; platform?: { architecture: string } }[];
}

async function inspectRaw(ref: string): Promise<{ bytes: Buffer; json: RawManifest }> {
  const bytes = await skopeoInspectRaw(`docker://${ref}`);
  return { bytes, json: JSON.parse(bytes.toString('utf8')) as RawManifest };
}

async function inspectConfig(ref: string): Promise<{ rootfs: { diff_ids: string[] }; history: { created_by?: string; created?: string }[]; created: string; config: { Labels?: Record<string, string>; Env?: string[] } }> {
  const { stdout } = await run('skopeo', ['inspect', '--config', '--tls-verify=false', `docker://${ref}`], { maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as never;
}

/** `skopeo copy docker://REF oci:DIR:x`; returns the layout folder. */
async function pullLayout(ref: string): Promise<string> {
  const dir = await mkdtemp(join(work, 'pulled-'));
  await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${dir}:x`]);
  return dir;
}

async function layoutManifest(dir: string): Promise<RawManifest> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  return JSON.parse(await readFile(blobPath(dir, index.manifests[0]!.digest), 'utf8')) as RawManifest;
}

function blobPath(dir: string, digest: string): string {
  return join(dir, 'blobs', 'sha256', digest.slice(7));
}

const FILES = [
  { path: '/etc/built.txt', data: Buffer.from('built by the image builder\n') },
  { path: 'opt/app/run.sh', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
];

function spec(repo: string, extra: Partial<ImageBuildSpec> = {}): ImageBuildSpec {
  return {
    base: { store: baseStore, repo, desc: undefined as never },
    layer: { files: FILES, whiteouts: ['usr/lib/base.bin'], opaqueDirs: ['/app'] },
    config: { labels: { 'test.built': 'yes', 'test.image': null }, env: { BUILT: '1' } },
    created: new Date('2026-01-02T03:04:05Z'),
    createdBy: 'image-builder test',
    ...extra,
  };
}

async function withBase(repo: string, ref: string, extra: Omit<Partial<ImageBuildSpec>, 'base'> & { platform?: string } = {}): Promise<ImageBuildSpec> {
  const { platform, ...rest } = extra;
  const s = spec(repo, rest);
  s.base = { ...s.base, desc: await baseStore.resolve(repo, ref), ...(platform ? { platform } : {}) };
  return s;
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-image-builder-'));
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  set = await buildTestImages(join(work, 'layout'));
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/base/oci:1`);
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/base/docker:1`, ['--format', 'v2s2']);
  await skopeoCopy(set.layoutDir, 'multi', `${src.host}/base/multi:1`);
  baseStore = createRegistryStore(src.host);
  dstStore = createRegistryStore(dst.host);
});

after(async () => {
  await baseStore?.close();
  await dstStore?.close();
  await Promise.all([src?.stop(), dst?.stop()]);
  await rm(work, { recursive: true, force: true });
});

describe('image builder: base image + one layer', () => {
  for (const variant of [
    { name: 'OCI', repo: 'base/oci', manifestType: 'application/vnd.oci.image.manifest.v1+json', layerType: 'application/vnd.oci.image.layer.v1.tar+gzip' },
    { name: 'Docker schema 2', repo: 'base/docker', manifestType: 'application/vnd.docker.distribution.manifest.v2+json', layerType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' },
  ]) {
    it(`builds on a ${variant.name} base: skopeo reads it, base layers byte-identical, diff_ids true, layer holds exactly the files and whiteouts`, async () => {
      const base = await inspectRaw(`${src.host}/${variant.repo}:1`);
      assert.equal(base.json.mediaType, variant.manifestType, 'the base is of the family under test');
      const target = `${dst.host}/built/${variant.repo.split('/')[1]}:1`;
      const built = await buildImage(await withBase(variant.repo, '1'), { dst: dstStore, repo: `built/${variant.repo.split('/')[1]}`, tags: ['1'] });

      const got = await inspectRaw(target);
      assert.equal(sha(got.bytes), built.manifest.digest, 'the registry serves the manifest the builder made');
      assert.equal(got.json.mediaType, variant.manifestType, 'the new manifest stays in the base family');
      assert.equal(got.json.layers.length, base.json.layers.length + 1);
      assert.deepEqual(got.json.layers.slice(0, -1), base.json.layers, 'base layer descriptors unchanged');
      assert.equal(got.json.layers.at(-1)!.mediaType, variant.layerType);
      assert.equal(got.json.config.mediaType, base.json.config.mediaType);

      const cfg = await inspectConfig(target);
      assert.equal(cfg.rootfs.diff_ids.length, got.json.layers.length);
      assert.equal(cfg.history.at(-1)!.created_by, 'image-builder test');
      assert.equal(cfg.created, '2026-01-02T03:04:05Z');
      assert.equal(cfg.config.Labels?.['test.built'], 'yes');
      assert.equal(cfg.config.Labels?.['test.image'], undefined, 'a null label removes it');
      assert.ok(cfg.config.Env?.includes('BUILT=1'));

      const dir = await pullLayout(target);
      const pulled = await layoutManifest(dir);
      for (const [i, l] of pulled.layers.entries()) {
        const bytes = await readFile(blobPath(dir, l.digest));
        assert.equal(sha(bytes), l.digest, `layer ${i} bytes match their digest`);
        if (i < base.json.layers.length) assert.equal(l.digest, base.json.layers[i]!.digest, `base layer ${i} byte-identical`);
        assert.equal(sha(gunzipSync(bytes)), cfg.rootfs.diff_ids[i], `diff_id ${i} is the sha256 of the gunzipped layer`);
      }
      const newLayer = blobPath(dir, pulled.layers.at(-1)!.digest);
      const { stdout: names } = await run('tar', ['-tzf', newLayer]);
      assert.deepEqual(names.trim().split('\n'), [
        'app/.wh..wh..opq',
        'etc/',
        'etc/built.txt',
        'opt/',
        'opt/app/',
        'opt/app/run.sh',
        'usr/lib/.wh.base.bin',
      ]);
      const { stdout: long } = await run('tar', ['--numeric-owner', '--full-time', '-tvzf', newLayer], { env: { ...process.env, TZ: 'UTC' } });
      for (const line of long.trim().split('\n')) {
        assert.match(line, / 0\/0 /, `owned by 0/0: ${line}`);
        assert.match(line, /2026-01-02 03:04:05/, `mtime is the creation time: ${line}`);
      }
      assert.match(long, /^-rwxr-xr-x .* opt\/app\/run\.sh$/m, 'mode kept');
      assert.match(long, /^drwxr-xr-x .* opt\/app\/$/m, 'implied directory 0755');
      await rm(dir, { recursive: true, force: true });
    });
  }

  it('is deterministic: building twice gives the same digests; another time or content gives another', async () => {
    const a = await prepareImage(await withBase('base/oci', '1'));
    const b = await prepareImage(await withBase('base/oci', '1'));
    const c = await prepareImage(await withBase('base/oci', '1', { created: new Date('2026-01-02T03:04:06Z') }));
    const d = await prepareImage(await withBase('base/oci', '1', { layer: { files: [{ path: 'etc/built.txt', data: Buffer.from('other\n') }] } }));
    try {
      assert.equal(a.manifest.digest, b.manifest.digest);
      assert.equal(a.layer.digest, b.layer.digest);
      assert.equal(a.config.digest, b.config.digest);
      assert.notEqual(a.manifest.digest, c.manifest.digest);
      assert.notEqual(a.layer.digest, c.layer.digest, 'entry mtimes follow the creation time');
      assert.notEqual(a.layer.diffId, d.layer.diffId);
      // And the pushed image is the one prepared.
      const pushed = await buildImage(await withBase('base/oci', '1'), { dst: dstStore, repo: 'built/twice', tags: ['a'] });
      assert.equal(pushed.manifest.digest, a.manifest.digest);
      assert.equal(sha(await skopeoInspectRaw(`docker://${dst.host}/built/twice:a`)), a.manifest.digest);
    } finally {
      await Promise.all([a, b, c, d].map((p) => p.close()));
    }
  });

  it('on an index base uses linux/amd64 by default, or the platform named, and makes a single-platform image', async () => {
    const index = await inspectRaw(`${src.host}/base/multi:1`);
    const amd = index.json.manifests!.find((m) => m.platform?.architecture === 'amd64')!;
    const arm = index.json.manifests!.find((m) => m.platform?.architecture === 'arm64')!;
    const byDefault = await buildImage(await withBase('base/multi', '1'), { dst: dstStore, repo: 'built/multi', tags: ['amd64'] });
    assert.equal(byDefault.base.platform, 'linux/amd64');
    assert.equal(byDefault.base.manifest.digest, amd.digest);
    const named = await buildImage(await withBase('base/multi', '1', { platform: 'linux/arm64' }), {
      dst: dstStore,
      repo: 'built/multi',
      tags: ['arm64'],
    });
    assert.equal(named.base.manifest.digest, arm.digest);
    for (const [tag, baseDigest] of [['amd64', amd.digest], ['arm64', arm.digest]] as const) {
      const got = await inspectRaw(`${dst.host}/built/multi:${tag}`);
      assert.equal(got.json.mediaType, 'application/vnd.oci.image.manifest.v1+json', 'one image, not an index');
      const baseManifest = await inspectRaw(`${src.host}/base/multi@${baseDigest}`);
      assert.deepEqual(got.json.layers.slice(0, -1), baseManifest.json.layers, `${tag}: the layers of that platform's base`);
    }
    await assert.rejects(
      withBase('base/multi', '1', { platform: 'linux/s390x' }).then(prepareImage),
      /no platform linux\/s390x \(it has linux\/amd64, linux\/arm64\/v8, linux\/ppc64le\)/,
    );
  });

  it('streams a large layer (a file read from disk) through one temporary file and removes it', async () => {
    const tmp = await mkdtemp(join(work, 'tmp-'));
    const big = pseudoRandom('big', 3 << 20);
    const bigFile = join(work, 'big.bin');
    await writeFile(bigFile, big);
    const built = await buildImage(
      await withBase('base/oci', '1', { layer: { files: [{ path: 'configs/big.bin', fromFile: bigFile }] }, memoryLimit: 256 << 10, tmpDir: tmp }),
      { dst: dstStore, repo: 'built/big', tags: ['1'] },
    );
    assert.deepEqual(await readdir(tmp), [], 'the temporary file is gone');
    const dir = await pullLayout(`${dst.host}/built/big:1`);
    const layer = await readFile(blobPath(dir, built.layer.digest));
    assert.ok(layer.length > big.length, 'random data does not compress');
    const { stdout } = await run('tar', ['-xzOf', blobPath(dir, built.layer.digest), 'configs/big.bin'], { encoding: 'buffer', maxBuffer: 8 << 20 });
    assert.equal(sha(stdout), sha(big), 'the file comes back whole');
  });

  it('builds into a bundle being written (the archive writer): bundle verify and skopeo accept it', async () => {
    const out = join(work, 'built.airgap');
    const writer = await ArchiveWriter.create(out);
    const built = await buildImage(await withBase('base/docker', '1'), { dst: writer, repo: 'devfile/index', tags: ['latest'] });
    const refName = 'registry.local/devfile/index:latest';
    writer.addImage({
      source: refName,
      refName,
      digest: built.manifest.digest,
      mediaType: built.manifest.mediaType,
      size: built.manifest.size,
      platforms: built.copied.platforms,
      tags: ['latest'],
      origin: 'registry',
    });
    await writer.finish({ tool: { name: 'test', version: '0' } });
    const verify = await runBundle(['verify', out]);
    assert.equal(verify.code, 0, verify.stderr);
    const dir = join(work, 'built-extracted');
    await mkdir(dir);
    await run('sh', ['-c', `zstd -dc '${out}' | tar x -C '${dir}'`]);
    const manifest = await readFile(blobPath(dir, built.manifest.digest));
    assert.equal(sha(manifest), built.manifest.digest);
    const parsed = JSON.parse(manifest.toString('utf8')) as RawManifest;
    const base = await inspectRaw(`${src.host}/base/docker:1`);
    for (const l of parsed.layers) assert.equal(sha(await readFile(blobPath(dir, l.digest))), l.digest, 'every layer is in the bundle, whole');
    assert.deepEqual(parsed.layers.slice(0, -1), base.json.layers);
    const { stdout } = await run('tar', ['-tzf', blobPath(dir, built.layer.digest)]);
    assert.ok(stdout.split('\n').includes('etc/built.txt'));
  });

  it('writes long and non-ASCII names, the opaque marker first in its folder, and named directory modes', async () => {
    const long = `configs/${'operator-with-a-long-name-'.repeat(6)}/catalog.json`;
    const layer = await buildLayer(
      {
        files: [
          { path: long, data: Buffer.from('{}') },
          { path: 'configs/-dash/x', data: Buffer.from('x') },
          { path: 'données/é.txt', data: Buffer.from('é') },
        ],
        opaqueDirs: ['configs'],
        directories: [{ path: 'tmp', mode: 0o1777 }],
      },
      { mtime: new Date('2026-01-01T00:00:00Z') },
    );
    const file = join(work, 'layer.tar.gz');
    const chunks: Buffer[] = [];
    for await (const c of await layer.open()) chunks.push(c as Buffer);
    await writeFile(file, Buffer.concat(chunks));
    await layer.close();
    assert.equal(sha(Buffer.concat(chunks)), layer.digest);
    assert.equal(sha(gunzipSync(Buffer.concat(chunks))), layer.diffId);
    const { stdout } = await run('tar', ['-tzf', file]);
    assert.deepEqual(stdout.trim().split('\n'), [
      'configs/',
      'configs/.wh..wh..opq',
      'configs/-dash/',
      'configs/-dash/x',
      `configs/${'operator-with-a-long-name-'.repeat(6)}/`,
      long,
      'données/',
      'données/é.txt',
      'tmp/',
    ]);
    const { stdout: modes } = await run('tar', ['-tvzf', file]);
    assert.match(modes, /^drwxrwxrwt .* tmp\/$/m, 'a named directory keeps its mode (sticky /tmp)');
  });

  it('takes its creation time from SOURCE_DATE_EPOCH when none is given', async () => {
    const saved = process.env['SOURCE_DATE_EPOCH'];
    process.env['SOURCE_DATE_EPOCH'] = '1700000000';
    try {
      const s = await withBase('base/oci', '1');
      delete s.created;
      const p = await prepareImage(s);
      await p.close();
      const cfg = JSON.parse(p.configBytes.toString('utf8')) as { created: string; history: { created: string }[] };
      assert.equal(cfg.created, '2023-11-14T22:13:20Z');
      assert.equal(cfg.history.at(-1)!.created, '2023-11-14T22:13:20Z');
    } finally {
      if (saved === undefined) delete process.env['SOURCE_DATE_EPOCH'];
      else process.env['SOURCE_DATE_EPOCH'] = saved;
    }
  });

  it('reads SOURCE_DATE_EPOCH, and refuses a bad one', () => {
    assert.equal(sourceDateEpoch({ SOURCE_DATE_EPOCH: '1700000000' })?.toISOString(), '2023-11-14T22:13:20.000Z');
    assert.equal(sourceDateEpoch({}), undefined);
    assert.throws(() => sourceDateEpoch({ SOURCE_DATE_EPOCH: 'yesterday' }), /SOURCE_DATE_EPOCH=yesterday is not a whole number/);
  });

  it('refuses contradictory layer content with one clear line', async () => {
    await assert.rejects(prepareImage(await withBase('base/oci', '1', { layer: { files: [{ path: '../etc/x', data: Buffer.from('') }] } })), /must not contain \.\./);
    await assert.rejects(
      prepareImage(await withBase('base/oci', '1', { layer: { files: [{ path: 'a/b', data: Buffer.from('') }], whiteouts: ['a/b'] } })),
      /a\/b is both added and whited out/,
    );
    await assert.rejects(
      prepareImage(await withBase('base/oci', '1', { layer: { files: [{ path: 'a', data: Buffer.from('') }, { path: 'a/b', data: Buffer.from('') }] } })),
      /a is both a file and a directory|given twice/,
    );
  });
});
