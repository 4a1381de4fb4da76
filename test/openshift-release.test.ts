/**
 * OpenShift releases end to end against real parts: a release payload built
 * here (its image-references naming 22 components by digest), the components in
 * a real Docker Distribution registry, a signature store over HTTP on loopback,
 * the real CLI; skopeo, zstd and tar as witnesses.
 *
 * Images are named as OpenShift names them (quay.io/openshift-release-dev/...): the
 * tool reaches the loopback registry through a registries.conf (--registries-conf).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { buildPayload, imageReferences, releaseMetadata, releaseRegistriesConf, seedComponents, skopeoCopyExact, startSignatureStore, type ReleaseComponentFixture, type SignatureStore } from './helpers/openshift.js';
import { LayoutBuilder } from './helpers/images.js';

const run = promisify(execFile);
const VERSION = '4.15.0';

let work: string;
let src: RunningRegistry;
let dst: RunningRegistry;
let sigStore: SignatureStore;
let components: ReleaseComponentFixture[];
let payloadDigest: string;
let releaseRef: string;
let regConf: string;
const QUAY = 'quay.io/openshift-release-dev';
const signatures = [Buffer.from('-----gpg signature one-----\x00\x01\x02'), Buffer.from('-----gpg signature two-----\xff')];

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** The bundle manifest, read with zstd and tar (not the tool). */
async function manifestOf(bundle: string): Promise<Record<string, unknown>> {
  const { stdout } = await run('sh', ['-c', `zstd -dc '${bundle}' | tar -xOf - airgap/manifest.json`], { maxBuffer: 64 << 20 });
  return JSON.parse(stdout) as Record<string, unknown>;
}

async function config(name: string, body: string[]): Promise<string> {
  const file = join(work, name);
  await writeFile(file, ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', ...body, ''].join('\n'));
  return file;
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-release-'));
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  components = await seedComponents(join(work, 'components'), src.host, 22, 'component', 'quay.io');
  regConf = join(work, 'registries.conf');
  await writeFile(regConf, releaseRegistriesConf(src.host));
  const payload = await buildPayload(join(work, 'payload'), { version: VERSION, components });
  payloadDigest = payload.digest;
  releaseRef = `${QUAY}/ocp-release:${VERSION}-x86_64`;
  await skopeoCopyExact(join(work, 'payload'), `${VERSION}-x86_64`, `${src.host}/openshift-release-dev/ocp-release:${VERSION}-x86_64`);
  sigStore = await startSignatureStore({ [payloadDigest]: signatures });
  const r = await runBundle(['keygen', '--out', join(work, 'site')]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop(), sigStore?.close()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('release: create and push', () => {
  let bundle: string;
  let outDir: string;
  let pushJson: Record<string, unknown>;

  before(async () => {
    const cfg = await config('release.yaml', ['releases:', `  - image: ${releaseRef}`, `    signatureStore: ${sigStore.url}/`]);
    bundle = join(work, 'release.airgap');
    let r = await runBundle(['create', '-c', cfg, '-o', bundle, '--sign-key', join(work, 'site.key'), '--registries-conf', regConf]);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    outDir = join(work, 'out');
    r = await runBundle(['push', bundle, '--to', `${dst.host}/mirror`, '--key', join(work, 'site.pub'), '--out-dir', outDir, '--json']);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    pushJson = JSON.parse(r.stdout) as Record<string, unknown>;
  });

  it('fetched the signatures from the store, from signature-1 until the first 404', () => {
    const hex = payloadDigest.slice(7);
    assert.deepEqual(
      sigStore.requests.filter((p) => p.includes(hex)),
      [`/sha256=${hex}/signature-1`, `/sha256=${hex}/signature-2`, `/sha256=${hex}/signature-3`],
    );
  });

  it('records the release, its 22 components and its signatures in the signed manifest', async () => {
    const m = await manifestOf(bundle);
    const rel = (m['sources'] as { releases: { version: string; arch: string; digest: string; payloads: { components: { name: string; image: string }[] }[]; signatures: { digest: string; count: number }[] }[] }).releases;
    assert.equal(rel.length, 1);
    assert.equal(rel[0]!.version, VERSION);
    assert.equal(rel[0]!.arch, 'x86_64');
    assert.equal(rel[0]!.digest, payloadDigest);
    assert.deepEqual(
      rel[0]!.payloads[0]!.components.map((c) => c.image).sort(),
      components.map((c) => c.ref).sort(),
    );
    assert.deepEqual(rel[0]!.signatures.map((s) => [s.digest, s.count]), [[payloadDigest, 2]]);
  });

  it('puts every component under <version>-<arch>-<component> with its source digest, and the payload under <version>-<arch>', async () => {
    const repo = `${dst.host}/mirror/openshift/release`;
    const raw = await skopeoInspectRaw(`docker://${repo}:${VERSION}-x86_64`);
    assert.equal(sha256(raw), payloadDigest);
    for (const c of components) {
      const got = await skopeoInspectRaw(`docker://${repo}:${VERSION}-x86_64-${c.name}`);
      assert.equal(sha256(got), c.digest, c.name);
    }
  });

  it('writes an ImageDigestMirrorSet naming exactly the release and component repositories', async () => {
    const idms = parseYaml(await readFile(join(outDir, 'idms.yaml'), 'utf8')) as { kind: string; spec: { imageDigestMirrors: { source: string; mirrors: string[] }[] } };
    assert.equal(idms.kind, 'ImageDigestMirrorSet');
    assert.deepEqual(idms.spec.imageDigestMirrors, [
      { source: `${QUAY}/ocp-release`, mirrors: [`${dst.host}/mirror/openshift/release`] },
      { source: `${QUAY}/ocp-v4.0-art-dev`, mirrors: [`${dst.host}/mirror/openshift/release`] },
    ]);
  });

  it('writes imageDigestSources and imageContentSources for install-config.yaml', async () => {
    const expected = [
      { mirrors: [`${dst.host}/mirror/openshift/release`], source: `${QUAY}/ocp-release` },
      { mirrors: [`${dst.host}/mirror/openshift/release`], source: `${QUAY}/ocp-v4.0-art-dev` },
    ];
    const digest = parseYaml(await readFile(join(outDir, 'install-config-digest-sources.yaml'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(digest, { imageDigestSources: expected });
    const content = parseYaml(await readFile(join(outDir, 'install-config-content-sources.yaml'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(content, { imageContentSources: expected });
  });

  it('writes the signature ConfigMap with the signatures byte for byte', async () => {
    const docs = parseAllDocuments(await readFile(join(outDir, 'release-signatures.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, unknown>);
    const hex = payloadDigest.slice(7);
    assert.deepEqual(docs, [
      {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: `sha256-${hex}`, namespace: 'openshift-config-managed', labels: { 'release.openshift.io/verification-signatures': '' } },
        binaryData: { [`sha256-${hex}-1`]: signatures[0]!.toString('base64'), [`sha256-${hex}-2`]: signatures[1]!.toString('base64') },
      },
    ]);
  });

  it('reports where the release went', () => {
    const rel = (pushJson['sources'] as { releases: { release: string; pushedTo: string; components: number; signatures: number }[] }).releases[0]!;
    assert.equal(rel.release, releaseRef);
    assert.equal(rel.pushedTo, `${dst.host}/mirror/openshift/release:${VERSION}-x86_64`);
    assert.equal(rel.components, 22);
    assert.equal(rel.signatures, 2);
  });
});

describe('release: a component missing from the source', () => {
  let missing: string;
  let cfg: string;
  let brokenRef: string;

  before(async () => {
    // A release naming one component the registry never had.
    missing = `${QUAY}/ocp-v4.0-art-dev@sha256:${'d'.repeat(64)}`;
    const list = [...components.slice(0, 3), { name: 'gone-operator', ref: missing, digest: `sha256:${'d'.repeat(64)}` }];
    await buildPayload(join(work, 'payload-broken'), { version: '4.15.1', components: list, tag: '4.15.1-x86_64' });
    brokenRef = `${QUAY}/ocp-release:4.15.1-x86_64`;
    await skopeoCopyExact(join(work, 'payload-broken'), '4.15.1-x86_64', `${src.host}/openshift-release-dev/ocp-release:4.15.1-x86_64`);
    cfg = await config('broken.yaml', ['releases:', `  - image: ${brokenRef}`, '    signatureStore: none']);
  });

  it('fails without --skip-missing, naming the image and its release, and writes no file', async () => {
    const out = join(work, 'broken.airgap');
    const r = await runBundle(['create', '-c', cfg, '-o', out, '--registries-conf', regConf]);
    assertNoStack(r);
    assert.equal(r.code, 1, r.stderr);
    assert.ok(r.stderr.includes(missing), r.stderr);
    assert.ok(r.stderr.includes(`release ${brokenRef} (component gone-operator)`), r.stderr);
    await assert.rejects(readFile(out));
  });

  it('with --continue-on-error bundles everything else, names the missing image and exits 1', async () => {
    const out = join(work, 'partial.airgap');
    const r = await runBundle(['create', '-c', cfg, '-o', out, '--continue-on-error', '--registries-conf', regConf]);
    assertNoStack(r);
    assert.equal(r.code, 1, r.stderr);
    assert.ok(r.stdout.includes(`NOT BUNDLED ${missing}`) && r.stdout.includes('(component gone-operator)'), r.stdout);
    const m = await manifestOf(out);
    const sources = (m['images'] as { source: string }[]).map((i) => i.source).sort();
    assert.deepEqual(sources, [brokenRef, ...components.slice(0, 3).map((c) => c.ref)].sort());
  });

  it('with --skip-missing records the skip in the bundle, and push reports it', async () => {
    const out = join(work, 'skipped.airgap');
    let r = await runBundle(['create', '-c', cfg, '-o', out, '--skip-missing', '--sign-key', join(work, 'site.key'), '--registries-conf', regConf]);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`SKIPPED ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const m = await manifestOf(out);
    assert.deepEqual(m['skipped'], [{ source: missing, reason: 'not found at the source', neededBy: [`release ${brokenRef} (component gone-operator)`] }]);
    const rel = (m['sources'] as { releases: { skippedComponents: string[]; payloads: { components: unknown[] }[] }[] }).releases[0]!;
    assert.deepEqual(rel.skippedComponents, ['gone-operator']);
    assert.equal(rel.payloads[0]!.components.length, 3);

    r = await runBundle(['push', out, '--to', `${dst.host}/skip`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'out-skip'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { skipped: { source: string }[]; sources: { releases: { skippedComponents: string[] }[] } };
    assert.deepEqual(report.skipped.map((s) => s.source), [missing]);
    assert.deepEqual(report.sources.releases[0]!.skippedComponents, ['gone-operator']);
    r = await runBundle(['push', out, '--to', `${dst.host}/skip`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'out-skip')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(`SKIPPED at create ${missing}`), r.stdout);
  });
});

describe('release: a multi-arch release (an index of payloads)', () => {
  it('carries the payload and components of the platforms asked for, and no other', async () => {
    const amd = await seedComponents(join(work, 'multi-amd'), src.host, 3, 'amd', 'quay.io');
    const arm = await seedComponents(join(work, 'multi-arm'), src.host, 3, 'arm', 'quay.io');
    const b = await new LayoutBuilder(join(work, 'multi-payload')).init();
    const payloadFor = async (arch: string, comps: ReleaseComponentFixture[]) =>
      b.image(
        [await b.layer({ 'release-manifests/image-references': imageReferences('4.16.2', comps), 'release-manifests/release-metadata': releaseMetadata('4.16.2') })],
        { os: 'linux', architecture: arch },
        `release ${arch}`,
      );
    const amdPayload = await payloadFor('amd64', amd);
    const armPayload = await payloadFor('arm64', arm);
    const index = await b.indexOf([
      { manifest: amdPayload, platform: { os: 'linux', architecture: 'amd64' } },
      { manifest: armPayload, platform: { os: 'linux', architecture: 'arm64' } },
    ]);
    b.tag('multi', index);
    await b.save();
    await skopeoCopyExact(join(work, 'multi-payload'), 'multi', `${src.host}/openshift-release-dev/ocp-release:4.16.2-multi`);
    const cfg = await config('multi.yaml', ['releases:', `  - image: ${QUAY}/ocp-release:4.16.2-multi`, '    signatureStore: none', '    platforms: [linux/arm64]']);
    const out = join(work, 'multi.airgap');
    let r = await runBundle(['create', '-c', cfg, '-o', out, '--sign-key', join(work, 'site.key'), '--registries-conf', regConf]);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr);
    const m = await manifestOf(out);
    const rel = (m['sources'] as { releases: { arch: string; digest: string; payloads: { arch: string; digest: string; components: { image: string }[] }[] }[] }).releases[0]!;
    assert.equal(rel.arch, 'aarch64');
    assert.equal(rel.digest, armPayload.digest);
    assert.deepEqual(rel.payloads.map((p) => [p.arch, p.digest]), [['aarch64', armPayload.digest]]);
    const carried = (m['images'] as { source: string }[]).map((i) => i.source);
    for (const c of arm) assert.ok(carried.includes(c.ref), c.ref);
    for (const c of amd) assert.ok(!carried.includes(c.ref), `${c.ref} (amd64) is not carried`);

    r = await runBundle(['push', out, '--to', `${dst.host}/multi`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'out-multi')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(await skopeoInspectRaw(`docker://${dst.host}/multi/openshift/release:4.16.2-aarch64`)), armPayload.digest);
    for (const c of arm) assert.equal(sha256(await skopeoInspectRaw(`docker://${dst.host}/multi/openshift/release:4.16.2-aarch64-${c.name}`)), c.digest);
  });
});
