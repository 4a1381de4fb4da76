/**
 * Operator catalogs end to end: a file-based catalog image built here (three
 * packages, several channels, replaces chains, bundles with relatedImages,
 * JSON and YAML under /configs, an opm cache under /tmp/cache), its bundle and
 * related images in a real registry; one package and channel selected with a
 * minVersion. The filtered catalog is read back from the destination with
 * skopeo, tar and jq, not with the tool's parser.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml, stringify } from 'yaml';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { LayoutBuilder, skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { inBatches, skopeoCopyExact } from './helpers/openshift.js';

const run = promisify(execFile);

let work: string;
let src: RunningRegistry;
let dst: RunningRegistry;
/** name (e.g. `web-terminal-bundle:1.8.0`) -> `host/operators/...@sha256:` */
const refs: Record<string, string> = {};

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

interface BundleDef {
  pkg: string;
  version: string;
  related: string[];
}

const BUNDLES: BundleDef[] = [
  { pkg: 'web-terminal', version: '1.7.0', related: ['web-terminal-exec:1.7.0', 'tooling:1'] },
  { pkg: 'web-terminal', version: '1.8.0', related: ['web-terminal-exec:1.8.0', 'tooling:1'] },
  { pkg: 'web-terminal', version: '1.9.0', related: ['web-terminal-exec:1.9.0', 'tooling:2'] },
  { pkg: 'web-terminal', version: '1.10.0-rc.1', related: ['web-terminal-exec:1.10.0-rc.1'] },
  { pkg: 'etcd', version: '0.9.4', related: ['etcd-operator:0.9.4'] },
  { pkg: 'etcd', version: '1.0.0', related: ['etcd-operator:1.0.0'] },
  { pkg: 'nginx', version: '2.0.0', related: ['nginx-operator:2.0.0'] },
];

const bundleImage = (b: BundleDef): string => `${b.pkg}-bundle:${b.version}`;

function bundleEntry(b: BundleDef): Record<string, unknown> {
  const name = `${b.pkg}.v${b.version}`;
  return {
    schema: 'olm.bundle',
    name,
    package: b.pkg,
    image: refs[bundleImage(b)],
    properties: [
      { type: 'olm.package', value: { packageName: b.pkg, version: b.version } },
      { type: 'olm.csv.metadata', value: { annotations: { description: `the ${name} operator {with braces} and "quotes"` } } },
    ],
    relatedImages: [{ name: 'bundle', image: refs[bundleImage(b)] }, ...b.related.map((r) => ({ name: r.split(':')[0], image: refs[r] }))],
  };
}

/** The catalog image: a base layer (opm, a pre-built cache), then /configs; config label and opm's command. */
async function buildCatalog(dir: string): Promise<string> {
  const b = await new LayoutBuilder(dir).init();
  const base = await b.layer({ 'bin/opm': '#!/bin/sh\n', 'tmp/cache/cache.json': '{"digest":"stale"}', 'tmp/cache/packages.json': '{}' });
  const wt = [
    { schema: 'olm.package', name: 'web-terminal', defaultChannel: 'fast' },
    {
      schema: 'olm.channel',
      package: 'web-terminal',
      name: 'fast',
      entries: [
        { name: 'web-terminal.v1.7.0' },
        { name: 'web-terminal.v1.8.0', replaces: 'web-terminal.v1.7.0' },
        { name: 'web-terminal.v1.9.0', replaces: 'web-terminal.v1.8.0', skips: ['web-terminal.v1.7.0'] },
      ],
    },
    {
      schema: 'olm.channel',
      package: 'web-terminal',
      name: 'candidate',
      entries: [{ name: 'web-terminal.v1.9.0' }, { name: 'web-terminal.v1.10.0-rc.1', replaces: 'web-terminal.v1.9.0', skipRange: '>=1.8.0 <1.10.0-rc.1' }],
    },
    ...BUNDLES.filter((x) => x.pkg === 'web-terminal').map(bundleEntry),
  ];
  const etcd = [
    { schema: 'olm.package', name: 'etcd', defaultChannel: 'stable' },
    { schema: 'olm.channel', package: 'etcd', name: 'alpha', entries: [{ name: 'etcd.v0.9.4' }] },
    { schema: 'olm.channel', package: 'etcd', name: 'stable', entries: [{ name: 'etcd.v0.9.4' }, { name: 'etcd.v1.0.0', replaces: 'etcd.v0.9.4' }] },
    ...BUNDLES.filter((x) => x.pkg === 'etcd').map(bundleEntry),
  ];
  const nginx = [
    { schema: 'olm.package', name: 'nginx', defaultChannel: 'stable' },
    { schema: 'olm.channel', package: 'nginx', name: 'stable', entries: [{ name: 'nginx.v2.0.0' }] },
    ...BUNDLES.filter((x) => x.pkg === 'nginx').map(bundleEntry),
  ];
  const configs = await b.layer({
    // Pretty-printed objects one after another, as `opm render` writes them.
    'configs/web-terminal/catalog.json': wt.map((e) => JSON.stringify(e, null, 2)).join('\n'),
    'configs/etcd/catalog.yaml': etcd.map((e) => stringify(e)).join('---\n'),
    'configs/nginx/index.json': nginx.map((e) => JSON.stringify(e)).join(''),
  });
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {
        Labels: { 'operators.operatorframework.io.index.configs.v1': '/configs' },
        Entrypoint: ['/bin/opm'],
        Cmd: ['serve', '/configs', '--cache-dir=/tmp/cache'],
      },
      rootfs: { type: 'layers', diff_ids: [base.digest, configs.digest] },
    }),
  );
  const cfg = await b.blob(config, 'application/vnd.oci.image.config.v1+json');
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: cfg,
    layers: [base, configs],
  };
  const m = await b.blob(Buffer.from(JSON.stringify(manifest)), manifest.mediaType);
  b.tag('catalog', m);
  await b.save();
  return m.digest;
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-catalog-'));
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  const names = [...new Set(BUNDLES.flatMap((b) => [bundleImage(b), ...b.related]))];
  const b = await new LayoutBuilder(join(work, 'images')).init();
  for (const n of names) {
    const img = await b.image([await b.layer({ [`opt/${n}`]: `${n}\n` })], undefined, n);
    b.tag(n, img);
    refs[n] = `${src.host}/operators/${n.split(':')[0]}@${img.digest}`;
  }
  await b.save();
  await inBatches(names, 4, (n) => skopeoCopyExact(join(work, 'images'), n, `${src.host}/operators/${n}`));
  await buildCatalog(join(work, 'catalog'));
  await skopeoCopyExact(join(work, 'catalog'), 'catalog', `${src.host}/catalogs/test-index:v4.15`);
  await runBundle(['keygen', '--out', join(work, 'site')]);
});

after(async () => {
  await Promise.all([src?.stop(), dst?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('operators: a catalog filtered to one package, one channel, from a minVersion', () => {
  let bundle: string;
  let outDir: string;
  let pushReport: { sources: { operators: { catalog: string; filtered: string; catalogSource: string }[] } };

  before(async () => {
    const cfg = join(work, 'operators.yaml');
    await writeFile(
      cfg,
      [
        'apiVersion: airgap.bundle/v1alpha1',
        'kind: BundleConfig',
        'operators:',
        `  - catalog: ${src.host}/catalogs/test-index:v4.15`,
        '    packages:',
        '      - name: web-terminal',
        '        channels: [fast]',
        '        minVersion: 1.8.0',
        '',
      ].join('\n'),
    );
    bundle = join(work, 'operators.airgap');
    let r = await runBundle(['create', '-c', cfg, '-o', bundle, '--sign-key', join(work, 'site.key')]);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr);
    outDir = join(work, 'out');
    r = await runBundle(['push', bundle, '--to', `${dst.host}/mirror`, '--key', join(work, 'site.pub'), '--out-dir', outDir, '--json']);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr);
    pushReport = JSON.parse(r.stdout) as typeof pushReport;
  });

  it('carries exactly the selected bundles and their related images, and no others', async () => {
    const { stdout } = await run('sh', ['-c', `zstd -dc '${bundle}' | tar -xOf - airgap/manifest.json`], { maxBuffer: 64 << 20 });
    const m = JSON.parse(stdout) as { images: { source: string; origin: string }[] };
    const carried = m.images.filter((i) => !i.source.includes('/catalogs/')).map((i) => i.source).sort();
    const expected = [
      ...new Set(['web-terminal-bundle:1.8.0', 'web-terminal-exec:1.8.0', 'tooling:1', 'web-terminal-bundle:1.9.0', 'web-terminal-exec:1.9.0', 'tooling:2'].map((n) => refs[n]!)),
    ].sort();
    assert.deepEqual(carried, expected);
    // The original catalog is not carried (no full: true); only the filtered one.
    assert.deepEqual(
      m.images.filter((i) => i.source.includes('/catalogs/')).map((i) => i.source),
      [`${src.host}/catalogs/test-index:v4.15-filtered`],
    );
  });

  it('pushes a filtered catalog whose /configs holds only that package, read back by jq, with a default channel among those kept', async () => {
    const cs = parseYaml(await readFile(join(outDir, 'catalogsource-test-index-v4-15.yaml'), 'utf8')) as {
      kind: string;
      metadata: { name: string; namespace: string };
      spec: { sourceType: string; image: string };
    };
    assert.equal(cs.kind, 'CatalogSource');
    assert.deepEqual(cs.metadata, { name: 'test-index-v4-15', namespace: 'openshift-marketplace' });
    assert.equal(cs.spec.sourceType, 'grpc');
    // The CatalogSource names the pushed filtered catalog, by its digest.
    const pushed = await skopeoInspectRaw(`docker://${dst.host}/mirror/catalogs/test-index:v4.15-filtered`);
    assert.equal(cs.spec.image, `${dst.host}/mirror/catalogs/test-index@${sha256(pushed)}`);
    assert.equal(pushReport.sources.operators[0]!.filtered, cs.spec.image);

    // Read it back with skopeo and tar: the new layer hides the old /configs and the opm cache.
    const layout = join(work, 'filtered-layout');
    await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${cs.spec.image}`, `oci:${layout}:f`]);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(await readFile(join(layout, 'blobs/sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { config: { digest: string }; layers: { digest: string }[] };
    assert.equal(manifest.layers.length, 3);
    const top = join(layout, 'blobs/sha256', manifest.layers[2]!.digest.slice(7));
    const listing = (await run('tar', ['-tzf', top])).stdout.split('\n').map((l) => l.replace(/^\.\//, ''));
    assert.ok(listing.includes('configs/.wh..wh..opq'), listing.join(' '));
    assert.ok(listing.includes('tmp/.wh.cache'), listing.join(' '));
    const root = join(work, 'filtered-root');
    await mkdir(root);
    await run('tar', ['-xzf', top, '-C', root, '--exclude=*.wh.*']);
    assert.deepEqual(await readdir(join(root, 'configs')), ['web-terminal']);
    const files = await readdir(join(root, 'configs', 'web-terminal'));
    const objects: Record<string, unknown>[] = [];
    for (const f of files) {
      const { stdout } = await run('jq', ['-c', '.', join(root, 'configs', 'web-terminal', f)], { maxBuffer: 64 << 20 });
      for (const line of stdout.split('\n').filter(Boolean)) objects.push(JSON.parse(line) as Record<string, unknown>);
    }
    const pkg = objects.filter((o) => o['schema'] === 'olm.package');
    const channels = objects.filter((o) => o['schema'] === 'olm.channel') as { name: string; entries: { name: string; replaces?: string; skips?: string[] }[] }[];
    const bundles = objects.filter((o) => o['schema'] === 'olm.bundle') as { name: string; package: string }[];
    assert.equal(pkg.length, 1);
    assert.equal(pkg[0]!['name'], 'web-terminal');
    assert.deepEqual(channels.map((c) => c.name), ['fast']);
    assert.ok(channels.map((c) => c.name).includes(pkg[0]!['defaultChannel'] as string), 'defaultChannel is among the channels kept');
    // The graph within the bounds: 1.8.0 no longer replaces the 1.7.0 left out.
    assert.deepEqual(channels[0]!.entries, [{ name: 'web-terminal.v1.8.0' }, { name: 'web-terminal.v1.9.0', replaces: 'web-terminal.v1.8.0' }]);
    assert.deepEqual(bundles.map((x) => x.name).sort(), ['web-terminal.v1.8.0', 'web-terminal.v1.9.0']);
    assert.ok(objects.every((o) => o['package'] === 'web-terminal' || o['name'] === 'web-terminal'));

    // opm is no longer pointed at the stale cache.
    const config = JSON.parse(await readFile(join(layout, 'blobs/sha256', manifest.config.digest.slice(7)), 'utf8')) as { config: { Cmd: string[]; Labels: Record<string, string> } };
    assert.deepEqual(config.config.Cmd, ['serve', '/configs']);
    assert.equal(config.config.Labels['operators.operatorframework.io.index.configs.v1'], '/configs');
  });

  it('writes mirror sets for the bundles and related images, not for the filtered catalog', async () => {
    const idms = parseYaml(await readFile(join(outDir, 'idms.yaml'), 'utf8')) as { spec: { imageDigestMirrors: { source: string }[] } };
    const sources = idms.spec.imageDigestMirrors.map((e) => e.source);
    assert.deepEqual(sources, ['tooling', 'web-terminal-bundle', 'web-terminal-exec'].map((n) => `${src.host}/operators/${n}`));
  });
});
