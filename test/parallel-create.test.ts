/**
 * create downloads in parallel and in ranges into one planned file (issue 9):
 * the same inputs and SOURCE_DATE_EPOCH give the same bytes whatever the
 * concurrency (so whatever the arrival order); a registry that ignores Range
 * still works; a range that breaks off is requested again alone; Ctrl-C
 * mid-download leaves nothing. Requests are counted at a proxy in front of a
 * real registry; stock zstd, tar and skopeo read the result.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RunningProxy } from './helpers/proxy.js';
import { gzipSync } from 'node:zlib';
import { LayoutBuilder, pseudoRandom, tarLayer, type Blob } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { PART_FRAMES } from '../src/archive/raw-fill.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const EPOCH = '1700000000';

let work: string;
let src: RunningRegistry;
let big: Blob;
let plain: Blob;
/** The bundle made with --concurrency 1: the reference every other run must equal. */
let reference: Buffer;

function config(host: string): string {
  return `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${host}/par/big:1\n  - ${host}/par/small:1\n`;
}

async function create(host: string, name: string, extra: string[] = [], env: NodeJS.ProcessEnv = { SOURCE_DATE_EPOCH: EPOCH }): Promise<Buffer> {
  const cfg = join(work, `${name}.yaml`);
  await writeFile(cfg, config(host));
  const out = join(work, `${name}.airgap`);
  const r = await runBundle(['create', '-c', cfg, '-o', out, '--json', ...extra], { env });
  assert.equal(r.code, 0, r.stderr);
  const v = await runBundle(['verify', out, '--json']);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  return readFile(out);
}

/** Bytes two buffers share from their start. */
function commonPrefix(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * Bundles made through different proxy addresses name their images differently
 * (index.json, manifest), but every blob comes before those: the blob part of
 * the file must be byte-identical.
 */
async function assertSameBlobs(bytes: Buffer): Promise<void> {
  const tarOf = async (b: Buffer): Promise<Buffer> => {
    const f = join(work, `cmp-${Math.random().toString(36).slice(2)}.airgap`);
    await writeFile(f, b);
    const { stdout } = await run('bash', ['-c', `zstd -dc ${f} | base64 -w0`], { maxBuffer: 1 << 27 });
    return Buffer.from(stdout, 'base64');
  };
  const [mine, ref] = [await tarOf(bytes), await tarOf(reference)];
  const indexHeader = ref.indexOf(Buffer.from('index.json\0'));
  assert.ok(indexHeader > big.size + plain.size);
  assert.ok(commonPrefix(mine, ref) >= indexHeader, 'the tar differs before index.json');
  // In the file too: only the last few KiB (index.json, manifest, signature, seek table) differ.
  assert.ok(commonPrefix(bytes, reference) >= reference.length - 16 * 1024, `only the first ${commonPrefix(bytes, reference)} of ${reference.length} bytes are the same`);
}

const blobGets = (proxy: RunningProxy, b: Blob) => proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${b.digest}`));

async function uploadBlob(repo: string, digest: string, bytes: Buffer): Promise<void> {
  const start = await fetch(`http://${src.host}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  assert.equal(start.status, 202);
  const loc = new URL(start.headers.get('location')!, `http://${src.host}`);
  loc.searchParams.set('digest', digest);
  const put = await fetch(loc, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: new Uint8Array(bytes) });
  assert.equal(put.status, 201, await put.text());
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-par-'));
  src = await startRegistry();
  const b = await new LayoutBuilder(join(work, 'layout')).init();
  // 20 MiB of gzip: planned raw, fetched in 8 MiB ranges.
  const bigGz = gzipSync(pseudoRandom('big', 20 * MiB), { level: 0 });
  big = await b.blob(bigGz, 'application/vnd.oci.image.layer.v1.tar+gzip');
  // An uncompressed tar layer over the in-memory limit: streamed and compressed after the planned region.
  plain = await b.blob(await tarLayer({ 'etc/words': Buffer.alloc(3 * MiB, 'lorem ipsum dolor sit amet ') }), 'application/vnd.oci.image.layer.v1.tar');
  const small = await b.layer({ 'hello.txt': 'hello' });
  b.tag('big', await b.image([big, plain, small], undefined, 'big'));
  b.tag('small', await b.image([small], undefined, 'small'));
  await b.save();
  // Seeded with plain HTTP (skopeo would compress the uncompressed layer on the way).
  for (const [tag, repo] of [['big', 'par/big'], ['small', 'par/small']] as const) {
    const top = b.index.find((e) => e.annotations['org.opencontainers.image.ref.name'] === tag)!;
    const manifest = await readFile(join(work, 'layout', 'blobs', 'sha256', top.digest.slice(7)));
    const m = JSON.parse(manifest.toString('utf8')) as { config: Blob; layers: Blob[] };
    for (const d of [m.config, ...m.layers]) await uploadBlob(repo, d.digest, await readFile(join(work, 'layout', 'blobs', 'sha256', d.digest.slice(7))));
    const put = await fetch(`http://${src.host}/v2/${repo}/manifests/1`, { method: 'PUT', headers: { 'content-type': top.mediaType }, body: manifest });
    assert.equal(put.status, 201, await put.text());
  }
});

after(async () => {
  await src?.stop();
  if (work && !process.env['KEEP_TEST_DIR']) await rm(work, { recursive: true, force: true });
});

describe('parallel, ranged create', () => {
  it('the same inputs and SOURCE_DATE_EPOCH give a byte-identical bundle with --concurrency 1 and 16', async () => {
    const proxy = await startProxy(src.host);
    try {
      reference = await create(proxy.host, 'c1', ['--concurrency', '1']);
      proxy.reset();
      const c16 = await create(proxy.host, 'c16', ['--concurrency', '16']);
      // The big layer really came in several ranges at once, so arrival order differed.
      const gets = blobGets(proxy, big);
      assert.ok(gets.length >= 5 && gets.every((g) => g.range && g.status === 206), JSON.stringify(gets));
      assert.ok(c16.equals(reference), 'bundles differ');
      // SOURCE_DATE_EPOCH is the creation time: in the manifest and every tar mtime.
      const inspect = JSON.parse((await runBundle(['inspect', join(work, 'c16.airgap'), '--json'])).stdout);
      assert.equal(inspect.created, '2023-11-14T22:13:20Z');
      const { stdout: listing } = await run('bash', ['-o', 'pipefail', '-c', `zstd -dc ${join(work, 'c16.airgap')} | tar -tv --full-time`], { maxBuffer: 1 << 24 });
      assert.ok(listing.split('\n').filter(Boolean).every((l) => l.includes('2023-11-14 22:13:20')), listing);
      // A different time gives different bytes; the blobs are all there for stock tools.
      const later = await create(proxy.host, 'later', [], { SOURCE_DATE_EPOCH: String(Number(EPOCH) + 1) });
      assert.ok(!later.equals(reference));
      const dir = join(work, 'unpacked');
      await run('bash', ['-o', 'pipefail', '-c', `mkdir -p ${dir} && zstd -dc ${join(work, 'c16.airgap')} | tar x -C ${dir}`]);
      for (const b of [big, plain]) {
        const bytes = await readFile(join(dir, 'blobs', 'sha256', b.digest.slice(7)));
        assert.equal(`sha256:${createHash('sha256').update(bytes).digest('hex')}`, b.digest);
      }
      const { stdout } = await run('skopeo', ['inspect', '--raw', `oci:${dir}:${src.host.replace(src.host, proxy.host)}/par/big:1`]);
      assert.ok(JSON.parse(stdout).layers.some((l: { digest: string }) => l.digest === big.digest));
    } finally {
      await proxy.stop();
    }
  });

  it('progress: the copying summary ends with every byte of its total done, never more, and counts every image', async () => {
    // Both images, and the small one alone (where manifests and the config are most of the bytes).
    for (const [name, text, images] of [['progress', config(src.host), '2'], ['progress-small', `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${src.host}/par/small:1\n`, '1']] as const) {
      await checkProgress(name, text, images);
    }
  });

  async function checkProgress(name: string, text: string, images: string): Promise<void> {
    const cfg = join(work, `${name}.yaml`);
    await writeFile(cfg, text);
    const r = await runBundle(['create', '-c', cfg, '-o', join(work, `${name}.airgap`)], { env: { SOURCE_DATE_EPOCH: EPOCH, CI: 'true' } });
    assert.equal(r.code, 0, r.stderr);
    const line = r.stderr.split('\n').find((l) => l.startsWith('done: copying images'));
    assert.ok(line, r.stderr);
    const m = /(\d+)\/(\d+) items, ([\d.]+ \w+) of ([\d.]+ \w+)/.exec(line);
    assert.ok(m, line);
    assert.equal(m[1], m[2], line);
    assert.equal(m[2], images, line);
    assert.equal(m[3], m[4], line);
    // The total holds the layers (and the manifests and configs beside them).
    const [n, unit] = m[4]!.split(' ');
    assert.ok(Number(n) * 1024 ** ['B', 'KiB', 'MiB', 'GiB'].indexOf(unit!) >= (images === '2' ? (big.size + plain.size) * 0.99 : 1), line);
  }

  it('a registry that ignores Range still works: one request for the big layer, the same bundle', async () => {
    const proxy = await startProxy(src.host, { stripRange: true });
    try {
      const bytes = await create(proxy.host, 'norange');
      const gets = blobGets(proxy, big);
      assert.equal(gets.length, 1, JSON.stringify(gets));
      assert.equal(gets[0]!.status, 200);
      await assertSameBlobs(bytes);
    } finally {
      await proxy.stop();
    }
  });

  it('a range that breaks off half-way is requested again alone (from where it broke), and the bundle is right', async () => {
    const part = PART_FRAMES * MiB;
    const parts: string[] = [];
    for (let at = 0; at < big.size; at += part) parts.push(`bytes=${at}-${Math.min(big.size, at + part) - 1}`);
    const broken = parts[1]!;
    const proxy = await startProxy(src.host, {
      faults: [{ match: (r) => r.method === 'GET' && r.path.endsWith(`/blobs/${big.digest}`) && r.range === broken, times: 1, kind: 'truncate' }],
    });
    try {
      await assertSameBlobs(await create(proxy.host, 'retry', ['--concurrency', '16']));
      const ranges = blobGets(proxy, big).map((g) => g.range!);
      // Every part asked for once, plus one more request inside the part that broke, from where it broke.
      assert.equal(ranges.length, parts.length + 1, JSON.stringify(ranges));
      assert.deepEqual(ranges.filter((r) => parts.includes(r)).sort(), [...parts].sort());
      const extra = ranges.find((r) => !parts.includes(r))!;
      const [from, to] = /bytes=(\d+)-(\d+)/.exec(extra)!.slice(1).map(Number) as [number, number];
      assert.ok(from > part && from < 2 * part && to === 2 * part - 1, extra);
      // Nothing else was fetched twice.
      const others = proxy.requests.filter((r) => r.method === 'GET' && r.path.includes('/blobs/') && !r.path.endsWith(big.digest));
      assert.equal(new Set(others.map((r) => r.path)).size, others.length);
    } finally {
      await proxy.stop();
    }
  });

  it('a 429 with Retry-After holds back every request to that registry, not only the one that got it', async () => {
    const part = PART_FRAMES * MiB;
    const rangeOf = (i: number): string => `bytes=${i * part}-${Math.min(big.size, (i + 1) * part) - 1}`;
    const isBig = (r: { method: string; path: string }): boolean => r.method === 'GET' && r.path.endsWith(`/blobs/${big.digest}`);
    const proxy = await startProxy(src.host, {
      faults: [
        { match: (r) => isBig(r) && r.range === rangeOf(1), times: 1, kind: 429, retryAfter: '2' },
        // The part running beside it ends well after the 429: without a registry-wide pause, the next part would start then.
        { match: (r) => isBig(r) && r.range === rangeOf(2), times: 1, kind: 'delay', delayMs: 600 },
      ],
    });
    try {
      await assertSameBlobs(await create(proxy.host, '429', ['--concurrency', '2']));
      const told = proxy.requests.find((r) => r.status === 429)!;
      assert.ok(told?.doneAt, 'the 429 was sent');
      // Requests already on their way when the 429 went out may arrive just after it; none may start in the pause.
      const later = proxy.requests.filter((r) => r.arrivedAt > told.doneAt! + 300);
      assert.ok(later.length > 0);
      const early = later.filter((r) => r.arrivedAt < told.doneAt! + 1900);
      assert.deepEqual(early.map((r) => `${r.method} ${r.path} ${r.range ?? ''} +${r.arrivedAt - told.doneAt!} ms`), []);
    } finally {
      await proxy.stop();
    }
  });

  it('--max-connections-per-registry bounds the requests to one registry in flight at once', async () => {
    const isBlobGet = (r: { method: string; path: string }): boolean => r.method === 'GET' && r.path.includes('/blobs/');
    // Every blob request is held a moment, so requests that run at once overlap at the proxy.
    const proxy = await startProxy(src.host, { faults: [{ match: isBlobGet, times: 1000, kind: 'delay', delayMs: 100 }] });
    try {
      await assertSameBlobs(await create(proxy.host, 'maxconn', ['--concurrency', '16', '--max-connections-per-registry', '2']));
      const gets = proxy.requests.filter(isBlobGet);
      const events = gets.flatMap((g) => [{ at: g.arrived, d: 1 }, { at: g.done!, d: -1 }]).sort((a, b) => a.at - b.at);
      let open = 0;
      let most = 0;
      for (const e of events) most = Math.max(most, (open += e.d));
      assert.equal(most, 2, `at most ${most} blob requests were in flight at once`);
    } finally {
      await proxy.stop();
    }
  });

  it('Ctrl-C while ranges are downloading leaves no file', async () => {
    const proxy = await startProxy(src.host, {
      faults: [{ match: (r) => r.method === 'GET' && r.path.endsWith(`/blobs/${big.digest}`), times: 100, kind: 'delay', delayMs: 5000 }],
    });
    try {
      const dir = await mkdtemp(join(tmpdir(), 'bundle-par-sigint-'));
      const cfg = join(dir, 'c.yaml');
      await writeFile(cfg, config(proxy.host));
      const r = await runBundle(['create', '-c', cfg, '-o', join(dir, 'x.airgap')], {
        onSpawn: (child) => {
          const poll = setInterval(async () => {
            // Interrupt once a range of the big layer has been asked for (the partial file exists by then).
            if (blobGets(proxy, big).length > 0 && (await readdir(dir)).some((f) => f.includes('.partial-'))) {
              clearInterval(poll);
              child.kill('SIGINT');
            }
          }, 50);
          child.on('close', () => clearInterval(poll));
        },
      });
      assert.equal(r.code, 130, r.stderr);
      assertNoStack(r);
      assert.deepEqual((await readdir(dir)).sort(), ['c.yaml']);
      await rm(dir, { recursive: true, force: true });
    } finally {
      await proxy.stop();
    }
  });
});
