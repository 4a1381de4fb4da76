/**
 * Devfile stack content that climbs out of --devfile-out, end to end. `bundle create` makes a
 * signed bundle from a devfile registry folder whose stack names an image in a Kubernetes
 * manifest (so push unpacks the stack's archive.tar to rewrite it). The test then rebuilds that
 * bundle with the real writer, signed by the same trusted key, with archive.tar replaced by one
 * holding one hostile entry: only the devfile content is hostile. Each is pushed into a real
 * registry with --devfile-out, push's scratch folder (TMPDIR) inside the case's folder: push
 * names the entry in one line, exits 1 (the stack version is not delivered), and nothing is
 * written outside the case's folders: no escaped file anywhere under the test's root, the
 * parents of --devfile-out hold only what push writes, the scratch folder is left empty.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { ArchiveReader } from '../src/archive/reader.js';
import { ArchiveWriter } from '../src/archive/writer.js';
import { MANIFEST_PAYLOAD_TYPE, type BundleImage } from '../src/bundle/manifest.js';
import { ARCHIVE_NAME, TITLE } from '../src/devfile/artifact.js';
import type { DevfileRecord } from '../src/devfile/record.js';
import { signEnvelope } from '../src/sign/dsse.js';
import { loadPrivateKey } from '../src/sign/keys.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { writeFiles } from './helpers/devfile-fixture.js';
import { buildTestImages, skopeoCopy } from './helpers/images.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let work: string;
let reg: RunningRegistry;
let good: string;

interface TarEntry {
  name: string;
  type?: 'file' | 'symlink' | 'link';
  linkname?: string;
  data?: string;
}

/** A gzip tar of `entries`, in order. */
async function gzipTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => {
    chunks.push(c as Buffer);
  });
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  for (const e of entries) {
    if (e.type === 'symlink' || e.type === 'link') pack.entry({ name: e.name, type: e.type, linkname: e.linkname! });
    else pack.entry({ name: e.name, size: Buffer.byteLength(e.data ?? '') }, e.data ?? '');
  }
  pack.finalize();
  await done;
  return gzipSync(Buffer.concat(chunks));
}

/** The regular files of a gzip tar. */
async function tarFiles(gz: Buffer): Promise<TarEntry[]> {
  const extract = tar.extract();
  const out: TarEntry[] = [];
  extract.end(gunzipSync(gz));
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    if (entry.header.type === 'file') out.push({ name: entry.header.name, data: Buffer.concat(chunks).toString('utf8') });
  }
  return out;
}

/**
 * `good` again, written by the real writer and signed by the trusted key, with the stack's
 * archive.tar replaced by `archive`: the stack's artifact manifest (and so its digest) changes
 * with it; every other member, image and the devfile record are carried over as they are.
 */
async function withArchive(out: string, archiveFn: (original: TarEntry[]) => Promise<Buffer>): Promise<void> {
  const r = await ArchiveReader.open(good);
  try {
    const m = r.manifest;
    const record = m.sources!['devfile'] as DevfileRecord;
    const stackImage = m.images.find((i) => i.refName === record.stacks[0]!.artifact)!;
    const artifact = JSON.parse((await r.readMember(`blobs/sha256/${stackImage.digest.slice(7)}`)).toString('utf8')) as { layers: { digest: string; size: number; annotations?: Record<string, string> }[] };
    const layer = artifact.layers.find((l) => l.annotations?.[TITLE] === ARCHIVE_NAME)!;
    const archive = await archiveFn(await tarFiles(await r.readMember(`blobs/sha256/${layer.digest.slice(7)}`)));
    const replaced = { old: layer.digest, bytes: archive };
    layer.digest = sha(archive);
    layer.size = archive.length;
    const artifactBytes = Buffer.from(JSON.stringify(artifact));
    const w = await ArchiveWriter.create(out, { created: new Date(m.created) });
    const skip = new Set(['oci-layout', 'index.json', `blobs/sha256/${stackImage.digest.slice(7)}`, `blobs/sha256/${replaced.old.slice(7)}`]);
    for (const member of m.members) {
      if (skip.has(member.path)) continue;
      await w.putBlob('', { digest: member.digest, size: member.size, mediaType: member.mediaType ?? 'application/octet-stream' }, async () => r.openMember(member.path));
    }
    await w.putBlob('', { digest: layer.digest, size: layer.size, mediaType: 'application/x-tar' }, async () => Readable.from([archive]));
    const artifactDesc = { mediaType: stackImage.mediaType, digest: sha(artifactBytes), size: artifactBytes.length };
    await w.putManifest('', artifactDesc, artifactBytes, []);
    for (const img of m.images) w.addImage(img === stackImage ? ({ ...img, ...artifactDesc } as BundleImage) : img);
    const key = await loadPrivateKey(join(work, 'site.key'));
    await w.finish({ tool: m.tool, fields: { sources: m.sources }, sign: async (payload) => signEnvelope(payload, MANIFEST_PAYLOAD_TYPE, key) });
  } finally {
    await r.close();
  }
}

/** Every path under `dir` (recursively), relative to it. */
async function walk(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    out.push(r);
    if (e.isDirectory()) out.push(...(await walk(dir, r)));
  }
  return out;
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-devfile-hostile-'));
  reg = await startRegistry();
  const set = await buildTestImages(join(work, 'layout'));
  const image = `${reg.host}/src/node:18`;
  await skopeoCopy(set.layoutDir, 'app-one', image);
  await writeFiles(join(work, 'registry'), {
    'stacks/nodejs/devfile.yaml': [
      'schemaVersion: 2.2.0',
      'metadata:',
      '  name: nodejs',
      '  version: 1.0.0',
      'components:',
      '  - name: runtime',
      '    container:',
      `      image: ${image}`,
      '  - name: deploy',
      '    kubernetes:',
      '      uri: kubernetes/deploy.yaml',
      '',
    ].join('\n'),
    'stacks/nodejs/kubernetes/deploy.yaml': ['apiVersion: v1', 'kind: Pod', 'metadata:', '  name: app', 'spec:', '  containers:', '    - name: app', `      image: ${image}`, ''].join('\n'),
  });
  await writeFiles(work, {
    'bundle.yaml': ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'devfile:', `  registries: [{path: ${join(work, 'registry')}}]`, '  stacks: [nodejs]', ''].join('\n'),
  });
  assert.equal((await runBundle(['keygen', '--out', join(work, 'site')])).code, 0);
  good = join(work, 'good.airgap');
  const c = await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', good, '--sign-key', join(work, 'site.key'), '--quiet']);
  assert.equal(c.code, 0, c.stdout + c.stderr);
});

after(async () => {
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('devfile stack content climbing out of --devfile-out, pushed end to end', () => {
  it('the clean bundle, rebuilt by this test the same way, pushes and rewrites the stack (the rebuild itself is sound)', async () => {
    const file = join(work, 'rebuilt.airgap');
    await withArchive(file, async (original) => gzipTar(original));
    const dir = join(work, 'case-clean');
    await mkdir(join(dir, 'tmp'), { recursive: true });
    const v = await runBundle(['verify', file, '--key', join(work, 'site.pub')]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    const p = await runBundle(['push', file, '--to', `${reg.host}/clean`, '--key', join(work, 'site.pub'), '--out-dir', join(dir, 'out'), '--devfile-out', join(dir, 'devfile-out')], {
      env: { TMPDIR: join(dir, 'tmp') },
    });
    assert.equal(p.code, 0, p.stdout + p.stderr);
    const deploy = (await tarFiles(await readFile(join(dir, 'devfile-out', 'stacks/nodejs/archive.tar')))).find((e) => e.name === 'kubernetes/deploy.yaml');
    assert.match(deploy?.data ?? '', new RegExp(`image: ${reg.host}/clean/src/node:18`), 'the manifest inside archive.tar was rewritten for the target');
    assert.deepEqual(await readdir(join(dir, 'tmp')), [], 'the scratch folder is removed');
  });

  const cases: { name: string; entry: (root: string) => TarEntry[]; says: (root: string) => RegExp }[] = [
    { name: '../ climbing out', entry: () => [{ name: '../escaped-dotdot', data: 'x\n' }], says: () => /archive\.tar entry "\.\.\/escaped-dotdot" leaves the stack folder/ },
    { name: 'a path climbing out from inside', entry: () => [{ name: 'kubernetes/../../../escaped-nested', data: 'x\n' }], says: () => /archive\.tar entry "kubernetes\/\.\.\/\.\.\/\.\.\/escaped-nested" leaves the stack folder/ },
    {
      name: 'an absolute path',
      entry: (root) => [{ name: `${root}/escaped-absolute`, data: 'x\n' }],
      says: (root) => new RegExp(`archive\\.tar entry "${root.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/escaped-absolute" leaves the stack folder`),
    },
    {
      name: 'a symbolic link pointing out, and a file written through it',
      entry: () => [
        { name: 'kubernetes/out', type: 'symlink', linkname: '../../..' },
        { name: 'kubernetes/out/escaped-through-link', data: 'x\n' },
      ],
      says: () => /archive\.tar entry "kubernetes\/out" is a symbolic link to "\.\.\/\.\.\/\.\.", outside the stack folder/,
    },
    {
      name: 'a symbolic link to an absolute path',
      entry: (root) => [
        { name: 'abs', type: 'symlink', linkname: root },
        { name: 'abs/escaped-through-absolute-link', data: 'x\n' },
      ],
      says: () => /archive\.tar entry "abs" is a symbolic link to ".*", outside the stack folder/,
    },
    { name: 'a hard link climbing out', entry: () => [{ name: 'kubernetes/hard', type: 'link', linkname: '../../escaped-hardlink' }], says: () => /archive\.tar entry "kubernetes\/hard" is a hard link to "\.\.\/\.\.\/escaped-hardlink", outside the stack folder/ },
  ];

  for (const c of cases) {
    it(`${c.name}: push names the entry in one line, exits 1, and writes nothing outside its folders`, async () => {
      const dir = join(work, `case-${cases.indexOf(c)}`);
      await mkdir(join(dir, 'tmp'), { recursive: true });
      const file = join(dir, 'hostile.airgap');
      // The legitimate file first, then the hostile entry (and whatever would follow it).
      await withArchive(file, async (original) => gzipTar([...original, ...c.entry(dir)]));
      const p = await runBundle(['push', file, '--to', `${reg.host}/case${cases.indexOf(c)}`, '--key', join(work, 'site.pub'), '--out-dir', join(dir, 'out'), '--devfile-out', join(dir, 'devfile-out')], {
        env: { TMPDIR: join(dir, 'tmp') },
      });
      assert.equal(p.code, 1, p.stdout + p.stderr);
      assertNoStack(p);
      const failed = p.stdout.split('\n').filter((l) => l.startsWith('FAILED'));
      assert.equal(failed.length, 1, p.stdout);
      assert.match(failed[0]!, /^FAILED devfile stack nodejs 1\.0\.0: /);
      assert.match(failed[0]!, c.says(dir));
      // The stack version is not delivered: the folder's index lists none of it.
      const index = JSON.parse(await readFile(join(dir, 'devfile-out', 'index.json'), 'utf8')) as { name: string }[];
      assert.deepEqual(index.map((e) => e.name), []);

      // Nothing outside: the case's folder holds what push writes and the bundle; the scratch
      // folder is empty again; no escaped file exists anywhere under the test's root.
      assert.deepEqual((await readdir(dir)).sort(), ['devfile-out', 'hostile.airgap', 'out', 'tmp']);
      assert.deepEqual(await readdir(join(dir, 'tmp')), []);
      assert.deepEqual((await walk(work)).filter((f) => /escaped/.test(f)), []);
      assert.deepEqual((await readdir(tmpdir())).filter((f) => /escaped/.test(f)), []);
      assert.ok((await walk(join(dir, 'devfile-out'))).every((f) => f === 'index.json' || f.startsWith('stacks')), 'only the registry layout in --devfile-out');
    });
  }
});
