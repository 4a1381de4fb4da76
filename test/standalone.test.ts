/**
 * The standalone executable (pkg.config.json, `npm run package`): it runs every
 * command on a host with no Node.js and no node_modules, from a folder holding
 * nothing but itself, and carries itself inside a signed bundle.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { buildTestImages, skopeoCopy, skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, ROOT, runBundle, runProgram, type RunResult } from './helpers/cli.js';

const run = promisify(execFile);
const BUILT = join(ROOT, 'dist', 'standalone', 'bundle');

let work: string;
let host: string; // a folder holding nothing but the executable
let exe: string;
let emptyPath: string; // PATH with no node (nor anything else)
let home: string;
let src: RunningRegistry;
let dst: RunningRegistry;

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Run the executable with no node on PATH, from its own folder, with nothing inherited but a scratch HOME. */
function runExe(args: string[]): Promise<RunResult> {
  return runProgram(exe, args, { cwd: host, env: { PATH: emptyPath, HOME: home, CI: 'true' } });
}

before(async () => {
  // .ci/run builds it before the tests (npm run package); build it here when run alone.
  if (!existsSync(BUILT)) await run(process.execPath, [join(ROOT, 'dist', 'src', 'package-standalone.js')], { cwd: ROOT });
  work = await mkdtemp(join(tmpdir(), 'bundle-standalone-'));
  host = join(work, 'host');
  emptyPath = join(work, 'empty-path');
  home = join(work, 'home');
  for (const d of [host, emptyPath, home]) await mkdir(d);
  exe = join(host, 'bundle');
  await copyFile(BUILT, exe);
  await run('chmod', ['755', exe]);
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  const set = await buildTestImages(join(work, 'layout'));
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/ns/app-one:1.0`);
  await skopeoCopy(set.layoutDir, 'multi', `${src.host}/ns/multi:latest`);
  await writeFile(
    join(work, 'bundle.yaml'),
    ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'images:', `  - ${src.host}/ns/app-one:1.0`, `  - ${src.host}/ns/multi:latest`, ''].join('\n'),
  );
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('standalone executable', () => {
  it('finds no node on its PATH and nothing beside it', async () => {
    assert.deepEqual(await readdir(host), ['bundle']);
    await assert.rejects(run('node', ['--version'], { env: { PATH: emptyPath } }), /ENOENT/);
  });

  it('names its version, the formats it reads and writes, and its own sha256', async () => {
    const own = sha256(await readFile(exe));
    for (const args of [['version'], ['--version']]) {
      const r = await runExe(args);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^airgap-bundle \d+\.\d+\.\d+/);
      assert.match(r.stdout, /format: writes 1\.\d+, reads 1\.x/);
      assert.match(r.stdout, new RegExp(`sha256: ${own}`));
    }
    const j = JSON.parse((await runExe(['version', '--json'])).stdout);
    assert.equal(j.standalone, true);
    assert.equal(j.executable.sha256, own);
  });

  it('creates, verifies and pushes to a real registry; carries itself, and extract-tool gives back the same bytes', async () => {
    let r = await runExe(['keygen', '--out', join(work, 'site')]);
    assert.equal(r.code, 0, r.stderr);
    const bundle = join(work, 'july.airgap');
    r = await runExe(['create', '-c', join(work, 'bundle.yaml'), '-o', bundle, '--sign-key', join(work, 'site.key'), '--include-tool']);
    assert.equal(r.code, 0, r.stderr);
    assertNoStack(r);
    const own = sha256(await readFile(exe));
    assert.match(r.stdout, new RegExp(`sha256 ${own}`), 'create prints the sha256 of the executable it carries');

    r = await runExe(['verify', bundle, '--key', join(work, 'site.pub')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // stock tools see the executable as one more blob of the layout
    const listing = (await run('sh', ['-c', `zstd -dc '${bundle}' | tar t`], { maxBuffer: 1 << 20 })).stdout;
    assert.ok(listing.split('\n').includes(`blobs/sha256/${own}`), 'the executable is the member blobs/sha256/<its sha256>');

    r = await runExe(['push', bundle, '--to', `${dst.host}/mirror`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'out')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const ref of ['ns/app-one:1.0', 'ns/multi:latest']) {
      const [a, b] = await Promise.all([skopeoInspectRaw(`docker://${src.host}/${ref}`), skopeoInspectRaw(`docker://${dst.host}/mirror/${ref}`)]);
      assert.ok(a.equals(b), `${ref} lands byte for byte`);
    }

    // extract-tool, from the executable and from the Node.js build
    const fromExe = join(work, 'from-exe');
    r = await runExe(['extract-tool', bundle, '-o', fromExe, '--key', join(work, 'site.pub')]);
    assert.equal(r.code, 0, r.stderr);
    const fromNode = join(work, 'from-node');
    const rn = await runBundle(['extract-tool', bundle, '-o', fromNode, '--key', join(work, 'site.pub')]);
    assert.equal(rn.code, 0, rn.stderr);
    for (const f of [fromExe, fromNode]) assert.equal(sha256(await readFile(f)), own, `${f} is the same executable`);
    // the extracted copy runs
    const again = await run(fromNode, ['version', '--json'], { env: { PATH: emptyPath, HOME: home } });
    assert.equal(JSON.parse(again.stdout).executable.sha256, own);

    // refused: another key, no key, an altered executable
    const other = join(work, 'other');
    assert.equal((await runExe(['keygen', '--out', other])).code, 0);
    r = await runExe(['extract-tool', bundle, '-o', join(work, 'x1'), '--key', `${other}.pub`]);
    assert.equal(r.code, 1, r.stdout);
    assert.ok(!existsSync(join(work, 'x1')));
    r = await runExe(['extract-tool', bundle, '-o', join(work, 'x2')]);
    assert.equal(r.code, 2);
    const tampered = join(work, 'tampered.airgap');
    await copyFile(bundle, tampered);
    // the executable is most of the file: flip a byte in the middle, inside its frames
    const fh = await open(tampered, 'r+');
    const { size } = await fh.stat();
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, Math.floor(size / 2));
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, Math.floor(size / 2));
    await fh.close();
    r = await runBundle(['extract-tool', tampered, '-o', join(work, 'x3'), '--key', join(work, 'site.pub')]);
    assert.notEqual(r.code, 0, 'an altered executable is refused');
    assertNoStack(r);
    assert.ok(!existsSync(join(work, 'x3')), 'nothing is left under the output name');
    assert.deepEqual((await readdir(work)).filter((n) => n.includes('.partial-')), []);
  });

  it('a bundle without the executable says so in one line', async () => {
    const cfg = join(work, 'small.yaml');
    await writeFile(cfg, ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'images:', `  - ${src.host}/ns/app-one:1.0`, ''].join('\n'));
    const b = join(work, 'small.airgap');
    let r = await runExe(['create', '-c', cfg, '-o', b]);
    assert.equal(r.code, 0, r.stderr);
    r = await runExe(['extract-tool', b, '-o', join(work, 'none'), '--insecure-skip-signature']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /carries no executable/);
    assertNoStack(r);
  });
});
