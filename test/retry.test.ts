/**
 * `--retries N` bounds the attempts of every registry request to N, the first
 * included, however many layers could retry it: counted at a fault-injecting
 * proxy in front of a real registry, through the real CLI.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type Fault, type RunningProxy } from './helpers/proxy.js';
import { buildTestImages, skopeoCopy, skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';

let work: string;
let src: RunningRegistry;
let bundle: string;
/** The layer only app-one has. */
let layer: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-retry-'));
  src = await startRegistry();
  const set = await buildTestImages(join(work, 'layout'), { layerBytes: 64 * 1024 });
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/ns/app-one:1.0`);
  const manifest = JSON.parse((await skopeoInspectRaw(`docker://${src.host}/ns/app-one:1.0`)).toString()) as { layers: { digest: string }[] };
  layer = manifest.layers[1]!.digest;
  await writeFile(join(work, 'bundle.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${src.host}/ns/app-one:1.0\n`);
  let r = await runBundle(['keygen', '--out', join(work, 'site')]);
  assert.equal(r.code, 0, r.stderr);
  bundle = join(work, 'one.airgap');
  r = await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', bundle, '--sign-key', join(work, 'site.key')]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await src?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

async function withProxy(target: string, fault: Fault, body: (p: RunningProxy) => Promise<void>): Promise<void> {
  const p = await startProxy(target, { faults: [fault] });
  try {
    await body(p);
  } finally {
    await p.stop();
  }
}

describe('--retries bounds the attempts of a request', () => {
  for (const [kind, retries] of [['drop', 3], [503, 2]] as const) {
    it(`push: every upload of one blob fails (${kind}): exactly ${retries} PUTs of it reach the registry, and the error names the request`, async () => {
      const dst = await startRegistry();
      try {
        const isUpload = (r: { method: string; url: string }): boolean => r.method === 'PUT' && r.url.includes(encodeURIComponent(layer));
        await withProxy(dst.host, { match: isUpload, times: 1000, kind }, async (p) => {
          const r = await runBundle([
            'push', bundle, '--to', `${p.host}/m`, '--key', join(work, 'site.pub'), '--out-dir', join(work, `out-${kind}`),
            '--retries', String(retries),
          ]);
          assert.equal(r.code, 1, r.stdout + r.stderr);
          assert.equal(p.requests.filter(isUpload).length, retries);
          const hex = layer.slice(7);
          assert.match(
            r.stdout,
            new RegExp(`FAILED .*: PUT http://${p.host.replace(/\./g, '\\.')}/v2/m/ns/app-one/blobs/uploads/\\S+\\?digest=sha256%3A${hex} failed: .*\\(after ${retries} attempts\\)`),
          );
          assertNoStack(r);
        });
      } finally {
        await dst.stop();
      }
    });
  }

  it('create: every GET of one blob is dropped: exactly 3 GETs of it reach the registry with --retries 3, and the error names the request', async () => {
    const isGet = (r: { method: string; path: string }): boolean => r.method === 'GET' && r.path.endsWith(`/blobs/${layer}`);
    await withProxy(src.host, { match: isGet, times: 1000, kind: 'drop' }, async (p) => {
      const cfg = join(work, 'via-proxy.yaml');
      await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${p.host}/ns/app-one:1.0\n`);
      const r = await runBundle(['create', '-c', cfg, '-o', join(work, 'never.airgap'), '--retries', '3']);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.equal(p.requests.filter(isGet).length, 3);
      assert.match(r.stderr, new RegExp(`error: GET http://${p.host.replace(/\./g, '\\.')}/v2/ns/app-one/blobs/${layer} failed: .*\\(after 3 attempts\\)`));
      assertNoStack(r);
    });
  });

  it('create: a download that breaks off half-way resumes and the bundle is complete', async () => {
    const isGet = (r: { method: string; path: string }): boolean => r.method === 'GET' && r.path.endsWith(`/blobs/${layer}`);
    await withProxy(src.host, { match: isGet, times: 1, kind: 'truncate' }, async (p) => {
      const cfg = join(work, 'resume.yaml');
      await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${p.host}/ns/app-one:1.0\n`);
      const out = join(work, 'resumed.airgap');
      const r = await runBundle(['create', '-c', cfg, '-o', out, '--retries', '2']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const gets = p.requests.filter(isGet);
      assert.equal(gets.length, 2);
      assert.match(gets[1]!.range ?? '', /^bytes=[1-9]\d*-$/);
      const vi = await runBundle(['verify', out, '--json']);
      assert.equal(vi.code, 0, vi.stdout + vi.stderr);
    });
  });

  it('--help says what --retries counts', async () => {
    for (const cmd of ['create', 'push']) {
      const r = await runBundle([cmd, '--help']);
      assert.equal(r.code, 0);
      assert.match(r.stdout.replace(/\s+/g, ' '), /--retries <n> attempts per registry request, the first included/);
    }
  });
});

describe('create --concurrency', () => {
  it('bounds the blob downloads in flight: with 1 they never overlap at the proxy, with 6 they do', async () => {
    const help = await runBundle(['create', '--help']);
    assert.match(help.stdout.replace(/\s+/g, ' '), /--concurrency <n> +downloads in flight at once/);
    const isBlobGet = (r: { method: string; path: string }): boolean => r.method === 'GET' && r.path.includes('/blobs/');
    for (const n of [1, 6]) {
      // Each blob download is held a moment at the proxy, so parallel downloads overlap there.
      await withProxy(src.host, { match: isBlobGet, times: 1000, kind: 'delay', delayMs: 150 }, async (p) => {
        const cfg = join(work, `conc-${n}.yaml`);
        await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${p.host}/ns/app-one:1.0\n`);
        const r = await runBundle(['create', '-c', cfg, '-o', join(work, `conc-${n}.airgap`), '--concurrency', String(n)]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        const gets = p.requests.filter(isBlobGet).sort((a, b) => a.arrived - b.arrived);
        assert.ok(gets.length >= 3, 'the config and two layers');
        const overlapped = gets.some((g, i) => i > 0 && gets[i - 1]!.done! > g.arrived);
        assert.equal(overlapped, n > 1, `--concurrency ${n}: downloads ${overlapped ? 'overlapped' : 'never overlapped'}`);
      });
    }
  });
});
