/**
 * Bundles in volumes: verify, inspect and push read the volumes where they lie
 * (beside each other or on several disks), and a missing, truncated or altered
 * volume is named by number. The volumes are cut with coreutils' split, an
 * independent witness of what "a plain slice of the file" means.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, readdir, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { buildTestImages, skopeoCopy, skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';

const run = promisify(execFile);
const VOLUME = 5 * 1024 * 1024;

let work: string;
let src: RunningRegistry;
let dst: RunningRegistry;
let single: string;
let pub: string;

/** Cut `file` into `dir/<name>.001, .002, ...` of VOLUME bytes with split(1); returns their paths. */
async function splitInto(file: string, dir: string, name: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  await run('split', ['-b', String(VOLUME), '-a', '3', '--numeric-suffixes=1', file, join(dir, `${name}.`)]);
  return (await readdir(dir)).filter((n) => n.startsWith(`${name}.`)).sort().map((n) => join(dir, n));
}

async function flipByte(file: string, at: number): Promise<void> {
  const fh = await open(file, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] = b[0]! ^ 0xff;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-volumes-'));
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  const set = await buildTestImages(join(work, 'layout'), { layerBytes: 6 << 20 });
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/ns/app-one:1.0`);
  await skopeoCopy(set.layoutDir, 'app-two', `${src.host}/ns/app-two:2.0`);
  await skopeoCopy(set.layoutDir, 'multi', `${src.host}/ns/multi:latest`);
  await writeFile(
    join(work, 'bundle.yaml'),
    ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'images:', `  - ${src.host}/ns/app-one:1.0`, `  - ${src.host}/ns/app-two:2.0`, `  - ${src.host}/ns/multi:latest`, ''].join('\n'),
  );
  assert.equal((await runBundle(['keygen', '--out', join(work, 'site')])).code, 0);
  pub = join(work, 'site.pub');
  single = join(work, 'july.airgap');
  const r = await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', single, '--sign-key', join(work, 'site.key')], { env: { SOURCE_DATE_EPOCH: '1700000000' } });
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('bundles in volumes', () => {
  it('create --volume-size writes volumes of at most that size whose concatenation is the single-file bundle, byte for byte', async () => {
    const dir = join(work, 'made');
    await mkdir(dir);
    const stem = join(dir, 'july.airgap');
    const r = await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', stem, '--sign-key', join(work, 'site.key'), '--volume-size', '5MiB', '--json'], {
      env: { SOURCE_DATE_EPOCH: '1700000000' },
    });
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { volumes: string[] };
    const names = (await readdir(dir)).sort();
    assert.deepEqual(names, report.volumes.map((v) => v.split('/').pop()).sort(), 'nothing but the volumes is left in the folder');
    assert.ok(names.length >= 3 && names.every((n, i) => n === `july.airgap.${String(i + 1).padStart(3, '0')}`), names.join(', '));
    const parts = await Promise.all(names.map((n) => readFile(join(dir, n))));
    for (const p of parts.slice(0, -1)) assert.equal(p.length, VOLUME, 'every volume but the last is full');
    assert.ok(parts.at(-1)!.length <= VOLUME);
    assert.ok(Buffer.concat(parts).equals(await readFile(single)), 'cat of the volumes is the single-file bundle');
    // stock tools read the joined volumes
    const { stdout } = await run('sh', ['-c', `cat '${dir}'/july.airgap.0* | zstd -dc | tar t`], { maxBuffer: 1 << 20 });
    assert.ok(stdout.split('\n').includes('index.json'));
    const v = await runBundle(['verify', join(dir, names[1]!), '--key', pub]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    // --force replaces the set; a smaller set leaves no stale volume behind
    const again = await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', stem, '--sign-key', join(work, 'site.key'), '--volume-size', '8MiB', '--force']);
    assert.equal(again.code, 0, again.stderr);
    const after = (await readdir(dir)).sort();
    assert.ok(after.length < names.length, after.join(', '));
    assert.equal((await runBundle(['verify', stem, '--key', pub])).code, 0);
  });

  it('verify, inspect and push read the volumes where they lie, from any one of them', async () => {
    const vols = await splitInto(single, join(work, 'whole'), 'july.airgap');
    assert.ok(vols.length >= 3, `${vols.length} volumes`);
    let r = await runBundle(['verify', vols[0]!, '--key', pub]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    r = await runBundle(['inspect', vols[1]!, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).images.length, 3);
    // naming the set by its stem works too
    r = await runBundle(['verify', join(work, 'whole', 'july.airgap'), '--key', pub]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    r = await runBundle(['push', vols.at(-1)!, '--to', `${dst.host}/vol`, '--key', pub, '--out-dir', join(work, 'out')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const ref of ['ns/app-one:1.0', 'ns/app-two:2.0', 'ns/multi:latest']) {
      const [a, b] = await Promise.all([skopeoInspectRaw(`docker://${src.host}/${ref}`), skopeoInspectRaw(`docker://${dst.host}/vol/${ref}`)]);
      assert.ok(a.equals(b), `${ref} pushed from volumes lands byte for byte`);
    }
  });

  it('volumes on several disks: --volumes-dir finds them; without it the missing numbers are named', async () => {
    const vols = await splitInto(single, join(work, 'disk1'), 'july.airgap');
    await mkdir(join(work, 'disk2'));
    const moved = vols.slice(1, -1); // every volume but the first and the last
    for (const v of moved) await rename(v, join(work, 'disk2', v.split('/').pop()!));
    let r = await runBundle(['verify', vols[0]!, '--key', pub, '--volumes-dir', join(work, 'disk2')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    r = await runBundle(['verify', vols[0]!, '--key', pub]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assertNoStack(r);
    const numbers = moved.map((_, i) => i + 2);
    const names = numbers.map((n) => `july\\.airgap\\.${String(n).padStart(3, '0')}`);
    assert.match(r.stderr, new RegExp(`volumes? ${numbers.join(', ')} of july\\.airgap (is|are) missing \\(${names.join(', ')}\\)`));
  });

  it('a truncated volume is named by number', async () => {
    const vols = await splitInto(single, join(work, 'short'), 'july.airgap');
    await truncate(vols[1]!, VOLUME - 4096);
    const r = await runBundle(['verify', vols[0]!, '--key', pub]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assertNoStack(r);
    assert.match(r.stdout + r.stderr, /volume 2 \(.*july\.airgap\.002\) is \d+ bytes, but the volumes before the last hold 5242880/);
  });

  it('a missing last volume is named as what may be missing', async () => {
    const vols = await splitInto(single, join(work, 'end'), 'july.airgap');
    await rm(vols.at(-1)!);
    const r = await runBundle(['verify', vols[0]!, '--key', pub]);
    assert.notEqual(r.code, 0);
    assertNoStack(r);
    assert.match(r.stderr, new RegExp(`the last volume found is .*july\\.airgap\\.${String(vols.length - 1).padStart(3, '0')}: a later volume may be missing`));
  });

  it('an altered volume is named by number, with the images it hurts', async () => {
    const vols = await splitInto(single, join(work, 'bad'), 'july.airgap');
    await flipByte(vols[1]!, Math.floor(VOLUME / 2));
    const r = await runBundle(['verify', vols[0]!, '--key', pub]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assertNoStack(r);
    assert.match(r.stdout, /volume 2 \(.*july\.airgap\.002\)/);
    // Which blob lies in volume 2 depends on the layout (members are in digest order): it names the image(s) that need it.
    assert.match(r.stdout, /needed by: .*ns\/(app-one|app-two|multi)/);
  });
});
