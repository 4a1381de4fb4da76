/**
 * Credentials never go to a plain-HTTP token realm of a registry reached over
 * TLS: a TLS front (self-signed, on loopback) in front of the real registry
 * asks for Bearer tokens from a token service on http://. The token service
 * records whether credentials reached it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selfSignedCert, startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RunningProxy } from './helpers/proxy.js';
import { buildTestImages, skopeoInspectRaw } from './helpers/images.js';
import { assertNoStack, runBundle } from './helpers/cli.js';

const user = 'realm-user';
const password = 'Pl41n-t3xt-n0t-h3re';

let work: string;
let reg: RunningRegistry;
let tokens: RunningProxy;
let front: RunningProxy;
let cert: { certFile: string; keyFile: string };
let bundle: string;
let auth: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-realm-'));
  reg = await startRegistry();
  // The token service, plain HTTP.
  tokens = await startProxy(reg.host, { bearer: { username: user, password } });
  cert = selfSignedCert(work);
  // The registry as clients see it: TLS, Bearer auth, realm http://<tokens>/token.
  front = await startProxy(reg.host, { tls: cert, bearer: { username: user, password, tokenServer: tokens } });
  await buildTestImages(join(work, 'layout'), { layerBytes: 16 * 1024 });
  await writeFile(join(work, 'c.yaml'), `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nociLayouts:\n  - path: ${join(work, 'layout')}\n    refs: [app-two]\n`);
  bundle = join(work, 'b.airgap');
  const r = await runBundle(['create', '-c', join(work, 'c.yaml'), '-o', bundle]);
  assert.equal(r.code, 0, r.stderr);
  auth = join(work, 'auth.json');
  await writeFile(auth, JSON.stringify({ auths: { [front.host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
});

after(async () => {
  await front?.stop();
  await tokens?.stop();
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('a plain-HTTP token realm for a TLS registry', () => {
  it('push refuses it with one clear line, and no credentials reach the token service', async () => {
    const r = await runBundle([
      'push', bundle, '--to', `${front.host}/m`, '--insecure-skip-signature', '--dest-authfile', auth, '--ca-file', cert.certFile,
      '--out-dir', join(work, 'out-refused'),
    ]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0]!, new RegExp(`token requests to ${tokens.host.replace(/\./g, '\\.')} over plain HTTP.*refusing to send credentials`));
    const b64 = Buffer.from(`${user}:${password}`).toString('base64');
    for (const secret of [password, b64]) assert.ok(!(r.stdout + r.stderr).includes(secret), 'a credential leaked into the output');
    assert.equal(tokens.requests.filter((q) => q.authorized).length, 0, 'credentials were sent to the http:// realm');
    assert.ok(tokens.tokenRequests.every((t) => !t.withCredentials));
    assert.ok(front.requests.some((q) => q.path === '/v2/' || q.path.startsWith('/v2/m/')), 'the TLS registry was reached');
    assertNoStack(r);
  });

  it('with --dest-tls-verify=false the user allowed insecure transport: the same push goes through', async () => {
    const r = await runBundle([
      'push', bundle, '--to', `${front.host}/m`, '--insecure-skip-signature', '--dest-authfile', auth, '--dest-tls-verify=false',
      '--out-dir', join(work, 'out-allowed'), '--json',
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(JSON.parse(r.stdout).pushed, 1);
    assert.ok(tokens.tokenRequests.some((t) => t.withCredentials && t.granted));
    // The real registry behind the front has it (skopeo asks it directly; a layout image `app-two` lands at m/layout:app-two).
    assert.ok((await skopeoInspectRaw(`docker://${reg.host}/m/layout:app-two`)).length > 0);
  });
});
