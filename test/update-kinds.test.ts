/**
 * Update bundles (create --since) of the source kinds that push builds things: a
 * devfile registry (its stack artifacts, its rewritten index, the devfile-index
 * image built at push on a carried base image) and an OpenShift release (payload,
 * components, signatures). Month 1 is pushed to the secure site's registry; month 2
 * adds stacks / a release version and comes as an update that leaves out every
 * image layer month 1 carried. After its push the site is complete: checked with
 * skopeo, tar and the files written, not with the tool's own report.
 * An empty registry behind a counting proxy shows the refusal writes nothing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { ArchiveReader } from '../src/archive/reader.js';
import { isImageLayer } from '../src/bundle/update.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RunningProxy, writeRequests } from './helpers/proxy.js';
import { buildTestImages, skopeoCopy, skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { writeFiles } from './helpers/devfile-fixture.js';
import { buildPayload, releaseRegistriesConf, seedComponents, skopeoCopyExact, startSignatureStore, type ReleaseComponentFixture, type SignatureStore } from './helpers/openshift.js';

const run = promisify(execFile);
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let work: string;
let src: RunningRegistry;
let site: RunningRegistry; // the secure zone's registry: month 1, then the update
let siteProxy: RunningProxy; // in front of it, counting what each push sends
let empty: RunningRegistry;
let emptyProxy: RunningProxy;
let key: string;
let pub: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-update-kinds-'));
  [src, site, empty] = await Promise.all([startRegistry(), startRegistry(), startRegistry()]);
  emptyProxy = await startProxy(empty.host);
  siteProxy = await startProxy(site.host);
  key = join(work, 'site.key');
  pub = join(work, 'site.pub');
  assert.equal((await runBundle(['keygen', '--out', join(work, 'site')])).code, 0);
});

after(async () => {
  await emptyProxy?.stop();
  await siteProxy?.stop();
  await Promise.all([src?.stop(), site?.stop(), empty?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

async function config(name: string, body: string[]): Promise<string> {
  const file = join(work, name);
  await writeFile(file, ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', ...body, ''].join('\n'));
  return file;
}

/** Blob members of a bundle: digest -> media type. */
async function blobMembers(file: string): Promise<Map<string, string>> {
  const r = await ArchiveReader.open(file);
  try {
    return new Map(r.manifest.members.filter((m) => m.path.startsWith('blobs/')).map((m) => [m.digest, m.mediaType]));
  } finally {
    await r.close();
  }
}

/** The update carries no image layer its base carried, and does carry `atLeast` new ones. */
async function assertOnlyNewLayers(baseFile: string, updateFile: string, atLeast: number): Promise<void> {
  const base = await blobMembers(baseFile);
  const update = await blobMembers(updateFile);
  const again = [...update].filter(([d, mt]) => isImageLayer(mt) && base.has(d));
  assert.deepEqual(again, [], 'no layer the base carried is carried again');
  const fresh = [...update].filter(([d, mt]) => isImageLayer(mt) && !base.has(d));
  assert.ok(fresh.length >= atLeast, `${fresh.length} new layers carried, expected at least ${atLeast}`);
  const r = await ArchiveReader.open(updateFile);
  const left = r.manifest.base?.blobs ?? [];
  await r.close();
  assert.ok(left.length > 0, 'the update leaves out the layers of its base');
  for (const b of left) assert.ok(base.has(b.digest), `${b.digest} left out was carried by the base`);
}

const writes = (proxy: RunningProxy) => writeRequests(proxy).map((q) => `${q.method} ${q.path}`);

/** Push the update to the site (through its proxy): no blob the update leaves out is uploaded again. */
async function pushUpdate(updateFile: string, args: string[]): Promise<void> {
  siteProxy.reset();
  const r = await runBundle(['push', updateFile, '--key', pub, ...args]);
  assertNoStack(r);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const reader = await ArchiveReader.open(updateFile);
  const leftOut = new Set(reader.manifest.base!.blobs.map((b) => b.digest));
  await reader.close();
  const uploads = siteProxy.requests.filter((q) => q.method === 'PUT' && /[?&]digest=/.test(q.url)).map((q) => decodeURIComponent(/[?&]digest=([^&]+)/.exec(q.url)![1]!));
  assert.deepEqual(uploads.filter((d) => leftOut.has(d)), [], 'no blob the update leaves out is uploaded');
  assert.ok(uploads.length > 0, 'the new blobs are uploaded');
}

/** Push of an update onto an empty registry: refused naming the base, and not one write reaches it. */
async function assertRefusedByEmpty(updateFile: string, baseName: string, extra: string[]): Promise<void> {
  emptyProxy.reset();
  const r = await runBundle(['push', updateFile, '--to', `${emptyProxy.host}/mirror`, '--key', pub, '--out-dir', join(work, `out-empty-${baseName}`), ...extra]);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assertNoStack(r);
  assert.match(r.stderr, /this is an update bundle/);
  assert.ok(r.stderr.includes(`base bundle ${baseName} (created `), r.stderr);
  assert.match(r.stderr, /manifest sha256:[0-9a-f]{64}\)/);
  assert.match(r.stderr, /nothing was pushed/);
  assert.deepEqual(writes(emptyProxy), [], 'not one upload or manifest reached the registry');
}

describe('update of a devfile registry', () => {
  const target = () => `${siteProxy.host}/dev`;
  let registry: string;
  let month1: string;
  let month2: string;
  let folder: string;
  const images: Record<string, string> = {};
  const digests: Record<string, string> = {};

  before(async () => {
    const set = await buildTestImages(join(work, 'dev-layout'));
    images.node = `${src.host}/rh/ubi8/nodejs-18:1`;
    images.golang = `${src.host}/quay/devfile/golang:1.21`;
    images.indexBase = `${src.host}/quay/devfile/devfile-index-base:next`;
    await skopeoCopy(set.layoutDir, 'app-one', images.node);
    await skopeoCopy(set.layoutDir, 'app-two', images.golang); // shares node's base layer, has a layer of its own
    await skopeoCopy(set.layoutDir, 'app-one', images.indexBase); // every layer carried by month 1, for node
    for (const [k, ref] of Object.entries(images)) digests[k] = sha(await skopeoInspectRaw(`docker://${ref}`));

    registry = join(work, 'devfile-registry');
    const stack = (name: string, image: string) => ({
      [`stacks/${name}/devfile.yaml`]: ['schemaVersion: 2.2.0', 'metadata:', `  name: ${name}`, '  version: 1.0.0', 'components:', '  - name: runtime', '    container:', `      image: ${image}`, ''].join('\n'),
    });
    // Month 1: the registry holds the nodejs stack; the index image is not built yet.
    await writeFiles(registry, stack('nodejs', images.node));
    month1 = join(work, 'devfile-month1.airgap');
    let r = await runBundle(['create', '-c', await config('dev-m1.yaml', ['devfile:', `  registries: [{path: ${registry}}]`, '  stacks: [nodejs]']), '-o', month1, '--sign-key', key]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    folder = join(work, 'offline-devfiles');
    r = await runBundle(['push', month1, '--to', target(), '--key', pub, '--out-dir', join(work, 'dev-out1'), '--devfile-out', folder]);
    assert.equal(r.code, 0, r.stderr + r.stdout);

    // Month 2: the registry gains the go stack; the config names both, and the devfile-index image's base.
    await writeFiles(registry, stack('go', images.golang));
    month2 = join(work, 'devfile-month2.airgap');
    r = await runBundle([
      'create', '-c', await config('dev-m2.yaml', ['devfile:', `  registries: [{path: ${registry}}]`, '  stacks: [nodejs, go]', `  indexBase: ${images.indexBase}`]),
      '-o', month2, '--sign-key', key, '--since', month1,
    ]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /update of devfile-month1\.airgap/);
  });

  it('the update carries only the image layers month 1 did not', async () => {
    await assertOnlyNewLayers(month1, month2, 1);
  });

  it('is refused by an empty registry, naming its base, which receives nothing', async () => {
    await assertRefusedByEmpty(month2, 'devfile-month1.airgap', ['--devfile-out', join(work, 'never')]);
    await assert.rejects(readdir(join(work, 'never')), 'no devfile folder is written either');
  });

  it('naming month 1\'s --devfile-out folder again is refused before anything is sent', async () => {
    siteProxy.reset();
    const r = await runBundle(['push', month2, '--to', target(), '--key', pub, '--out-dir', join(work, 'dev-out-again'), '--devfile-out', folder]);
    assertNoStack(r);
    assert.equal(r.code, 2, r.stderr + r.stdout);
    assert.match(r.stderr, /--devfile-out .*offline-devfiles is not empty; name a new or empty folder/);
    assert.deepEqual(writes(siteProxy), [], 'not one upload or manifest reached the registry');
  });

  describe('pushed onto the site holding month 1', () => {
    before(async () => {
      // The offline folder of month 2 is a new one (push never writes into a non-empty folder).
      folder = join(work, 'offline-devfiles-month2');
      await pushUpdate(month2, ['--to', target(), '--out-dir', join(work, 'dev-out2'), '--devfile-out', folder]);
    });

    it('every image every devfile needs is at the target with its source digest', async () => {
      for (const k of ['node', 'golang', 'indexBase']) {
        const path = images[k]!.replace(/^[^/]+\//, '');
        assert.equal(sha(await skopeoInspectRaw(`docker://${target()}/${path}`)), digests[k], k);
      }
    });

    it('the devfile-catalog artifacts of the old and the new stack are at the target', async () => {
      for (const s of ['nodejs', 'go']) {
        const m = JSON.parse((await skopeoInspectRaw(`docker://${target()}/devfile-catalog/${s}:1.0.0`)).toString()) as { config: { mediaType: string }; layers: { digest: string; annotations: Record<string, string> }[] };
        assert.equal(m.config.mediaType, 'application/vnd.devfileio.devfile.config.v2+json', s);
        const devfile = m.layers.find((l) => l.annotations['org.opencontainers.image.title'] === 'devfile.yaml')!;
        const text = await (await fetch(`http://${siteProxy.host}/v2/dev/devfile-catalog/${s}/blobs/${devfile.digest}`)).text();
        const image = (parseYaml(text) as { components: { container: { image: string } }[] }).components[0]!.container.image;
        assert.ok(image.startsWith(`${target()}/`), `${s} names its image at the target: ${image}`);
      }
    });

    it('the --devfile-out folder and the devfile-index image (pulled with skopeo, read with tar) name every stack, old and new', async () => {
      const names = (json: string) => (JSON.parse(json) as { name: string; type: string }[]).map((e) => `${e.type}:${e.name}`).sort();
      assert.deepEqual(names(await readFile(join(folder, 'index.json'), 'utf8')), ['stack:go', 'stack:nodejs']);
      for (const s of ['nodejs', 'go']) await readFile(join(folder, `stacks/${s}/devfile.yaml`), 'utf8');

      const pulled = join(work, 'devfile-index-pulled');
      await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${target()}/devfile-index:latest`, `oci:${pulled}:x`]);
      const index = JSON.parse(await readFile(join(pulled, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
      const blob = (d: string) => join(pulled, 'blobs', 'sha256', d.slice(7));
      const manifest = JSON.parse(await readFile(blob(index.manifests[0]!.digest), 'utf8')) as { layers: { digest: string }[] };
      const base = JSON.parse((await skopeoInspectRaw(`docker://${images.indexBase}`)).toString()) as { layers: { digest: string }[] };
      assert.deepEqual(manifest.layers.slice(0, -1).map((l) => l.digest), base.layers.map((l) => l.digest), 'built on the base, its layers byte for byte');
      const top = blob(manifest.layers.at(-1)!.digest);
      assert.deepEqual(names((await run('tar', ['-xzOf', top, 'registry/index.json'])).stdout), ['stack:go', 'stack:nodejs']);
      const listing = (await run('tar', ['-tzf', top])).stdout.split('\n');
      for (const p of ['registry/stacks/nodejs/devfile.yaml', 'registry/stacks/go/devfile.yaml']) assert.ok(listing.includes(p), p);
    });
  });
});

describe('update of an OpenShift release', () => {
  const QUAY = 'quay.io/openshift-release-dev';
  const target = () => `${siteProxy.host}/rel`;
  let sigStore: SignatureStore;
  let regConf: string;
  let month1: string;
  let month2: string;
  let components2: ReleaseComponentFixture[];
  let payload2: string;
  const outDir = () => join(work, 'rel-out2');
  const signatures: Record<string, Buffer[]> = {};

  before(async () => {
    const shared = await seedComponents(join(work, 'components'), src.host, 6, 'component', 'quay.io');
    const added = await seedComponents(join(work, 'components-new'), src.host, 2, 'newcomp', 'quay.io');
    components2 = [...shared, ...added];
    regConf = join(work, 'registries.conf');
    await writeFile(regConf, releaseRegistriesConf(src.host));
    const p1 = await buildPayload(join(work, 'payload1'), { version: '4.15.0', components: shared });
    const p2 = await buildPayload(join(work, 'payload2'), { version: '4.15.1', components: components2 });
    payload2 = p2.digest;
    await skopeoCopyExact(join(work, 'payload1'), '4.15.0-x86_64', `${src.host}/openshift-release-dev/ocp-release:4.15.0-x86_64`);
    await skopeoCopyExact(join(work, 'payload2'), '4.15.1-x86_64', `${src.host}/openshift-release-dev/ocp-release:4.15.1-x86_64`);
    signatures[p1.digest] = [Buffer.from('-----signature of 4.15.0-----')];
    signatures[p2.digest] = [Buffer.from('-----signature of 4.15.1-----\x00\xff')];
    sigStore = await startSignatureStore(signatures);
    const release = (v: string) => ['releases:', `  - image: ${QUAY}/ocp-release:${v}-x86_64`, `    signatureStore: ${sigStore.url}/`];

    month1 = join(work, 'release-month1.airgap');
    let r = await runBundle(['create', '-c', await config('rel-m1.yaml', release('4.15.0')), '-o', month1, '--sign-key', key, '--registries-conf', regConf]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    r = await runBundle(['push', month1, '--to', target(), '--key', pub, '--out-dir', join(work, 'rel-out1')]);
    assert.equal(r.code, 0, r.stderr + r.stdout);

    month2 = join(work, 'release-month2.airgap');
    r = await runBundle(['create', '-c', await config('rel-m2.yaml', release('4.15.1')), '-o', month2, '--sign-key', key, '--registries-conf', regConf, '--since', month1]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
  });

  after(async () => {
    await sigStore?.close();
  });

  it('the update carries only the image layers month 1 did not: the new components\' and the new release layer', async () => {
    await assertOnlyNewLayers(month1, month2, 3);
    const r = await ArchiveReader.open(month2);
    const left = r.manifest.base!.blobs.length;
    await r.close();
    assert.ok(left >= 6, `the ${left} layers of the shared components are left out`);
  });

  it('is refused by an empty registry, naming its base, which receives nothing', async () => {
    await assertRefusedByEmpty(month2, 'release-month1.airgap', []);
  });

  describe('pushed onto the site holding month 1', () => {
    before(async () => {
      await pushUpdate(month2, ['--to', target(), '--out-dir', outDir()]);
    });

    it('every component is at <version>-<arch>-<component> with its source digest, the payload at <version>-<arch>', async () => {
      const repo = `${target()}/openshift/release`;
      assert.equal(sha(await skopeoInspectRaw(`docker://${repo}:4.15.1-x86_64`)), payload2);
      for (const c of components2) assert.equal(sha(await skopeoInspectRaw(`docker://${repo}:4.15.1-x86_64-${c.name}`)), c.digest, c.name);
    });

    it('writes the signature ConfigMap and the ImageDigestMirrorSet for the new release', async () => {
      const docs = parseAllDocuments(await readFile(join(outDir(), 'release-signatures.yaml'), 'utf8')).map((d) => d.toJS() as { metadata: { name: string }; binaryData: Record<string, string> });
      const hex = payload2.slice(7);
      assert.deepEqual(docs.map((d) => d.metadata.name), [`sha256-${hex}`]);
      assert.deepEqual(docs[0]!.binaryData, { [`sha256-${hex}-1`]: signatures[payload2]![0]!.toString('base64') });
      const idms = parseYaml(await readFile(join(outDir(), 'idms.yaml'), 'utf8')) as { kind: string; spec: { imageDigestMirrors: { source: string; mirrors: string[] }[] } };
      assert.equal(idms.kind, 'ImageDigestMirrorSet');
      assert.deepEqual(idms.spec.imageDigestMirrors, [
        { source: `${QUAY}/ocp-release`, mirrors: [`${target()}/openshift/release`] },
        { source: `${QUAY}/ocp-v4.0-art-dev`, mirrors: [`${target()}/openshift/release`] },
      ]);
    });
  });
});
