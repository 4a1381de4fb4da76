/**
 * Devfile image finding and Dockerfile FROM parsing on their own: the cases real
 * stacks of devfile/registry have (ARG defaults, stages, --platform, digests,
 * short names, variables, built images, files that belong to the user's project).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerfileBaseImages } from '../src/devfile/dockerfile.js';
import { parseDevfile } from '../src/devfile/devfile-images.js';
import { rewriteDockerfile, rewriteDevfile, targetReference } from '../src/devfile/rewrite.js';
import { safeEntryName } from '../src/devfile/zip.js';
import { compareVersions } from '../src/devfile/index-json.js';
import { writeFiles } from './helpers/devfile-fixture.js';

describe('Dockerfile base images', () => {
  it('applies ARG defaults before the first FROM, skips stages, scratch and flags', () => {
    const text = [
      '# escape=\\',
      'ARG REGISTRY=registry.access.redhat.com',
      'ARG IMAGE=${REGISTRY}/ubi9/go-toolset',
      'ARG TAG',
      'FROM --platform=$BUILDPLATFORM ${IMAGE}:${TAG:-1.21} AS builder',
      'RUN go build \\',
      '  -o /app',
      'FROM builder AS test',
      'FROM scratch AS empty',
      'from docker.io/library/alpine@sha256:' + 'a'.repeat(64),
      'COPY --from=builder /app /app',
      'COPY --from=quay.io/x/tools:1 /bin/t /bin/t',
      'COPY --from=0 /x /y',
    ].join('\n');
    assert.deepEqual(
      dockerfileBaseImages(text).map((b) => `${b.line}:${b.image}`),
      ['5:registry.access.redhat.com/ubi9/go-toolset:1.21', `10:docker.io/library/alpine@sha256:${'a'.repeat(64)}`, '12:quay.io/x/tools:1'],
    );
  });

  it('rewrites only the FROM lines that name carried images', () => {
    const map = new Map([['node:18', 'reg.corp/library/node:18']]);
    const out = rewriteDockerfile('ARG B=node\nFROM ${B}:18 AS build\nFROM build\nRUN echo FROM x\n', map, () => undefined);
    assert.equal(out, 'ARG B=node\nFROM reg.corp/library/node:18 AS build\nFROM build\nRUN echo FROM x\n');
  });
});

describe('devfile images', () => {
  it('finds container, inlined, uri and Dockerfile images; leaves built images, URLs and project files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'devfile-parse-'));
    try {
      await writeFiles(dir, {
        'k8s/deploy.yaml': 'kind: Deployment\nspec:\n  template:\n    spec:\n      initContainers:\n        - image: busybox\n      containers:\n        - image: "{{IMG}}"\n---\nkind: Service\n',
        'docker/Dockerfile': 'FROM python:3.11\n',
      });
      const text = [
        'schemaVersion: 2.2.0',
        'metadata: {name: x, version: 1.0.0}',
        'variables: {IMG: quay.io/unknown-account/myimage, V: "22.0.0.1"}',
        'components:',
        '  - name: dev',
        '    container: {image: "icr.io/appcafe/open-liberty-devfile-stack:{{V}}"}',
        '  - name: b',
        '    image: {imageName: "{{IMG}}", dockerfile: {uri: docker/Dockerfile}}',
        '  - name: b2',
        '    image: {imageName: other:1, dockerfile: {uri: src/main/docker/Dockerfile.jvm}}',
        '  - name: d',
        '    kubernetes: {uri: k8s/deploy.yaml}',
        '  - name: remote',
        '    openshift: {uri: "https://example.invalid/x.yaml"}',
      ].join('\n');
      const p = await parseDevfile(text, dir, 'stacks/x/devfile.yaml');
      assert.deepEqual(
        p.images.map((i) => `${i.component}|${i.file}|${i.written}|${i.source}`),
        [
          'dev|devfile.yaml|icr.io/appcafe/open-liberty-devfile-stack:22.0.0.1|icr.io/appcafe/open-liberty-devfile-stack:22.0.0.1',
          'd|k8s/deploy.yaml|busybox|docker.io/library/busybox:latest',
          'b|docker/Dockerfile|python:3.11|docker.io/library/python:3.11',
        ],
      );
      assert.deepEqual(p.imageFiles, ['docker/Dockerfile', 'k8s/deploy.yaml']);
      assert.equal(p.notes.length, 2, p.notes.join('\n'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a broken devfile, an unresolved image variable and a uri leaving the stack, naming the file', async () => {
    await assert.rejects(parseDevfile('schemaVersion: 2.2.0\ncomponents: [\n', '/nonexistent', 'stacks/a/devfile.yaml'), /stacks\/a\/devfile\.yaml: not valid YAML/);
    await assert.rejects(parseDevfile('schemaVersion: 1.0.0\n', '/nonexistent', 'stacks/a/devfile.yaml'), /stacks\/a\/devfile\.yaml: schemaVersion "1\.0\.0"/);
    // devfile/registry carries a stack whose devfile says 3.0.0: same shapes, read it.
    assert.equal((await parseDevfile('schemaVersion: 3.0.0\ncomponents:\n  - name: r\n    container: {image: node:18}\n', '/nonexistent', 'x')).images.length, 1);
    await assert.rejects(
      parseDevfile('schemaVersion: 2.2.0\ncomponents:\n  - name: r\n    container: {image: "x:{{NOPE}}"}\n', '/nonexistent', 'stacks/a/devfile.yaml'),
      /stacks\/a\/devfile\.yaml: components\[0\]\.container\.image: unresolved variable/,
    );
    await assert.rejects(
      parseDevfile('schemaVersion: 2.2.0\ncomponents:\n  - name: r\n    kubernetes: {uri: ../../etc/passwd}\n', '/nonexistent', 'stacks/a/devfile.yaml'),
      /leaves the stack folder/,
    );
  });

  it('rewrites keep comments, the tag or digest, and replace starter projects by their zip', () => {
    assert.equal(targetReference('node:18', 'reg:5000/m/library/node'), 'reg:5000/m/library/node:18');
    assert.equal(targetReference(`quay.io/a/b@sha256:${'b'.repeat(64)}`, 'reg/m/a/b'), `reg/m/a/b@sha256:${'b'.repeat(64)}`);
    const text = '# top\nschemaVersion: 2.2.0\nstarterProjects:\n  - name: s\n    zip: {location: "https://x/s.zip"}\ncomponents:\n  - name: r\n    container:\n      image: node:18 # runtime\n';
    const out = rewriteDevfile(text, new Map([['node:18', 'reg/library/node:18']]), new Map([['s', 's-offline.zip']]), () => undefined, 'd');
    assert.match(out, /^# top\n/);
    assert.match(out, /image: reg\/library\/node:18 # was: node:18/);
    assert.match(out, /# original \(made offline by bundle\):\n\s+#\s+zip:\n\s+#\s+location: https:\/\/x\/s\.zip/);
    assert.match(out, /- name: s\n\s+zip:\n\s+location: s-offline\.zip/);
  });
});

describe('small rules', () => {
  it('zip entry names must stay inside the folder', () => {
    for (const bad of ['../x', 'a/../../x', '/etc/passwd', 'C:/x', 'a\\b', '']) assert.equal(safeEntryName(bad), false, bad);
    for (const ok of ['a', 'a/b.txt', 'a/..b', '.hidden']) assert.equal(safeEntryName(ok), true, ok);
  });
  it('versions sort numerically', () => {
    assert.deepEqual(['2.10.0', '2.2.0', '1.0.2', '2.2.0-rc1'].sort(compareVersions), ['1.0.2', '2.2.0', '2.2.0-rc1', '2.10.0']);
  });
});
