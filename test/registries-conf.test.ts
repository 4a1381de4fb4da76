/**
 * containers-registries.conf(5) parsing and the locations it gives a pull
 * (src/registry/registries-conf.ts): pure functions, no network.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRegistriesConfig, parseRegistriesConf, pullPlan, prefixMatch, registriesConfPath, matchesRegistry, SYSTEM_REGISTRIES_CONF, type Endpoint } from '../src/registry/registries-conf.js';
import { UsageError } from '../src/util/errors.js';

const FILE = '/etc/test/registries.conf';
const parse = (text: string) => parseRegistriesConf(text, FILE);
const where = (eps: Endpoint[] | undefined) => (eps ?? []).map((e) => `${e.mirror ? 'm:' : ''}${e.registry}/${e.repository}${e.insecure ? '!' : ''}`);

const CONF = `
unqualified-search-registries = ["registry.fedoraproject.org", "docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "registry.access.redhat.com/ubi8"
location = "127.0.0.1:5000/rh/ubi8"

[[registry]]
prefix = "registry.access.redhat.com"
location = "artifactory.corp/redhat-remote"
insecure = true

[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "127.0.0.1:1/quay"
[[registry.mirror]]
location = "nexus.corp:8443/quay-proxy/"
insecure = true
[[registry.mirror]]
location = "digests.corp/quay"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.corp/quay"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "docker.io"
location = "docker.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "mirror.gcr.io"

[[registry]]
prefix = "*.evil.example"
blocked = true

[[registry]]
prefix = "quay.io/blocked-ns"
blocked = true

[aliases]
"ubi" = "registry.access.redhat.com/ubi8/ubi"
`;

describe('registries.conf: locations for a pull', () => {
  const conf = parse(CONF);

  it('rewrites the longest matching prefix to its location, keeping the rest of the name', () => {
    assert.deepEqual(where(pullPlan(conf, 'registry.access.redhat.com', 'ubi8/ubi-minimal', false).endpoints), ['127.0.0.1:5000/rh/ubi8/ubi-minimal']);
    assert.deepEqual(where(pullPlan(conf, 'registry.access.redhat.com', 'ubi9/ubi', false).endpoints), ['artifactory.corp/redhat-remote/ubi9/ubi!']);
    // A prefix matches at a path boundary only.
    assert.deepEqual(where(pullPlan(conf, 'registry.access.redhat.com', 'ubi8-extra/x', false).endpoints), ['artifactory.corp/redhat-remote/ubi8-extra/x!']);
  });

  it('tries mirrors in order, then the primary; digest-only and tag-only mirrors only for their kind of pull', () => {
    assert.deepEqual(where(pullPlan(conf, 'quay.io', 'ns/app', false).endpoints), [
      'm:127.0.0.1:1/quay/ns/app',
      'm:nexus.corp:8443/quay-proxy/ns/app!',
      'm:tags.corp/quay/ns/app',
      'quay.io/ns/app',
    ]);
    assert.deepEqual(where(pullPlan(conf, 'quay.io', 'ns/app', true).endpoints), [
      'm:127.0.0.1:1/quay/ns/app',
      'm:nexus.corp:8443/quay-proxy/ns/app!',
      'm:digests.corp/quay/ns/app',
      'quay.io/ns/app',
    ]);
  });

  it('mirror-by-digest-only keeps every mirror of the entry to digest pulls; docker.io names get library/', () => {
    assert.deepEqual(where(pullPlan(conf, 'docker.io', 'library/alpine', false).endpoints), ['docker.io/library/alpine']);
    assert.deepEqual(where(pullPlan(conf, 'docker.io', 'library/alpine', true).endpoints), ['m:mirror.gcr.io/library/alpine', 'docker.io/library/alpine']);
    const hub = parse('[[registry]]\nprefix = "quay.io/hub"\nlocation = "docker.io"\n');
    assert.deepEqual(where(pullPlan(hub, 'quay.io', 'hub/alpine', false).endpoints), ['docker.io/library/alpine']);
  });

  it('blocks by prefix and by wildcard host; an image no entry names goes to its own registry', () => {
    assert.equal(pullPlan(conf, 'quay.io', 'blocked-ns/app', false).blocked?.prefix, 'quay.io/blocked-ns');
    assert.equal(pullPlan(conf, 'a.b.evil.example', 'x', false).blocked?.prefix, '*.evil.example');
    assert.equal(pullPlan(conf, 'evil.example', 'x', false).blocked, undefined, 'a wildcard does not match the bare domain');
    assert.deepEqual(where(pullPlan(conf, 'ghcr.io', 'o/r', false).endpoints), ['ghcr.io/o/r']);
    assert.equal(matchesRegistry(conf, 'ghcr.io'), false);
    assert.equal(matchesRegistry(conf, 'registry.access.redhat.com'), true);
    assert.equal(matchesRegistry(conf, 'x.evil.example'), true);
  });

  it('matches prefixes as containers/image does, minus its documented port bug', () => {
    assert.equal(prefixMatch('quay.io/ns/app', 'quay.io/ns'), 'quay.io/ns'.length);
    assert.equal(prefixMatch('quay.io/nsx/app', 'quay.io/ns'), -1);
    assert.equal(prefixMatch('quay.io:5000/ns/app', 'quay.io'), -1);
    assert.equal(prefixMatch('a.example.com:5000/ns', '*.example.com'), 'a.example.com:5000'.length);
    assert.equal(prefixMatch('example.com/ns', '*.example.com'), -1);
  });

  it('reads version 1 files ([registries.insecure], [registries.block])', () => {
    const v1 = parse('[registries.search]\nregistries = ["docker.io"]\n[registries.insecure]\nregistries = ["old.corp:5000"]\n[registries.block]\nregistries = ["bad.corp"]\n');
    assert.deepEqual(where(pullPlan(v1, 'old.corp:5000', 'a/b', false).endpoints), ['old.corp:5000/a/b!']);
    assert.ok(pullPlan(v1, 'bad.corp', 'a/b', false).blocked);
  });
});

describe('registries.conf: mistakes are one line naming the file', () => {
  const cases: [string, string, RegExp][] = [
    ['TOML syntax', '[[registry]]\nprefix = "quay.io\n', /^\/etc\/test\/registries\.conf: invalid TOML at line 2, column \d+: /],
    ['a boolean that is a string', '[[registry]]\nlocation = "quay.io"\ninsecure = "yes"\n', /registry\[0\]\.insecure must be true or false/],
    ['a URL scheme in location', '[[registry]]\nlocation = "https://quay.io"\n', /registry\[0\]\.location "https:\/\/quay\.io": URL schemes are not allowed/],
    ['neither prefix nor location', '[[registry]]\ninsecure = true\n', /registry\[0\]: set location or prefix/],
    ['a wildcard with a location', '[[registry]]\nprefix = "*.corp"\nlocation = "x.corp"\n', /wildcard prefix \(\*\.corp\) cannot have a location/],
    ['a wildcard inside', '[[registry]]\nprefix = "a.*.corp"\nlocation = "x"\n', /a wildcard may only start a prefix/],
    ['[registry] instead of [[registry]]', '[registry]\nlocation = "quay.io"\n', /write \[\[registry\]\]/],
    ['a mirror without location', '[[registry]]\nlocation = "quay.io"\n[[registry.mirror]]\ninsecure = true\n', /registry\[0\]\.mirror\[0\]: location is not set/],
    ['a bad pull-from-mirror', '[[registry]]\nlocation = "quay.io"\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "sometimes"\n', /pull-from-mirror "sometimes" is not all, digest-only or tag-only/],
    ['pull-from-mirror with mirror-by-digest-only', '[[registry]]\nlocation = "quay.io"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "all"\n', /cannot be combined with the registry's mirror-by-digest-only/],
    ['conflicting insecure', '[[registry]]\nlocation = "quay.io"\n[[registry]]\nprefix = "quay.io/x"\nlocation = "quay.io"\ninsecure = true\n', /registry quay\.io is defined twice with different insecure settings/],
    ['v1 and v2 mixed', '[registries.insecure]\nregistries = ["a"]\n[[registry]]\nlocation = "b"\n', /mixes the version 1/],
  ];
  for (const [name, text, re] of cases) {
    it(name, () => {
      assert.throws(
        () => parse(text),
        (err: unknown) => {
          assert.ok(err instanceof UsageError, 'a usage error (exit 2)');
          assert.match(err.message, re);
          assert.ok(err.message.startsWith(`${FILE}: `), `names the file: ${err.message}`);
          assert.ok(!err.message.includes('\n'), `one line: ${err.message}`);
          return true;
        },
      );
    });
  }
});

describe('registries.conf: which file', () => {
  it('--registries-conf, else ~/.config/containers/registries.conf, else /etc/containers/registries.conf, each when present', () => {
    const have = new Set<string>();
    const exists = (f: string) => have.has(f);
    const env = { HOME: '/home/u' };
    assert.equal(registriesConfPath(undefined, env, exists), undefined);
    have.add(SYSTEM_REGISTRIES_CONF);
    assert.equal(registriesConfPath(undefined, env, exists), SYSTEM_REGISTRIES_CONF);
    have.add(join('/home/u', '.config/containers/registries.conf'));
    assert.equal(registriesConfPath(undefined, env, exists), '/home/u/.config/containers/registries.conf');
    have.add('/x/mine.conf');
    assert.equal(registriesConfPath('/x/mine.conf', env, exists), '/x/mine.conf');
    assert.throws(() => registriesConfPath('/x/missing.conf', env, exists), /--registries-conf \/x\/missing\.conf: no such file/);
  });
});

describe('registries.conf: drop-in files', () => {
  it('reads ~/.config/containers/registries.conf.d/*.conf after the user file, in name order; a later entry replaces one with the same prefix', async () => {
    const home = await mkdtemp(join(tmpdir(), 'bundle-regconf-'));
    try {
      const cdir = join(home, '.config', 'containers');
      await mkdir(join(cdir, 'registries.conf.d'), { recursive: true });
      await writeFile(join(cdir, 'registries.conf'), '[[registry]]\nprefix = "quay.io/a"\nlocation = "main.corp/a"\n[[registry]]\nprefix = "quay.io/b"\nlocation = "main.corp/b"\n');
      await writeFile(join(cdir, 'registries.conf.d', '10-a.conf'), '[[registry]]\nprefix = "quay.io/a"\nlocation = "first.corp/a"\n');
      await writeFile(join(cdir, 'registries.conf.d', '20-a.conf'), '[[registry]]\nprefix = "quay.io/a"\nlocation = "second.corp/a"\n[[registry]]\nprefix = "quay.io/c"\nblocked = true\n');
      await writeFile(join(cdir, 'registries.conf.d', 'notes.txt'), 'not toml [[');
      const conf = (await loadRegistriesConfig(undefined, { HOME: home }))!;
      assert.deepEqual(where(pullPlan(conf, 'quay.io', 'a/x', false).endpoints), ['second.corp/a/x']);
      assert.deepEqual(where(pullPlan(conf, 'quay.io', 'b/x', false).endpoints), ['main.corp/b/x']);
      assert.equal(pullPlan(conf, 'quay.io', 'c/x', false).blocked?.file, join(cdir, 'registries.conf.d', '20-a.conf'), 'a blocked entry names the file that blocked it');
      await writeFile(join(cdir, 'registries.conf.d', '30-bad.conf'), '[[registry]]\nlocation = 5\n');
      await assert.rejects(loadRegistriesConfig(undefined, { HOME: home }), (err: Error) => err.message.startsWith(`${join(cdir, 'registries.conf.d', '30-bad.conf')}: registry[0].location must be a string`));
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});
