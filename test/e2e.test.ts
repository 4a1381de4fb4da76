/**
 * The whole journey against real parts: a real Docker Distribution registry
 * seeded by skopeo, the real CLI, and skopeo, zstd and tar as witnesses.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RecordedRequest } from './helpers/proxy.js';
import { buildTestImages, LayoutBuilder, pseudoRandom, skopeoCopy, skopeoInspectRaw, type TestImageSet } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { flipByteAfter, rewriteControlMember } from './helpers/tamper.js';

const run = promisify(execFile);

let work: string;
let src: RunningRegistry;
let set: TestImageSet;
let bundle: string;
/** source reference -> digest seen at the source */
const sourceRefs: Record<string, string> = {};

/**
 * Push a bundle whose blob `bad` has a flipped byte through the counting proxy into a fresh
 * registry, and check from the requests (not from what the registry kept) that no upload of
 * `bad` completed, that it was mounted nowhere and that no manifest for which `needsBad` holds
 * was sent. Returns the attempted uploads of `bad`.
 */
async function pushFlippedThroughProxy(
  file: string,
  bad: { digest: string; size: number },
  needsBad: (path: string) => boolean,
  repos: string[],
): Promise<RecordedRequest[]> {
  const dst = await startRegistry();
  const proxy = await startProxy(dst.host);
  try {
    const p = await runBundle(['push', file, '--to', `${proxy.host}/mirror`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'flip-out')]);
    assert.equal(p.code, 1, p.stdout + p.stderr);
    assertNoStack(p);
    for (const repo of repos) assert.match(p.stdout, new RegExp(`FAILED \\S*${repo}`), `${repo} is reported as failed`);
    const param = (url: string, name: string) => new URL(url, 'http://proxy').searchParams.get(name);
    // The tool asked for the blob in every repository that uses it...
    for (const repo of repos) assert.ok(proxy.count('HEAD', `/v2/mirror/${repo}/blobs/${bad.digest}`) >= 1, `${repo} was tried`);
    // ...and no upload of it finished: a PUT ?digest= that was sent stopped short of the blob's size.
    const uploads = proxy.requests.filter((r) => r.method === 'PUT' && param(r.url, 'digest') === bad.digest);
    for (const u of uploads) {
      assert.ok(u.bodyBytes < bad.size, `an upload of the bad blob sent all ${u.bodyBytes} of ${bad.size} bytes: ${u.path}`);
      assert.equal(u.bodyComplete, false, `an upload of the bad blob finished its body: ${u.path}`);
      assert.ok(![201, 202, 204].includes(u.status), `an upload of the bad blob succeeded (${u.status}): ${u.path}`);
    }
    assert.equal(proxy.count('PATCH', /./), 0, 'no chunk went out in a PATCH either');
    const mounts = proxy.requests.filter((r) => r.method === 'POST' && param(r.url, 'mount') === bad.digest && r.status === 201);
    assert.deepEqual(mounts, [], 'nor was it mounted into another repository');
    const manifests = proxy.requests.filter((r) => r.method === 'PUT' && r.path.includes('/manifests/') && needsBad(r.path));
    assert.deepEqual(manifests.map((r) => r.path), [], 'no manifest that needs the bad blob was sent');
    return uploads;
  } finally {
    await proxy.stop();
    await dst.stop();
  }
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-e2e-'));
  src = await startRegistry();
  set = await buildTestImages(join(work, 'layout'));
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/ns/app-one:1.0`);
  await skopeoCopy(set.layoutDir, 'app-two', `${src.host}/ns/app-two:2.0`, ['--format', 'v2s2']);
  await skopeoCopy(set.layoutDir, 'multi', `${src.host}/ns/multi:latest`);
  for (const ref of ['ns/app-one:1.0', 'ns/app-two:2.0', 'ns/multi:latest']) {
    const raw = await skopeoInspectRaw(`docker://${src.host}/${ref}`);
    sourceRefs[`${src.host}/${ref}`] = `sha256:${createHash('sha256').update(raw).digest('hex')}`;
  }
  const pinned = `${src.host}/ns/app-one@${sourceRefs[`${src.host}/ns/app-one:1.0`]}`;
  await writeFile(
    join(work, 'bundle.yaml'),
    [
      'apiVersion: airgap.bundle/v1alpha1',
      'kind: BundleConfig',
      'images:',
      `  - ${src.host}/ns/app-one:1.0`,
      `  - ${src.host}/ns/app-two:2.0`,
      `  - name: ${src.host}/ns/multi:latest`,
      `  - ${pinned}`,
      '',
    ].join('\n'),
  );
  let r = await runBundle(['keygen', '--out', join(work, 'site')]);
  assert.equal(r.code, 0, r.stderr);
  r = await runBundle(['keygen', '--out', join(work, 'other')]);
  assert.equal(r.code, 0, r.stderr);
  bundle = join(work, 'july.airgap');
  r = await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', bundle, '--sign-key', join(work, 'site.key')]);
  assert.equal(r.code, 0, `create failed: ${r.stderr}`);
});

after(async () => {
  await src?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('create, verify, push', () => {
  it('verify accepts the bundle signed by the trusted key', async () => {
    const r = await runBundle(['verify', bundle, '--key', join(work, 'site.pub'), '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, true);
    assert.equal(report.signature.trusted, true);
    assert.equal(report.images, 4);
  });

  it('verify without a key checks integrity and says loudly that no signature was checked', async () => {
    const r = await runBundle(['verify', bundle]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stderr, /NOBODY'S SIGNATURE WAS CHECKED/);
  });

  it('push lands byte-identical manifests for every image and platform', async () => {
    const dst = await startRegistry();
    try {
      const outDir = join(work, 'push-out');
      const r = await runBundle(['push', bundle, '--to', `${dst.host}/mirror`, '--key', join(work, 'site.pub'), '--out-dir', outDir, '--json']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const summary = JSON.parse(r.stdout);
      assert.equal(summary.pushed, 4);
      // The base layer is uploaded once and mounted into the other repositories that use it.
      assert.ok(summary.stats.blobsMounted >= 2, JSON.stringify(summary.stats));
      for (const [ref, digest] of Object.entries(sourceRefs)) {
        const path = ref.slice(src.host.length + 1);
        const srcRaw = await skopeoInspectRaw(`docker://${ref}`);
        const dstRaw = await skopeoInspectRaw(`docker://${dst.host}/mirror/${path}`);
        assert.ok(dstRaw.equals(srcRaw), `manifest of ${path} differs at the destination`);
        const dstByDigest = await skopeoInspectRaw(`docker://${dst.host}/mirror/${path.split(':')[0]}@${digest}`);
        assert.ok(dstByDigest.equals(srcRaw));
        const parsed = JSON.parse(srcRaw.toString());
        for (const m of parsed.manifests ?? []) {
          const a = await skopeoInspectRaw(`docker://${src.host}/${path.split(':')[0]}@${m.digest}`);
          const b = await skopeoInspectRaw(`docker://${dst.host}/mirror/${path.split(':')[0]}@${m.digest}`);
          assert.ok(a.equals(b), `platform manifest ${m.digest} differs`);
        }
      }
      // The digest-pinned image also got a sha256-<hex> tag so the registry keeps it.
      const pinnedDigest = sourceRefs[`${src.host}/ns/app-one:1.0`]!;
      const tagged = await skopeoInspectRaw(`docker://${dst.host}/mirror/ns/app-one:sha256-${pinnedDigest.slice(7)}`);
      assert.equal(tagged.toString(), (await skopeoInspectRaw(`docker://${src.host}/ns/app-one:1.0`)).toString());

      const mapping = await readFile(join(outDir, 'mapping.txt'), 'utf8');
      assert.match(mapping, new RegExp(`${src.host}/ns/app-one@${pinnedDigest}=${dst.host}/mirror/ns/app-one:`));
      const idms = parseYaml(await readFile(join(outDir, 'idms.yaml'), 'utf8'));
      assert.equal(idms.kind, 'ImageDigestMirrorSet');
      const sources = idms.spec.imageDigestMirrors.map((m: { source: string }) => m.source);
      assert.ok(sources.includes(`${src.host}/ns/multi`));
      for (const f of ['itms.yaml', 'icsp.yaml', 'registries.conf']) await readFile(join(outDir, f));

      // Acceptance 4: a second push uploads no blob.
      const again = await runBundle(['push', bundle, '--to', `${dst.host}/mirror`, '--key', join(work, 'site.pub'), '--out-dir', outDir, '--json']);
      assert.equal(again.code, 0, again.stderr);
      const s2 = JSON.parse(again.stdout);
      assert.equal(s2.stats.blobsWritten, 0);
      assert.equal(s2.stats.imagesSkipped, 4, 'every tag already points at its digest');
      // --recheck walks every blob, and still uploads none.
      const recheck = await runBundle(['push', bundle, '--to', `${dst.host}/mirror`, '--key', join(work, 'site.pub'), '--out-dir', outDir, '--json', '--recheck']);
      assert.equal(recheck.code, 0, recheck.stderr);
      const s3 = JSON.parse(recheck.stdout);
      assert.equal(s3.stats.blobsWritten, 0);
      assert.equal(s3.stats.manifestsWritten, 0);
      assert.ok(s3.stats.blobsSkipped >= 10, JSON.stringify(s3.stats));
    } finally {
      await dst.stop();
    }
  });

  it('stores the shared base layer once, and stock zstd + tar give an OCI layout skopeo reads', async () => {
    const { stdout } = await run('sh', ['-c', `zstd -dc '${bundle}' | tar t`], { maxBuffer: 16 << 20 });
    const names = stdout.trim().split('\n');
    assert.ok(names.includes('oci-layout'));
    assert.ok(names.includes('index.json'));
    const baseName = `blobs/sha256/${set.base.digest.slice(7)}`;
    assert.equal(names.filter((n) => n === baseName).length, 1, 'the base layer is stored exactly once');
    const dir = join(work, 'extracted');
    await mkdir(dir);
    await run('sh', ['-c', `zstd -dc '${bundle}' | tar x -C '${dir}'`]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
    assert.equal(index.manifests.length, 4);
    let docker = 0;
    const onDisk = await readdir(join(dir, 'blobs', 'sha256'));
    for (const m of index.manifests) {
      const ref = m.annotations['org.opencontainers.image.ref.name'];
      if (m.mediaType.startsWith('application/vnd.docker.')) {
        // What the README and spec §8 state: a Docker schema 2 image is listed under its own media type
        // (its manifest kept byte for byte), which skopeo's oci: transport skips; its bytes are all there.
        docker++;
        const raw = await readFile(join(dir, 'blobs', 'sha256', m.digest.slice(7)));
        assert.equal(`sha256:${createHash('sha256').update(raw).digest('hex')}`, m.digest);
        const parsed = JSON.parse(raw.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
        for (const d of [parsed.config, ...parsed.layers]) assert.ok(onDisk.includes(d.digest.slice(7)), `${d.digest} is in blobs/`);
        await assert.rejects(run('skopeo', ['inspect', '--raw', `oci:${dir}:${ref}`]), (err: { stderr?: string }) => {
          assert.match(String(err.stderr), /no descriptor found for reference/);
          return true;
        });
        continue;
      }
      const { stdout: raw } = await run('skopeo', ['inspect', '--raw', `oci:${dir}:${ref}`], { maxBuffer: 16 << 20 });
      assert.equal(`sha256:${createHash('sha256').update(raw).digest('hex')}`, m.digest);
      await run('skopeo', ['inspect', `oci:${dir}:${ref}`]);
    }
    assert.equal(docker, 1, 'app-two was bundled as the Docker schema 2 image it is at the source');
    const blobs = await readdir(join(dir, 'blobs', 'sha256'));
    assert.ok(blobs.length >= 10);
  });
});

describe('platforms', () => {
  it('one platform of an index keeps that platform\'s manifest, byte for byte, under the tag', async () => {
    const cfg = join(work, 'arm.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - name: ${src.host}/ns/multi:latest\n    platforms: [linux/arm64]\n`);
    const file = join(work, 'arm.airgap');
    const c = await runBundle(['create', '-c', cfg, '-o', file, '--sign-key', join(work, 'site.key'), '--json']);
    assert.equal(c.code, 0, c.stderr);
    const inspect = JSON.parse((await runBundle(['inspect', file, '--json'])).stdout);
    const index = JSON.parse((await skopeoInspectRaw(`docker://${src.host}/ns/multi:latest`)).toString());
    const arm = index.manifests.find((m: { platform: { architecture: string } }) => m.platform.architecture === 'arm64');
    assert.equal(inspect.images[0].digest, arm.digest);
    assert.deepEqual(inspect.images[0].platforms, ['linux/arm64/v8']);
    assert.equal(inspect.images[0].filteredFrom, sourceRefs[`${src.host}/ns/multi:latest`]);
    const dst = await startRegistry();
    try {
      const p = await runBundle(['push', file, '--to', dst.host, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'arm-out')]);
      assert.equal(p.code, 0, p.stdout + p.stderr);
      const pushed = await skopeoInspectRaw(`docker://${dst.host}/ns/multi:latest`);
      assert.ok(pushed.equals(await skopeoInspectRaw(`docker://${src.host}/ns/multi@${arm.digest}`)));
    } finally {
      await dst.stop();
    }
  });

  it('every platform of an index keeps the index itself', async () => {
    const cfg = join(work, 'both.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - name: ${src.host}/ns/multi:latest\n    platforms: [linux/amd64, linux/arm64, linux/ppc64le]\n`);
    const file = join(work, 'both.airgap');
    assert.equal((await runBundle(['create', '-c', cfg, '-o', file])).code, 0);
    const inspect = JSON.parse((await runBundle(['inspect', file, '--json'])).stdout);
    assert.equal(inspect.images[0].digest, sourceRefs[`${src.host}/ns/multi:latest`]);
    assert.equal(inspect.images[0].filteredFrom, undefined);
  });

  it('two platforms of three: a new index lists exactly those two, and their manifests land byte for byte', async () => {
    const cfg = join(work, 'two-of-three.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - name: ${src.host}/ns/multi:latest\n    platforms: [linux/ppc64le, linux/amd64]\n`);
    const file = join(work, 'two-of-three.airgap');
    const c = await runBundle(['create', '-c', cfg, '-o', file, '--sign-key', join(work, 'site.key')]);
    assert.equal(c.code, 0, c.stderr);
    const sourceIndex = JSON.parse((await skopeoInspectRaw(`docker://${src.host}/ns/multi:latest`)).toString());
    assert.equal(sourceIndex.manifests.length, 3);
    const kept = sourceIndex.manifests.filter((m: { platform: { architecture: string } }) => m.platform.architecture !== 'arm64');
    const inspect = JSON.parse((await runBundle(['inspect', file, '--json'])).stdout);
    assert.equal(inspect.images[0].filteredFrom, sourceRefs[`${src.host}/ns/multi:latest`]);
    assert.deepEqual([...inspect.images[0].platforms].sort(), ['linux/amd64', 'linux/ppc64le']);
    const dst = await startRegistry();
    try {
      const p = await runBundle(['push', file, '--to', dst.host, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'two-of-three-out')]);
      assert.equal(p.code, 0, p.stdout + p.stderr);
      const pushedRaw = await skopeoInspectRaw(`docker://${dst.host}/ns/multi:latest`);
      assert.equal(`sha256:${createHash('sha256').update(pushedRaw).digest('hex')}`, inspect.images[0].digest);
      const pushed = JSON.parse(pushedRaw.toString());
      assert.equal(pushed.mediaType, sourceIndex.mediaType);
      // Exactly the two descriptors of the source index, in its order, untouched.
      assert.deepEqual(pushed.manifests, kept);
      for (const m of kept) {
        const a = await skopeoInspectRaw(`docker://${src.host}/ns/multi@${m.digest}`);
        const b = await skopeoInspectRaw(`docker://${dst.host}/ns/multi@${m.digest}`);
        assert.ok(a.equals(b), `platform manifest ${m.platform.architecture} differs`);
      }
      const arm = sourceIndex.manifests.find((m: { platform: { architecture: string } }) => m.platform.architecture === 'arm64');
      await assert.rejects(skopeoInspectRaw(`docker://${dst.host}/ns/multi@${arm.digest}`), 'the platform left out is not pushed');
    } finally {
      await dst.stop();
    }
  });

  it('a platform the index does not have is a clear error', async () => {
    const cfg = join(work, 'none.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - name: ${src.host}/ns/multi:latest\n    platforms: [linux/s390x]\n`);
    const r = await runBundle(['create', '-c', cfg, '-o', join(work, 'none.airgap')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no platform linux\/s390x in the index \(it has linux\/amd64, linux\/arm64\/v8, linux\/ppc64le\)/);
    assertNoStack(r);
  });
});

describe('interrupted push', () => {
  it('a second run finishes the job and re-sends nothing that landed', async () => {
    const dst = await startRegistry();
    const proxy = await startProxy(dst.host);
    // app-one's own layer cannot be uploaded during the first run.
    const manifest = JSON.parse((await skopeoInspectRaw(`docker://${src.host}/ns/app-one:1.0`)).toString());
    const appLayer: string = manifest.layers[1].digest;
    const fault = { match: (r: { method: string; url: string }) => r.method === 'PUT' && r.url.includes(encodeURIComponent(appLayer)), times: 1000, kind: 'drop' as const };
    proxy.addFault(fault);
    const uploads = () => proxy.requests.filter((r) => r.method === 'PUT' && r.path.includes('/blobs/uploads/') && r.status === 201).length;
    try {
      const args = ['push', bundle, '--to', `${proxy.host}/m`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'resume-out'), '--retries', '1', '--json'];
      const first = await runBundle(args);
      assert.equal(first.code, 1, first.stderr);
      const s1 = JSON.parse(first.stdout);
      assert.equal(s1.pushed, 2, 'app-two and multi went through');
      assert.deepEqual(s1.failed.map((f: { source: string }) => f.source).sort(), [`${src.host}/ns/app-one:1.0`, `${src.host}/ns/app-one@${sourceRefs[`${src.host}/ns/app-one:1.0`]}`].sort());
      assert.ok(!JSON.stringify(s1).includes('Authorization'));
      const firstUploads = uploads();
      assert.ok(firstUploads >= 5, `first run uploaded ${firstUploads}`);
      fault.times = 0;
      proxy.reset();
      const second = await runBundle(args);
      assert.equal(second.code, 0, second.stdout + second.stderr);
      assert.equal(uploads(), 1, 'only the blob that was missing is sent');
      assert.equal(JSON.parse(second.stdout).stats.blobsWritten, 1);
      const srcRaw = await skopeoInspectRaw(`docker://${src.host}/ns/app-one:1.0`);
      assert.ok((await skopeoInspectRaw(`docker://${dst.host}/m/ns/app-one:1.0`)).equals(srcRaw));
    } finally {
      await proxy.stop();
      await dst.stop();
    }
  });
});

describe('tampering', () => {
  it('one flipped byte in a blob: verify exits 1 naming it and its images; push sends nothing bad', async () => {
    const copy = join(work, 'flipped.airgap');
    await copyFile(bundle, copy);
    // The base layer is gzip, so it is stored in raw frames: find its bytes in the file and flip one.
    const layer = await readFile(join(set.layoutDir, 'blobs', 'sha256', set.base.digest.slice(7)));
    await flipByteAfter(copy, layer.subarray(1000, 1064), 10);

    const r = await runBundle(['verify', copy, '--key', join(work, 'site.pub'), '--json']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    const problem = report.problems.find((p: { member?: string }) => p.member === `blobs/sha256/${set.base.digest.slice(7)}`);
    assert.ok(problem, `the flipped blob is named: ${r.stdout}`);
    assert.ok(problem.images.includes(`${src.host}/ns/app-one:1.0`));
    assert.ok(problem.images.includes(`${src.host}/ns/app-two:2.0`));
    const human = await runBundle(['verify', copy, '--key', join(work, 'site.pub')]);
    assert.match(human.stdout, new RegExp(set.base.digest.slice(7)));
    assertNoStack(human);

    // Push through the counting proxy: what matters is what the tool sent, not what the registry kept
    // (Distribution refuses a body whose digest is wrong whatever the client does).
    const multiIndex = JSON.parse(await readFile(join(set.layoutDir, 'blobs', 'sha256', set.images.multi!.digest.slice(7)), 'utf8')) as {
      manifests: { digest: string; platform: { architecture: string } }[];
    };
    const amd = multiIndex.manifests.find((m) => m.platform.architecture === 'amd64')!.digest;
    // Every repository that uses the base layer: app-one (tag and pinned digest), app-two, and multi's
    // index and amd64 manifest (its arm64 manifest does not need the base layer).
    const needsBase = (path: string): boolean =>
      /^\/v2\/mirror\/ns\/app-(one|two)\/manifests\//.test(path) ||
      ['latest', sourceRefs[`${src.host}/ns/multi:latest`], amd].some((ref) => path === `/v2/mirror/ns/multi/manifests/${ref}`);
    await pushFlippedThroughProxy(copy, { digest: set.base.digest, size: set.base.size }, needsBase, ['ns/app-one', 'ns/app-two', 'ns/multi']);
  });

  it('a flipped byte in a layer that streams in many pieces: its upload starts but never completes, in any repository', async () => {
    // 3 MiB of incompressible layer: stored in raw frames, read back as many pieces, so the upload's PUT
    // is under way (sending bytes) before the digest fails at the end; only the held-back last piece
    // keeps it from completing. Two images in two repositories share it.
    const dir = join(work, 'big-layout');
    const b = await new LayoutBuilder(dir).init();
    const gzipped = await b.layer({ 'big.bin': pseudoRandom('big-flip', 3 << 20) });
    b.tag('example.com/flip/app-a:1', await b.image([gzipped], undefined, 'a'));
    b.tag('example.com/flip/app-b:1', await b.image([gzipped, await b.layer({ 'b.txt': 'b\n' })], undefined, 'b'));
    await b.save();
    await writeFile(join(work, 'big.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nociLayouts:\n  - path: ${dir}\n`);
    const big = join(work, 'big-flip.airgap');
    const c = await runBundle(['create', '-c', join(work, 'big.yaml'), '-o', big, '--sign-key', join(work, 'site.key')]);
    assert.equal(c.code, 0, c.stderr);
    const layer = await readFile(join(dir, 'blobs', 'sha256', gzipped.digest.slice(7)));
    await flipByteAfter(big, layer.subarray(1000, 1064), 10);
    const attempts = await pushFlippedThroughProxy(big, gzipped, (path) => /^\/v2\/mirror\/flip\/app-[ab]\/manifests\//.test(path), ['flip/app-a', 'flip/app-b']);
    assert.ok(attempts.length >= 1, 'the tool did start uploading the blob: the hold-back is what stopped it');
    assert.ok(attempts.some((u) => u.bodyBytes > 0), 'bytes of it were on their way when the digest failed');
  });

  it('a bundle signed by another key is refused by verify and push', async () => {
    const v = await runBundle(['verify', bundle, '--key', join(work, 'other.pub')]);
    assert.equal(v.code, 1);
    assert.match(v.stdout, /not among the trusted keys/);
    const p = await runBundle(['push', bundle, '--to', '127.0.0.1:9', '--key', join(work, 'other.pub')]);
    assert.equal(p.code, 1);
    assert.match(p.stderr, /refusing to push/);
    assertNoStack(p);
  });

  it('an edited manifest is refused by verify and push', async () => {
    const copy = join(work, 'edited.airgap');
    await copyFile(bundle, copy);
    const one = sourceRefs[`${src.host}/ns/app-one:1.0`]!;
    const two = sourceRefs[`${src.host}/ns/app-two:2.0`]!;
    // Point app-one's tag at app-two's content: same length, well-formed, a lie.
    await rewriteControlMember(copy, 'manifest', (m) => {
      const text = m.toString();
      assert.ok(text.includes(one));
      return Buffer.from(text.replace(`"digest": "${one}"`, `"digest": "${two}"`).replace(`"digest":"${one}"`, `"digest":"${two}"`));
    });
    const unchecked = await runBundle(['inspect', copy, '--json']);
    assert.equal(unchecked.code, 0, unchecked.stderr);
    assert.notEqual(JSON.stringify(JSON.parse(unchecked.stdout).images).indexOf(two), -1);
    const v = await runBundle(['verify', copy, '--key', join(work, 'site.pub')]);
    assert.equal(v.code, 1, v.stdout + v.stderr);
    assert.match(v.stdout, /edited after signing|does not match/);
    const p = await runBundle(['push', copy, '--to', '127.0.0.1:9', '--key', join(work, 'site.pub')]);
    assert.equal(p.code, 1);
    assert.match(p.stderr, /refusing to push/);
    assertNoStack(p);
  });

  it('push refuses an unsigned bundle unless told --insecure-skip-signature', async () => {
    const cfg = join(work, 'unsigned.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${src.host}/ns/app-two:2.0\n`);
    const unsigned = join(work, 'unsigned.airgap');
    const c = await runBundle(['create', '-c', cfg, '-o', unsigned]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stderr, /unsigned/);
    const dst = await startRegistry();
    try {
      const out = ['--out-dir', join(work, 'unsigned-out')];
      // A trusted key does not make an unsigned bundle trusted.
      const refused = await runBundle(['push', unsigned, '--to', dst.host, '--key', join(work, 'site.pub'), ...out]);
      assert.equal(refused.code, 1, refused.stdout + refused.stderr);
      assert.match(refused.stderr, /refusing to push .*the bundle is not signed/);
      assertNoStack(refused);
      // No key at all: a usage error that names both ways forward.
      const noKey = await runBundle(['push', unsigned, '--to', dst.host, ...out]);
      assert.equal(noKey.code, 2, noKey.stdout + noKey.stderr);
      assert.match(noKey.stderr, /--key/);
      assert.match(noKey.stderr, /--insecure-skip-signature/);
      await assert.rejects(skopeoInspectRaw(`docker://${dst.host}/ns/app-two:2.0`), 'nothing was pushed');
      // The flag pushes it, and says loudly that nobody's signature was checked.
      const forced = await runBundle(['push', unsigned, '--to', dst.host, '--insecure-skip-signature', ...out]);
      assert.equal(forced.code, 0, forced.stdout + forced.stderr);
      assert.match(forced.stderr, /warning: --insecure-skip-signature/);
      const srcRaw = await skopeoInspectRaw(`docker://${src.host}/ns/app-two:2.0`);
      assert.ok((await skopeoInspectRaw(`docker://${dst.host}/ns/app-two:2.0`)).equals(srcRaw));
    } finally {
      await dst.stop();
    }
  });
});

describe('digests', () => {
  it('a registry that serves a corrupted blob: create fails naming it, and writes no file', async () => {
    const proxy = await startProxy(src.host, {
      faults: [{ match: (r) => r.method === 'GET' && r.path.endsWith(`/blobs/${set.base.digest}`), times: 1, kind: 'corrupt' }],
    });
    try {
      const cfg = join(work, 'corrupt.yaml');
      await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${proxy.host}/ns/app-one:1.0\n`);
      const out = join(work, 'corrupt.airgap');
      const r = await runBundle(['create', '-c', cfg, '-o', out]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /digest mismatch/);
      assert.match(r.stderr, new RegExp(set.base.digest));
      assertNoStack(r);
      await assert.rejects(readFile(out));
      const leftovers = (await readdir(work)).filter((f) => f.startsWith('corrupt.airgap'));
      assert.deepEqual(leftovers, [], 'no partial file is left behind');
    } finally {
      await proxy.stop();
    }
  });
});

/** A cosign-style companion (a manifest whose payload names `subject`) at `repo:sha256-<hex>.<suffix>`; returns its bytes. */
async function pushCompanion(repo: string, subject: string, suffix: 'sig' | 'att' | 'sbom'): Promise<Buffer> {
  const dir = join(work, `companion-${subject.slice(7, 19)}-${suffix}`);
  const b = await new LayoutBuilder(dir).init();
  const payload = await b.blob(Buffer.from(JSON.stringify({ critical: { image: { 'docker-manifest-digest': subject } }, suffix })), 'application/vnd.dev.cosign.simplesigning.v1+json');
  const cfg = await b.blob(Buffer.from('{}'), 'application/vnd.oci.image.config.v1+json');
  const m = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: cfg, layers: [{ ...payload, annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ==' } }] };
  b.tag('companion', await b.blob(Buffer.from(JSON.stringify(m)), m.mediaType));
  await b.save();
  const ref = `${repo}:sha256-${subject.slice(7)}.${suffix}`;
  await skopeoCopy(dir, 'companion', ref);
  return skopeoInspectRaw(`docker://${ref}`);
}

describe('cosign signatures', () => {
  it('travel with their image: signature, attestation tags land next to it at the destination', async () => {
    await skopeoCopy(set.layoutDir, 'app-two', `${src.host}/ns/signed:1`);
    const signedDigest = `sha256:${createHash('sha256').update(await skopeoInspectRaw(`docker://${src.host}/ns/signed:1`)).digest('hex')}`;
    const sigTag = `sha256-${signedDigest.slice(7)}.sig`;
    await pushCompanion(`${src.host}/ns/signed`, signedDigest, 'sig');
    await pushCompanion(`${src.host}/ns/signed`, signedDigest, 'att');

    const cfgFile = join(work, 'signed.yaml');
    await writeFile(cfgFile, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${src.host}/ns/signed:1\n`);
    const file = join(work, 'signed.airgap');
    const c = await runBundle(['create', '-c', cfgFile, '-o', file, '--sign-key', join(work, 'site.key')]);
    assert.equal(c.code, 0, c.stderr);
    const inspect = JSON.parse((await runBundle(['inspect', file, '--json'])).stdout);
    assert.deepEqual(inspect.images.map((i: { source: string }) => i.source).sort(), [
      `${src.host}/ns/signed:1`,
      `${src.host}/ns/signed:sha256-${signedDigest.slice(7)}.att`,
      `${src.host}/ns/signed:${sigTag}`,
    ]);
    const dst = await startRegistry();
    try {
      const p = await runBundle(['push', file, '--to', `${dst.host}/m`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'signed-out')]);
      assert.equal(p.code, 0, p.stdout + p.stderr);
      const srcSig = await skopeoInspectRaw(`docker://${src.host}/ns/signed:${sigTag}`);
      assert.ok((await skopeoInspectRaw(`docker://${dst.host}/m/ns/signed:${sigTag}`)).equals(srcSig));
    } finally {
      await dst.stop();
    }
    const without = await runBundle(['create', '-c', cfgFile, '-o', join(work, 'unsigned-companions.airgap'), '--no-signatures', '--json']);
    assert.equal(JSON.parse(without.stdout).images, 1);
  });

  it('of a platform-filtered image: each kept platform manifest\'s companions travel; the index\'s cannot, and create says so', async () => {
    await skopeoCopy(set.layoutDir, 'multi', `${src.host}/ns/msig:1`);
    const indexRaw = await skopeoInspectRaw(`docker://${src.host}/ns/msig:1`);
    const indexDigest = `sha256:${createHash('sha256').update(indexRaw).digest('hex')}`;
    const byArch = new Map<string, string>(JSON.parse(indexRaw.toString()).manifests.map((m: { digest: string; platform: { architecture: string } }) => [m.platform.architecture, m.digest]));
    const [amd, arm, ppc] = ['amd64', 'arm64', 'ppc64le'].map((a) => byArch.get(a)!) as [string, string, string];
    const repo = `${src.host}/ns/msig`;
    // As `cosign sign --recursive` leaves them: on the index and on platform manifests.
    const companions = {
      indexSig: await pushCompanion(repo, indexDigest, 'sig'),
      armSig: await pushCompanion(repo, arm, 'sig'),
      armAtt: await pushCompanion(repo, arm, 'att'),
      amdSig: await pushCompanion(repo, amd, 'sig'),
    };
    const tag = (digest: string, suffix: string): string => `sha256-${digest.slice(7)}.${suffix}`;

    const cfg = join(work, 'msig.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - name: ${repo}:1\n    platforms: [linux/arm64]\n`);
    const file = join(work, 'msig.airgap');
    const c = await runBundle(['create', '-c', cfg, '-o', file, '--sign-key', join(work, 'site.key')]);
    assert.equal(c.code, 0, c.stderr);
    assert.ok(c.stderr.includes(`warning: ${repo}:1: its index's cosign ${tag(indexDigest, 'sig')} cannot travel: only linux/arm64/v8 of the index is bundled`), c.stderr);
    const inspect = JSON.parse((await runBundle(['inspect', file, '--json'])).stdout);
    assert.deepEqual(inspect.images.map((i: { source: string }) => i.source).sort(), [`${repo}:1`, `${repo}:${tag(arm, 'att')}`, `${repo}:${tag(arm, 'sig')}`]);

    const dst = await startRegistry();
    try {
      const p = await runBundle(['push', file, '--to', `${dst.host}/m`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'msig-out')]);
      assert.equal(p.code, 0, p.stdout + p.stderr);
      const at = (t: string): string => `docker://${dst.host}/m/ns/msig:${t}`;
      // The tag points at the arm64 manifest, and the companions of that digest sit beside it.
      const pushed = await skopeoInspectRaw(at('1'));
      assert.equal(`sha256:${createHash('sha256').update(pushed).digest('hex')}`, arm);
      assert.ok((await skopeoInspectRaw(at(tag(arm, 'sig')))).equals(companions.armSig));
      assert.ok((await skopeoInspectRaw(at(tag(arm, 'att')))).equals(companions.armAtt));
      await assert.rejects(skopeoInspectRaw(at(tag(indexDigest, 'sig'))), 'the index is not pushed, nor its signature');
      await assert.rejects(skopeoInspectRaw(at(tag(amd, 'sig'))), 'a platform left out leaves its signature out');
    } finally {
      await dst.stop();
    }

    // Two of three platforms: the companions of both kept manifests, none of the one left out.
    await pushCompanion(repo, ppc, 'sbom');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - name: ${repo}:1\n    platforms: [linux/amd64, linux/ppc64le]\n`);
    const two = await runBundle(['create', '-c', cfg, '-o', join(work, 'msig2.airgap'), '--json']);
    assert.equal(two.code, 0, two.stderr);
    assert.equal(JSON.parse(two.stdout).warnings.length, 1);
    const inspect2 = JSON.parse((await runBundle(['inspect', join(work, 'msig2.airgap'), '--json'])).stdout);
    assert.deepEqual(inspect2.images.map((i: { source: string }) => i.source).sort(), [`${repo}:1`, `${repo}:${tag(amd, 'sig')}`, `${repo}:${tag(ppc, 'sbom')}`].sort());
  });
});

describe('token auth', () => {
  it('push through a Bearer-token registry with --dest-authfile, and no token or password in the output', async () => {
    const dst = await startRegistry();
    const proxy = await startProxy(dst.host, { bearer: { username: 'bob', password: 's3cret-pass' } });
    try {
      const auth = join(work, 'dest-auth.json');
      await writeFile(auth, JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from('bob:s3cret-pass').toString('base64') } } }));
      const r = await runBundle(['push', bundle, '--to', `${proxy.host}/sec`, '--key', join(work, 'site.pub'), '--dest-authfile', auth, '--out-dir', join(work, 'tok-out'), '--json']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(JSON.parse(r.stdout).pushed, 4);
      assert.ok(proxy.tokenRequests.some((t) => t.granted && t.withCredentials));
      assert.ok(proxy.tokensIssued.length > 0);
      for (const secret of ['s3cret-pass', ...proxy.tokensIssued]) assert.ok(!(r.stdout + r.stderr).includes(secret));
      const srcRaw = await skopeoInspectRaw(`docker://${src.host}/ns/app-two:2.0`);
      assert.ok((await skopeoInspectRaw(`docker://${dst.host}/sec/ns/app-two:2.0`)).equals(srcRaw));
      // Without credentials the registry's refusal is one clear line.
      const anon = await runBundle(['push', bundle, '--to', `${proxy.host}/sec`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'tok-out2')], {
        env: { REGISTRY_AUTH_FILE: join(work, 'no-such-auth.json'), HOME: work, XDG_RUNTIME_DIR: work },
      });
      assert.equal(anon.code, 1, anon.stdout + anon.stderr);
      assert.match(anon.stderr, /authentication to 127\.0\.0\.1:\d+ failed: access needs credentials and none were found/);
      assert.equal(anon.stderr.split('\n').filter((l) => l.startsWith('error:')).length, 1);
      assertNoStack(anon);
    } finally {
      await proxy.stop();
      await dst.stop();
    }
  });
});

describe('create --continue-on-error', () => {
  it('bundles what it can, lists what failed, and exits 1', async () => {
    const proxy = await startProxy(src.host, {
      // Every blob of app-two breaks off mid-way (its first layer is unique to it).
      faults: [{ match: (r) => r.method === 'GET' && r.path.startsWith('/v2/ns/app-two/blobs/'), times: 1000, kind: 'drop' }],
    });
    try {
      const cfg = join(work, 'partial.yaml');
      await writeFile(
        cfg,
        `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${proxy.host}/ns/app-one:1.0\n  - ${proxy.host}/ns/app-two:2.0\n  - ${proxy.host}/ns/missing:1\n`,
      );
      const out = join(work, 'partial.airgap');
      const r = await runBundle(['create', '-c', cfg, '-o', out, '--continue-on-error', '--retries', '1', '--json']);
      assert.equal(r.code, 1, r.stderr);
      const summary = JSON.parse(r.stdout);
      assert.deepEqual(summary.failed.map((f: { source: string }) => f.source).sort(), [`${proxy.host}/ns/app-two:2.0`, `${proxy.host}/ns/missing:1`]);
      assert.equal(summary.images, 1);
      const v = await runBundle(['verify', out, '--json']);
      assert.equal(v.code, 0, v.stdout);
      const inspect = JSON.parse((await runBundle(['inspect', out, '--json'])).stdout);
      assert.deepEqual(inspect.images.map((i: { source: string }) => i.source), [`${proxy.host}/ns/app-one:1.0`]);
      // Without the flag, the same config writes nothing.
      const strict = await runBundle(['create', '-c', cfg, '-o', join(work, 'strict.airgap'), '--retries', '1']);
      assert.equal(strict.code, 1);
      await assert.rejects(readFile(join(work, 'strict.airgap')));
      assertNoStack(strict);
    } finally {
      await proxy.stop();
    }
  });
});

describe('interrupted create', () => {
  it('Ctrl-C leaves no half-written file behind', async () => {
    const proxy = await startProxy(src.host, {
      faults: [{ match: (r) => r.method === 'GET' && r.path.includes('/blobs/'), times: 1000, kind: 'delay', delayMs: 3000 }],
    });
    try {
      const dir = await mkdtemp(join(tmpdir(), 'bundle-sigint-'));
      const cfg = join(dir, 'c.yaml');
      await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${proxy.host}/ns/app-one:1.0\n`);
      const r = await runBundle(['create', '-c', cfg, '-o', join(dir, 'x.airgap')], {
        onSpawn: (child) => {
          // Interrupt once the download has begun (the partial file exists by then).
          const poll = setInterval(async () => {
            if ((await readdir(dir)).some((f) => f.includes('.partial-'))) {
              clearInterval(poll);
              child.kill('SIGINT');
            }
          }, 50);
          child.on('close', () => clearInterval(poll));
        },
      });
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr, /interrupted \(SIGINT\)/);
      assert.deepEqual((await readdir(dir)).sort(), ['c.yaml']);
      await rm(dir, { recursive: true, force: true });
    } finally {
      await proxy.stop();
    }
  });
});

describe('clear errors', () => {
  it('a bad config is refused before any download, with the path inside it', async () => {
    const bad = join(work, 'bad.yaml');
    await writeFile(bad, 'apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - name: a/b:1\n    platforms: [linux]\n');
    const r = await runBundle(['create', '-c', bad, '-o', join(work, 'bad.airgap')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /images\[0\]\.platforms\[0\]/);
    assertNoStack(r);
  });

  it('a nonexistent image', async () => {
    const cfg = join(work, 'missing.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${src.host}/ns/nope:1\n`);
    const r = await runBundle(['create', '-c', cfg, '-o', join(work, 'missing.airgap')]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /ns\/nope/);
    assert.equal(r.stderr.trim().split('\n').filter((l) => l.startsWith('error')).length, 1);
    assertNoStack(r);
    await assert.rejects(readFile(join(work, 'missing.airgap')));
  });

  it('an unreachable registry', async () => {
    const cfg = join(work, 'unreachable.yaml');
    await writeFile(cfg, 'apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - 127.0.0.1:9/ns/app:1\n');
    const r = await runBundle(['create', '-c', cfg, '-o', join(work, 'unreachable.airgap')]);
    assert.ok(r.code === 1 || r.code === 2, r.stderr);
    assert.match(r.stderr, /127\.0\.0\.1:9/);
    assert.match(r.stderr, /ECONNREFUSED|refused|unreachable/i);
    assertNoStack(r);
  });

  it('a wrong password', async () => {
    const secured = await startRegistry({ htpasswd: { username: 'alice', password: 'right-password' } });
    try {
      const auth = join(work, 'auth.json');
      await writeFile(auth, JSON.stringify({ auths: { [secured.host]: { auth: Buffer.from('alice:wrong-password-123').toString('base64') } } }));
      const cfg = join(work, 'secured.yaml');
      await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${secured.host}/ns/app:1\n`);
      const r = await runBundle(['create', '-c', cfg, '-o', join(work, 'secured.airgap'), '--authfile', auth]);
      assert.ok(r.code === 1 || r.code === 2, r.stderr);
      assert.match(r.stderr, /auth|credential|password|401/i);
      assert.doesNotMatch(r.stderr + r.stdout, /wrong-password-123/);
      assert.doesNotMatch(r.stderr + r.stdout, new RegExp(Buffer.from('alice:wrong-password-123').toString('base64')));
      assertNoStack(r);

      // The right password works, and no credential reaches the bundle or the output.
      await skopeoCopy(set.layoutDir, 'app-one', `${secured.host}/ns/app:1`, ['--dest-creds', 'alice:right-password']);
      const good = join(work, 'auth-good.json');
      await writeFile(good, JSON.stringify({ auths: { [secured.host]: { auth: Buffer.from('alice:right-password').toString('base64') } } }));
      const out = join(work, 'secured.airgap');
      const ok = await runBundle(['create', '-c', cfg, '-o', out, '--authfile', good, '--json']);
      assert.equal(ok.code, 0, ok.stderr);
      // Decompressed, so that nothing hides inside a compressed frame.
      const { stdout: bytes } = await run('zstd', ['-dc', out], { encoding: 'buffer', maxBuffer: 64 << 20 });
      assert.ok(bytes.length > 100_000);
      for (const secret of ['right-password', Buffer.from('alice:right-password').toString('base64')]) {
        assert.equal(bytes.indexOf(secret), -1, 'no credential in the bundle');
        assert.doesNotMatch(ok.stdout + ok.stderr, new RegExp(secret));
      }
    } finally {
      await secured.stop();
    }
  });

  it('a file that is not a bundle, and a truncated bundle', async () => {
    const junk = join(work, 'junk.airgap');
    await writeFile(junk, 'hello, this is not a bundle\n');
    let r = await runBundle(['verify', junk]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assertNoStack(r);
    const whole = await readFile(bundle);
    const cut = join(work, 'cut.airgap');
    await writeFile(cut, whole.subarray(0, Math.floor(whole.length / 2)));
    r = await runBundle(['verify', cut]);
    assert.equal(r.code, 2);
    assertNoStack(r);
    r = await runBundle(['inspect', join(work, 'does-not-exist.airgap')]);
    assert.equal(r.code, 2);
    assertNoStack(r);
  });
});
