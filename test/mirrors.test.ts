/**
 * `bundle create --registries-conf`: pulls through mirrors and rewritten
 * locations, against real registries on loopback. Counting proxies in front
 * of them show which location served what; the bundle, unpacked with zstd and
 * tar, shows the names it records.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, selfSignedCert, startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RunningProxy } from './helpers/proxy.js';
import { buildTestImages, skopeoCopy, skopeoInspectRaw, type TestImageSet } from './helpers/images.js';
import { assertNoStack, runBundle, type RunResult } from './helpers/cli.js';

const run = promisify(execFile);

let work: string;
let home: string;
let upstream: RunningRegistry;
let mirror: RunningRegistry;
let secure: RunningRegistry;
let locked: RunningRegistry;
let pU: RunningProxy;
let pM: RunningProxy;
let set: TestImageSet;
let appDigest: string;
let closedPort: number;
let n = 0;

const USER = 'mirror-user';
const PASS = 'mirror-pass-7f3a';

/** Write CONF and a bundle config naming IMAGES; run create. */
async function create(conf: string | undefined, images: string[], extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ r: RunResult; out: string; confFile: string }> {
  const dir = join(work, `run-${++n}`);
  await mkdir(dir);
  const confFile = join(dir, 'registries.conf');
  if (conf !== undefined) await writeFile(confFile, conf);
  await writeFile(join(dir, 'bundle.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n${images.map((i) => `  - ${i}\n`).join('')}`);
  const out = join(dir, 'out.airgap');
  const args = ['create', '-c', join(dir, 'bundle.yaml'), '-o', out, ...(conf !== undefined ? ['--registries-conf', confFile] : []), ...extra];
  const r = await runBundle(args, { env: { HOME: home, ...env } });
  assertNoStack(r);
  return { r, out, confFile };
}

/** The bundle's index.json ref names and manifest sources, read with zstd and tar. */
async function namesIn(bundle: string): Promise<{ refNames: string[]; sources: string[]; digests: string[] }> {
  const dir = await mkdtemp(join(work, 'x-'));
  await run('sh', ['-c', `zstd -dc '${bundle}' | tar x -C '${dir}'`]);
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
  const manifest = JSON.parse(await readFile(join(dir, 'airgap', 'manifest.json'), 'utf8')) as { images: { source: string }[] };
  await rm(dir, { recursive: true, force: true });
  return {
    refNames: index.manifests.map((m) => m.annotations['org.opencontainers.image.ref.name']!),
    sources: manifest.images.map((i) => i.source),
    digests: index.manifests.map((m) => m.digest),
  };
}

/** How many distinct blobs of REPO the proxy served (the copy engine reads a config twice: once for its platform). */
const blobGets = (p: RunningProxy, repo: string): number =>
  new Set(p.requests.filter((q) => q.method === 'GET' && q.status === 200 && new RegExp(`^/v2/${repo}/blobs/sha256:`).test(q.path)).map((q) => q.path)).size;
/** The app image's blobs: its config and two layers. */
const APP_BLOBS = 3;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-mirrors-'));
  home = join(work, 'home');
  await mkdir(home);
  const cert = selfSignedCert(work);
  [upstream, mirror, secure, locked] = await Promise.all([
    startRegistry(),
    startRegistry(),
    startRegistry({ tls: cert }),
    startRegistry({ htpasswd: { username: USER, password: PASS } }),
  ]);
  set = await buildTestImages(join(work, 'layout'));
  await Promise.all([
    skopeoCopy(set.layoutDir, 'app-one', `${upstream.host}/rh/ubi8/ubi-minimal:8.9`),
    skopeoCopy(set.layoutDir, 'app-one', `${upstream.host}/acme/app:1`),
    skopeoCopy(set.layoutDir, 'app-one', `${mirror.host}/mirror/acme/app:1`),
    skopeoCopy(set.layoutDir, 'multi', `${upstream.host}/acme/multi:1`),
    skopeoCopy(set.layoutDir, 'multi', `${mirror.host}/mirror/acme/multi:1`),
    skopeoCopy(set.layoutDir, 'app-one', `${secure.host}/secure/app:1`),
    skopeoCopy(set.layoutDir, 'app-one', `${locked.host}/private/app:1`, ['--dest-creds', `${USER}:${PASS}`]),
  ]);
  const raw = await skopeoInspectRaw(`docker://${upstream.host}/acme/app:1`);
  appDigest = `sha256:${createHash('sha256').update(raw).digest('hex')}`;
  pU = await startProxy(upstream.host);
  pM = await startProxy(mirror.host);
  closedPort = await freePort();
});

after(async () => {
  await Promise.all([pU?.stop(), pM?.stop()]);
  await Promise.all([upstream?.stop(), mirror?.stop(), secure?.stop(), locked?.stop()]);
  await rm(work, { recursive: true, force: true });
});

describe('create --registries-conf', () => {
  it('pulls registry.access.redhat.com/ubi8/... from the location a prefix rewrites to, and records the original name', async () => {
    pU.reset();
    const conf = `[[registry]]\nprefix = "registry.access.redhat.com/ubi8"\nlocation = "${pU.host}/rh/ubi8"\n`;
    const { r, out } = await create(conf, ['registry.access.redhat.com/ubi8/ubi-minimal:8.9']);
    assert.equal(r.code, 0, r.stderr);
    const names = await namesIn(out);
    assert.deepEqual(names.sources, ['registry.access.redhat.com/ubi8/ubi-minimal:8.9']);
    assert.deepEqual(names.refNames, ['registry.access.redhat.com/ubi8/ubi-minimal:8.9']);
    assert.deepEqual(names.digests, [appDigest], 'the manifest bytes of the rewritten location, unchanged');
    assert.equal(blobGets(pU, 'rh/ubi8/ubi-minimal'), APP_BLOBS, 'every blob came from the rewritten location');
  });

  it('reads ~/.config/containers/registries.conf when no --registries-conf is given', async () => {
    pU.reset();
    const userHome = join(work, 'home-with-conf');
    await mkdir(join(userHome, '.config', 'containers'), { recursive: true });
    await writeFile(join(userHome, '.config', 'containers', 'registries.conf'), `[[registry]]\nprefix = "registry.access.redhat.com/ubi8"\nlocation = "${pU.host}/rh/ubi8"\n`);
    const { r, out } = await create(undefined, ['registry.access.redhat.com/ubi8/ubi-minimal:8.9'], [], { HOME: userHome });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await namesIn(out)).sources, ['registry.access.redhat.com/ubi8/ubi-minimal:8.9']);
    assert.equal(blobGets(pU, 'rh/ubi8/ubi-minimal'), APP_BLOBS);
  });

  it('tries mirrors in order: past one that is down, the second serves every blob; the primary serves none', async () => {
    pU.reset();
    pM.reset();
    const conf = [
      '[[registry]]',
      'prefix = "quay.io/acme"',
      `location = "${pU.host}/acme"`,
      '[[registry.mirror]]',
      `location = "127.0.0.1:${closedPort}/acme"`,
      '[[registry.mirror]]',
      `location = "${pM.host}/mirror/acme"`,
      '',
    ].join('\n');
    const { r, out } = await create(conf, ['quay.io/acme/app:1'], ['--retries', '2']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`mirror 127\\.0\\.0\\.1:${closedPort}/acme/app is unreachable .*trying the next location`));
    const names = await namesIn(out);
    assert.deepEqual(names.sources, ['quay.io/acme/app:1']);
    assert.deepEqual(names.refNames, ['quay.io/acme/app:1']);
    assert.deepEqual(names.digests, [appDigest]);
    assert.equal(blobGets(pM, 'mirror/acme/app'), APP_BLOBS, 'the second mirror served every blob');
    assert.equal(blobGets(pU, 'acme/app'), 0, 'the primary location served none');
    assert.equal(pU.count('GET', /^\/v2\/acme\/app\/manifests\//) + pU.count('HEAD', /^\/v2\/acme\/app\/manifests\/1$/), 0, 'nor the manifest');
  });

  it('when every location fails, one error names the original reference and each location tried', async () => {
    const conf = `[[registry]]\nprefix = "quay.io/acme"\nlocation = "${pU.host}/nothing-here"\n[[registry.mirror]]\nlocation = "127.0.0.1:${closedPort}/acme"\n`;
    const { r } = await create(conf, ['quay.io/acme/app:1'], ['--retries', '1', '--no-signatures']);
    assert.equal(r.code, 1, r.stderr);
    const line = r.stderr.split('\n').find((l) => l.startsWith('error:'))!;
    assert.match(line, /quay\.io\/acme\/app:1 \(per .*registries\.conf; tried mirror 127\.0\.0\.1:\d+\/acme\/app: .*; 127\.0\.0\.1:\d+\/nothing-here\/app: .*not found\) not found/);
  });

  it('a blocked registry fails with a clear line, and nothing is requested from it', async () => {
    pU.reset();
    const conf = `[[registry]]\nprefix = "${pU.host}/evil"\nblocked = true\n`;
    const { r, confFile } = await create(conf, [`${pU.host}/evil/app:1`]);
    assert.equal(r.code, 1, r.stderr);
    assert.ok(
      r.stderr.includes(`${pU.host}/evil/app:1 is blocked by ${confFile} ([[registry]] prefix "${pU.host}/evil", blocked = true)`),
      r.stderr,
    );
    assert.equal(pU.requests.filter((q) => q.path.startsWith('/v2/evil')).length, 0);
  });

  it('a by-digest-only mirror is not used for a tag pull (not even for the manifests and blobs an index names), and is for a digest pull', async () => {
    const conf = [
      '[[registry]]',
      `prefix = "${pU.host}/acme"`,
      'mirror-by-digest-only = true',
      '[[registry.mirror]]',
      `location = "${pM.host}/mirror/acme"`,
      '',
    ].join('\n');
    pU.reset();
    pM.reset();
    const byTag = await create(conf, [`${pU.host}/acme/app:1`, `${pU.host}/acme/multi:1`]);
    assert.equal(byTag.r.code, 0, byTag.r.stderr);
    assert.equal(pM.requests.length, 0, 'the by-digest-only mirror saw no request');
    // (app and multi share a layer: which repository it is read from depends on arrival order, so the check is over both)
    // (the index by its tag, read whole when it is resolved; each platform manifest by digest)
    assert.equal(new Set(pU.requests.filter((q) => q.method === 'GET' && /^\/v2\/acme\/multi\/manifests\//.test(q.path)).map((q) => q.path)).size, 1 + (JSON.parse(await readFile(join(set.layoutDir, 'blobs', 'sha256', set.images.multi!.digest.slice(7)), 'utf8')) as { manifests: unknown[] }).manifests.length, 'the index and every platform manifest came from the primary');
    // every blob of app and of each platform of the index, read from the test layout
    const layoutJson = async (digest: string) => JSON.parse(await readFile(join(set.layoutDir, 'blobs', 'sha256', digest.slice(7)), 'utf8')) as { config?: { digest: string }; layers?: { digest: string }[]; manifests?: { digest: string }[] };
    const blobsOf = async (digest: string): Promise<string[]> => {
      const m = await layoutJson(digest);
      if (m.manifests) return (await Promise.all(m.manifests.map((c) => blobsOf(c.digest)))).flat();
      return [m.config!.digest, ...m.layers!.map((l) => l.digest)];
    };
    const expected = new Set([...(await blobsOf(set.images['app-one']!.digest)), ...(await blobsOf(set.images.multi!.digest))]);
    const digests = new Set(pU.requests.filter((q) => q.method === 'GET' && q.status === 200 && /^\/v2\/acme\/(app|multi)\/blobs\//.test(q.path)).map((q) => q.path.split('/').pop()));
    assert.deepEqual([...digests].sort(), [...expected].sort(), 'every blob of both images, the platforms of the index included, came from the primary');

    pU.reset();
    pM.reset();
    const byDigest = await create(conf, [`${pU.host}/acme/app@${appDigest}`]);
    assert.equal(byDigest.r.code, 0, byDigest.r.stderr);
    assert.equal(blobGets(pM, 'mirror/acme/app'), APP_BLOBS, 'a digest pull uses the mirror');
    assert.equal(blobGets(pU, 'acme/app'), 0);
    assert.deepEqual((await namesIn(byDigest.out)).sources, [`${pU.host}/acme/app@${appDigest}`]);
  });

  it('insecure = true allows a self-signed TLS location, for that location only', async () => {
    const insecure = await create(`[[registry]]\nprefix = "quay.io/secure"\nlocation = "${secure.host}/secure"\ninsecure = true\n`, ['quay.io/secure/app:1']);
    assert.equal(insecure.r.code, 0, insecure.r.stderr);
    assert.deepEqual((await namesIn(insecure.out)).digests, [appDigest]);
    const verified = await create(`[[registry]]\nprefix = "quay.io/secure"\nlocation = "${secure.host}/secure"\n`, ['quay.io/secure/app:1'], ['--retries', '1']);
    assert.equal(verified.r.code, 1, 'without insecure the certificate is checked');
    assert.match(verified.r.stderr, /certificate|self.signed|SELF_SIGNED/i);
  });

  it('looks credentials up for the host actually contacted', async () => {
    const authfile = join(work, 'auth.json');
    await writeFile(authfile, JSON.stringify({ auths: { [locked.host]: { auth: Buffer.from(`${USER}:${PASS}`).toString('base64') } } }));
    const conf = `[[registry]]\nprefix = "quay.io/private"\nlocation = "${locked.host}/private"\n`;
    const { r, out } = await create(conf, ['quay.io/private/app:1'], ['--authfile', authfile]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await namesIn(out)).sources, ['quay.io/private/app:1']);
    assert.ok(!r.stderr.includes(PASS) && !r.stdout.includes(PASS));
  });

  it('a mistake in the file is one line naming it, exit 2, before anything is pulled', async () => {
    pU.reset();
    const { r, confFile } = await create(`[[registry]]\nprefix = "quay.io/acme\nlocation = "${pU.host}/acme"\n`, ['quay.io/acme/app:1']);
    assert.equal(r.code, 2, r.stderr);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
    assert.equal(errors.length, 1);
    assert.ok(errors[0]!.startsWith(`error: ${confFile}: invalid TOML at line 2`), errors[0]);
    assert.equal(pU.requests.length, 0);
    const missing = await runBundle(['create', '-c', join(dirname(confFile), 'bundle.yaml'), '-o', join(work, 'never.airgap'), '--registries-conf', join(work, 'no-such.conf')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /--registries-conf .*no-such\.conf: no such file/);
  });
});
