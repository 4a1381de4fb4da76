/**
 * push against real registries: destinations that would clash, --keep-registry-host,
 * a destination that is unreachable or refuses the password, and progress that
 * never reports more bytes done than its total, and uploads that start with the largest blob.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy } from './helpers/proxy.js';
import { buildTestImages, LayoutBuilder, pseudoRandom, skopeoCopy, skopeoInspectRaw, type TestImageSet } from './helpers/images.js';
import { assertNoStack, runBundle, type RunResult } from './helpers/cli.js';

let work: string;
let quay: RunningRegistry;
let hub: RunningRegistry;
let set: TestImageSet;
/** Holds quay/ns/app:1 and hub/ns/app:1 (different images), and quay/ns/same:1 and hub/ns/same:1 (the same image). */
let bundle: string;
let key: string;

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-push-'));
  [quay, hub] = await Promise.all([startRegistry(), startRegistry()]);
  set = await buildTestImages(join(work, 'layout'));
  await skopeoCopy(set.layoutDir, 'app-one', `${quay.host}/ns/app:1`);
  await skopeoCopy(set.layoutDir, 'app-two', `${hub.host}/ns/app:1`);
  await skopeoCopy(set.layoutDir, 'app-one', `${quay.host}/ns/same:1`);
  await skopeoCopy(set.layoutDir, 'app-one', `${hub.host}/ns/same:1`);
  await writeFile(
    join(work, 'bundle.yaml'),
    ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'images:', ...['ns/app:1', 'ns/same:1'].flatMap((r) => [`  - ${quay.host}/${r}`, `  - ${hub.host}/${r}`]), ''].join('\n'),
  );
  assert.equal((await runBundle(['keygen', '--out', join(work, 'site')])).code, 0);
  key = join(work, 'site.pub');
  bundle = join(work, 'two-sources.airgap');
  const r = await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', bundle, '--sign-key', join(work, 'site.key')]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await Promise.all([quay?.stop(), hub?.stop()]);
  if (work) await rm(work, { recursive: true, force: true });
});

/** `X KiB of Y KiB` of a plain progress summary line, as numbers of bytes. */
function bytesDoneOfTotal(stderr: string, phase: string): { done: number; total: number; line: string } {
  const line = stderr.split('\n').find((l) => l.startsWith(`done: ${phase}`));
  assert.ok(line, `no summary line for "${phase}" in:\n${stderr}`);
  const m = /([\d.]+) (B|KiB|MiB|GiB) of ([\d.]+) (B|KiB|MiB|GiB)/.exec(line);
  assert.ok(m, line);
  const scale = (u: string): number => 1024 ** ['B', 'KiB', 'MiB', 'GiB'].indexOf(u);
  return { done: Number(m[1]) * scale(m[2]!), total: Number(m[3]) * scale(m[4]!), line };
}

function errorLines(r: RunResult): string[] {
  return r.stderr.split('\n').filter((l) => l.startsWith('error:'));
}

describe('push: two sources, one destination', () => {
  it('is refused before the first request, naming both sources, in a real run and in --dry-run', async () => {
    const dst = await startRegistry();
    const proxy = await startProxy(dst.host);
    try {
      const r = await runBundle(['push', bundle, '--to', `${proxy.host}/m`, '--key', key, '--out-dir', join(work, 'clash-out')]);
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.equal(errorLines(r).length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`two images would be pushed to ${proxy.host}/m/ns/app:1: `));
      assert.ok(r.stderr.includes(`${quay.host}/ns/app:1 (${set.images['app-one']!.digest})`), r.stderr);
      assert.ok(r.stderr.includes(`${hub.host}/ns/app:1 (`), r.stderr);
      // The same image from two registries lands on the same tag without harm: no clash.
      assert.doesNotMatch(r.stderr, /ns\/same/);
      assert.match(r.stderr, /--keep-registry-host/);
      assertNoStack(r);
      assert.equal(proxy.requests.length, 0, 'not one request reached the destination');

      const dry = await runBundle(['push', bundle, '--to', `${proxy.host}/m`, '--key', key, '--dry-run']);
      assert.equal(dry.code, 2, dry.stdout + dry.stderr);
      assert.match(dry.stderr, /two images would be pushed to .*\/m\/ns\/app:1/);
      assert.equal(proxy.requests.length, 0);
    } finally {
      await proxy.stop();
      await dst.stop();
    }
  });

  it('the same image from two registries is no clash: one tag, both sources in the mirror files', async () => {
    const cfg = join(work, 'same.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${quay.host}/ns/same:1\n  - ${hub.host}/ns/same:1\n`);
    const file = join(work, 'same.airgap');
    const c = await runBundle(['create', '-c', cfg, '-o', file, '--sign-key', join(work, 'site.key')]);
    assert.equal(c.code, 0, c.stderr);
    const dst = await startRegistry();
    try {
      const outDir = join(work, 'same-out');
      const r = await runBundle(['push', file, '--to', `${dst.host}/m`, '--key', key, '--out-dir', outDir, '--json']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(JSON.parse(r.stdout).pushed, 2);
      const srcRaw = await skopeoInspectRaw(`docker://${quay.host}/ns/same:1`);
      assert.ok((await skopeoInspectRaw(`docker://${dst.host}/m/ns/same:1`)).equals(srcRaw));
      const mapping = (await readFile(join(outDir, 'mapping.txt'), 'utf8')).split('\n').filter((l) => l && !l.startsWith('#'));
      assert.equal(mapping.length, 1, mapping.join('\n'));
      assert.match(mapping[0]!, new RegExp(`@${sha256(srcRaw)}=${dst.host}/m/ns/same:1$`));
      const idms = parseYaml(await readFile(join(outDir, 'idms.yaml'), 'utf8'));
      assert.deepEqual(
        idms.spec.imageDigestMirrors.map((e: { source: string }) => e.source).sort(),
        [`${quay.host}/ns/same`, `${hub.host}/ns/same`].sort(),
      );
    } finally {
      await dst.stop();
    }
  });

  it('--keep-registry-host lands each at PREFIX/<source host>/..., with mirror files that point there', async () => {
    const dst = await startRegistry();
    try {
      const outDir = join(work, 'scoped-out');
      const hostDir = (h: RunningRegistry): string => h.host.replace(':', '-');
      const dry = await runBundle(['push', bundle, '--to', `${dst.host}/m`, '--key', key, '--keep-registry-host', '--dry-run']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.ok(dry.stdout.includes(`${dst.host}/m/${hostDir(quay)}/ns/app:1`), dry.stdout);

      const r = await runBundle(['push', bundle, '--to', `${dst.host}/m`, '--key', key, '--keep-registry-host', '--out-dir', outDir, '--json', '--dest-tls-verify=false']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(JSON.parse(r.stdout).pushed, 4);
      const digests: Record<string, string> = {};
      for (const [reg, repo] of [[quay, 'ns/app'], [hub, 'ns/app'], [quay, 'ns/same'], [hub, 'ns/same']] as const) {
        const srcRaw = await skopeoInspectRaw(`docker://${reg.host}/${repo}:1`);
        const dstRaw = await skopeoInspectRaw(`docker://${dst.host}/m/${hostDir(reg)}/${repo}:1`);
        assert.ok(dstRaw.equals(srcRaw), `${reg.host}/${repo}:1 landed byte for byte`);
        digests[`${reg.host}/${repo}`] = sha256(srcRaw);
      }
      assert.notEqual(digests[`${quay.host}/ns/app`], digests[`${hub.host}/ns/app`]);

      const mapping = (await readFile(join(outDir, 'mapping.txt'), 'utf8')).split('\n').filter((l) => l && !l.startsWith('#'));
      assert.ok(mapping.includes(`${quay.host}/ns/app@${digests[`${quay.host}/ns/app`]}=${dst.host}/m/${hostDir(quay)}/ns/app:1`), mapping.join('\n'));
      assert.ok(mapping.includes(`${hub.host}/ns/app@${digests[`${hub.host}/ns/app`]}=${dst.host}/m/${hostDir(hub)}/ns/app:1`), mapping.join('\n'));
      const idms = parseYaml(await readFile(join(outDir, 'idms.yaml'), 'utf8'));
      const mirrorsOf = new Map<string, string[]>(idms.spec.imageDigestMirrors.map((e: { source: string; mirrors: string[] }) => [e.source, e.mirrors]));
      for (const reg of [quay, hub]) {
        for (const repo of ['ns/app', 'ns/same']) assert.deepEqual(mirrorsOf.get(`${reg.host}/${repo}`), [`${dst.host}/m/${hostDir(reg)}/${repo}`]);
      }
      // registries.conf, read by Python's tomllib: each source repository has its own mirror.
      const conf = JSON.parse(
        execFileSync('python3', ['-c', 'import sys, json, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], "rb"))))', join(outDir, 'registries.conf')], { encoding: 'utf8' }),
      ) as { registry: { prefix: string; location: string; mirror: { location: string }[] }[] };
      const quayApp = conf.registry.find((e) => e.prefix === `${quay.host}/ns/app`);
      assert.deepEqual(quayApp?.mirror.map((m) => m.location), [`${dst.host}/m/${hostDir(quay)}/ns/app`]);
      // skopeo, told only the drop-in, pulls by digest from the mirror once the source registry is gone.
      await quay.stop();
      const viaMirror = execFileSync(
        'skopeo',
        ['--registries-conf', join(outDir, 'registries.conf'), 'inspect', '--raw', `docker://${quay.host}/ns/app@${digests[`${quay.host}/ns/app`]}`],
        { encoding: 'buffer' },
      );
      assert.equal(sha256(viaMirror), digests[`${quay.host}/ns/app`]);
    } finally {
      await dst.stop();
    }
  });
});

describe('progress', () => {
  it('never reports more bytes done than the total, though the base layer goes to four repositories', async () => {
    const v = await runBundle(['verify', bundle, '--key', key]);
    assert.equal(v.code, 0, v.stderr);
    const checked = bytesDoneOfTotal(v.stderr, 'checking every member');
    assert.ok(checked.done <= checked.total, checked.line);
    assert.ok(checked.done > 0, checked.line);

    const dst = await startRegistry();
    try {
      const r = await runBundle(['push', bundle, '--to', dst.host, '--key', key, '--keep-registry-host', '--out-dir', join(work, 'progress-out')]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /mounted/);
      const pushed = bytesDoneOfTotal(r.stderr, 'pushing to');
      assert.ok(pushed.done <= pushed.total, pushed.line);
      // Every member of this bundle was sent to an empty registry: all of the total is done.
      assert.equal(pushed.done, pushed.total, pushed.line);
    } finally {
      await dst.stop();
    }
  });
});

describe('push: order of uploads', () => {
  it('starts the largest waiting blob first (seen at a proxy), not the order the manifest lists them in; asks for the tag once', async () => {
    // Layers listed smallest first: a first-come order would upload them smallest first.
    const dir = join(work, 'order');
    const b = await new LayoutBuilder(join(dir, 'layout')).init();
    const layers = [];
    for (const [i, kib] of [16, 64, 128, 256, 512].entries()) layers.push(await b.layer({ [`l${i}.bin`]: pseudoRandom(`order-${i}`, kib * 1024) }));
    b.tag('ordered', await b.image(layers, undefined, 'ordered'));
    await b.save();
    await writeFile(join(dir, 'b.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nociLayouts:\n  - path: ${join(dir, 'layout')}\n    refs: [ordered]\n`);
    const file = join(dir, 'ordered.airgap');
    const c = await runBundle(['create', '-c', join(dir, 'b.yaml'), '-o', file, '--sign-key', join(work, 'site.key')]);
    assert.equal(c.code, 0, c.stderr);
    const dst = await startRegistry();
    const proxy = await startProxy(dst.host);
    try {
      const r = await runBundle(['push', file, '--to', `${proxy.host}/m`, '--key', key, '--concurrency', '1', '--out-dir', join(dir, 'out')]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const sizeOf = new Map(layers.map((l) => [l.digest, l.size]));
      // The uploads that complete a blob, in the order they reached the registry.
      const uploaded = proxy.requests
        .filter((q) => q.method === 'PUT' && q.path.includes('/blobs/uploads/'))
        .map((q) => new URL(q.url, 'http://x').searchParams.get('digest')!)
        .filter((d) => sizeOf.has(d))
        .map((d) => sizeOf.get(d)!);
      assert.equal(uploaded.length, layers.length, JSON.stringify(proxy.requests.map((q) => `${q.method} ${q.url}`)));
      // One slot: the first blob takes it at once (the config, listed first); every later one is the largest left.
      assert.deepEqual(uploaded, [...uploaded].sort((x, y) => y - x));
      // The tag is asked for once (is it there already?) and written once.
      const tagRequests = proxy.requests.filter((q) => q.path.endsWith('/manifests/ordered')).map((q) => q.method);
      assert.deepEqual(tagRequests.sort(), ['HEAD', 'PUT'], JSON.stringify(tagRequests));
    } finally {
      await proxy.stop();
      await dst.stop();
    }
  });
});

describe('push: a destination that cannot be used', () => {
  it('unreachable: one line naming it, exit 1, nothing else attempted', async () => {
    const r = await runBundle(['push', bundle, '--to', '127.0.0.1:9/m', '--key', key, '--keep-registry-host', '--retries', '1', '--out-dir', join(work, 'unreach-out')]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const errors = errorLines(r);
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0]!, /127\.0\.0\.1:9/);
    assert.match(errors[0]!, /ECONNREFUSED|refused|unreachable/i);
    assert.doesNotMatch(r.stderr, /warning:/, 'not one failure per image');
    assert.equal(r.stdout, '');
    assertNoStack(r);
  });

  it('a wrong password (htpasswd, and a Bearer token service): one line, exit 1, the password nowhere', async () => {
    const secured = await startRegistry({ htpasswd: { username: 'alice', password: 'right-password' } });
    const plain = await startRegistry();
    const tokens = await startProxy(plain.host, { bearer: { username: 'bob', password: 'right-token-pass' } });
    try {
      for (const [host, user] of [[secured.host, 'alice'], [tokens.host, 'bob']] as const) {
        const auth = join(work, `wrong-${user}.json`);
        const secret = `wrong-pw-${user}-123`;
        await writeFile(auth, JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${user}:${secret}`).toString('base64') } } }));
        const r = await runBundle(['push', bundle, '--to', `${host}/m`, '--key', key, '--keep-registry-host', '--dest-authfile', auth, '--out-dir', join(work, `wrong-out-${user}`)]);
        assert.equal(r.code, 1, r.stdout + r.stderr);
        const errors = errorLines(r);
        assert.equal(errors.length, 1, r.stderr);
        assert.match(errors[0]!, new RegExp(host.replace(/\./g, '\\.')));
        assert.match(errors[0]!, /auth|credential|password|denied|401/i);
        assert.doesNotMatch(r.stderr, /warning:/, 'not one failure per image');
        for (const s of [secret, Buffer.from(`${user}:${secret}`).toString('base64')]) assert.ok(!(r.stdout + r.stderr).includes(s), 'no credential in the output');
        assertNoStack(r);
      }
      assert.equal(tokens.requests.filter((q) => q.method !== 'GET' && q.method !== 'HEAD').length, 0, 'nothing was uploaded through the token proxy');
    } finally {
      await tokens.stop();
      await plain.stop();
      await secured.stop();
    }
  });
});
