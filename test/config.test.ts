import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig, type LoadedConfig } from '../src/config/config.js';
import { UsageError } from '../src/util/errors.js';

const HEAD = 'apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\n';

let dir: string;
let cwd: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'bundle-config-test-'));
  // Two OCI layouts next to the config, in a sub-directory of the test dir.
  for (const l of ['conf/layouts/app', 'conf/other']) {
    await mkdir(path.join(dir, l), { recursive: true });
    await writeFile(path.join(dir, l, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(path.join(dir, l, 'index.json'), '{"schemaVersion":2,"manifests":[]}');
  }
  await mkdir(path.join(dir, 'conf', 'not-a-layout'));
  await writeFile(path.join(dir, 'conf', 'plain-file'), 'x');
  // Relative paths must resolve against the config's directory, not the cwd.
  cwd = process.cwd();
  process.chdir(dir);
});
after(async () => {
  process.chdir(cwd);
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
/** Write `text` as conf/<name> and return the path as a user would type it (relative to the cwd). */
async function write(text: string, ext = 'yaml'): Promise<string> {
  const rel = path.join('conf', `bundle${++n}.${ext}`);
  await writeFile(path.join(dir, rel), text);
  return rel;
}

async function refused(text: string, ...expect: RegExp[]): Promise<string> {
  const file = await write(text);
  return refusedFile(file, ...expect);
}

async function refusedFile(file: string, ...expect: RegExp[]): Promise<string> {
  let message = '';
  await assert.rejects(loadConfig(file), (err: unknown) => {
    assert.ok(err instanceof UsageError, `expected UsageError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    message = err.message;
    return true;
  });
  const fileRe = file.replace(/[.\\]/g, (c) => `\\${c}`);
  for (const re of expect) assert.match(message, new RegExp(re.source.replace(/FILE/g, fileRe), re.flags), message);
  return message;
}

describe('config: valid files', () => {
  it('loads YAML: normalises references, keeps platforms, resolves layout paths against the config dir', async () => {
    const file = await write(
      HEAD +
        [
          'images:',
          '  - quay.io/ns/app:1.2',
          '  - alpine',
          '  - name: docker.io/library/busybox:1.36',
          '    platforms: [linux/amd64, linux/arm/v7, linux/amd64]',
          `  - registry.example.com:5000/team/tool@sha256:${'c'.repeat(64)}`,
          'ociLayouts:',
          '  - path: ./layouts/app',
          '    refs: [v1, v2]',
          `  - path: ${path.join(dir, 'conf', 'other')}`,
        ].join('\n'),
    );
    const cfg = await loadConfig(file);
    assert.equal(cfg.path, path.join(dir, file));
    assert.deepEqual(cfg.images, [
      { ref: 'quay.io/ns/app:1.2' },
      { ref: 'docker.io/library/alpine:latest' },
      { ref: 'docker.io/library/busybox:1.36', platforms: ['linux/amd64', 'linux/arm/v7'] },
      { ref: `registry.example.com:5000/team/tool@sha256:${'c'.repeat(64)}` },
    ]);
    assert.deepEqual(cfg.ociLayouts, [
      { path: path.join(dir, 'conf', 'layouts', 'app'), refs: ['v1', 'v2'] },
      { path: path.join(dir, 'conf', 'other') },
    ]);
    assert.deepEqual(cfg.warnings, []);
  });

  it('loads JSON with the same schema', async () => {
    const file = await write(
      JSON.stringify(
        {
          apiVersion: 'airgap.bundle/v1alpha1',
          kind: 'BundleConfig',
          images: ['nginx:1.25', { name: 'alpine:3.20', platforms: ['linux/arm64'] }],
          ociLayouts: [{ path: 'other' }],
        },
        null,
        '\t',
      ),
      'json',
    );
    const cfg: LoadedConfig = await loadConfig(file);
    assert.deepEqual(cfg.images, [{ ref: 'docker.io/library/nginx:1.25' }, { ref: 'docker.io/library/alpine:3.20', platforms: ['linux/arm64'] }]);
    assert.deepEqual(cfg.ociLayouts, [{ path: path.join(dir, 'conf', 'other') }]);
  });

  it('dedupes images that are the same once normalised, merging platforms, with a warning', async () => {
    const file = await write(
      HEAD +
        [
          'images:',
          '  - name: alpine:3.20', // line 4
          '    platforms: [linux/amd64]',
          '  - name: docker.io/library/alpine:3.20', // line 6
          '    platforms: [linux/arm64]',
          '  - quay.io/a/b:1', // line 8
          '  - name: quay.io/a/b:1', // line 9
          '    platforms: [linux/s390x]',
        ].join('\n'),
    );
    const cfg = await loadConfig(file);
    assert.deepEqual(cfg.images, [
      { ref: 'docker.io/library/alpine:3.20', platforms: ['linux/amd64', 'linux/arm64'] },
      // One entry asked for every platform: every platform wins.
      { ref: 'quay.io/a/b:1' },
    ]);
    assert.equal(cfg.warnings.length, 2);
    assert.match(cfg.warnings[0]!, /bundle\d+\.yaml:6: images\[1\]\.name: "docker\.io\/library\/alpine:3\.20" is the same image as images\[0\]/);
    assert.match(cfg.warnings[1]!, /bundle\d+\.yaml:9: images\[3\]\.name: .* same image as images\[2\] \(quay\.io\/a\/b:1\)/);
  });

  it('dedupes OCI layouts by resolved path, merging refs', async () => {
    const file = await write(HEAD + ['ociLayouts:', '  - path: other', '    refs: [a]', '  - path: ./other/', '    refs: [b]'].join('\n'));
    const cfg = await loadConfig(file);
    assert.deepEqual(cfg.ociLayouts, [{ path: path.join(dir, 'conf', 'other'), refs: ['a', 'b'] }]);
    assert.equal(cfg.warnings.length, 1);
    assert.match(cfg.warnings[0]!, /:6: ociLayouts\[1\]\.path: "\.\/other\/" is the same layout as ociLayouts\[0\]/);
    // A layout named once without refs means every image: the merge keeps no refs key.
    const all = await loadConfig(await write(HEAD + ['ociLayouts:', '  - path: other', '    refs: [a]', '  - path: other'].join('\n')));
    assert.deepEqual(all.ociLayouts, [{ path: path.join(dir, 'conf', 'other') }]);
  });
});

describe('config: refusals', () => {
  it('names a missing file, and a directory', async () => {
    await refusedFile(path.join('conf', 'nope.yaml'), /^config file FILE does not exist$/);
    await refusedFile('conf', /^config file conf is a directory$/);
  });

  it('reports a YAML syntax error with its line', async () => {
    await refused(HEAD + 'images:\n  - alpine\n  - name: [unclosed\n', /^FILE:\d+: YAML syntax error: /);
    const msg = await refused(HEAD + 'images: [a]\nimages: [b]\n', /^FILE:4: YAML syntax error: Map keys must be unique/);
    assert.equal(msg.split('\n').length, 1);
  });

  it('reports a JSON syntax error with its line', async () => {
    const file = await write('{\n  "apiVersion": "airgap.bundle/v1alpha1",\n  "kind": "BundleConfig"\n  "images": []\n}\n', 'json');
    await refusedFile(file, /^FILE:\d+: JSON syntax error: /);
  });

  it('reports an unknown top-level key with the expected keys and a suggestion', async () => {
    await refused(
      HEAD + 'imagez:\n  - alpine\n',
      /^FILE:3: unknown key "imagez" at the top level \(expected apiVersion, kind, images, ociLayouts, [^)]*releases, operators, repositories, imageStreams[^)]*; did you mean "images"\?\)$/,
    );
  });

  it('reports a bad platform with line, path and what was expected', async () => {
    await refused(
      HEAD + ['images:', '  - quay.io/ns/app:1.2', '  - name: docker.io/library/alpine:3.20', '    platforms:', '      - linux/amd64', '      - linux'].join('\n'),
      /^FILE:8: images\[1\]\.platforms\[1\]: "linux" is not a platform; expected os\/arch\[\/variant\] such as linux\/amd64$/,
    );
    await refused(HEAD + 'images:\n  - name: alpine\n    platforms: []\n', /^FILE:5: images\[0\]\.platforms: must list at least 1 entry/);
    await refused(HEAD + 'images:\n  - name: alpine\n    platforms: linux/amd64\n', /^FILE:5: images\[0\]\.platforms: expected a list of platforms .*, got a string \("linux\/amd64"\)/);
  });

  it('reports unknown and missing keys inside entries', async () => {
    await refused(HEAD + 'images:\n  - name: alpine\n    platform: [linux/amd64]\n', /^FILE:5: images\[0\]: unknown key "platform" \(expected name, platforms; did you mean "platforms"\?\)$/);
    await refused(HEAD + 'images:\n  - platforms: [linux/amd64]\n', /^FILE:4: images\[0\]: missing required key "name"$/);
    await refused(HEAD + 'ociLayouts:\n  - refs: [v1]\n', /^FILE:4: ociLayouts\[0\]: missing required key "path"$/);
    await refused(HEAD + 'images:\n  - 42\n', /^FILE:4: images\[0\]: expected an image reference, or a mapping with name and platforms, got a number \(42\)$/);
    await refused(HEAD + 'images: alpine\n', /^FILE:3: images: expected a list of images, got a string/);
  });

  it('reports a wrong apiVersion or kind', async () => {
    await refused('apiVersion: v1\nkind: BundleConfig\nimages: [alpine]\n', /^FILE:1: apiVersion: expected "airgap\.bundle\/v1alpha1", got "v1"$/);
    await refused('apiVersion: airgap.bundle/v1alpha1\nkind: Bundle\nimages: [alpine]\n', /^FILE:2: kind: expected "BundleConfig", got "Bundle"$/);
    await refused('kind: BundleConfig\nimages: [alpine]\n', /^FILE:1: missing required key "apiVersion"$/);
    const file = await write('apiVersion: mirror.openshift.io/v1alpha2\nkind: ImageSetConfiguration\n');
    await assert.rejects(loadConfig(file), (err: UsageError) => /oc-mirror ImageSetConfiguration/.test(err.hint ?? ''));
  });

  it('refuses an empty config, a non-mapping, and a config with nothing to bundle', async () => {
    await refused('', /^FILE: the config is empty; expected apiVersion: airgap\.bundle\/v1alpha1/);
    await refused('# just a comment\n', /^FILE: the config is empty/);
    await refused('- alpine\n', /^FILE:1: expected a mapping with apiVersion, kind and what to bundle/);
    await refused(HEAD, /^FILE: nothing to bundle: the config lists no images, ociLayouts, releases, operators, repositories or imageStreams$/);
    await refused(HEAD + 'images: []\nociLayouts: []\n', /^FILE: nothing to bundle/);
  });

  it('reports image references that do not parse, saying why', async () => {
    await refused(HEAD + 'images:\n  - alpine:3.20\n  - quay.io/ns/app:bad tag\n', /^FILE:5: images\[1\]: invalid tag "bad tag" in image reference "quay\.io\/ns\/app:bad tag"$/);
    await refused(HEAD + 'images:\n  - name: quay.io/NS/App:1\n', /^FILE:4: images\[0\]\.name: invalid repository path "NS\/App"/);
    await refused(HEAD + 'images:\n  - quay.io/ns/app@sha256\n', /^FILE:4: images\[0\]: invalid digest in image reference/);
    await refused(HEAD + 'images:\n  - ""\n', /^FILE:4: images\[0\]: must not be empty$/);
  });

  it('reports OCI layout paths that do not exist or are not layouts, relative to the config', async () => {
    const msg = await refused(
      HEAD + ['ociLayouts:', '  - path: ./missing', '  - path: not-a-layout', '  - path: plain-file', '  - path: layouts/app'].join('\n'),
      /^FILE:4: ociLayouts\[0\]\.path: "\.\/missing" \(.*conf\/missing\) does not exist$/m,
      /^FILE:5: ociLayouts\[1\]\.path: "not-a-layout" .* is not an OCI image layout \(it has no index\.json\)$/m,
      /^FILE:6: ociLayouts\[2\]\.path: "plain-file" .* is not a directory/m,
    );
    assert.equal(msg.split('\n').length, 3);
  });

  it('reports schema and reference problems together, sorted by line, at most five', async () => {
    const lines = [
      'images:',
      '  - Bad/Ref', // 4
      '  - name: alpine', // 5
      '    platforms: [linux, windows]', // 6: two problems
      '  - 42', // 7
      'extra: 1', // 8
      'more: 2', // 9
    ];
    const msg = await refused(HEAD + lines.join('\n'), /\n.*FILE: \.\.\. and 1 more problems$/);
    const got = msg.split('\n');
    assert.equal(got.length, 6);
    assert.deepEqual(
      got.slice(0, 5).map((l) => Number(/:(\d+): /.exec(l)?.[1])),
      [4, 6, 6, 7, 8],
    );
    assert.match(got[0]!, /images\[0\]: invalid repository path/);
  });
});

describe('config: the devfile section', () => {
  it('loads a devfile section beside images: one bundle', async () => {
    const file = await write(`${HEAD}images: [alpine]\ndevfile:\n  registries:\n    - path: ./registry\n    - url: https://registry.devfile.io\n  stacks: [nodejs, go@2.6.0]\n  samples: true\n  starterProjects: false\n  indexBase: quay.io/devfile/devfile-index-base:next\n  extraImages: [quay.io/devfile/oci-registry:next]\n`);
    const c = await loadConfig(file);
    assert.equal(c.images.length, 1);
    assert.deepEqual(c.sections.devfile, {
      registries: [{ path: './registry' }, { url: 'https://registry.devfile.io' }],
      stacks: ['nodejs', 'go@2.6.0'],
      samples: true,
      starterProjects: false,
      indexBase: 'quay.io/devfile/devfile-index-base:next',
      extraImages: ['quay.io/devfile/oci-registry:next'],
    });
  });

  it('refuses unknown keys, bad stack names and a registry with both path and url, naming the path and line', async () => {
    await refused(`${HEAD}devfile:\n  registries: [{path: ./r}]\n  stack: [nodejs]\n`, /^FILE:5: devfile: unknown key "stack" \(expected registries, stacks, .*did you mean "stacks"\?\)/m);
    await refused(`${HEAD}devfile:\n  registries: [{path: ./r}]\n  stacks: ["Node JS"]\n`, /^FILE:5: devfile\.stacks\[0\]: "Node JS" is not a stack name/m);
    await refused(`${HEAD}devfile:\n  registries:\n    - {path: ./r, url: "https://x"}\n`, /^FILE:5: devfile\.registries\[0\]/m);
    await refused(`${HEAD}devfile:\n  stacks: [nodejs]\n`, /devfile: .*registries/);
  });
});

describe('config: OpenShift sections', () => {
  it('loads releases, operators, repositories and imageStreams, references normalised and paths resolved', async () => {
    await writeFile(path.join(dir, 'conf', 'is.yaml'), 'kind: List\nitems: []\n');
    const file = await write(
      HEAD +
        [
          'releases:',
          '  - image: quay.io/openshift-release-dev/ocp-release:4.15.0-x86_64',
          '    signatureStore: none',
          'operators:',
          '  - catalog: registry.redhat.io/redhat/redhat-operator-index:v4.15',
          '    packages:',
          '      - name: web-terminal',
          '        channels: [fast]',
          '        minVersion: 1.8.0',
          'repositories:',
          '  - registry: registry.example.com:5000',
          '    include: ["openshift/*"]',
          "    tags: '^(latest|5\\..*)$'",
          'imageStreams:',
          '  - path: ./is.yaml',
        ].join('\n'),
    );
    const c: LoadedConfig = await loadConfig(file);
    assert.deepEqual(c.releases, [{ image: 'quay.io/openshift-release-dev/ocp-release:4.15.0-x86_64', signatureStore: 'none' }]);
    assert.equal(c.operators[0]!.packages![0]!.minVersion, '1.8.0');
    assert.equal(c.repositories[0]!.tags, '^(latest|5\\..*)$');
    assert.deepEqual(c.imageStreams, [{ path: path.join(dir, 'conf', 'is.yaml') }]);
    assert.deepEqual(c.sections, {});
  });

  it('names the line and path of each mistake', async () => {
    await refused(HEAD + 'releases:\n  - image: quay.io/x/y:1\n    signatures: none\n', /^FILE:5: releases\[0\]: unknown key "signatures"/);
    await refused(HEAD + 'releases:\n  - image: quay.io/x/y:1\n    signatureStore: ftp://x\n', /^FILE:5: releases\[0\]\.signatureStore: "ftp:\/\/x" is not a signature store; expected an http\(s\) URL/);
    await refused(HEAD + 'repositories:\n  - registry: r.example.com\n    tags: "(["\n', /^FILE:5: repositories\[0\]\.tags: not a regular expression/);
    await refused(HEAD + 'imageStreams:\n  - path: ./nowhere.yaml\n', /^FILE:4: imageStreams\[0\]\.path: "\.\/nowhere\.yaml" does not exist/);
    await refused(
      HEAD + 'operators:\n  - catalog: quay.io/c/i:1\n    packages:\n      - name: a\n      - name: a\n',
      /^FILE:7: operators\[0\]\.packages\[1\]\.name: package a is listed twice/,
    );
    await refused(HEAD + 'operators:\n  - catalog: quay.io/c/i:1\n    packages:\n      - name: a\n        minVersion: one\n', /^FILE:7: operators\[0\]\.packages\[0\]\.minVersion: "one" is not a version/);
  });
});
