/**
 * Seed 004 (dump a whole registry by /v2/_catalog and tags/list) and seed 003
 * (the samples operator's image streams) as config sections, end to end against
 * real registries; the source registry is read through the test proxy, which
 * pages tag lists like newer registries do (Distribution pages _catalog itself).
 * The destination is checked with its own API and skopeo, not the tool.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RunningProxy } from './helpers/proxy.js';
import { LayoutBuilder, skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';
import { inBatches, skopeoCopyExact } from './helpers/openshift.js';

let work: string;
let src: RunningRegistry;
let dst: RunningRegistry;
let proxy: RunningProxy;
/** repo -> digest of the one image pushed there */
const digests: Record<string, string> = {};

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** Give the image already in `repo` more tags, with the registry's own API. */
async function addTags(host: string, repo: string, tags: string[]): Promise<void> {
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${digests[repo]}`, { headers: { accept: ACCEPT } });
  const body = Buffer.from(await res.arrayBuffer());
  const type = res.headers.get('content-type')!;
  for (const t of tags) {
    const put = await fetch(`http://${host}/v2/${repo}/manifests/${t}`, { method: 'PUT', headers: { 'content-type': type }, body });
    assert.equal(put.status, 201, `${repo}:${t}`);
  }
}

/** Every page of a listing, straight from the registry's API. */
async function listAll(host: string, path: string, field: 'repositories' | 'tags'): Promise<string[]> {
  const out: string[] = [];
  let next: string | undefined = `${path}?n=1000`;
  while (next) {
    const res: Response = await fetch(`http://${host}${next}`);
    if (res.status === 404) return out;
    out.push(...(((await res.json()) as Record<string, string[] | null>)[field] ?? []));
    next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '')?.[1];
  }
  return out.sort();
}

async function config(name: string, body: string[]): Promise<string> {
  const file = join(work, name);
  await writeFile(file, ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', ...body, ''].join('\n'));
  return file;
}

const REPOS = ['openshift/php', 'openshift/python', 'openshift/ruby', 'openshift/tmp-build', 'openshift/sub/deep', 'other/app', 'rhscl/ruby-30', 'rhscl/ruby-27'];
const TAGS: Record<string, string[]> = {
  'openshift/php': ['latest', '5.5', '5.6', '7.0', '7.1', '5.x-old', 'v5.5'],
  'openshift/python': ['latest', '2.7', '3.6', '5.0'],
  'openshift/ruby': ['2.5', '2.6'],
  'openshift/tmp-build': ['latest', '5.1'],
  'openshift/sub/deep': ['latest'],
  'other/app': ['latest', '5.0'],
};

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-mirror-'));
  [src, dst] = await Promise.all([startRegistry(), startRegistry()]);
  proxy = await startProxy(src.host);
  const b = await new LayoutBuilder(join(work, 'layout')).init();
  for (const repo of REPOS) {
    const img = await b.image([await b.layer({ [`srv/${repo}.txt`]: `${repo}\n` })], undefined, repo);
    b.tag(repo, img);
    digests[repo] = img.digest;
  }
  await b.save();
  await inBatches(REPOS, 4, (repo) => skopeoCopyExact(join(work, 'layout'), repo, `${src.host}/${repo}:first`));
  for (const [repo, tags] of Object.entries(TAGS)) await addTags(src.host, repo, tags);
  await runBundle(['keygen', '--out', join(work, 'site')]);
});

after(async () => {
  await proxy?.stop();
  await Promise.all([src?.stop(), dst?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('repositories: a registry dumped by _catalog and tags/list', () => {
  const expected: Record<string, string[]> = {
    'openshift/php': ['5.5', '5.6', '5.x-old', 'latest'],
    'openshift/python': ['5.0', 'latest'],
  };

  it('carries every tag that matches and none that does not, across pages of both listings', async () => {
    const cfg = await config('repos.yaml', [
      'repositories:',
      `  - registry: ${proxy.host}`,
      '    include: ["openshift/*"]',
      '    exclude: ["openshift/tmp-*"]',
      `    tags: '^(latest|5\\..*)$'`,
      '    pageSize: 2',
    ]);
    const out = join(work, 'repos.airgap');
    proxy.reset();
    let r = await runBundle(['create', '-c', cfg, '-o', out, '--sign-key', join(work, 'site.key')]);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr);
    // Both listings were paged: the catalog has 8 repositories (4 pages of 2), php has 8 tags (4 pages).
    assert.ok(proxy.count('GET', '/v2/_catalog') >= 4, `catalog pages: ${proxy.count('GET', '/v2/_catalog')}`);
    assert.equal(proxy.count('GET', '/v2/openshift/php/tags/list'), 4);

    r = await runBundle(['push', out, '--to', `${dst.host}/dump`, '--key', join(work, 'site.pub'), '--out-dir', join(work, 'out-repos'), '--json']);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr);
    // What the destination holds, by its own API: exactly the matching repositories and tags.
    assert.deepEqual(await listAll(dst.host, '/v2/_catalog', 'repositories'), Object.keys(expected).map((x) => `dump/${x}`).sort());
    for (const [repo, tags] of Object.entries(expected)) {
      assert.deepEqual(await listAll(dst.host, `/v2/dump/${repo}/tags/list`, 'tags'), [...tags].sort(), repo);
      const raw = await skopeoInspectRaw(`docker://${dst.host}/dump/${repo}:${tags[0]}`);
      assert.equal(sha256(raw), digests[repo]);
    }
    const report = JSON.parse(r.stdout) as { sources: { repositories: { registry: string; repositories: { repository: string; pushedTo: string; tags: string[] }[] }[] } };
    assert.deepEqual(
      report.sources.repositories[0]!.repositories.map((x) => [x.repository, x.pushedTo, x.tags]),
      Object.entries(expected).map(([repo, tags]) => [repo, `${dst.host}/dump/${repo}`, [...tags].sort()]),
    );
  });
});

describe('imageStreams: the samples operator', () => {
  it('carries every DockerImage tag, skips the image streams it could not carry, and writes the samples operator patch', async () => {
    const list = {
      apiVersion: 'v1',
      kind: 'List',
      items: [
        {
          apiVersion: 'image.openshift.io/v1',
          kind: 'ImageStream',
          metadata: { name: 'ruby', namespace: 'openshift' },
          spec: {
            tags: [
              { name: '3.0', from: { kind: 'DockerImage', name: `${src.host}/rhscl/ruby-30:first` } },
              { name: '2.7', from: { kind: 'DockerImage', name: `${src.host}/rhscl/ruby-27@${digests['rhscl/ruby-27']}` } },
              { name: 'latest', from: { kind: 'ImageStreamTag', name: '3.0' } },
            ],
          },
        },
        {
          apiVersion: 'image.openshift.io/v1',
          kind: 'ImageStream',
          metadata: { name: 'nodejs', namespace: 'openshift' },
          spec: { tags: [{ name: '18', from: { kind: 'DockerImage', name: `${src.host}/rhscl/nodejs-18:gone` } }] },
        },
      ],
    };
    const yamlFile = join(work, 'openshift-imagestreams.yaml');
    const { stringify } = await import('yaml');
    await writeFile(yamlFile, stringify(list));
    const jsonFile = join(work, 'php.json');
    await writeFile(
      jsonFile,
      JSON.stringify({ kind: 'ImageStream', apiVersion: 'image.openshift.io/v1', metadata: { name: 'php' }, spec: { tags: [{ name: '7.1', from: { kind: 'DockerImage', name: `${src.host}/openshift/php:7.1` } }] } }),
    );
    const cfg = await config('streams.yaml', ['imageStreams:', '  - path: ./openshift-imagestreams.yaml', '  - path: ./php.json']);
    const out = join(work, 'streams.airgap');

    let r = await runBundle(['create', '-c', cfg, '-o', out]);
    assert.equal(r.code, 1, 'a missing image fails without --skip-missing');
    assert.ok(r.stderr.includes(`${src.host}/rhscl/nodejs-18:gone`) && r.stderr.includes('image stream nodejs (tag 18)'), r.stderr);

    r = await runBundle(['create', '-c', cfg, '-o', out, '--skip-missing', '--sign-key', join(work, 'site.key')]);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr);
    const outDir = join(work, 'out-streams');
    r = await runBundle(['push', out, '--to', `${dst.host}/samples`, '--key', join(work, 'site.pub'), '--out-dir', outDir]);
    assertNoStack(r);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /image stream nodejs: NOT CARRIED/);

    // The images, path kept under the prefix, so samplesRegistry HOST/PREFIX works for every stream.
    assert.equal(sha256(await skopeoInspectRaw(`docker://${dst.host}/samples/rhscl/ruby-30:first`)), digests['rhscl/ruby-30']);
    assert.equal(sha256(await skopeoInspectRaw(`docker://${dst.host}/samples/rhscl/ruby-27@${digests['rhscl/ruby-27']}`)), digests['rhscl/ruby-27']);
    assert.equal(sha256(await skopeoInspectRaw(`docker://${dst.host}/samples/openshift/php:7.1`)), digests['openshift/php']);
    const patch = parseYaml(await readFile(join(outDir, 'samples-operator-patch.yaml'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(patch, { spec: { managementState: 'Managed', samplesRegistry: `${dst.host}/samples`, skippedImagestreams: ['nodejs'] } });
    const idms = parseYaml(await readFile(join(outDir, 'idms.yaml'), 'utf8')) as { spec: { imageDigestMirrors: { source: string }[] } };
    assert.deepEqual(
      idms.spec.imageDigestMirrors.map((e) => e.source),
      [`${src.host}/openshift/php`, `${src.host}/rhscl/ruby-27`, `${src.host}/rhscl/ruby-30`],
    );
  });
});
