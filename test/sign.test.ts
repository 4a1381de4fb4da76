import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pae, signEnvelope, verifyEnvelope } from '../src/sign/dsse.js';
import type { DsseEnvelope } from '../src/sign/dsse-types.js';
import { generateKeyPair, keyId, loadPrivateKey, loadTrustedKeys } from '../src/sign/keys.js';
import { UsageError } from '../src/util/errors.js';

const TYPE = 'application/vnd.airgap.bundle.manifest.v1+json';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'bundle-sign-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function usage(re: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof UsageError, `expected UsageError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    assert.match(err.message, re);
    return true;
  };
}

describe('keys', () => {
  it('generates an Ed25519 pair: private 0600 PKCS#8, public SPKI, keyid = sha256 of the SPKI DER', async () => {
    const kp = await generateKeyPair(path.join(dir, 'gen', 'signer'));
    assert.equal(kp.privatePath, path.join(dir, 'gen', 'signer.key'));
    assert.equal(kp.publicPath, path.join(dir, 'gen', 'signer.pub'));
    assert.equal((await stat(kp.privatePath)).mode & 0o777, 0o600);
    assert.match(await readFile(kp.privatePath, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
    assert.match(await readFile(kp.publicPath, 'utf8'), /^-----BEGIN PUBLIC KEY-----\n/);
    assert.match(kp.keyid, /^[a-f0-9]{64}$/);
    const priv = await loadPrivateKey(kp.privatePath);
    assert.equal(priv.asymmetricKeyType, 'ed25519');
    const [pub] = await loadTrustedKeys([kp.publicPath]);
    assert.equal(pub!.keyid, kp.keyid);
    assert.equal(keyId(priv), kp.keyid, 'a private key reduces to the same key id');
    assert.equal(pub!.source, kp.publicPath);
  });

  it('refuses to overwrite an existing key and leaves it untouched', async () => {
    const prefix = path.join(dir, 'once');
    const kp = await generateKeyPair(prefix);
    const before = await readFile(kp.privatePath, 'utf8');
    await assert.rejects(generateKeyPair(prefix), usage(/refusing to overwrite .*once\.key/));
    assert.equal(await readFile(kp.privatePath, 'utf8'), before);
  });

  it('refuses when only the .pub exists, and writes no .key', async () => {
    const prefix = path.join(dir, 'halfpair');
    await writeFile(`${prefix}.pub`, 'x');
    await assert.rejects(generateKeyPair(prefix), usage(/halfpair\.pub/));
    await assert.rejects(stat(`${prefix}.key`), { code: 'ENOENT' });
  });

  it('loads a directory of *.pub and *.pem keys, ignoring other files and duplicates', async () => {
    const kd = path.join(dir, 'trusted');
    await mkdir(kd);
    const a = await generateKeyPair(path.join(dir, 'a'));
    const b = await generateKeyPair(path.join(dir, 'b'));
    await writeFile(path.join(kd, 'a.pub'), await readFile(a.publicPath));
    await writeFile(path.join(kd, 'b.pem'), await readFile(b.publicPath));
    await writeFile(path.join(kd, 'README.txt'), 'not a key');
    const keys = await loadTrustedKeys([kd, a.publicPath]);
    assert.deepEqual(keys.map((k) => k.keyid).sort(), [a.keyid, b.keyid].sort());
    assert.deepEqual(keys.map((k) => path.basename(k.source)), ['a.pub', 'b.pem']);
  });

  it('rejects an empty key directory, a missing file, a private key, a non-Ed25519 key and garbage', async () => {
    const empty = path.join(dir, 'emptykeys');
    await mkdir(empty);
    await assert.rejects(loadTrustedKeys([empty]), usage(/emptykeys holds no \*\.pub or \*\.pem/));
    await assert.rejects(loadTrustedKeys([path.join(dir, 'missing.pub')]), usage(/missing\.pub does not exist/));

    const kp = await generateKeyPair(path.join(dir, 'priv'));
    await assert.rejects(loadTrustedKeys([kp.privatePath]), usage(/priv\.key holds a private key/));
    await assert.rejects(loadPrivateKey(kp.publicPath), usage(/priv\.pub holds a public key/));

    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rsaPub = path.join(dir, 'rsa.pub');
    await writeFile(rsaPub, rsa.publicKey.export({ type: 'spki', format: 'pem' }));
    await assert.rejects(loadTrustedKeys([rsaPub]), usage(/rsa\.pub holds a rsa key; only Ed25519/));
    const ecKey = path.join(dir, 'ec.key');
    await writeFile(ecKey, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await assert.rejects(loadPrivateKey(ecKey), usage(/ec\.key holds a ec key; only Ed25519/));

    const junk = path.join(dir, 'junk.pub');
    await writeFile(junk, '-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n');
    await assert.rejects(loadTrustedKeys([junk]), usage(/junk\.pub is not a PEM public key/));
    await assert.rejects(loadPrivateKey(path.join(dir, 'nope.key')), usage(/nope\.key does not exist/));
  });
});

describe('DSSE', () => {
  it('computes PAE as in the DSSE spec', () => {
    assert.equal(
      pae('http://example.com/HelloWorld', Buffer.from('hello world')).toString(),
      'DSSEv1 29 http://example.com/HelloWorld 11 hello world',
    );
    // Lengths are byte counts, not character counts.
    assert.equal(pae('t', Buffer.from('é')).toString(), 'DSSEv1 1 t 2 é');
  });

  it('round-trips: a signature by a trusted key verifies and returns the payload', async () => {
    const kp = await generateKeyPair(path.join(dir, 'rt'));
    const key = await loadPrivateKey(kp.privatePath);
    const payload = Buffer.from(JSON.stringify({ hello: 'world' }));
    const env = signEnvelope(payload, TYPE, key);
    assert.equal(env.payloadType, TYPE);
    assert.equal(env.signatures.length, 1);
    assert.equal(env.signatures[0]!.keyid, kp.keyid);
    assert.equal(Buffer.from(env.signatures[0]!.sig, 'base64').length, 64);
    // Survives JSON serialisation (as it is stored in the archive).
    const parsed = JSON.parse(JSON.stringify(env)) as DsseEnvelope;
    const res = verifyEnvelope(parsed, await loadTrustedKeys([kp.publicPath]));
    assert.deepEqual(res.payload, payload);
    assert.deepEqual(
      res.trustedSigners.map((t) => t.keyid),
      [kp.keyid],
    );
    assert.deepEqual(res.untrustedKeyids, []);
    assert.deepEqual(res.invalid, []);
  });

  it('reports a tampered payload or payload type as invalid, without throwing', async () => {
    const kp = await generateKeyPair(path.join(dir, 'tamper'));
    const key = await loadPrivateKey(kp.privatePath);
    const trusted = await loadTrustedKeys([kp.publicPath]);
    const env = signEnvelope(Buffer.from('{"size":1}'), TYPE, key);

    const tampered = { ...env, payload: Buffer.from('{"size":2}').toString('base64') };
    const r1 = verifyEnvelope(tampered, trusted);
    assert.deepEqual(r1.trustedSigners, []);
    assert.deepEqual(r1.invalid, [kp.keyid]);
    assert.equal(r1.payload.toString(), '{"size":2}');

    const r2 = verifyEnvelope({ ...env, payloadType: 'application/json' }, trusted);
    assert.deepEqual(r2.trustedSigners, []);
    assert.deepEqual(r2.invalid, [kp.keyid]);

    const badSig = { ...env, signatures: [{ keyid: kp.keyid, sig: 'not base64!' }] };
    const r3 = verifyEnvelope(badSig, trusted);
    assert.deepEqual(r3.invalid, [kp.keyid]);
  });

  it('reports a signature by another key as untrusted', async () => {
    const signer = await generateKeyPair(path.join(dir, 'signer2'));
    const other = await generateKeyPair(path.join(dir, 'other'));
    const env = signEnvelope(Buffer.from('x'), TYPE, await loadPrivateKey(signer.privatePath));
    const res = verifyEnvelope(env, await loadTrustedKeys([other.publicPath]));
    assert.deepEqual(res.trustedSigners, []);
    assert.deepEqual(res.untrustedKeyids, [signer.keyid]);
    assert.deepEqual(res.invalid, []);
  });

  it('handles several signatures and a forged keyid', async () => {
    const a = await generateKeyPair(path.join(dir, 'multi-a'));
    const b = await generateKeyPair(path.join(dir, 'multi-b'));
    const payload = Buffer.from('payload');
    const ea = signEnvelope(payload, TYPE, await loadPrivateKey(a.privatePath));
    const eb = signEnvelope(payload, TYPE, await loadPrivateKey(b.privatePath));
    const both: DsseEnvelope = { ...ea, signatures: [...ea.signatures, ...eb.signatures] };
    const res = verifyEnvelope(both, await loadTrustedKeys([a.publicPath]));
    assert.deepEqual(
      res.trustedSigners.map((t) => t.keyid),
      [a.keyid],
    );
    assert.deepEqual(res.untrustedKeyids, [b.keyid]);

    // B's signature relabelled with A's keyid does not pass as A.
    const forged: DsseEnvelope = { ...ea, signatures: [{ keyid: a.keyid, sig: eb.signatures[0]!.sig }] };
    const rf = verifyEnvelope(forged, await loadTrustedKeys([a.publicPath, b.publicPath]));
    assert.deepEqual(rf.trustedSigners, []);
    assert.deepEqual(rf.invalid, [a.keyid]);

    // A signature without a keyid is tried against every trusted key.
    const anon: DsseEnvelope = { ...eb, signatures: [{ keyid: '', sig: eb.signatures[0]!.sig }] };
    const ra = verifyEnvelope(anon, await loadTrustedKeys([a.publicPath, b.publicPath]));
    assert.deepEqual(
      ra.trustedSigners.map((t) => t.keyid),
      [b.keyid],
    );
  });

  it('throws UsageError for a structurally invalid envelope', () => {
    const good = { payloadType: TYPE, payload: 'eA==', signatures: [{ keyid: 'k', sig: 'AA==' }] };
    const cases: [unknown, RegExp][] = [
      [null, /not a JSON object/],
      [[], /not a JSON object/],
      [{ ...good, payloadType: '' }, /payloadType/],
      [{ ...good, payload: 42 }, /payload must be a base64 string/],
      [{ ...good, payload: 'a b' }, /payload is not valid base64/],
      [{ ...good, signatures: {} }, /signatures must be a list/],
      [{ ...good, signatures: ['x'] }, /signatures\[0\] is not an object/],
      [{ ...good, signatures: [{ keyid: 1, sig: 'AA==' }] }, /signatures\[0\]\.keyid/],
      [{ ...good, signatures: [{ keyid: 'k' }] }, /signatures\[0\]\.sig/],
    ];
    for (const [env, re] of cases) {
      assert.throws(() => verifyEnvelope(env as DsseEnvelope, []), usage(re), `case ${JSON.stringify(env)}`);
    }
    // The well-formed one does not throw; with no trusted keys nothing is trusted.
    const res = verifyEnvelope(good, []);
    assert.deepEqual(res.trustedSigners, []);
    assert.deepEqual(res.untrustedKeyids, ['k']);
    // An unsigned envelope (as an unsigned bundle carries) is well formed and trusts nothing.
    const unsigned = verifyEnvelope({ ...good, signatures: [] }, []);
    assert.deepEqual([unsigned.trustedSigners, unsigned.untrustedKeyids, unsigned.invalid], [[], [], []]);
    assert.equal(unsigned.payload.toString(), 'x');
  });

  it('refuses to sign with a public or non-Ed25519 key', async () => {
    const kp = await generateKeyPair(path.join(dir, 'pubsign'));
    const [pub] = await loadTrustedKeys([kp.publicPath]);
    assert.throws(() => signEnvelope(Buffer.from('x'), TYPE, pub!.key), usage(/private key/));
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    assert.throws(() => signEnvelope(Buffer.from('x'), TYPE, rsa.privateKey), usage(/only Ed25519/));
  });
});
