/**
 * Secrets never leak: the test credentials (a password, its user:password base64 as auth
 * files hold it, and every token the token server issued) are searched for in everything
 * the tool produces: the bundle (its bytes and, decompressed with the real zstd, its tar),
 * stdout and stderr of plain, --json and failing runs (with BUNDLE_DEBUG stack traces on),
 * and the mirror files push writes. Redirects to another host (blob storage on `127.0.0.2`
 * while the registry is `127.0.0.1`) carry no Authorization; the plain-HTTP decision is a
 * unit test (no real traffic leaves loopback). A private key is written 0600 and a readable
 * one is warned about.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { schemesFor } from '../src/registry/tls.js';
import { assertNoStack, runBundle, type RunResult } from './helpers/cli.js';
import { buildTestImages, skopeoCopy } from './helpers/images.js';
import { startProxy, type RunningProxy, startBlobStorage, type BlobStorage } from './helpers/proxy.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';

const USER = 'leak-test-user';
const PASSWORD = 'Pa55-w0rd-that-must-never-leak';
const BASIC = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
const WRONG = 'wrong-Pa55-never-printed';

let work: string;
let reg: RunningRegistry;
let storage: BlobStorage;
let src: RunningProxy;
let dst: RunningProxy;
const outputs: [string, string][] = [];

function keep(what: string, r: RunResult): RunResult {
  outputs.push([what, r.stdout + r.stderr]);
  return r;
}

/** Every string a leak would show as. */
function secrets(...proxies: RunningProxy[]): string[] {
  return [PASSWORD, BASIC, Buffer.from(PASSWORD).toString('base64'), WRONG, Buffer.from(`${USER}:${WRONG}`).toString('base64'), ...proxies.flatMap((p) => p.tokensIssued)];
}

const env = () => ({ REGISTRY_AUTH_FILE: join(work, 'none.json'), HOME: work, XDG_RUNTIME_DIR: work });

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-secrets-'));
  reg = await startRegistry();
  const set = await buildTestImages(join(work, 'layout'), { layerBytes: 64 * 1024 });
  await skopeoCopy(set.layoutDir, 'app-one', `${reg.host}/ns/app:1`);
  // Blob storage on another loopback address (127.0.0.2) than the registry's (127.0.0.1): it records what came.
  storage = await startBlobStorage(reg.host, '127.0.0.2');
  src = await startProxy(reg.host, { bearer: { username: USER, password: PASSWORD }, redirectBlobsTo: storage.origin });
  dst = await startProxy(reg.host, { bearer: { username: USER, password: PASSWORD } });
  await writeFile(join(work, 'auth.json'), JSON.stringify({ auths: { [src.host]: { auth: BASIC }, [dst.host]: { auth: BASIC } } }));
  await writeFile(join(work, 'wrong.json'), JSON.stringify({ auths: { [src.host]: { auth: Buffer.from(`${USER}:${WRONG}`).toString('base64') }, [dst.host]: { username: USER, password: WRONG } } }));
  await writeFile(join(work, 'bundle.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${src.host}/ns/app:1\n`);
  keep('keygen', await runBundle(['keygen', '--out', join(work, 'site')]));
});

after(async () => {
  await src?.stop();
  await dst?.stop();
  await storage?.stop();
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('secrets', () => {
  it('create and push with credentials (plain, --json, wrong password with BUNDLE_DEBUG): no credential or token anywhere they write', async () => {
    const bundle = join(work, 'out.airgap');
    const c = keep('create', await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', bundle, '--authfile', join(work, 'auth.json'), '--sign-key', join(work, 'site.key')], { env: env() }));
    assert.equal(c.code, 0, c.stderr);
    const cj = keep('create --json', await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', join(work, 'out2.airgap'), '--authfile', join(work, 'auth.json'), '--json'], { env: env() }));
    assert.equal(cj.code, 0, cj.stderr);
    const cw = keep('create, wrong password', await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', join(work, 'out3.airgap'), '--authfile', join(work, 'wrong.json')], { env: { ...env(), BUNDLE_DEBUG: '1' } }));
    assert.equal(cw.code, 1, cw.stderr);
    assert.match(cw.stderr, /401|credential|password|unauthorized/i);
    const cwj = keep('create --json, wrong password', await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', join(work, 'out4.airgap'), '--authfile', join(work, 'wrong.json'), '--json'], { env: env() }));
    assert.equal(cwj.code, 1);

    const out = join(work, 'push-out');
    const p = keep('push', await runBundle(['push', bundle, '--to', `${dst.host}/mirror`, '--key', join(work, 'site.pub'), '--dest-authfile', join(work, 'auth.json'), '--out-dir', out], { env: env() }));
    assert.equal(p.code, 0, p.stderr);
    const pj = keep('push --json', await runBundle(['push', bundle, '--to', `${dst.host}/mirror2`, '--key', join(work, 'site.pub'), '--authfile', join(work, 'auth.json'), '--out-dir', out, '--json', '--recheck'], { env: env() }));
    assert.equal(pj.code, 0, pj.stderr);
    const pw = keep('push, wrong password', await runBundle(['push', bundle, '--to', `${dst.host}/mirror3`, '--key', join(work, 'site.pub'), '--dest-authfile', join(work, 'wrong.json'), '--out-dir', out], { env: { ...env(), BUNDLE_DEBUG: '1' } }));
    assert.equal(pw.code, 1, pw.stdout + pw.stderr);
    const pwj = keep('push --json, wrong password', await runBundle(['push', bundle, '--to', `${dst.host}/mirror4`, '--key', join(work, 'site.pub'), '--dest-authfile', join(work, 'wrong.json'), '--json'], { env: env() }));
    assert.equal(pwj.code, 1);
    for (const r of [c, cj, cw, cwj, p, pj, pw, pwj]) if (r !== cw && r !== pw) assertNoStack(r);

    // The credentials did go where they belong (so their absence below means something).
    assert.ok(src.tokenRequests.some((t) => t.withCredentials && t.granted) && dst.tokenRequests.some((t) => t.withCredentials && t.granted));
    assert.ok(src.tokensIssued.length > 0 && dst.tokensIssued.length > 0);

    const places: [string, Buffer][] = [['bundle bytes', await readFile(bundle)]];
    const tar = await promisify(execFile)('zstd', ['-dc', bundle], { encoding: 'buffer', maxBuffer: 64 << 20 });
    places.push(['bundle, decompressed by zstd', tar.stdout]);
    for (const f of await readdir(out)) places.push([`report file ${f}`, await readFile(join(out, f))]);
    for (const [what, text] of outputs) places.push([what, Buffer.from(text)]);
    assert.ok(places.length >= 14, `${places.length} places searched`);
    for (const secret of secrets(src, dst)) {
      for (const [what, bytes] of places) assert.equal(bytes.includes(secret), false, `${what} holds a credential or token`);
    }
  });

  it('a blob redirect to another host (127.0.0.2 vs 127.0.0.1) carries no Authorization', () => {
    const redirected = src.requests.filter((r) => r.status === 307);
    assert.ok(redirected.length > 0 && redirected.every((r) => r.authorized), 'the registry was asked with credentials and redirected');
    assert.equal(storage.authorizations.length, redirected.length, 'every redirect was followed to the storage host');
    assert.deepEqual(storage.authorizations.filter((a) => a !== undefined), [], 'none of them carried an Authorization header');
  });

  it('credentials go over plain HTTP only to loopback or to a registry explicitly allowed insecure transport (the decision, unit-tested)', () => {
    for (const host of ['registry.corp:5000', 'quay.io', '10.0.0.5:5000', '192.168.1.10', '[2001:db8::1]:5000', 'localhost.evil.com', '127.0.0.1.nip.io']) {
      assert.deepEqual(schemesFor(host, { tlsVerify: true }), ['https'], `${host}: https only`);
      assert.deepEqual(schemesFor(host, {}), ['https'], `${host}: https only by default`);
      assert.ok(schemesFor(host, { tlsVerify: false }).includes('http'), `${host}: plain HTTP when allowed insecure`);
    }
    for (const host of ['127.0.0.1:5000', 'localhost:5000', '[::1]:5000', '127.0.0.2']) {
      assert.ok(schemesFor(host, { tlsVerify: true }).includes('http'), `${host}: loopback may be plain HTTP`);
    }
  });

  it('keygen writes the private key 0600; create warns when it can be read by others', async () => {
    assert.equal((await stat(join(work, 'site.key'))).mode & 0o777, 0o600);
    await chmod(join(work, 'site.key'), 0o644);
    await writeFile(join(work, 'local.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nociLayouts:\n  - path: ./layout\n    refs: [app-one]\n`);
    const r = await runBundle(['create', '-c', join(work, 'local.yaml'), '-o', join(work, 'local.airgap'), '--sign-key', join(work, 'site.key')], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: private key .*site\.key can be read by others \(mode 0644\).*chmod 600/);
    await chmod(join(work, 'site.key'), 0o600);
    const quiet = await runBundle(['create', '-c', join(work, 'local.yaml'), '-o', join(work, 'local2.airgap'), '--sign-key', join(work, 'site.key')], { env: env() });
    assert.equal(quiet.code, 0);
    assert.doesNotMatch(quiet.stderr, /can be read by others/);
  });
});
