/**
 * Update bundles (create --since): the monthly refresh carries only what changed.
 * A real registry as source, one as the secure zone's registry (which received the
 * base), an empty one behind a counting proxy; skopeo as the witness.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchiveReader } from '../src/archive/reader.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RunningProxy, writeRequests } from './helpers/proxy.js';
import { buildTestImages, LayoutBuilder, pseudoRandom, skopeoCopy, skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';

let work: string;
let src: RunningRegistry;
let site: RunningRegistry; // the secure zone's registry: gets the base, then the update
let empty: RunningRegistry;
let emptyProxy: RunningProxy;
let baseFile: string;
let updateFile: string;
let key: string;
let pub: string;

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function config(name: string, images: string[]): Promise<string> {
  const file = join(work, name);
  await writeFile(file, ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'images:', ...images.map((i) => `  - ${i}`), ''].join('\n'));
  return file;
}

async function blobMembers(file: string): Promise<Map<string, number>> {
  const r = await ArchiveReader.open(file);
  try {
    return new Map(r.manifest.members.filter((m) => m.path.startsWith('blobs/')).map((m) => [m.digest, m.size]));
  } finally {
    await r.close();
  }
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-update-'));
  [src, site, empty] = await Promise.all([startRegistry(), startRegistry(), startRegistry()]);
  emptyProxy = await startProxy(empty.host);
  const set = await buildTestImages(join(work, 'layout'), { layerBytes: 1 << 20 });
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/ns/app-one:1.0`);
  await skopeoCopy(set.layoutDir, 'multi', `${src.host}/ns/multi:latest`);
  key = join(work, 'site.key');
  pub = join(work, 'site.pub');
  assert.equal((await runBundle(['keygen', '--out', join(work, 'site')])).code, 0);

  // Month 1: the base, pushed to the site registry.
  baseFile = join(work, 'month1.airgap');
  let r = await runBundle(['create', '-c', await config('m1.yaml', [`${src.host}/ns/app-one:1.0`, `${src.host}/ns/multi:latest`]), '-o', baseFile, '--sign-key', key]);
  assert.equal(r.code, 0, r.stderr);
  r = await runBundle(['push', baseFile, '--to', `${site.host}/mirror`, '--key', pub, '--out-dir', join(work, 'out1')]);
  assert.equal(r.code, 0, r.stdout + r.stderr);

  // Month 2 at the source: one new image (sharing app-one's base layer) and app-one retagged.
  await skopeoCopy(set.layoutDir, 'app-two', `${src.host}/ns/app-two:2.0`);
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/ns/app-one:1.1`);
  const extra = await new LayoutBuilder(join(work, 'layout2')).init();
  const fresh = await extra.image([await extra.layer({ 'new.bin': pseudoRandom('month2', 512 * 1024) })], undefined, 'fresh');
  extra.tag('fresh', fresh);
  await extra.save();
  await skopeoCopy(join(work, 'layout2'), 'fresh', `${src.host}/ns/fresh:1`);

  updateFile = join(work, 'month2.airgap');
  const m2 = await config('m2.yaml', [`${src.host}/ns/app-one:1.1`, `${src.host}/ns/app-two:2.0`, `${src.host}/ns/multi:latest`, `${src.host}/ns/fresh:1`]);
  // --since takes the manifest saved by inspect (small enough to keep) as well as the bundle
  const saved = join(work, 'month1.manifest.json');
  r = await runBundle(['inspect', baseFile, '--manifest-out', saved]);
  assert.equal(r.code, 0, r.stderr);
  r = await runBundle(['create', '-c', m2, '-o', updateFile, '--sign-key', key, '--since', saved]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /update of month1\.manifest\.json/);
});

after(async () => {
  await emptyProxy?.stop();
  await Promise.all([src?.stop(), site?.stop(), empty?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('update bundles', () => {
  it('carries only the blobs the base did not, and still lists every image', async () => {
    const base = await blobMembers(baseFile);
    const update = await blobMembers(updateFile);
    const reader = await ArchiveReader.open(updateFile);
    const m = reader.manifest;
    await reader.close();
    assert.equal(m.images.length, 4, 'every image of month 2 is listed');
    assert.equal(m.base?.digest, digestOf(await readFile(join(work, 'month1.manifest.json'))), 'the base is named by the digest of its manifest');
    const leftOut = new Set(m.base!.blobs.map((b) => b.digest));
    for (const d of leftOut) assert.ok(base.has(d), `${d} left out was carried by the base`);
    // every layer of the base that month 2 needs is left out, none is carried again
    for (const [digest, size] of update) {
      if (base.has(digest)) assert.ok(size < 4096, `only small manifests and configs are carried again, not ${digest} (${size} bytes)`);
    }
    // the only large blobs carried are app-two's own layer and fresh's layer
    const large = [...update].filter(([d, size]) => size >= 64 * 1024 && !base.has(d));
    assert.equal(large.length, 2, `new large blobs: ${large.map(([d]) => d).join(', ')}`);
    // its size shows it: the new blobs plus a few KiB of manifests, configs, tar headers and index
    const newBytes = [...update].filter(([d]) => !base.has(d)).reduce((n, [, size]) => n + size, 0);
    const leftOutBytes = m.base!.blobs.reduce((n, b) => n + b.size, 0);
    const { size } = await stat(updateFile);
    assert.ok(size < newBytes + 64 * 1024, `update is ${size} bytes for ${newBytes} bytes of new blobs`);
    assert.ok(leftOutBytes > 1 << 20, `${leftOutBytes} bytes of the base's layers are not carried again`);
  });

  it('verifies alone, and as a pair with its base; refuses a base that is not its own', async () => {
    let r = await runBundle(['verify', updateFile, '--key', pub]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /update of month1\.manifest\.json .*not checked here/);
    r = await runBundle(['verify', updateFile, '--key', pub, '--base', baseFile]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /the base carries them/);
    r = await runBundle(['verify', updateFile, '--key', pub, '--base', updateFile]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /is not the base this update was made from/);
    assertNoStack(r);
  });

  it('is refused by an empty target, which receives nothing', async () => {
    emptyProxy.reset();
    const r = await runBundle(['push', updateFile, '--to', `${emptyProxy.host}/mirror`, '--key', pub, '--out-dir', join(work, 'out-empty')]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assertNoStack(r);
    assert.match(r.stderr, /update bundle/);
    assert.match(r.stderr, /month1\.manifest\.json \(created .*, manifest sha256:[0-9a-f]{64}\)/, 'names the base: name, created, digest');
    assert.match(r.stderr, /nothing was pushed/);
    const writes = writeRequests(emptyProxy);
    assert.deepEqual(writes.map((q) => `${q.method} ${q.path}`), [], 'not one upload or manifest reached the registry');
  });

  it('pushes onto the target holding the base: every image lands with its source digest, sending only new blobs', async () => {
    const siteProxy = await startProxy(site.host);
    const r = await runBundle(['push', updateFile, '--to', `${siteProxy.host}/mirror`, '--key', pub, '--out-dir', join(work, 'out2'), '--json']);
    await siteProxy.stop();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const reader = await ArchiveReader.open(updateFile);
    const leftOut = reader.manifest.base!.blobs.map((b) => b.digest);
    await reader.close();
    const uploads = siteProxy.requests.filter((q) => q.method === 'PUT' && /[?&]digest=/.test(q.url)).map((q) => decodeURIComponent(/[?&]digest=([^&]+)/.exec(q.url)![1]!));
    assert.deepEqual(uploads.filter((d) => leftOut.includes(d)), [], 'no blob the update leaves out is uploaded');
    assert.ok(uploads.length >= 2, `the new layers are uploaded (${uploads.length} uploads)`);
    const mounts = siteProxy.requests.filter((q) => q.method === 'POST' && q.path === '/v2/mirror/ns/app-two/blobs/uploads/' && /mount=/.test(q.url));
    assert.ok(mounts.length >= 1, 'the base layer is mounted into the new repository from where the base put it');
    const report = JSON.parse(r.stdout);
    assert.equal(report.pushed, 4);
    for (const ref of ['ns/app-one:1.1', 'ns/app-two:2.0', 'ns/multi:latest', 'ns/fresh:1', 'ns/app-one:1.0']) {
      const [a, b] = await Promise.all([skopeoInspectRaw(`docker://${src.host}/${ref}`), skopeoInspectRaw(`docker://${site.host}/mirror/${ref}`)]);
      assert.ok(a.equals(b), `${ref} at the target is the source's manifest`);
    }
    // skopeo reads a whole image, layers included, from the target
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    await promisify(execFile)('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${site.host}/mirror/ns/app-two:2.0`, `oci:${join(work, 'check')}:x`]);
  });
});
