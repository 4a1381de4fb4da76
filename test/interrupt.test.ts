/**
 * Kills, Ctrl-C and full disks. push is killed with SIGKILL at 10 seeded points of its
 * request sequence (counted at the proxy): the next push finishes, the target then holds
 * exactly what a clean push leaves (tags and digests read from the registry's own API), and
 * no blob whose upload had completed is sent again. create killed part-way leaves nothing
 * under the output name and its temporary file is removed by the next run. Ctrl-C: one line
 * saying what was and was not done, no temporary file. A full disk (a small tmpfs): refused
 * up front when the bundle cannot fit, and one clear line with nothing left when the disk
 * fills while writing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchiveReader } from '../src/archive/reader.js';
import { verifyBundle } from '../src/bundle/verify.js';
import { generateKeyPair, loadTrustedKeys } from '../src/sign/keys.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { buildTestImages, layoutLayerDigests, skopeoCopy } from './helpers/images.js';
import { rng } from './helpers/seeded.js';
import { startProxy, type RequestInfo, type RunningProxy } from './helpers/proxy.js';
import { startRegistry, targetState, type RunningRegistry } from './helpers/registry.js';


let work: string;
let reg: RunningRegistry;
let proxy: RunningProxy;
let onRequest: (r: RequestInfo) => void = () => undefined;
let bundle: string;
let pub: string;
let layerDigests: Set<string>;
const BLOB_GET = /^\/v2\/.+\/blobs\/sha256:[a-f0-9]{64}$/;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-interrupt-'));
  reg = await startRegistry();
  proxy = await startProxy(reg.host, { onRequest: (r) => onRequest(r) });
  const set = await buildTestImages(join(work, 'layout'), { layerBytes: 512 * 1024 });
  layerDigests = await layoutLayerDigests(set.layoutDir);
  for (const ref of ['app-one', 'app-two', 'multi']) await skopeoCopy(set.layoutDir, ref, `${reg.host}/src/${ref}:1`);
  await writeFile(join(work, 'registry.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n${['app-one', 'app-two', 'multi'].map((r) => `  - ${proxy.host}/src/${r}:1\n`).join('')}`);
  const keys = await generateKeyPair(join(work, 'site'));
  pub = keys.publicPath;
  bundle = join(work, 'b.airgap');
  const c = await runBundle(['create', '-c', join(work, 'registry.yaml'), '-o', bundle, '--sign-key', keys.privatePath]);
  assert.equal(c.code, 0, c.stderr);
});

after(async () => {
  onRequest = () => undefined;
  await proxy?.stop();
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});


const push = (prefix: string, onSpawn?: (c: ChildProcess) => void) =>
  runBundle(['push', bundle, '--to', `${proxy.host}/${prefix}`, '--key', pub, '--out-dir', join(work, `${prefix}-out`)], { onSpawn });

/** Digests whose upload the registry accepted (the final PUT answered 201). */
const completedUploads = (reqs: typeof proxy.requests) =>
  new Set(reqs.filter((r) => r.method === 'PUT' && /\/blobs\/uploads\//.test(r.path) && r.status === 201).map((r) => new URL(r.url, 'http://x').searchParams.get('digest')!));

describe('push killed with SIGKILL', () => {
  it('at 10 seeded points: the next push finishes, the target equals a clean push, no completed blob is sent again', async () => {
    proxy.reset();
    const clean = await push('clean');
    assert.equal(clean.code, 0, clean.stderr);
    const total = proxy.requests.length;
    const expected = await targetState(reg.host, 'clean');
    assert.ok(expected.size >= 3 && total > 20, `${expected.size} tags, ${total} requests`);

    const r = rng(31);
    const points = new Set<number>();
    while (points.size < 10) points.add(1 + Math.floor(r() * (total - 1)));
    let resentNever = 0;
    for (const point of [...points].sort((a, b) => a - b)) {
      const prefix = `kill${point}`;
      proxy.reset();
      let child: ChildProcess | undefined;
      let seen = 0;
      onRequest = () => {
        if (++seen === point) child?.kill('SIGKILL');
      };
      const killed = await push(prefix, (c) => (child = c));
      onRequest = () => undefined;
      assert.notEqual(killed.code, 0, `killed at request ${point} of ${total}`);
      const before = completedUploads(proxy.requests);
      proxy.reset();
      const resumed = await push(prefix);
      assert.equal(resumed.code, 0, `after a kill at request ${point}: ${resumed.stdout}${resumed.stderr}`);
      assertNoStack(resumed);
      const again = [...completedUploads(proxy.requests)].filter((d) => before.has(d));
      assert.deepEqual(again, [], `after a kill at request ${point}: blobs uploaded whole before were sent again`);
      const resent = proxy.requests.filter((q) => q.method === 'PUT' && /\/blobs\/uploads\//.test(q.path) && before.has(new URL(q.url, 'http://x').searchParams.get('digest')!));
      assert.deepEqual(resent, []);
      resentNever += before.size;
      assert.deepEqual(await targetState(reg.host, prefix), expected, `after a kill at request ${point}: the target holds what a clean push leaves`);
    }
    assert.ok(resentNever > 0, 'some kills came after completed uploads');
  });
});

describe('create killed, and Ctrl-C', () => {
  const config = () => join(work, 'registry.yaml');

  it('create killed with SIGKILL part-way: nothing under the output name; the next run removes its temporary file and works', async () => {
    const out = join(work, 'killed', 'out.airgap');
    await mkdir(join(work, 'killed'));
    let child: ChildProcess | undefined;
    onRequest = (r) => {
      if (r.method === 'GET' && BLOB_GET.test(r.path) && layerDigests.has(r.path.split('/').pop()!)) child?.kill('SIGKILL');
    };
    const killed = await runBundle(['create', '-c', config(), '-o', out], { onSpawn: (c) => (child = c) });
    onRequest = () => undefined;
    assert.equal(killed.code, -1, 'killed by the signal');
    assert.equal(existsSync(out), false);
    const left = (await readdir(join(work, 'killed'))).filter((f) => f.startsWith('out.airgap.partial-'));
    assert.equal(left.length, 1, 'the killed run left its temporary file');
    const next = await runBundle(['create', '-c', config(), '-o', out]);
    assert.equal(next.code, 0, next.stderr);
    assert.match(next.stderr, new RegExp(`removed .*${left[0]}, the temporary file of an earlier run that was killed`));
    assert.deepEqual(await readdir(join(work, 'killed')), ['out.airgap']);
    const reader = await ArchiveReader.open(out);
    try {
      assert.equal((await verifyBundle(reader, await loadTrustedKeys([pub]))).problems.filter((p) => p.kind !== 'signature').length, 0);
    } finally {
      await reader.close();
    }
  });

  it('create interrupted (SIGINT): exit 130, one line saying what was and was not done, no file left', async () => {
    const dir = join(work, 'sigint');
    await mkdir(dir);
    let child: ChildProcess | undefined;
    let sent = false;
    onRequest = (r) => {
      if (!sent && r.method === 'GET' && BLOB_GET.test(r.path) && layerDigests.has(r.path.split('/').pop()!)) {
        sent = true; // one Ctrl-C (a second one ends a process at once, as usual)
        child?.kill('SIGINT');
      }
    };
    const res = await runBundle(['create', '-c', config(), '-o', join(dir, 'out.airgap')], { onSpawn: (c) => (child = c) });
    onRequest = () => undefined;
    assert.equal(res.code, 130, res.stderr);
    const lines = res.stderr.split('\n').filter((l) => /interrupted|error/.test(l));
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0]!, /^interrupted \(SIGINT\): .*out\.airgap was not written \(\d of 3 images were complete\); removed its temporary file .*partial-\d+; run the same create again/);
    assertNoStack(res);
    assert.deepEqual(await readdir(dir), []);
  });

  it('push interrupted (SIGINT): exit 130, one line saying what was pushed and what was not, no mirror files', async () => {
    let child: ChildProcess | undefined;
    let uploads = 0;
    onRequest = (r) => {
      if (r.method === 'PUT' && /\/blobs\/uploads\//.test(r.path) && ++uploads === 2) child?.kill('SIGINT');
    };
    const res = await push('sigint', (c) => (child = c));
    onRequest = () => undefined;
    assert.equal(res.code, 130, res.stdout + res.stderr);
    const lines = res.stderr.split('\n').filter((l) => /interrupted|error/.test(l));
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0]!, /^interrupted \(SIGINT\): \d of 3 images pushed to .* \(\d+ blobs uploaded, \d+ already there\); the other \d are not tagged there and no mirror files were written; run the same push again/);
    assert.equal(existsSync(join(work, 'sigint-out')), false);
    const again = await push('sigint');
    assert.equal(again.code, 0, again.stderr);
  });
});

describe('a full disk (a small tmpfs; needs root)', () => {
  const mounts: string[] = [];
  after(() => {
    for (const m of mounts) execFileSync('umount', [m]);
  });
  const tmpfs = async (name: string, size: string): Promise<string> => {
    const dir = join(work, name);
    await mkdir(dir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
    mounts.push(dir);
    return dir;
  };

  it('the running user is root (CI runs as root; a full disk needs a tmpfs of its own)', () => {
    assert.equal(process.getuid?.(), 0);
  });

  it('a bundle larger than the free space: refused before writing, one line, nothing left', async () => {
    const dir = await tmpfs('small', '1m');
    const res = await runBundle(['create', '-c', join(work, 'registry.yaml'), '-o', join(dir, 'out.airgap')]);
    assert.equal(res.code, 1, res.stderr);
    const errors = res.stderr.split('\n').filter((l) => l.startsWith('error:'));
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /not enough free space for .*out\.airgap: the bundle needs up to [\d.]+ [KM]i?B, .* has [\d.]+ [KM]i?B free; nothing was written/);
    assertNoStack(res);
    assert.deepEqual(await readdir(dir), []);
  });

  it('the disk fills while writing: exit 1, one clear line, no partial file', async () => {
    const dir = await tmpfs('fills', '8m');
    let filled = false;
    onRequest = (r) => {
      if (!filled && r.method === 'GET' && BLOB_GET.test(r.path) && layerDigests.has(r.path.split('/').pop()!)) {
        filled = true;
        // Another writer takes the space after create has checked it: all but 64 KiB.
        const s = execFileSync('df', ['--output=avail', '-B1', dir]).toString().trim().split('\n').pop()!;
        writeFileSync(join(dir, 'filler'), Buffer.alloc(Math.max(0, Number(s) - 64 * 1024)));
      }
    };
    const res = await runBundle(['create', '-c', join(work, 'registry.yaml'), '-o', join(dir, 'out.airgap')]);
    onRequest = () => undefined;
    assert.ok(filled);
    assert.equal(res.code, 1, res.stderr);
    const errors = res.stderr.split('\n').filter((l) => l.startsWith('error:'));
    assert.equal(errors.length, 1, res.stderr);
    assert.match(errors[0]!, /^error: the disk holding .* is full: .*out\.airgap was not written and its temporary file was removed/);
    assertNoStack(res);
    assert.deepEqual(await readdir(dir), ['filler']);
    assert.ok((await statfs(dir)).bavail >= 0);
  });
});
