/**
 * `bundle extract`: the OCI image layout it writes is read by skopeo and is
 * the same tree `zstd -dc | tar x` gives; it resumes, checks every blob, and
 * writes nothing outside the folder it was given, whatever the bundle says.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { buildTestImages, LayoutBuilder, skopeoCopy, skopeoInspectRaw, type TestImageSet } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { flipByteAfter } from './helpers/tamper.js';
import { forgeBundle } from './helpers/forge.js';
import { createSignedBundle } from './helpers/bundles.js';

const run = promisify(execFile);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let work: string;
let src: RunningRegistry;
let set: TestImageSet;
let bundle: string;
let refNames: string[];
/** ref name -> raw manifest at the source */
const sourceRaw: Record<string, Buffer> = {};

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-extract-'));
  src = await startRegistry();
  set = await buildTestImages(join(work, 'layout'));
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/ns/app-one:1.0`);
  await skopeoCopy(set.layoutDir, 'app-two', `${src.host}/ns/app-two:2.0`, ['--format', 'v2s2']);
  await skopeoCopy(set.layoutDir, 'multi', `${src.host}/ns/multi:latest`);
  for (const ref of ['ns/app-one:1.0', 'ns/app-two:2.0', 'ns/multi:latest']) sourceRaw[`${src.host}/${ref}`] = await skopeoInspectRaw(`docker://${src.host}/${ref}`);
  bundle = await createSignedBundle(work, ['images:', ...Object.keys(sourceRaw).map((r) => `  - ${r}`)]);
  const inspected = await runBundle(['inspect', bundle, '--json']);
  refNames = (JSON.parse(inspected.stdout) as { images: { refName: string }[] }).images.map((i) => i.refName);
  assert.equal(refNames.length, 3);
});

after(async () => {
  await src?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function treeOf(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name), `${rel}${e.name}/`);
      else out.set(`${rel}${e.name}`, sha256(await readFile(join(d, e.name))));
    }
  };
  await walk(dir, '');
  return out;
}

describe('bundle extract --oci-layout', () => {
  it('writes a layout skopeo reads, every image byte for byte, with the same blobs as zstd -dc | tar x', async () => {
    const dir = join(work, 'out');
    const r = await runBundle(['extract', bundle, '--key', join(work, 'site.pub'), '--oci-layout', dir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).images, 3);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { mediaType: string; digest: string; annotations: Record<string, string> }[] };
    for (const ref of refNames) {
      const entry = index.manifests.find((m) => m.annotations['org.opencontainers.image.ref.name'] === ref)!;
      assert.equal(entry.digest, sha256(sourceRaw[ref]!), `${ref} listed with its source digest`);
      assert.ok((await readFile(join(dir, 'blobs', 'sha256', entry.digest.slice(7)))).equals(sourceRaw[ref]!), `${ref}: manifest byte for byte`);
      if (entry.mediaType.includes('docker')) continue; // containers/image skips non-OCI descriptors of a layout (see README)
      const raw = await skopeoInspectRaw(`oci:${dir}:${ref}`);
      assert.ok(raw.equals(sourceRaw[ref]!), `${ref} reads back byte for byte`);
      const { stdout } = await run('skopeo', ['inspect', `oci:${dir}:${ref}`]);
      assert.equal(JSON.parse(stdout).Digest, sha256(sourceRaw[ref]!));
      // Every platform, every blob: skopeo copies the whole image out of the layout.
      const copy = join(work, `copy-${sha256(Buffer.from(ref)).slice(7, 19)}`);
      await run('skopeo', ['copy', '--quiet', '--all', `oci:${dir}:${ref}`, `oci:${copy}:x`]);
      const copied = JSON.parse(await readFile(join(copy, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
      assert.equal(copied.manifests[0]!.digest, entry.digest);
    }
    assert.equal(index.manifests.filter((m) => !m.mediaType.includes('docker')).length, 2, 'two OCI images read by skopeo');
    const witness = join(work, 'tar-x');
    await mkdir(witness);
    await run('sh', ['-c', `zstd -dcq "$0" | tar -x -C "$1" --exclude airgap`, bundle, witness]);
    const got = await treeOf(dir);
    const want = await treeOf(witness);
    for (const [path, digest] of want) if (path.startsWith('blobs/')) assert.equal(got.get(path), digest, path);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')).manifests, JSON.parse(await readFile(join(witness, 'index.json'), 'utf8')).manifests);
  });

  it('resumes: keeps blobs already there with the right digest, rewrites missing and wrong ones', async () => {
    const dir = join(work, 'resume');
    assert.equal((await runBundle(['extract', bundle, '--key', join(work, 'site.pub'), '--oci-layout', dir])).code, 0);
    const blobs = join(dir, 'blobs', 'sha256');
    const baseFile = join(blobs, set.base.digest.slice(7));
    await rm(baseFile);
    const names = (await readdir(blobs)).sort();
    const other = join(blobs, names.find((n) => n !== set.base.digest.slice(7))!);
    const otherBytes = await readFile(other);
    await writeFile(other, Buffer.alloc(otherBytes.length, 0x41)); // same size, wrong bytes
    await writeFile(join(blobs, `.${set.base.digest.slice(7)}.partial-999-0`), 'left by an interrupted run');
    const r = await runBundle(['extract', bundle, '--key', join(work, 'site.pub'), '--oci-layout', dir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { blobsWritten: number; manifestsWritten: number; blobsKept: number };
    assert.equal(summary.blobsWritten + summary.manifestsWritten, 2, r.stdout);
    assert.ok(summary.blobsKept > 0);
    for (const n of await readdir(blobs)) assert.equal(sha256(await readFile(join(blobs, n))), `sha256:${n}`, `${n} is whole and right`);
    assert.equal((await readdir(blobs)).length, names.length + 1);
  });

  it('refuses without --key or with an untrusted key, writing nothing', async () => {
    let r = await runBundle(['extract', bundle, '--oci-layout', join(work, 'nokey')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /extract needs --key PUB/);
    r = await runBundle(['extract', bundle, '--key', join(work, 'other.pub'), '--oci-layout', join(work, 'untrusted')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refusing to extract/);
    assertNoStack(r);
    await assert.rejects(readdir(join(work, 'untrusted')));
    await assert.rejects(readdir(join(work, 'nokey')));
  });

  it('a blob that fails its digest is never left under its name; exit 1 names the image', async () => {
    const bad = join(work, 'bad.airgap');
    await copyFile(bundle, bad);
    // The layer only app-one has.
    const appOne = JSON.parse(await readFile(join(set.layoutDir, 'blobs', 'sha256', set.images['app-one']!.digest.slice(7)), 'utf8')) as { layers: { digest: string }[] };
    const own = appOne.layers[1]!.digest;
    const layer = await readFile(join(set.layoutDir, 'blobs', 'sha256', own.slice(7)));
    await flipByteAfter(bad, layer.subarray(layer.length - 4096, layer.length - 4000), 50);
    const dir = join(work, 'bad-out');
    const r = await runBundle(['extract', bad, '--key', join(work, 'site.pub'), '--oci-layout', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /FAILED .*ns\/app-one:1\.0: digest mismatch for blob/);
    const names = await readdir(join(dir, 'blobs', 'sha256'));
    assert.ok(!names.includes(own.slice(7)));
    assert.ok(names.includes(set.base.digest.slice(7)));
    for (const n of names) assert.equal(sha256(await readFile(join(dir, 'blobs', 'sha256', n))), `sha256:${n}`);
    // The images that do not need the bad layer are listed; app-one is not.
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { annotations: Record<string, string> }[] };
    const listed = index.manifests.map((m) => m.annotations['org.opencontainers.image.ref.name']);
    assert.equal(listed.length, 2);
    assert.deepEqual(listed.filter((n) => n.includes('app-one')), []);
  });

  it('refuses to write through a symbolic link inside the folder', async () => {
    const dir = join(work, 'linked');
    const outside = join(work, 'outside-link');
    await mkdir(outside);
    await mkdir(dir);
    await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await symlink(outside, join(dir, 'blobs'));
    const r = await runBundle(['extract', bundle, '--key', join(work, 'site.pub'), '--oci-layout', dir]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /symbolic link/);
    assert.deepEqual(await readdir(outside), []);
  });
});

describe('bundle extract: a hostile bundle', () => {
  it('".." in member names writes nothing outside the folder', async () => {
    const parent = join(work, 'hostile');
    await mkdir(parent);
    const b = await new LayoutBuilder(join(work, 'hostile-src')).init();
    const layerBlob = await b.layer({ 'hello.txt': 'hello\n' });
    const manifestBlob = await b.image([layerBlob]);
    const blob = async (d: { digest: string }): Promise<Buffer> => readFile(join(work, 'hostile-src', 'blobs', 'sha256', d.digest.slice(7)));
    const manifest = JSON.parse((await blob(manifestBlob)).toString()) as { config: { digest: string; mediaType: string } };
    const image = {
      source: 'example.com/hostile/app:1',
      refName: 'example.com/hostile/app:1',
      digest: manifestBlob.digest,
      mediaType: manifestBlob.mediaType,
      size: manifestBlob.size,
      platforms: ['linux/amd64'],
      tags: ['1'],
      origin: 'oci-layout' as const,
    };
    const common = [
      { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}'), mediaType: 'application/vnd.oci.layout.header.v1+json' },
      { name: `blobs/sha256/${manifest.config.digest.slice(7)}`, data: await blob(manifest.config), mediaType: manifest.config.mediaType },
      { name: `blobs/sha256/${manifestBlob.digest.slice(7)}`, data: await blob(manifestBlob), mediaType: manifestBlob.mediaType },
    ];
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifestBlob, annotations: { 'org.opencontainers.image.ref.name': image.refName } }] }));
    const indexMember = { name: 'index.json', data: index, mediaType: 'application/vnd.oci.image.index.v1+json' };

    // 1. The signed manifest itself lists a member called ../escape.txt.
    const listed = join(work, 'hostile-listed.airgap');
    await forgeBundle(
      listed,
      [...common, { name: `blobs/sha256/${layerBlob.digest.slice(7)}`, data: await blob(layerBlob), mediaType: layerBlob.mediaType }, { name: '../escape.txt', data: Buffer.from('escaped\n'), mediaType: 'text/plain' }, indexMember],
      [image],
      join(work, 'site.key'),
    );
    let r = await runBundle(['extract', listed, '--key', join(work, 'site.pub'), '--oci-layout', join(parent, 'dir1')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /members\[4\]\.path/);
    r = await runBundle(['extract', listed, '--key', join(work, 'site.pub'), '--member', '../escape.txt', '-o', join(parent, 'm.txt')]);
    assert.notEqual(r.code, 0);
    assertNoStack(r);

    // 2. A tar header says ../../escape while the manifest lists the blob under its digest.
    const header = join(work, 'hostile-header.airgap');
    await forgeBundle(
      header,
      [...common, { name: '../../escape', listedAs: `blobs/sha256/${layerBlob.digest.slice(7)}`, data: await blob(layerBlob), mediaType: layerBlob.mediaType }, indexMember],
      [image],
      join(work, 'site.key'),
    );
    const v = await runBundle(['verify', header, '--key', join(work, 'site.pub')]);
    assert.equal(v.code, 1, 'verify sees the header does not match the manifest');
    r = await runBundle(['extract', header, '--key', join(work, 'site.pub'), '--oci-layout', join(parent, 'dir2')]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /refusing to extract .*should hold the tar header of blobs\/sha256\/[0-9a-f]+ .* but holds \.\.\/\.\.\/escape/);
    // 3. The same blob under its right name: extracted, read by skopeo (the forge itself makes sound bundles).
    const sound = join(work, 'sound.airgap');
    await forgeBundle(
      sound,
      [...common, { name: `blobs/sha256/${layerBlob.digest.slice(7)}`, data: await blob(layerBlob), mediaType: layerBlob.mediaType }, indexMember],
      [image],
      join(work, 'site.key'),
    );
    const dir3 = join(parent, 'dir3');
    r = await runBundle(['extract', sound, '--key', join(work, 'site.pub'), '--oci-layout', dir3]);
    assert.equal(r.code, 0, r.stderr);
    const { stdout } = await run('skopeo', ['inspect', '--raw', `oci:${dir3}:${image.refName}`]);
    assert.equal(sha256(Buffer.from(stdout)), manifestBlob.digest);
    assert.equal(sha256(await readFile(join(dir3, 'blobs', 'sha256', layerBlob.digest.slice(7)))), layerBlob.digest);

    // Nothing anywhere outside the folders named.
    assert.deepEqual((await readdir(parent)).sort(), ['dir3']);
    assert.deepEqual((await readdir(work)).filter((n) => n.includes('escape')), []);
    assert.deepEqual((await readdir(join(work, '..'))).filter((n) => n.includes('escape')), []);
  });
});

describe('bundle extract --member', () => {
  it('writes one member, by path or digest, to a file or stdout, checked', async () => {
    const out = join(work, 'member.bin');
    let r = await runBundle(['extract', bundle, '--key', join(work, 'site.pub'), '--member', set.base.digest, '-o', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(out)).equals(await readFile(join(set.layoutDir, 'blobs', 'sha256', set.base.digest.slice(7)))));
    r = await runBundle(['extract', bundle, '--key', join(work, 'site.pub'), '--member', 'index.json', '-o', '-']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { manifests: unknown[] }).manifests.length, 3);
    r = await runBundle(['extract', bundle, '--key', join(work, 'site.pub'), '--member', 'blobs/sha256/nope', '-o', out]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /has no member blobs\/sha256\/nope/);
    r = await runBundle(['extract', bundle, '--key', join(work, 'site.pub'), '--member', 'index.json']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--member needs -o OUT/);
  });
});
