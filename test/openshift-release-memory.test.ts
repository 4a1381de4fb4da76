/**
 * A release payload whose release layer holds 300 MiB of incompressible data
 * before its two files: `bundle create` reads the files by streaming the layer
 * (gunzip + untar on the fly) and its peak RSS, measured by /usr/bin/time, stays
 * under 200 MB. The layer is generated as a stream, never held in memory.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { BIN, ROOT } from './helpers/cli.js';
import { buildPayload, seedComponents, skopeoCopyExact } from './helpers/openshift.js';

const BIG = 300 * 1024 * 1024;

let work: string;
let src: RunningRegistry;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-release-mem-'));
  src = await startRegistry();
});

after(async () => {
  await src?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Run the CLI under GNU time; returns the exit code, output and peak RSS in bytes. */
function timed(args: string[]): Promise<{ code: number; stdout: string; stderr: string; maxRss: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-v', process.execPath, BIN, ...args], { cwd: ROOT, env: { ...process.env, CI: 'true' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
      if (!m) return reject(new Error(`no RSS figure from /usr/bin/time: ${stderr}`));
      resolve({ code: code ?? -1, stdout, stderr, maxRss: Number(m[1]) * 1024 });
    });
  });
}

it('reads the two release files out of a 300 MiB layer with peak RSS under 200 MB', async () => {
  const components = await seedComponents(join(work, 'components'), src.host, 3, 'big');
  const payload = await buildPayload(join(work, 'payload'), { version: '4.16.0', components, bigBytes: BIG, tag: '4.16.0-x86_64' });
  const manifest = JSON.parse(await readFile(join(work, 'payload', 'blobs', 'sha256', payload.digest.slice(7)), 'utf8')) as { layers: { size: number }[] };
  const layerSizes = manifest.layers.map((l) => l.size);
  assert.ok(Math.max(...layerSizes) >= BIG, `the release layer is ${Math.max(...layerSizes)} bytes`);
  const ref = `${src.host}/openshift-release-dev/ocp-release:4.16.0-x86_64`;
  await skopeoCopyExact(join(work, 'payload'), '4.16.0-x86_64', ref);
  await rm(join(work, 'payload'), { recursive: true, force: true });
  const cfg = join(work, 'big.yaml');
  await writeFile(cfg, ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'releases:', `  - image: ${ref}`, '    signatureStore: none', ''].join('\n'));
  const out = join(work, 'big.airgap');
  const r = await timed(['create', '-c', cfg, '-o', out, '--json']);
  assert.equal(r.code, 0, r.stderr);
  // The files were read: all three components were found and carried.
  const summary = JSON.parse(r.stdout) as { images: number };
  assert.equal(summary.images, 4);
  assert.ok((await stat(out)).size > BIG, 'the big layer is in the bundle');
  assert.ok(r.maxRss < 200 * 1000 * 1000, `peak RSS ${(r.maxRss / 1e6).toFixed(1)} MB`);
  process.stderr.write(`# bundle create of a release with a ${BIG / 1024 / 1024} MiB layer: peak RSS ${(r.maxRss / 1e6).toFixed(1)} MB\n`);
});
