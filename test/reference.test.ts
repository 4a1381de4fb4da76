/** Image references as podman and skopeo read them, and where push puts each repository. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { apiHost, formatReference, isLoopbackHost, parseReference } from '../src/oci/reference.js';
import { destinationRepository, digestTag, hostPathComponent, parseTarget } from '../src/push/destination.js';
import { UsageError } from '../src/util/errors.js';

const HEX = 'a'.repeat(64);

describe('parseReference', () => {
  const cases: [string, string][] = [
    ['alpine', 'docker.io/library/alpine:latest'],
    ['alpine:3.20', 'docker.io/library/alpine:3.20'],
    ['bitnami/mongodb', 'docker.io/bitnami/mongodb:latest'],
    ['docker.io/library/alpine:3.20', 'docker.io/library/alpine:3.20'],
    ['index.docker.io/library/alpine', 'docker.io/library/alpine:latest'],
    ['quay.io/ns/app:1.2', 'quay.io/ns/app:1.2'],
    [`quay.io/ns/app@sha256:${HEX}`, `quay.io/ns/app@sha256:${HEX}`],
    [`quay.io/ns/app:1.2@sha256:${HEX}`, `quay.io/ns/app:1.2@sha256:${HEX}`],
    ['localhost/app', 'localhost/app:latest'],
    ['127.0.0.1:5000/a/b/c:v1', '127.0.0.1:5000/a/b/c:v1'],
    ['docker://registry.corp:5000/x', 'registry.corp:5000/x:latest'],
  ];
  for (const [input, want] of cases) {
    it(`${input} -> ${want}`, () => assert.equal(formatReference(parseReference(input)), want));
  }

  it('a digest-only reference has no tag', () => {
    const r = parseReference(`quay.io/ns/app@sha256:${HEX}`);
    assert.equal(r.tag, undefined);
    assert.equal(r.digest, `sha256:${HEX}`);
  });

  for (const bad of ['', 'Quay.io/NS/App', 'quay.io/ns/app:bad tag', 'quay.io/ns/app@sha256', 'quay.io//app']) {
    it(`refuses ${JSON.stringify(bad)} with a usage error`, () => assert.throws(() => parseReference(bad), UsageError));
  }

  it('Docker Hub is served by its API host', () => {
    assert.equal(apiHost('docker.io'), 'registry-1.docker.io');
    assert.equal(apiHost('quay.io'), 'quay.io');
  });

  it('knows loopback hosts', () => {
    for (const h of ['localhost:5000', '127.0.0.1', '127.1.2.3:80', '[::1]:5000']) assert.ok(isLoopbackHost(h), h);
    for (const h of ['registry.corp:5000', '10.0.0.1', 'localhost.example.com']) assert.ok(!isLoopbackHost(h), h);
  });
});

describe('push destinations', () => {
  it('drops the source host and keeps the repository path under the prefix', () => {
    const t = parseTarget('registry.corp:5000/mirror');
    assert.deepEqual(t, { registry: 'registry.corp:5000', prefix: 'mirror', keepRegistryHost: false });
    assert.equal(destinationRepository(t, 'quay.io/ns/app'), 'mirror/ns/app');
    assert.equal(destinationRepository(t, 'docker.io/library/alpine'), 'mirror/library/alpine');
    assert.equal(destinationRepository(t, '127.0.0.1:5000/a/b'), 'mirror/a/b');
    assert.equal(destinationRepository(parseTarget('registry.corp'), 'quay.io/ns/app'), 'ns/app');
    assert.equal(destinationRepository(parseTarget('registry.corp/a/b/'), 'quay.io/ns/app'), 'a/b/ns/app');
  });

  it('--keep-registry-host keeps the source host as a valid path component', () => {
    const t = parseTarget('registry.corp:5000/mirror', true);
    assert.equal(destinationRepository(t, 'quay.io/ns/app'), 'mirror/quay.io/ns/app');
    assert.equal(destinationRepository(t, 'docker.io/library/alpine'), 'mirror/docker.io/library/alpine');
    assert.equal(destinationRepository(t, '127.0.0.1:5000/a/b'), 'mirror/127.0.0.1-5000/a/b');
    assert.equal(destinationRepository(t, 'Registry.Example.com:443/a'), 'mirror/registry.example.com-443/a');
    assert.equal(destinationRepository(t, '[::1]:5000/a'), 'mirror/1-5000/a');
    assert.equal(destinationRepository(parseTarget('registry.corp', true), 'localhost/a'), 'localhost/a');
    // A name without a host (an OCI layout's folder) has none to keep.
    assert.equal(destinationRepository(t, 'my-layout'), 'mirror/my-layout');
    for (const src of ['quay.io/ns/app', '127.0.0.1:5000/a/b', 'Registry.Example.com:443/a', '[::1]:5000/a']) {
      assert.equal(hostPathComponent(src.split('/')[0]!), destinationRepository(t, src).split('/')[1]);
      assert.doesNotThrow(() => parseReference(`registry.corp:5000/${destinationRepository(t, src)}:1`), src);
    }
  });

  it('refuses a bad --to', () => {
    for (const bad of ['', 'http://registry', 'registry.corp/UPPER', 'reg istry']) assert.throws(() => parseTarget(bad), UsageError, bad);
  });

  it('tags a digest-pinned image sha256-<hex>', () => {
    assert.equal(digestTag(`sha256:${HEX}`), `sha256-${HEX}`);
  });
});
