/**
 * Faults on the wire, injected by the proxy (test/helpers/proxy.ts) between the tool and a
 * real registry: connection resets, 500/502/503, 429 with Retry-After, stalls (headers sent,
 * then nothing; an upload no longer read) and bodies cut short, on downloads (create) and
 * uploads (push). With faults on a seeded 10 % of requests both finish and the result is
 * the one of a fault-free run: the same bundle bytes (same SOURCE_DATE_EPOCH), the same tags
 * and digests at the target (read from the registry's own API). Each kind is also injected
 * alone into a layer download and a blob upload. A registry that stays down stops both with
 * the failed request named and nothing left under the output name.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '../src/sign/keys.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { buildTestImages, layoutLayerDigests, skopeoCopy } from './helpers/images.js';
import { startProxy, type FaultKind, type RequestInfo, type RunningProxy } from './helpers/proxy.js';
import { startRegistry, targetState, type RunningRegistry } from './helpers/registry.js';

const EPOCH = '1767225600';
const KINDS: FaultKind[] = ['drop', 500, 502, 503, 429, 'stall', 'truncate'];
/** Stalls are noticed after this many seconds without a byte. */
const TIMEOUT = '2';

let work: string;
let reg: RunningRegistry;
let proxy: RunningProxy;
let config: string;
let key: { privatePath: string; publicPath: string };
let clean: Buffer;
let layers: Set<string>;
const REFS = ['app-one', 'app-two', 'multi'];

const isLayerGet = (r: RequestInfo) => r.method === 'GET' && layers.has(r.path.split('/').pop()!);
const isUpload = (r: RequestInfo) => r.method === 'PUT' && /\/blobs\/uploads\//.test(r.path);

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-wire-'));
  reg = await startRegistry();
  proxy = await startProxy(reg.host);
  const set = await buildTestImages(join(work, 'layout'), { layerBytes: 256 * 1024 });
  layers = await layoutLayerDigests(set.layoutDir);
  for (const ref of REFS) await skopeoCopy(set.layoutDir, ref, `${reg.host}/src/${ref}:1`);
  config = join(work, 'bundle.yaml');
  await writeFile(config, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n${REFS.map((r) => `  - ${proxy.host}/src/${r}:1\n`).join('')}`);
  key = await generateKeyPair(join(work, 'site'));
  const c = await create('clean.airgap');
  assert.equal(c.code, 0, c.stderr);
  clean = await readFile(join(work, 'clean.airgap'));
});

after(async () => {
  await proxy?.stop();
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function create(out: string, extra: string[] = []) {
  return runBundle(['create', '-c', config, '-o', join(work, out), '--sign-key', key.privatePath, '--timeout', TIMEOUT, ...extra], { env: { SOURCE_DATE_EPOCH: EPOCH } });
}

function push(prefix: string, extra: string[] = []) {
  return runBundle(['push', join(work, 'clean.airgap'), '--to', `${proxy.host}/${prefix}`, '--key', key.publicPath, '--out-dir', join(work, `${prefix}-out`), '--timeout', TIMEOUT, ...extra]);
}


const faulted = () => proxy.requests.filter((r) => r.fault !== undefined);

describe('faults on 10 % of requests', () => {
  it('create finishes, and writes the same bytes as a fault-free run', async (t) => {
    proxy.reset();
    proxy.setChaos({ seed: 101, rate: 0.1, kinds: KINDS });
    const c = await create('chaos.airgap');
    proxy.setChaos(undefined);
    assert.equal(c.code, 0, c.stdout + c.stderr);
    assertNoStack(c);
    const hit = faulted();
    t.diagnostic(`create: ${hit.length} of ${proxy.requests.length} requests faulted: ${hit.map((r) => `${r.fault} ${r.method}`).join(', ')}`);
    assert.ok(hit.length >= 2, `${hit.length} faults injected`);
    assert.ok((await readFile(join(work, 'chaos.airgap'))).equals(clean), 'the bundle is byte for byte the fault-free one');
  });

  it('push finishes, and the target holds the same tags and digests as after a fault-free push', async (t) => {
    proxy.reset();
    const p0 = await push('clean');
    assert.equal(p0.code, 0, p0.stderr);
    const expected = await targetState(reg.host, 'clean');
    proxy.reset();
    proxy.setChaos({ seed: 202, rate: 0.1, kinds: KINDS });
    const p = await push('chaos');
    proxy.setChaos(undefined);
    assert.equal(p.code, 0, p.stdout + p.stderr);
    assertNoStack(p);
    const hit = faulted();
    t.diagnostic(`push: ${hit.length} of ${proxy.requests.length} requests faulted: ${hit.map((r) => `${r.fault} ${r.method}`).join(', ')}`);
    assert.ok(hit.length >= 2, `${hit.length} faults injected`);
    assert.ok(expected.size >= 3);
    assert.deepEqual(await targetState(reg.host, 'chaos'), expected);
  });
});

describe('each kind alone', () => {
  for (const kind of KINDS) {
    it(`${kind} on a layer download (create) and on a blob upload (push): both finish, with the same result`, async () => {
      proxy.reset();
      proxy.addFault({ match: isLayerGet, times: 1, kind, retryAfter: '1' });
      const c = await create(`kind-${kind}.airgap`);
      assert.equal(c.code, 0, c.stdout + c.stderr);
      assert.equal(faulted().length, 1, 'the fault was injected');
      assert.ok((await readFile(join(work, `kind-${kind}.airgap`))).equals(clean));
      await rm(join(work, `kind-${kind}.airgap`));

      proxy.reset();
      proxy.addFault({ match: isUpload, times: 1, kind, retryAfter: '1' });
      const p = await push(`kind-${kind}`);
      assert.equal(p.code, 0, p.stdout + p.stderr);
      assert.equal(faulted().length, 1, 'the fault was injected');
      assert.equal((await targetState(reg.host, `kind-${kind}`)).size, (await targetState(reg.host, 'clean')).size);
      assert.deepEqual([...(await targetState(reg.host, `kind-${kind}`)).values()].sort(), [...(await targetState(reg.host, 'clean')).values()].sort());
    });
  }
});

describe('a registry that stays down', () => {
  it('create and push stop, naming the request that failed; nothing left under the output name', async () => {
    proxy.reset();
    proxy.setChaos({ seed: 1, rate: 1, kinds: [503] });
    const c = await create('down.airgap');
    const p = await push('down');
    proxy.setChaos(undefined);
    for (const [what, r] of [
      ['create', c],
      ['push', p],
    ] as const) {
      assert.equal(r.code, 1, `${what}: ${r.stdout}${r.stderr}`);
      const errors = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
      assert.equal(errors.length, 1, `${what}: ${r.stderr}`);
      // create lists every source it could not resolve, each with the request that failed.
      assert.match(r.stderr, new RegExp(`(GET|HEAD) http://${proxy.host.replace(/\./g, '\\.')}/v2/\\S* .*503`), what);
      assertNoStack(r);
    }
    assert.equal(existsSync(join(work, 'down.airgap')), false);
    assert.deepEqual((await readdir(work)).filter((f) => f.startsWith('down.airgap')), []);
    assert.equal(existsSync(join(work, 'down-out')), false);
    // Tried --retries times (5), not forever.
    assert.ok(proxy.requests.length <= 2 * 5 * 3, `${proxy.requests.length} requests`);
  });

  it('a registry nobody listens on: the same, at once', async () => {
    const closed = await startProxy(reg.host);
    const host = closed.host;
    await closed.stop();
    await writeFile(join(work, 'closed.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${host}/src/app-one:1\n`);
    const c = await runBundle(['create', '-c', join(work, 'closed.yaml'), '-o', join(work, 'closed.airgap'), '--retries', '2']);
    assert.equal(c.code, 1, c.stderr);
    assert.match(c.stderr, new RegExp(`error: .*${host.replace(/\./g, '\\.')}.*(refused|ECONNREFUSED)`, 'i'));
    assert.equal(existsSync(join(work, 'closed.airgap')), false);
    const p = await runBundle(['push', join(work, 'clean.airgap'), '--to', host, '--key', key.publicPath, '--retries', '2', '--out-dir', join(work, 'closed-out')]);
    assert.equal(p.code, 1, p.stderr);
    assert.match(p.stderr, new RegExp(`error: .*${host.replace(/\./g, '\\.')}.*(refused|ECONNREFUSED)`, 'i'));
    assertNoStack(c);
    assertNoStack(p);
  });

  it('--help says how long a registry that stays down can hold create and push', async () => {
    for (const cmd of ['create', 'push']) {
      const h = await runBundle([cmd, '--help']);
      assert.match(h.stdout, /--timeout <seconds>/);
      assert.match(h.stdout, /A registry that stays down or keeps failing: each request is tried --retries times/);
      assert.match(h.stdout, /gives up after about 4 s\s+of waiting plus up to --timeout/);
    }
  });
});
