/**
 * Devfile registries offline, against real parts: a fixture registry folder in the
 * upstream devfile/registry layout, images served by a real registry on loopback and
 * reached through a registries.conf (prefix/location rewrites and a mirror list), a
 * git daemon serving the starter project and sample repositories on loopback, a
 * plain HTTP server serving a zip starter project. Witnesses: skopeo, unzip, tar.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { buildTestImages, skopeoCopy, skopeoInspectRaw, type TestImageSet } from './helpers/images.js';
import { assertNoStack, runBundle, type RunResult } from './helpers/cli.js';
import { makeRepo, pushStackArtifact, startFileServer, startGitDaemon, startIndexServer, storedZip, writeFiles, type FileServer, type GitDaemon } from './helpers/devfile-fixture.js';

const run = promisify(execFile);

let work: string;
let src: RunningRegistry;
let dst: RunningRegistry;
let set: TestImageSet;
let gitd: GitDaemon;
let http: FileServer;
let registry: string;
let conf: string;
let key: string;
let pub: string;
let n = 0;
/** original image name -> digest at the source (read by skopeo through its real location) */
const sourceDigests: Record<string, string> = {};

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Where each original name really lives on the loopback registry (what the registries.conf says). */
function located(name: string): string {
  return name
    .replace(/^registry\.access\.redhat\.com\//, `${src.host}/rh/`)
    .replace(/^docker\.io\//, `${src.host}/hub/`)
    .replace(/^quay\.io\//, `${src.host}/quay/`)
    .replace(/^icr\.io\/appcafe\//, `${src.host}/icr/appcafe/`);
}

const IMAGES = {
  node: 'registry.access.redhat.com/ubi8/nodejs-18:1-32',
  base: 'docker.io/library/node:18',
  redis: 'docker.io/library/redis:7',
  helper: 'icr.io/appcafe/helper:1.0',
  indexBase: 'quay.io/devfile/devfile-index-base:next',
  ociRegistry: 'quay.io/devfile/oci-registry:next',
};
let golangDigest: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-devfile-'));
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  set = await buildTestImages(join(work, 'layout'));
  await skopeoCopy(set.layoutDir, 'app-one', located(IMAGES.node));
  await skopeoCopy(set.layoutDir, 'app-two', located(IMAGES.base), ['--format', 'v2s2']);
  await skopeoCopy(set.layoutDir, 'app-two', located(IMAGES.redis));
  await skopeoCopy(set.layoutDir, 'app-one', located(IMAGES.helper));
  await skopeoCopy(set.layoutDir, 'app-one', located(IMAGES.indexBase));
  await skopeoCopy(set.layoutDir, 'app-two', located(IMAGES.ociRegistry));
  await skopeoCopy(set.layoutDir, 'multi', located('quay.io/devfile/golang:1.21'));
  golangDigest = sha(await skopeoInspectRaw(`docker://${located('quay.io/devfile/golang:1.21')}`));
  IMAGES_PINNED.golang = `quay.io/devfile/golang@${golangDigest}`;
  for (const name of [...Object.values(IMAGES), 'quay.io/devfile/golang:1.21']) {
    sourceDigests[name] = sha(await skopeoInspectRaw(`docker://${located(name)}`));
  }
  sourceDigests[IMAGES_PINNED.golang] = golangDigest;

  // Git: a starter project with two revisions (tag v1.0 is the one the devfile pins) and a sample.
  const gitRoot = join(work, 'git');
  await mkdir(gitRoot);
  await makeRepo(gitRoot, 'starter', [
    { files: { 'app/index.js': 'console.log("v1");\n', 'app/lib/util.js': 'exports.x = 1;\n', 'other/README.md': 'not in subDir\n', 'README.md': 'top\n' }, tag: 'v1.0' },
    { files: { 'app/index.js': 'console.log("v2");\n', 'app/new.js': 'added after v1.0\n' } },
  ]);
  await makeRepo(gitRoot, 'sample', [
    {
      files: {
        'devfile.yaml': `schemaVersion: 2.2.0\nmetadata:\n  name: sample-basic\ncomponents:\n  - name: runtime\n    container:\n      image: ${IMAGES.node}\n`,
        'server.js': 'require("http").createServer().listen(8080);\n',
      },
    },
  ]);
  gitd = await startGitDaemon(gitRoot);
  http = await startFileServer({
    '/go-starter.zip': storedZip({ 'go-starter-main/main.go': 'package main\n', 'go-starter-main/go.mod': 'module x\n' }),
    '/evil.zip': storedZip({ 'ok.txt': 'fine\n', '../evil.txt': 'escaped\n' }),
  });

  registry = join(work, 'registry');
  await writeFiles(registry, {
    'stacks/nodejs/stack.yaml': 'name: nodejs\ndisplayName: Node.js Runtime\ndescription: Node.js stack\nversions:\n  - version: 2.1.0\n  - version: 2.2.0\n    default: true # the default\n',
    'stacks/nodejs/2.1.0/devfile.yaml': [
      'schemaVersion: 2.1.0',
      'metadata:',
      '  name: nodejs',
      '  version: 2.1.0',
      'components:',
      '  - name: runtime',
      '    container:',
      `      image: ${IMAGES.node}`,
      '',
    ].join('\n'),
    'stacks/nodejs/2.2.0/devfile.yaml': [
      '# The nodejs stack, newest version',
      'schemaVersion: 2.2.0',
      'metadata:',
      '  name: nodejs',
      '  version: 2.2.0',
      '  displayName: Node.js Runtime',
      '  tags: [Node.js]',
      'variables:',
      "  NODE_TAG: '1-32'",
      '  CONTAINER_IMAGE: quay.io/unknown-account/myimage',
      'starterProjects:',
      '  - name: nodejs-starter',
      '    description: the app folder at v1.0',
      '    subDir: app',
      '    git:',
      '      checkoutFrom:',
      '        revision: v1.0',
      '      remotes:',
      `        origin: ${gitd.url('starter')}`,
      'components:',
      '  - name: runtime',
      '    container:',
      '      # the node runtime',
      '      image: registry.access.redhat.com/ubi8/nodejs-18:{{NODE_TAG}}',
      '      memoryLimit: 1024Mi',
      '  - name: build',
      '    image:',
      "      imageName: '{{CONTAINER_IMAGE}}'",
      '      dockerfile:',
      '        uri: docker/Dockerfile',
      '        buildContext: .',
      '  - name: deploy',
      '    kubernetes:',
      '      uri: kubernetes/deploy.yaml',
      '  - name: helper',
      '    kubernetes:',
      '      inlined: |',
      '        apiVersion: v1',
      '        kind: Pod',
      '        metadata:',
      '          name: helper',
      '        spec:',
      '          containers:',
      '            - name: helper',
      `              image: ${IMAGES.helper}`,
      '',
    ].join('\n'),
    'stacks/nodejs/2.2.0/docker/Dockerfile': [
      '# syntax=docker/dockerfile:1',
      'ARG BASE=docker.io/library/node',
      'ARG TAG=18',
      'FROM ${BASE}:${TAG} AS build',
      'COPY . /app',
      'FROM build AS test',
      'RUN true',
      `FROM quay.io/devfile/golang@${'${GOLANG_DIGEST}'}`.replace('${GOLANG_DIGEST}', 'DIGEST'),
      'COPY --from=build /app /app',
      '',
    ].join('\n'),
    'stacks/nodejs/2.2.0/kubernetes/deploy.yaml': [
      'apiVersion: apps/v1',
      'kind: Deployment',
      'metadata:',
      '  name: app',
      'spec:',
      '  template:',
      '    spec:',
      '      containers:',
      '        - name: app',
      '          image: "{{CONTAINER_IMAGE}}"',
      '        - name: cache',
      '          image: redis:7 # a short name',
      '',
    ].join('\n'),
    'stacks/go/devfile.yaml': '', // written below (needs the digest)
    'extraDevfileEntries.yaml': `schemaVersion: 1.0.0\nsamples:\n  - name: sample-basic\n    displayName: Basic sample\n    git:\n      remotes:\n        origin: ${gitd.url('sample')}\n`,
  });
  await writeFile(join(registry, 'stacks/nodejs/2.2.0/docker/Dockerfile'), (await readFile(join(registry, 'stacks/nodejs/2.2.0/docker/Dockerfile'), 'utf8')).replace('DIGEST', golangDigest));
  await writeFile(
    join(registry, 'stacks/go/devfile.yaml'),
    [
      'schemaVersion: 2.2.0',
      'metadata:',
      '  name: go',
      '  version: 1.0.0',
      '  displayName: Go Runtime',
      'starterProjects:',
      '  - name: go-starter',
      '    zip:',
      `      location: ${http.url('/go-starter.zip')}`,
      'components:',
      '  - name: runtime',
      '    container:',
      `      image: ${IMAGES_PINNED.golang}`,
      '',
    ].join('\n'),
  );

  // The images are reached only through this registries.conf: location rewrites and a mirror list.
  conf = join(work, 'registries.conf');
  await writeFile(
    conf,
    [
      '[[registry]]',
      'prefix = "registry.access.redhat.com"',
      `location = "${src.host}/rh"`,
      '',
      '[[registry]]',
      'prefix = "docker.io"',
      `location = "${src.host}/hub"`,
      '',
      '[[registry]]',
      'prefix = "icr.io/appcafe"',
      `location = "${src.host}/icr/appcafe"`,
      '',
      '[[registry]]',
      'prefix = "quay.io"',
      `location = "${src.host}/no-such-fallback"`,
      '[[registry.mirror]]',
      'location = "127.0.0.1:1/dead-mirror"',
      '[[registry.mirror]]',
      `location = "${src.host}/quay"`,
      '',
    ].join('\n'),
  );
  key = join(work, 'site');
  const k = await runBundle(['keygen', '--out', key]);
  assert.equal(k.code, 0, k.stderr);
  pub = `${key}.pub`;
});

const IMAGES_PINNED: { golang: string } = { golang: '' };

after(async () => {
  await Promise.all([src?.stop(), dst?.stop(), gitd?.stop(), http?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

function configText(devfile: string[]): string {
  return ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'devfile:', ...devfile.map((l) => `  ${l}`), ''].join('\n');
}

async function create(devfile: string[], extra: string[] = [], reg = registry): Promise<{ r: RunResult; out: string }> {
  const dir = join(work, `run-${++n}`);
  await mkdir(dir);
  await writeFile(join(dir, 'bundle.yaml'), configText([`registries: [{path: ${reg}}]`, ...devfile]));
  const out = join(dir, 'devfiles.airgap');
  const r = await runBundle(['create', '-c', join(dir, 'bundle.yaml'), '-o', out, '--sign-key', `${key}.key`, '--registries-conf', conf, ...extra]);
  assertNoStack(r);
  return { r, out };
}

describe('devfile registry: create and push', () => {
  let out: string;
  let folder: string;
  let pushed: RunResult;
  let report: {
    sources: { devfile: { stacks: { type: string; name: string; version: string; artifact?: string; digest?: string; images: { file: string; from: string; to: string }[] }[]; indexImage: { reference: string; digest: string } } };
  };
  const target = () => `${dst.host}/mirror`;

  before(async () => {
    const c = await create(['samples: true', `indexBase: ${IMAGES.indexBase}`, `extraImages: [${IMAGES.ociRegistry}]`]);
    assert.equal(c.r.code, 0, c.r.stderr + c.r.stdout);
    out = c.out;
    folder = join(work, 'offline-registry');
    pushed = await runBundle(['push', out, '--to', target(), '--key', pub, '--out-dir', join(work, 'push-out'), '--devfile-out', folder, '--json']);
    assertNoStack(pushed);
    assert.equal(pushed.code, 0, pushed.stderr + pushed.stdout);
    report = JSON.parse(pushed.stdout) as typeof report;
  });

  it('carries every image a devfile needs, pulled through the registries.conf, recorded under its original name', async () => {
    const manifest = JSON.parse((await run('sh', ['-c', `zstd -dc '${out}' | tar xO airgap/manifest.json`])).stdout) as { images: { source: string; digest: string; origin: string }[]; formatVersion: string };
    assert.equal(manifest.formatVersion, '1.1');
    const bySource = new Map(manifest.images.map((i) => [i.source, i]));
    for (const name of [IMAGES.node, IMAGES.base, IMAGES.redis, IMAGES.helper, IMAGES.indexBase, IMAGES.ociRegistry, IMAGES_PINNED.golang]) {
      assert.equal(bySource.get(name)?.digest, sourceDigests[name], `${name} in the bundle with its source digest`);
    }
    const v = await runBundle(['verify', out, '--key', pub]);
    assert.equal(v.code, 0, v.stderr + v.stdout);
    // Built images and stage names are not pulled.
    assert.ok(![...bySource.keys()].some((s) => s.includes('unknown-account') || s.includes('/build')), [...bySource.keys()].join(' '));
  });

  it('every image is in the target registry with its source digest (skopeo inspect)', async () => {
    for (const name of [IMAGES.node, IMAGES.base, IMAGES.redis, IMAGES.helper, IMAGES.ociRegistry]) {
      const path = name.replace(/^[^/]+\//, '');
      const raw = await skopeoInspectRaw(`docker://${target()}/${path}`);
      assert.equal(sha(raw), sourceDigests[name], name);
    }
    const raw = await skopeoInspectRaw(`docker://${target()}/devfile/golang@${golangDigest}`);
    assert.equal(sha(raw), golangDigest);
  });

  it('rewritten devfiles, manifests and Dockerfiles name only target-registry images; comments survive', async () => {
    const d22 = await readFile(join(folder, 'stacks/nodejs/2.2.0/devfile.yaml'), 'utf8');
    const doc = parseYaml(d22) as { components: { name: string; container?: { image: string }; kubernetes?: { inlined?: string; uri?: string } }[]; starterProjects: { name: string; zip?: { location: string }; git?: unknown; subDir?: string }[] };
    assert.equal(doc.components[0]!.container!.image, `${target()}/ubi8/nodejs-18:1-32`);
    const inlined = parseYaml(doc.components.find((c) => c.name === 'helper')!.kubernetes!.inlined!) as { spec: { containers: { image: string }[] } };
    assert.equal(inlined.spec.containers[0]!.image, `${target()}/appcafe/helper:1.0`);
    assert.match(d22, /# The nodejs stack, newest version/);
    assert.match(d22, /# the node runtime/);
    // Starter project: a zip next to the devfile, the original kept as a comment.
    assert.deepEqual(doc.starterProjects[0], { name: 'nodejs-starter', description: 'the app folder at v1.0', zip: { location: 'nodejs-starter-offline.zip' } });
    assert.match(d22, /#.*revision: v1\.0/);

    const deploy = await run('tar', ['-xzOf', join(folder, 'stacks/nodejs/2.2.0/archive.tar'), 'kubernetes/deploy.yaml']);
    const images = parseAllDocuments(deploy.stdout).flatMap((d) => (d.toJS() as { spec: { template: { spec: { containers: { image: string }[] } } } }).spec.template.spec.containers.map((c) => c.image));
    assert.deepEqual(images, ['{{CONTAINER_IMAGE}}', `${target()}/library/redis:7`]);
    const dockerfile = (await run('tar', ['-xzOf', join(folder, 'stacks/nodejs/2.2.0/archive.tar'), 'docker/Dockerfile'])).stdout;
    const froms = dockerfile.split('\n').filter((l) => l.startsWith('FROM'));
    assert.deepEqual(froms, [`FROM ${target()}/library/node:18 AS build`, 'FROM build AS test', `FROM ${target()}/devfile/golang@${golangDigest}`]);

    const go = parseYaml(await readFile(join(folder, 'stacks/go/devfile.yaml'), 'utf8')) as { components: { container: { image: string } }[] };
    assert.equal(go.components[0]!.container.image, `${target()}/devfile/golang@${golangDigest}`);
    const sample = parseYaml(await readFile(join(folder, 'samples/sample-basic/devfile.yaml'), 'utf8')) as { components: { container: { image: string } }[] };
    assert.equal(sample.components[0]!.container.image, `${target()}/ubi8/nodejs-18:1-32`);
  });

  it('each starter zip holds exactly the right files at the right revision (unzip)', async () => {
    const sp = join(folder, 'stacks/nodejs/2.2.0/nodejs-starter-offline.zip');
    const names = (await run('unzip', ['-Z1', sp])).stdout.trim().split('\n').sort();
    assert.deepEqual(names, ['index.js', 'lib/util.js']);
    assert.equal((await run('unzip', ['-p', sp, 'index.js'])).stdout, 'console.log("v1");\n');
    const goZip = join(folder, 'stacks/go/go-starter-offline.zip');
    assert.deepEqual((await run('unzip', ['-Z1', goZip])).stdout.trim().split('\n').sort(), ['go-starter-main/go.mod', 'go-starter-main/main.go']);
    const sampleZip = join(folder, 'samples/sample-basic/sample-basic-offline.zip');
    assert.deepEqual((await run('unzip', ['-Z1', sampleZip])).stdout.trim().split('\n').sort(), ['devfile.yaml', 'server.js']);
  });

  it('each stack version is an OCI artifact with the devfile media types at <to>/devfile-catalog/<stack>:<version>', async () => {
    const raw = await skopeoInspectRaw(`docker://${target()}/devfile-catalog/nodejs:2.2.0`);
    const m = JSON.parse(raw.toString()) as { config: { mediaType: string }; layers: { mediaType: string; annotations: Record<string, string> }[] };
    assert.equal(m.config.mediaType, 'application/vnd.devfileio.devfile.config.v2+json');
    const layers = m.layers.map((l) => [l.annotations['org.opencontainers.image.title'], l.mediaType]);
    assert.deepEqual(layers, [
      ['devfile.yaml', 'application/vnd.devfileio.devfile.layer.v1'],
      ['archive.tar', 'application/x-tar'],
      ['nodejs-starter-offline.zip', 'application/zip'],
    ]);
    const entry = report.sources.devfile.stacks.find((s) => s.name === 'nodejs' && s.version === '2.2.0')!;
    assert.equal(entry.digest, sha(raw), 'the report gives the new digest');
    // The rewritten devfile is what the registry serves.
    const blob = await fetch(`http://${dst.host}/v2/mirror/devfile-catalog/nodejs/blobs/${(m.layers[0] as unknown as { digest: string }).digest}`);
    assert.equal(await blob.text(), await readFile(join(folder, 'stacks/nodejs/2.2.0/devfile.yaml'), 'utf8'));
    for (const v of ['nodejs:2.1.0', 'go:1.0.0']) await skopeoInspectRaw(`docker://${target()}/devfile-catalog/${v}`);
  });

  it('the push report says which devfile now points at which pushed image', () => {
    const entry = report.sources.devfile.stacks.find((s) => s.name === 'nodejs' && s.version === '2.2.0')!;
    const to = new Map(entry.images.map((i) => [`${i.file}:${i.from}`, i.to]));
    assert.equal(to.get(`devfile.yaml:${IMAGES.node}`), `${target()}/ubi8/nodejs-18:1-32`);
    assert.equal(to.get('kubernetes/deploy.yaml:redis:7'), `${target()}/library/redis:7`, 'a short name, as the file wrote it');
    assert.equal(to.get(`docker/Dockerfile:${IMAGES.base}`), `${target()}/library/node:18`);
  });

  it('index.json lists the stacks, versions and resources delivered', async () => {
    const index = JSON.parse(await readFile(join(folder, 'index.json'), 'utf8')) as { name: string; type: string; versions: { version: string; resources?: string[]; links?: { self: string } }[] }[];
    assert.deepEqual(index.map((e) => `${e.type}:${e.name}`), ['stack:go', 'stack:nodejs', 'sample:sample-basic']);
    const node = index.find((e) => e.name === 'nodejs')!;
    assert.deepEqual(node.versions.map((v) => v.version), ['2.1.0', '2.2.0']);
    assert.deepEqual(node.versions[1]!.resources, ['devfile.yaml', 'archive.tar', 'nodejs-starter-offline.zip']);
    assert.equal(node.versions[1]!.links!.self, 'devfile-catalog/nodejs:2.2.0');
    assert.match(await readFile(join(folder, 'stacks/nodejs/stack.yaml'), 'utf8'), /# the default/);
  });

  it('the devfile-index image: valid config and manifest, base layers byte for byte, a new layer with /registry', async () => {
    const ref = `docker://${target()}/devfile-index:latest`;
    const raw = JSON.parse((await skopeoInspectRaw(ref)).toString()) as { layers: { digest: string }[]; config: { digest: string } };
    const base = JSON.parse((await skopeoInspectRaw(`docker://${located(IMAGES.indexBase)}`)).toString()) as { layers: { digest: string }[] };
    assert.deepEqual(raw.layers.slice(0, base.layers.length), base.layers);
    assert.equal(raw.layers.length, base.layers.length + 1);
    const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--config', ref]);
    const config = JSON.parse(stdout) as { config: { Env: string[] }; rootfs: { diff_ids: string[] } };
    assert.ok(config.config.Env.includes('DEVFILE_INDEX=/registry/index.json'));
    assert.equal(config.rootfs.diff_ids.length, raw.layers.length);
    const layerDigest = raw.layers[raw.layers.length - 1]!.digest;
    const blob = Buffer.from(await (await fetch(`http://${dst.host}/v2/mirror/devfile-index/blobs/${layerDigest}`)).arrayBuffer());
    assert.equal(sha(blob), layerDigest);
    const layerFile = join(work, 'index-layer.tar.gz');
    await writeFile(layerFile, blob);
    const listing = (await run('tar', ['-tzf', layerFile])).stdout.split('\n');
    for (const p of ['registry/index.json', 'registry/stacks/nodejs/2.2.0/devfile.yaml', 'registry/stacks/go/go-starter-offline.zip', 'registry/samples/sample-basic/devfile.yaml']) {
      assert.ok(listing.includes(p), `${p} in the new layer`);
    }
    const indexInImage = (await run('tar', ['-xzOf', layerFile, 'registry/index.json'])).stdout;
    assert.equal(indexInImage, await readFile(join(folder, 'index.json'), 'utf8'));
  });

  it('nothing is written outside --devfile-out', async () => {
    const top = (await readdir(folder)).sort();
    assert.deepEqual(top, ['index.json', 'samples', 'stacks']);
  });
});

describe('devfile registry: errors', () => {
  it('an unknown stack name is one clear line (exit 2)', async () => {
    const { r } = await create(['stacks: [nodejs, nope]']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /devfile\.stacks: no stack "nope" in /);
    const v = await create(['stacks: [go@9.9.9]']);
    assert.equal(v.r.code, 2);
    assert.match(v.r.stderr, /stack go has no version 9\.9\.9 .*it has 1\.0\.0/);
  });

  it('a broken devfile names the stack and the file', async () => {
    const reg = join(work, 'broken-registry');
    await cp(registry, reg, { recursive: true });
    await writeFile(join(reg, 'stacks/go/devfile.yaml'), 'schemaVersion: 2.2.0\ncomponents:\n  - name: x\n    container: [unclosed\n');
    const { r } = await create(['stacks: [go]'], [], reg);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /stack go.*stacks\/go\/devfile\.yaml: not valid YAML/);
  });

  it('an image that cannot be pulled names stack, version, component and file; --skip-missing records it and push reports it', async () => {
    const reg = join(work, 'missing-registry');
    await cp(registry, reg, { recursive: true });
    await writeFile(join(reg, 'stacks/go/devfile.yaml'), (await readFile(join(reg, 'stacks/go/devfile.yaml'), 'utf8')).replace(IMAGES_PINNED.golang, 'registry.access.redhat.com/ubi8/missing:1'));
    const { r } = await create(['stacks: [go]', 'starterProjects: false'], [], reg);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /registry\.access\.redhat\.com\/ubi8\/missing:1: cannot pull it \(needed by stack go 1\.0\.0, component runtime, stacks\/go\/devfile\.yaml\)/);

    const skipped = await create(['stacks: [go]', 'starterProjects: false'], ['--skip-missing'], reg);
    assert.equal(skipped.r.code, 0, skipped.r.stderr);
    assert.match(skipped.r.stdout, /SKIPPED registry\.access\.redhat\.com\/ubi8\/missing:1: .*needed by stack go 1\.0\.0, component runtime/);
    const p = await runBundle(['push', skipped.out, '--to', `${dst.host}/skip`, '--key', pub, '--out-dir', join(work, 'skip-out')]);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /SKIPPED at create registry\.access\.redhat\.com\/ubi8\/missing:1/);
    assert.match(p.stdout, /registry\.access\.redhat\.com\/ubi8\/missing:1 NOT CARRIED/);
  });

  it('a starter project on a file:// URL is refused (a downloaded devfile cannot bundle this machine\'s repositories)', async () => {
    const reg = join(work, 'file-registry');
    await cp(registry, reg, { recursive: true });
    const d = join(reg, 'stacks/nodejs/2.2.0/devfile.yaml');
    await writeFile(d, (await readFile(d, 'utf8')).replace(gitd.url('starter'), `file://${join(work, 'git', 'starter.git')}`));
    const { r } = await create(['stacks: [nodejs@2.2.0]'], [], reg);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /stack nodejs 2\.2\.0 \(stacks\/nodejs\/2\.2\.0\/devfile\.yaml\): starter project nodejs-starter: git clone failed: .*transport 'file' not allowed/);
  });

  it('a downloaded zip with an entry outside the project is refused', async () => {
    const reg = join(work, 'evil-registry');
    await cp(registry, reg, { recursive: true });
    await writeFile(join(reg, 'stacks/go/devfile.yaml'), (await readFile(join(reg, 'stacks/go/devfile.yaml'), 'utf8')).replace('/go-starter.zip', '/evil.zip'));
    const { r } = await create(['stacks: [go]'], [], reg);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /stack go 1\.0\.0 .*starter project go-starter: zip entry "\.\.\/evil\.txt" would be written outside the project folder/);
  });
});

describe('devfile registry by URL: its index and its OCI side', () => {
  let ociSrc: RunningRegistry;
  let server: FileServer;

  before(async () => {
    ociSrc = await startRegistry();
    const { tarLayer } = await import('./helpers/images.js');
    const { gzipSync } = await import('node:zlib');
    for (const version of ['1.0.0', '1.1.0']) {
      const devfile = `schemaVersion: 2.2.0\nmetadata:\n  name: php\n  version: ${version}\ncomponents:\n  - name: runtime\n    container:\n      image: ${IMAGES.node}\n  - name: build\n    image:\n      imageName: php-app:latest\n      dockerfile:\n        uri: docker/Dockerfile\n`;
      await pushStackArtifact(ociSrc.host, 'php', version, [
        { title: 'devfile.yaml', mediaType: 'application/vnd.devfileio.devfile.layer.v1', data: Buffer.from(devfile) },
        { title: 'archive.tar', mediaType: 'application/x-tar', data: gzipSync(await tarLayer({ 'docker/Dockerfile': `FROM ${IMAGES.base}\n` })) },
      ]);
    }
    server = await startIndexServer(
      [
        { name: 'php', displayName: 'PHP', type: 'stack', versions: [{ version: '1.0.0' }, { version: '1.1.0', default: true }] },
        { name: 'other', type: 'stack', versions: [{ version: '9.0.0' }] },
      ],
      ociSrc.host,
    );
  });
  after(async () => {
    await Promise.all([server?.stop(), ociSrc?.stop()]);
  });

  it('reads the index and each stack version artifact, and delivers them rewritten', async () => {
    const dir = join(work, 'url-run');
    await mkdir(dir);
    await writeFile(join(dir, 'bundle.yaml'), configText([`registries: [{url: "${server.url('')}"}]`, 'stacks: [php]']));
    const out = join(dir, 'url.airgap');
    const c = await runBundle(['create', '-c', join(dir, 'bundle.yaml'), '-o', out, '--sign-key', `${key}.key`, '--registries-conf', conf]);
    assertNoStack(c);
    assert.equal(c.code, 0, c.stderr);
    // Only the stack asked for was fetched from the OCI side.
    assert.ok(server.requests.some((r) => r.includes('/v2/devfile-catalog/php/manifests/1.1.0')));
    assert.ok(!server.requests.some((r) => r.includes('devfile-catalog/other')));
    const folder = join(dir, 'folder');
    const p = await runBundle(['push', out, '--to', `${dst.host}/url`, '--key', pub, '--out-dir', join(dir, 'push-out'), '--devfile-out', folder]);
    assert.equal(p.code, 0, p.stderr);
    const devfile = parseYaml(await readFile(join(folder, 'stacks/php/1.1.0/devfile.yaml'), 'utf8')) as { components: { container?: { image: string } }[] };
    assert.equal(devfile.components[0]!.container!.image, `${dst.host}/url/ubi8/nodejs-18:1-32`);
    const dockerfile = (await run('tar', ['-xzOf', join(folder, 'stacks/php/1.1.0/archive.tar'), 'docker/Dockerfile'])).stdout;
    assert.equal(dockerfile, `FROM ${dst.host}/url/library/node:18\n`);
    assert.match(await readFile(join(folder, 'stacks/php/stack.yaml'), 'utf8'), /version: 1\.1\.0\n\s+default: true/);
    const raw = JSON.parse((await skopeoInspectRaw(`docker://${dst.host}/url/devfile-catalog/php:1.0.0`)).toString()) as { config: { mediaType: string } };
    assert.equal(raw.config.mediaType, 'application/vnd.devfileio.devfile.config.v2+json');
    assert.equal(sha(await skopeoInspectRaw(`docker://${dst.host}/url/library/node:18`)), sourceDigests[IMAGES.base]);
  });
});
