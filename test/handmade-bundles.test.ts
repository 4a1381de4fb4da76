/**
 * Bundles made by hand from the archive primitives (test/helpers/handmade.ts),
 * holding what this tool's writer never writes: an unlisted extra copy of a
 * control member, a manifest of a newer minor format with fields and values
 * this version does not know, a manifest of another major. Checked with the
 * real CLI against a real registry behind the counting proxy, skopeo as witness.
 */
import { FORMAT_VERSION } from '../src/bundle/manifest.js';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, type KeyObject } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MANIFEST_MEMBER, SIGNATURE_MEMBER } from '../src/bundle/manifest.js';
import { generateKeyPair, loadPrivateKey } from '../src/sign/keys.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { handImage, writeHandmadeBundle, type HandImage, type HandMember } from './helpers/handmade.js';
import { skopeoInspectRaw } from './helpers/images.js';
import { startProxy, type RunningProxy, writeRequests } from './helpers/proxy.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';

/** A format minor newer than this tool's. */
const FUTURE_MINOR = `1.${Number(FORMAT_VERSION.split('.')[1]) + 1}`;

let work: string;
let key: KeyObject;
let pub: string;
let img: HandImage;
let reg: RunningRegistry;
let proxy: RunningProxy;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-handmade-'));
  const pair = await generateKeyPair(join(work, 'site'));
  key = await loadPrivateKey(pair.privatePath);
  pub = pair.publicPath;
  img = await handImage('example.com/hand/app:1.0', 'hand');
  reg = await startRegistry();
  proxy = await startProxy(reg.host);
});

after(async () => {
  await proxy?.stop();
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const writes = writeRequests;

describe('hand-made bundles', () => {
  it('the helper makes bundles this tool accepts: verify passes, push lands the image', async () => {
    const file = join(work, 'plain.airgap');
    await writeHandmadeBundle(file, { members: img.blobs, images: [img.entry], signKey: key });
    const v = await runBundle(['verify', file, '--key', pub]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    const p = await runBundle(['push', file, '--to', `${proxy.host}/plain`, '--key', pub, '--out-dir', join(work, 'plain-out')]);
    assert.equal(p.code, 0, p.stdout + p.stderr);
    const raw = await skopeoInspectRaw(`docker://${reg.host}/plain/hand/app:1.0`);
    assert.equal(`sha256:${createHash('sha256').update(raw).digest('hex')}`, img.entry.digest);
  });
});

describe('an unlisted duplicate control member', () => {
  for (const [which, copyOf] of [
    ['manifest', MANIFEST_MEMBER],
    ['signature', SIGNATURE_MEMBER],
  ] as const) {
    it(`an extra copy of ${copyOf} inside the file: verify exits 1 naming it, push refuses and writes nothing`, async () => {
      const file = join(work, `dup-${which}.airgap`);
      // The copy sits between two blobs; the manifest lists every real member at its true offset and is signed.
      const extra = { path: copyOf, data: Buffer.from('{"kind":"AirgapBundleManifest","note":"a second, unsigned story"}\n'), listed: false };
      await writeHandmadeBundle(file, { members: [img.blobs[0]!, extra, ...img.blobs.slice(1)], images: [img.entry], signKey: key });

      const v = await runBundle(['verify', file, '--key', pub, '--json']);
      assert.equal(v.code, 1, v.stdout + v.stderr);
      const report = JSON.parse(v.stdout) as { ok: boolean; problems: { kind: string; member?: string; message: string }[] };
      assert.equal(report.ok, false);
      const named = report.problems.filter((p) => p.member === copyOf);
      assert.equal(named.length, 1, v.stdout);
      assert.equal(named[0]!.kind, 'unlisted');
      assert.match(named[0]!.message, /extra copy/);
      assert.equal(report.problems.length, 1, `only the copy is wrong: ${v.stdout}`);
      const human = await runBundle(['verify', file, '--key', pub]);
      assert.equal(human.code, 1);
      assert.match(human.stdout, new RegExp(`FAIL unlisted: an extra copy of ${copyOf.replace(/\./g, '\\.')}`));

      proxy.reset();
      const p = await runBundle(['push', file, '--to', `${proxy.host}/dup-${which}`, '--key', pub, '--out-dir', join(work, `dup-${which}-out`)]);
      assert.equal(p.code, 1, p.stdout + p.stderr);
      assert.match(p.stderr, /refusing to push .*does not list/);
      assertNoStack(p);
      assert.deepEqual(writes(proxy), [], 'nothing was written to the registry');
    });
  }

  it('a copy hidden inside the next member\'s header frame (the seek table looks right): push still refuses', async () => {
    const file = join(work, 'dup-hidden.airgap');
    const extra = { path: MANIFEST_MEMBER, data: Buffer.from('{"hidden":true}\n'), hidden: true };
    await writeHandmadeBundle(file, { members: [img.blobs[0]!, extra, ...img.blobs.slice(1)], images: [img.entry], signKey: key });
    const v = await runBundle(['verify', file, '--key', pub, '--json']);
    assert.equal(v.code, 1, v.stdout + v.stderr);
    assert.deepEqual(
      (JSON.parse(v.stdout) as { problems: { kind: string; member?: string }[] }).problems.map((p) => [p.kind, p.member]),
      [['unlisted', MANIFEST_MEMBER]],
    );
    proxy.reset();
    const p = await runBundle(['push', file, '--to', `${proxy.host}/dup-hidden`, '--key', pub]);
    assert.equal(p.code, 1, p.stdout + p.stderr);
    assert.match(p.stderr, /refusing to push .*frame \d+ should hold the tar header of blobs\/sha256\/[0-9a-f]{64} \(\d+ bytes\) but holds something else/);
    assert.deepEqual(writes(proxy), [], 'nothing was written to the registry');
  });
});

describe('the framing rules', () => {
  it('a header sharing a frame with the data before it: the tar is whole, but verify names it and push refuses', async () => {
    const file = join(work, 'joined.airgap');
    const [layer, config, manifest] = img.blobs as [HandMember, HandMember, HandMember];
    await writeHandmadeBundle(file, { members: [layer, { ...config, joinPrevious: true }, manifest], images: [img.entry], signKey: key });
    const v = await runBundle(['verify', file, '--key', pub, '--json']);
    assert.equal(v.code, 1, v.stdout + v.stderr);
    const problems = (JSON.parse(v.stdout) as { problems: { kind: string; message: string }[] }).problems;
    assert.deepEqual(problems.map((p) => p.kind), ['archive'], v.stdout);
    assert.match(problems[0]!.message, new RegExp(`${layer.path}: its data frames do not end where its data does`));
    proxy.reset();
    const p = await runBundle(['push', file, '--to', `${proxy.host}/joined`, '--key', pub]);
    assert.equal(p.code, 1, p.stdout + p.stderr);
    assert.match(p.stderr, /refusing to push .*its data frames do not end where its data does/);
    assert.deepEqual(writes(proxy), []);
  });
});

describe('format versions', () => {
  it('a signed manifest of a newer minor with fields and an origin this version does not know: verify passes, inspect reports them, push pushes', async () => {
    const file = join(work, 'minor.airgap');
    const entry = { ...img.entry, origin: 'time-machine', fromTheFuture: { era: 3000 } };
    const { manifest } = await writeHandmadeBundle(file, {
      members: img.blobs,
      images: [entry],
      manifestFields: { formatVersion: FUTURE_MINOR, fromTheFuture: { stacks: [{ name: 'java' }] } },
      signKey: key,
    });
    assert.equal(manifest.formatVersion, FUTURE_MINOR);

    const v = await runBundle(['verify', file, '--key', pub]);
    assert.equal(v.code, 0, v.stdout + v.stderr);

    const j = await runBundle(['inspect', file, '--json']);
    assert.equal(j.code, 0, j.stderr);
    const doc = JSON.parse(j.stdout) as { formatVersion: string; unknownFields: string[]; images: Record<string, unknown>[] };
    assert.equal(doc.formatVersion, FUTURE_MINOR);
    assert.deepEqual([...doc.unknownFields].sort(), ['"fromTheFuture"', 'images[0].origin = "time-machine"', 'images[0]."fromTheFuture"'].sort());
    // Carried as they are.
    assert.equal(doc.images[0]!.origin, 'time-machine');
    assert.deepEqual(doc.images[0]!.fromTheFuture, { era: 3000 });
    const h = await runBundle(['inspect', file]);
    assert.match(h.stdout, new RegExp(`unknown to this version \\(format ${FUTURE_MINOR} is newer than this tool's ${FORMAT_VERSION}\\): .*"fromTheFuture"`));
    assert.match(h.stdout, /images\[0\]\.origin = "time-machine"/);

    const p = await runBundle(['push', file, '--to', `${proxy.host}/minor`, '--key', pub, '--out-dir', join(work, 'minor-out')]);
    assert.equal(p.code, 0, p.stdout + p.stderr);
    const raw = await skopeoInspectRaw(`docker://${reg.host}/minor/hand/app:1.0`);
    assert.equal(`sha256:${createHash('sha256').update(raw).digest('hex')}`, img.entry.digest);
  });

  it('a newer-minor manifest is still checked strictly on every field this version knows', async () => {
    const file = join(work, 'minor-bad.airgap');
    await writeHandmadeBundle(file, {
      members: img.blobs,
      images: [{ ...img.entry, origin: 42, tags: ['-bad'] }],
      manifestFields: { formatVersion: FUTURE_MINOR, fromTheFuture: true },
      signKey: key,
    });
    const v = await runBundle(['verify', file, '--key', pub]);
    assert.equal(v.code, 1, v.stdout + v.stderr);
    assert.match(v.stdout, /images\[0\]\.origin: expected a string/);
    assert.match(v.stdout, /images\[0\]\.tags\[0\]: "-bad" is not a tag/);
    assert.doesNotMatch(v.stdout, /fromTheFuture/);
    const p = await runBundle(['push', file, '--to', `${proxy.host}/minor-bad`, '--key', pub]);
    assert.equal(p.code, 1, p.stdout + p.stderr);
    assert.match(p.stderr, /invalid bundle manifest/);
  });

  it('a 1.0 manifest may not carry fields 1.0 does not define', async () => {
    const file = join(work, 'same-minor.airgap');
    await writeHandmadeBundle(file, { members: img.blobs, images: [img.entry], manifestFields: { fromTheFuture: true }, signKey: key });
    const v = await runBundle(['verify', file, '--key', pub]);
    assert.equal(v.code, 1, v.stdout + v.stderr);
    assert.match(v.stdout, /unknown key "fromTheFuture" at the top level/);
  });

  it('a 2.0 bundle is refused with a clear message by inspect, verify and push', async () => {
    const file = join(work, 'major.airgap');
    await writeHandmadeBundle(file, { members: img.blobs, images: [img.entry], manifestFields: { formatVersion: '2.0' }, signKey: key });
    for (const args of [['inspect', file], ['verify', file, '--key', pub], ['push', file, '--to', `${proxy.host}/major`, '--key', pub]]) {
      const r = await runBundle(args);
      assert.equal(r.code, 2, `${args[0]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /is a format "2\.0" bundle; this tool reads format 1\.x only/);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assertNoStack(r);
    }
  });
});
