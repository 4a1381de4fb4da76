/**
 * `bundle serve`: a registry straight out of the .airgap file, checked with
 * real clients (skopeo, curl) against what the source registry (a real Docker
 * Distribution) served for the same images.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startRegistry, selfSignedCert, type RunningRegistry } from './helpers/registry.js';
import { buildTestImages, LayoutBuilder, pseudoRandom, skopeoCopy, skopeoInspectRaw, type TestImageSet } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { startServe, type RunningServe } from './helpers/serve.js';
import { createSignedBundle } from './helpers/bundles.js';
import { flipByteAfter } from './helpers/tamper.js';

const run = promisify(execFile);

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

let work: string;
let src: RunningRegistry;
let set: TestImageSet;
let bundle: string;
let serve: RunningServe;
/** `ns/app-one:1.0` -> raw manifest at the source registry */
const sourceRaw: Record<string, Buffer> = {};
let appOneDigest: string;
let referrerDigest: string;

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-serve-'));
  src = await startRegistry();
  set = await buildTestImages(join(work, 'layout'));
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/ns/app-one:1.0`);
  await skopeoCopy(set.layoutDir, 'app-two', `${src.host}/ns/app-two:2.0`, ['--format', 'v2s2']);
  await skopeoCopy(set.layoutDir, 'multi', `${src.host}/ns/multi:latest`);
  for (const ref of ['ns/app-one:1.0', 'ns/app-two:2.0', 'ns/multi:latest']) sourceRaw[ref] = await skopeoInspectRaw(`docker://${src.host}/${ref}`);
  appOneDigest = sha256(sourceRaw['ns/app-one:1.0']!);
  // A cosign signature in its tag scheme next to app-one: create carries it.
  const sig = await new LayoutBuilder(join(work, 'sig')).init();
  const sigImage = await sig.image([await sig.blob(Buffer.from('{"critical":{}}'), 'application/vnd.dev.cosign.simplesigning.v1+json')], undefined, 'sig');
  sig.tag('sig', sigImage);
  await sig.save();
  await skopeoCopy(join(work, 'sig'), 'sig', `${src.host}/ns/app-one:sha256-${appOneDigest.slice(7)}.sig`);
  // An OCI 1.1 artifact whose subject is app-one, from an OCI layout.
  const art = await new LayoutBuilder(join(work, 'artifact')).init();
  const empty = await art.blob(Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
  const sbom = await art.blob(Buffer.from('{"spdxVersion":"SPDX-2.3"}'), 'application/spdx+json');
  const artifact = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/spdx+json',
      config: empty,
      layers: [sbom],
      subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: appOneDigest, size: sourceRaw['ns/app-one:1.0']!.length },
      annotations: { 'org.example.kind': 'sbom' },
    }),
  );
  const artBlob = await art.blob(artifact, 'application/vnd.oci.image.manifest.v1+json');
  referrerDigest = artBlob.digest;
  art.tag(`${src.host}/ns/app-one:sbom`, artBlob);
  await art.save();
  bundle = await createSignedBundle(work, [
    'images:',
    `  - ${src.host}/ns/app-one:1.0`,
    `  - ${src.host}/ns/app-two:2.0`,
    `  - ${src.host}/ns/multi:latest`,
    'ociLayouts:',
    `  - path: ${join(work, 'artifact')}`,
  ]);
  serve = await startServe([bundle, '--key', join(work, 'site.pub')]);
});

after(async () => {
  await serve?.stop();
  await src?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('bundle serve: the Distribution API straight from the file', () => {
  it('skopeo copy --all gets byte-identical manifests and every platform of a multi-arch image', async () => {
    for (const [ref, raw] of Object.entries(sourceRaw)) {
      const served = await skopeoInspectRaw(`docker://${serve.host}/${ref}`);
      assert.ok(served.equals(raw), `${ref}: served manifest differs from the source registry's`);
      const dir = join(work, `copy-${ref.replace(/[/:]/g, '_')}`);
      await run('skopeo', ['copy', '--quiet', '--all', '--src-tls-verify=false', `docker://${serve.host}/${ref}`, `oci:${dir}:x`]);
      const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
      // An OCI layout cannot hold a Docker v2s2 manifest, so skopeo converts that one; OCI ones land as they are.
      if (JSON.parse(raw.toString()).mediaType !== 'application/vnd.docker.distribution.manifest.v2+json') {
        assert.equal(index.manifests[0]!.digest, sha256(raw), `${ref}: skopeo stored the same top manifest`);
      }
      const parsed = JSON.parse(raw.toString()) as { manifests?: { digest: string }[] };
      const blobs = new Set(await readdir(join(dir, 'blobs', 'sha256')));
      for (const m of parsed.manifests ?? []) {
        const atSource = await skopeoInspectRaw(`docker://${src.host}/${ref.split(':')[0]}@${m.digest}`);
        const platform = await readFile(join(dir, 'blobs', 'sha256', m.digest.slice(7)));
        assert.ok(platform.equals(atSource), `platform manifest ${m.digest} copied byte for byte`);
        for (const l of (JSON.parse(platform.toString()) as { layers: { digest: string }[] }).layers) assert.ok(blobs.has(l.digest.slice(7)), `layer ${l.digest} of ${m.digest} copied`);
      }
      if (parsed.manifests) assert.ok(parsed.manifests.length >= 2, 'a multi-arch index');
    }
  });

  it('skopeo list-tags lists the tags, cosign signature included; _catalog and tags/list paginate with Link', async () => {
    const { stdout } = await run('skopeo', ['list-tags', '--tls-verify=false', `docker://${serve.host}/ns/app-one`]);
    const tags = (JSON.parse(stdout) as { Tags: string[] }).Tags.sort();
    assert.deepEqual(tags, ['1.0', 'sbom', `sha256-${appOneDigest.slice(7)}.sig`].sort());
    const all = (await (await fetch(`http://${serve.host}/v2/_catalog`)).json()) as { repositories: string[] };
    assert.deepEqual(all.repositories, ['ns/app-one', 'ns/app-two', 'ns/multi']);
    let next: string | undefined = '/v2/_catalog?n=2';
    const pages: string[][] = [];
    while (next) {
      const res: Response = await fetch(`http://${serve.host}${next}`);
      pages.push(((await res.json()) as { repositories: string[] }).repositories);
      next = /<([^>]+)>; rel="next"/.exec(res.headers.get('link') ?? '')?.[1];
    }
    assert.deepEqual(pages, [['ns/app-one', 'ns/app-two'], ['ns/multi']]);
    const res = await fetch(`http://${serve.host}/v2/ns/app-one/tags/list?n=1&last=1.0`);
    assert.deepEqual(((await res.json()) as { tags: string[] }).tags, ['sbom']);
    assert.match(res.headers.get('link') ?? '', /<\/v2\/ns\/app-one\/tags\/list\?n=1&last=sbom>; rel="next"/);
    assert.equal((await fetch(`http://${serve.host}/v2/_catalog?n=lots`)).status, 400);
    assert.equal((await fetch(`http://${serve.host}/v2/ns/nothing/tags/list`)).status, 404);
  });

  it('a range request returns the right bytes, before and after the blob is proven', async () => {
    const layer = await readFile(join(set.layoutDir, 'blobs', 'sha256', set.base.digest.slice(7)));
    const url = `http://${serve.host}/v2/ns/app-two/blobs/${set.base.digest}`;
    for (const [range, from, to] of [
      ['bytes=1000-70000', 1000, 70001],
      ['bytes=5-', 5, layer.length],
      ['bytes=-300', layer.length - 300, layer.length],
      ['bytes=200000-299999999', 200000, layer.length],
    ] as const) {
      const { stdout } = await run('curl', ['-sf', '-r', range.slice(6), url], { encoding: 'buffer', maxBuffer: 64 << 20 });
      assert.ok(stdout.equals(layer.subarray(from, to)), `range ${range}`);
      const res = await fetch(url, { headers: { Range: range } });
      assert.equal(res.status, 206);
      assert.equal(res.headers.get('content-range'), `bytes ${from}-${to - 1}/${layer.length}`);
      assert.equal(Number(res.headers.get('content-length')), to - from);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(layer.subarray(from, to)));
    }
    const res = await fetch(url, { headers: { Range: `bytes=${layer.length}-` } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('content-range'), `bytes */${layer.length}`);
  });

  it('a containerd-style pull: HEAD the manifest, GET it by digest, GET every blob, headers right', async () => {
    const base = `http://${serve.host}/v2/ns/multi`;
    const head = await fetch(`${base}/manifests/latest`, { method: 'HEAD', headers: { Accept: ACCEPT } });
    assert.equal(head.status, 200);
    const raw = sourceRaw['ns/multi:latest']!;
    assert.equal(head.headers.get('docker-content-digest'), sha256(raw));
    assert.equal(head.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json');
    assert.equal(Number(head.headers.get('content-length')), raw.length);
    const index = await fetch(`${base}/manifests/${sha256(raw)}`, { headers: { Accept: ACCEPT } });
    assert.ok(Buffer.from(await index.arrayBuffer()).equals(raw));
    const amd = (JSON.parse(raw.toString()) as { manifests: { digest: string; mediaType: string; platform: { architecture: string } }[] }).manifests.find((m) => m.platform.architecture === 'amd64')!;
    const manifest = await fetch(`${base}/manifests/${amd.digest}`, { headers: { Accept: ACCEPT } });
    assert.equal(manifest.headers.get('content-type'), amd.mediaType);
    const body = Buffer.from(await manifest.arrayBuffer());
    assert.equal(sha256(body), amd.digest);
    const m = JSON.parse(body.toString()) as { config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
    for (const b of [m.config, ...m.layers]) {
      const h = await fetch(`${base}/blobs/${b.digest}`, { method: 'HEAD' });
      assert.equal(h.status, 200);
      assert.equal(Number(h.headers.get('content-length')), b.size);
      assert.equal(h.headers.get('docker-content-digest'), b.digest);
      const g = await fetch(`${base}/blobs/${b.digest}`);
      assert.equal(sha256(Buffer.from(await g.arrayBuffer())), b.digest);
    }
    // A blob of another repository is not linked here, as in Distribution.
    const other = (JSON.parse(sourceRaw['ns/app-one:1.0']!.toString()) as { config: { digest: string } }).config.digest;
    const miss = await fetch(`${base}/blobs/${other}`);
    assert.equal(miss.status, 404);
    assert.equal(((await miss.json()) as { errors: { code: string }[] }).errors[0]!.code, 'BLOB_UNKNOWN');
    const unknown = await fetch(`${base}/manifests/nope`, { headers: { Accept: ACCEPT } });
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { errors: { code: string }[] }).errors[0]!.code, 'MANIFEST_UNKNOWN');
  });

  it('the referrers API lists the carried cosign signature and the artifact whose subject is the image', async () => {
    const res = await fetch(`http://${serve.host}/v2/ns/app-one/referrers/${appOneDigest}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json');
    const index = (await res.json()) as { manifests: { digest: string; artifactType?: string; annotations?: Record<string, string> }[] };
    const sigRaw = await skopeoInspectRaw(`docker://${src.host}/ns/app-one:sha256-${appOneDigest.slice(7)}.sig`);
    assert.deepEqual(index.manifests.map((m) => m.digest).sort(), [sha256(sigRaw), referrerDigest].sort());
    const sbom = index.manifests.find((m) => m.digest === referrerDigest)!;
    assert.equal(sbom.artifactType, 'application/spdx+json');
    assert.deepEqual(sbom.annotations, { 'org.example.kind': 'sbom' });
    const filtered = await fetch(`http://${serve.host}/v2/ns/app-one/referrers/${appOneDigest}?artifactType=${encodeURIComponent('application/spdx+json')}`);
    assert.equal(filtered.headers.get('oci-filters-applied'), 'artifactType');
    assert.deepEqual(((await filtered.json()) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest), [referrerDigest]);
    const none = (await (await fetch(`http://${serve.host}/v2/ns/app-two/referrers/${appOneDigest}`)).json()) as { manifests: unknown[] };
    assert.deepEqual(none.manifests, []);
  });

  it('writes are answered with UNSUPPORTED, and skopeo cannot push into it', async () => {
    for (const [method, path] of [
      ['PUT', '/v2/ns/app-one/manifests/evil'],
      ['POST', '/v2/ns/app-one/blobs/uploads/'],
      ['PATCH', '/v2/ns/app-one/blobs/uploads/123'],
      ['DELETE', `/v2/ns/app-one/manifests/${appOneDigest}`],
    ] as const) {
      const res = await fetch(`http://${serve.host}${path}`, { method, body: method === 'DELETE' ? undefined : '{}' });
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.equal(((await res.json()) as { errors: { code: string }[] }).errors[0]!.code, 'UNSUPPORTED');
    }
    await assert.rejects(skopeoCopy(set.layoutDir, 'app-two', `${serve.host}/ns/app-one:evil`));
    assert.equal((await fetch(`http://${serve.host}/v2/ns/app-one/manifests/evil`)).status, 404);
  });

  it('logs one line per request', async () => {
    const marker = `log-${Date.now()}`;
    await fetch(`http://${serve.host}/v2/ns/app-one/tags/list?${marker}`);
    await fetch(`http://${serve.host}/v2/ns/app-one/manifests/nope?${marker}`);
    await new Promise((r) => setTimeout(r, 100));
    const lines = serve.output().split('\n').filter((l) => l.includes(marker));
    assert.equal(lines.length, 2, lines.join('\n'));
    assert.match(lines[0]!, /^\S+Z 127\.0\.0\.1 "GET \/v2\/ns\/app-one\/tags\/list\?log-\d+" 200 \d+ \d+ms$/);
    assert.match(lines[1]!, /"GET \/v2\/ns\/app-one\/manifests\/nope\?log-\d+" 404 /);
  });
});

describe('bundle serve: trust, integrity, options', () => {
  it('refuses a bundle without --key, or signed by another key; --insecure-skip-signature serves it with a warning', async () => {
    let r = await runBundle(['serve', bundle, '--listen', '127.0.0.1:0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /serve needs --key PUB/);
    r = await runBundle(['serve', bundle, '--listen', '127.0.0.1:0', '--key', join(work, 'other.pub')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refusing to serve .*not among the trusted keys/);
    assertNoStack(r);
    const s = await startServe([bundle, '--insecure-skip-signature', '--log-format', 'json']);
    try {
      const first = JSON.parse(s.output().split('\n')[0]!) as { level: string; msg: string };
      assert.equal(first.level, 'warn');
      assert.match(first.msg, /insecure-skip-signature/);
      assert.equal((await fetch(`http://${s.host}/v2/ns/app-one/manifests/1.0`, { headers: { Accept: ACCEPT } })).status, 200);
      await new Promise((r) => setTimeout(r, 100));
      const lines = s.output().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      const req = lines.find((l) => l.msg === 'request')!;
      assert.equal(req.method, 'GET');
      assert.equal(req.path, '/v2/ns/app-one/manifests/1.0');
      assert.equal(req.status, 200);
      assert.equal(req.bytes, sourceRaw['ns/app-one:1.0']!.length);
    } finally {
      const end = await s.stop();
      assert.equal(end.code, 0);
    }
  });

  it('a blob that fails its digest is an error to the client and a line in the log, never its wrong bytes', async () => {
    const bad = join(work, 'bad.airgap');
    await copyFile(bundle, bad);
    const layer = await readFile(join(set.layoutDir, 'blobs', 'sha256', set.base.digest.slice(7)));
    // Flip a byte near the end of the shared base layer (stored raw in the file).
    await flipByteAfter(bad, layer.subarray(layer.length - 4096, layer.length - 4000), 50);
    const s = await startServe([bad, '--key', join(work, 'site.pub')]);
    try {
      const url = `http://${s.host}/v2/ns/app-one/blobs/${set.base.digest}`;
      // A range far from the flipped byte: still refused, the whole blob is proven first.
      const ranged = await run('curl', ['-s', '-r', '0-999', '-o', join(work, 'ranged'), '-w', '%{size_download}', url]).then(
        (x) => ({ code: 0, got: Number(x.stdout) }),
        (e: { code: number; stdout: string }) => ({ code: e.code, got: Number(e.stdout) }),
      );
      assert.notEqual(ranged.code, 0, 'curl saw the range transfer fail');
      assert.ok(ranged.got < 1000, `only ${ranged.got} of the 1000 bytes of the range were sent`);
      const whole = await run('curl', ['-sf', '-o', join(work, 'whole'), '-w', '%{size_download}', url]).then(
        (x) => ({ code: 0, got: Number(x.stdout) }),
        (e: { code: number; stdout: string }) => ({ code: e.code, got: Number(e.stdout) }),
      );
      assert.notEqual(whole.code, 0);
      assert.equal(whole.got, 0, 'once known bad, the blob is refused before any byte');
      const again = await fetch(url);
      assert.equal(again.status, 500);
      await assert.rejects(run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${s.host}/ns/app-one:1.0`, `oci:${join(work, 'bad-copy')}:x`]));
      await new Promise((r) => setTimeout(r, 100));
      assert.match(s.output(), /"GET \/v2\/ns\/app-one\/blobs\/sha256:[0-9a-f]+" 206 \d+ \d+ms error: digest mismatch for blob/);
      // The other images are still served.
      assert.ok((await skopeoInspectRaw(`docker://${s.host}/ns/multi:latest`)).equals(sourceRaw['ns/multi:latest']!));
    } finally {
      await s.stop();
    }
  });

  it('serves HTTPS with --tls-cert/--tls-key, repositories under --prefix', async () => {
    const cert = selfSignedCert(work);
    const s = await startServe([bundle, '--key', join(work, 'site.pub'), '--tls-cert', cert.certFile, '--tls-key', cert.keyFile, '--prefix', 'mirror/x']);
    try {
      assert.match(s.output(), new RegExp(`https://${s.host}/v2/`));
      const certDir = await mkdtemp(join(work, 'certs-'));
      await copyFile(cert.certFile, join(certDir, 'ca.crt'));
      const { stdout } = await run('skopeo', ['inspect', '--raw', '--cert-dir', certDir, `docker://${s.host}/mirror/x/ns/app-two:2.0`], { encoding: 'buffer' });
      assert.ok(stdout.equals(sourceRaw['ns/app-two:2.0']!));
      await assert.rejects(run('curl', ['-sf', `http://${s.host}/v2/`]), 'no plain HTTP on a TLS port');
    } finally {
      await s.stop();
    }
  });

  it('--keep-registry-host keeps the source host in the repository path, as push does', async () => {
    const s = await startServe([bundle, '--key', join(work, 'site.pub'), '--keep-registry-host']);
    try {
      const host = src.host.replace(':', '-');
      const all = (await (await fetch(`http://${s.host}/v2/_catalog`)).json()) as { repositories: string[] };
      assert.deepEqual(all.repositories, [`${host}/ns/app-one`, `${host}/ns/app-two`, `${host}/ns/multi`]);
      assert.ok((await skopeoInspectRaw(`docker://${s.host}/${host}/ns/app-two:2.0`)).equals(sourceRaw['ns/app-two:2.0']!));
    } finally {
      await s.stop();
    }
  });

  it('serves a bundle written in volumes, found beside the one named and in --volumes-dir', async () => {
    const whole = await readFile(bundle);
    const [a, b] = [join(work, 'disk1'), join(work, 'disk2')];
    await mkdir(a);
    await mkdir(b);
    const third = Math.ceil(whole.length / 3);
    await writeFile(join(a, 'july.airgap.001'), whole.subarray(0, third));
    await writeFile(join(a, 'july.airgap.002'), whole.subarray(third, 2 * third));
    await writeFile(join(b, 'july.airgap.003'), whole.subarray(2 * third));
    const s = await startServe([join(a, 'july.airgap.001'), '--volumes-dir', b, '--key', join(work, 'site.pub')]);
    try {
      for (const [ref, raw] of Object.entries(sourceRaw)) assert.ok((await skopeoInspectRaw(`docker://${s.host}/${ref}`)).equals(raw), ref);
      const dir = join(work, 'copy-from-volumes');
      await run('skopeo', ['copy', '--quiet', '--all', '--src-tls-verify=false', `docker://${s.host}/ns/multi:latest`, `oci:${dir}:x`]);
      const layer = await readFile(join(set.layoutDir, 'blobs', 'sha256', set.base.digest.slice(7)));
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`http://${s.host}/v2/ns/multi/blobs/${set.base.digest}`, { headers: { Range: 'bytes=100-200099' } });
        assert.equal(res.status, 206);
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(layer.subarray(100, 200100)), `range, ${i ? 'proven' : 'first'} read`);
      }
    } finally {
      await s.stop();
    }
  });

  it('--listen needs an address named for anything but loopback', async () => {
    const r = await runBundle(['serve', bundle, '--insecure-skip-signature', '--listen', ':5000']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /name the address to listen on/);
  });
});

describe('bundle serve: many clients, memory bounded, clean shutdown', () => {
  let file: string;
  let layer: { digest: string; size: number };

  before(async () => {
    const dir = join(work, 'big');
    const b = await new LayoutBuilder(dir).init();
    layer = await b.layer({ 'big.bin': pseudoRandom('big', 48 * 1024 * 1024) });
    const image = await b.image([layer as Parameters<typeof b.image>[0][number]]);
    b.tag('example.com/big/layer:1', image);
    await b.save();
    await writeFile(join(work, 'big.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nociLayouts:\n  - path: ${dir}\n`);
    file = join(work, 'big.airgap');
    const r = await runBundle(['create', '-c', join(work, 'big.yaml'), '-o', file, '--sign-key', join(work, 'site.key')]);
    assert.equal(r.code, 0, r.stderr);
    await rm(dir, { recursive: true });
  });

  it('50 concurrent downloads of a large layer all get the right digest; peak RSS stays under 200 MB', async () => {
    const s = await startServe([file, '--key', join(work, 'site.pub')]);
    try {
      const url = `http://${s.host}/v2/big/layer/blobs/${layer.digest}`;
      const results = await Promise.all(
        Array.from({ length: 50 }, () => run('sh', ['-c', `curl -sf "$0" | sha256sum`, url]).then((x) => x.stdout.split(' ')[0])),
      );
      for (const d of results) assert.equal(`sha256:${d}`, layer.digest);
      const peak = s.peakRss();
      process.stderr.write(`# serve peak RSS after 50 concurrent downloads of a ${(layer.size / 1048576).toFixed(0)} MiB layer: ${(peak / 1048576).toFixed(1)} MiB\n`);
      assert.ok(peak < 200 * 1024 * 1024, `peak RSS ${(peak / 1048576).toFixed(1)} MiB`);
    } finally {
      await s.stop();
    }
  });

  it('SIGTERM lets a download in flight finish (its log line comes between shutting down and stopped), then exits 0', async () => {
    const s = await startServe([file, '--key', join(work, 'site.pub')]);
    const url = `http://${s.host}/v2/big/layer/blobs/${layer.digest}`;
    // Too slow a reader for the kernel's buffers to take the whole layer at once.
    const out = join(work, 'in-flight.bin');
    let finished = false;
    const download = run('curl', ['-sf', '--limit-rate', '16M', '-o', out, url]).finally(() => (finished = true));
    // SIGTERM once the first bytes have arrived: the download is under way.
    while (!finished && ((await stat(out).catch(() => undefined))?.size ?? 0) < 1024 * 1024) await new Promise((r) => setTimeout(r, 50));
    s.child.kill('SIGTERM');
    await download;
    assert.equal(sha256(await readFile(out)), layer.digest);
    await rm(out);
    const r = await s.result;
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const shutting = at(/SIGTERM: shutting down/);
    const served = at(/"GET \/v2\/big\/layer\/blobs\/sha256:[0-9a-f]+" 200 (\d+)/);
    const stopped = at(/ stopped/);
    assert.ok(shutting >= 0 && served > shutting && stopped > served, r.stdout);
    assert.match(lines[served]!, new RegExp(`" 200 ${layer.size} `), 'the whole layer was sent');
    await assert.rejects(fetch(`http://${s.host}/v2/`));
  });
});
