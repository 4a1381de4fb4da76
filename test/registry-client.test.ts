/**
 * The registry client against the real Docker Distribution (docker-registry 2.8),
 * sometimes behind a loopback proxy that injects faults or puts the Bearer token
 * flow in front. skopeo serves as the independent witness.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { RegistryClient } from '../src/registry/client.js';
import { RegistryAuthError, RegistryHttpError, RegistryNetworkError } from '../src/registry/errors.js';
import { parseWwwAuthenticate } from '../src/registry/auth.js';
import { findCredentials, normaliseAuthKey } from '../src/registry/authfile.js';
import { parseRetryAfter } from '../src/registry/http.js';
import { schemesFor } from '../src/registry/tls.js';
import { createRegistryStore, RegistryStore } from '../src/store/registry-store.js';
import { MediaType } from '../src/oci/media-types.js';
import type { Descriptor } from '../src/oci/types.js';
import { sha256Digest, VerifyingStream } from '../src/util/digest.js';
import { DigestMismatchError, UsageError } from '../src/util/errors.js';
import { freePort, selfSignedCert, startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RunningProxy, startBlobStorage } from './helpers/proxy.js';

const run = promisify(execFile);

function bytesOf(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let off = 0;
  for (let i = 0; off < size; i++) off += Buffer.from(sha256Digest(`${seed}:${i}`).slice(7), 'hex').copy(out, off);
  return out;
}

/** A stream of `data` in small pieces, so uploads really stream. */
function streamOf(data: Buffer, piece = 16 * 1024): Readable {
  let off = 0;
  return new Readable({
    read() {
      if (off >= data.length) {
        this.push(null);
        return;
      }
      this.push(data.subarray(off, off + piece));
      off += piece;
    },
  });
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function desc(data: Buffer, mediaType: string = MediaType.OctetStream): Descriptor {
  return { mediaType, digest: sha256Digest(data), size: data.length };
}

/** Pushes a config blob and returns an OCI image manifest (odd spacing: must survive byte for byte). */
async function pushImage(client: RegistryClient, repo: string, seed: string): Promise<{ bytes: Buffer; digest: string; config: Descriptor; layer: Descriptor }> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const layer = bytesOf(`layer-${seed}`, 40_000);
  await client.uploadBlob(repo, sha256Digest(config), config.length, streamOf(config));
  await client.uploadBlob(repo, sha256Digest(layer), layer.length, streamOf(layer));
  const manifest = `{ "schemaVersion": 2,\n  "mediaType": "${MediaType.OciManifest}",\n  "config": {"mediaType": "${MediaType.OciConfig}", "digest": "${sha256Digest(config)}", "size": ${config.length}},\n  "layers": [ {"mediaType": "${MediaType.OciLayerGzip}", "digest": "${sha256Digest(layer)}", "size": ${layer.length}} ] }\n`;
  const bytes = Buffer.from(manifest);
  return { bytes, digest: sha256Digest(bytes), config: desc(config, MediaType.OciConfig), layer: desc(layer, MediaType.OciLayerGzip) };
}

let work: string;
let reg: RunningRegistry;
const cleanups: Array<() => Promise<void>> = [];

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-regclient-'));
  // An empty auth file so the tests never read the machine's own credentials.
  await writeFile(join(work, 'no-auth.json-does-not-matter'), '{"auths":{}}');
  reg = await startRegistry();
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await reg?.stop();
  await rm(work, { recursive: true, force: true });
});

function client(host: string, opts: ConstructorParameters<typeof RegistryClient>[1] = {}): RegistryClient {
  const c = new RegistryClient(host, { retryDelayMs: 20, authfile: join(work, 'no-auth.json-does-not-matter'), ...opts });
  cleanups.push(() => c.close());
  return c;
}

async function proxy(opts: Parameters<typeof startProxy>[1] = {}): Promise<RunningProxy> {
  const p = await startProxy(reg.host, opts);
  cleanups.push(() => p.stop());
  return p;
}


describe('blobs', () => {
  it('uploads monolithically, then HEAD and GET return the same bytes', async () => {
    const c = client(reg.host);
    const data = bytesOf('mono', 3 * 1024 * 1024 + 17);
    const d = sha256Digest(data);
    assert.equal(await c.headBlob('blobs/mono', d), undefined);
    await c.uploadBlob('blobs/mono', d, data.length, streamOf(data));
    assert.equal(await c.headBlob('blobs/mono', d), data.length);
    const back = await readAll(await c.getBlob('blobs/mono', d));
    assert.equal(sha256Digest(back), d);
  });

  it('uploads in PATCH chunks, then reads back the same digest', async () => {
    const p = await proxy();
    const c = client(p.host);
    const data = bytesOf('chunked', 300_000);
    const d = sha256Digest(data);
    await c.uploadBlob('blobs/chunked', d, data.length, streamOf(data, 10_000), { chunkSize: 64 * 1024 });
    assert.equal(p.count('PATCH', /^\/v2\/blobs\/chunked\/blobs\/uploads\//), Math.ceil(300_000 / (64 * 1024)));
    assert.equal(p.count('PUT', /^\/v2\/blobs\/chunked\/blobs\/uploads\//), 1);
    assert.equal(await c.headBlob('blobs/chunked', d), data.length);
    assert.equal(sha256Digest(await readAll(await c.getBlob('blobs/chunked', d))), d);
  });

  it('cross-repository mount: mounted when the source has it, false (and nothing linked) when not', async () => {
    const p = await proxy();
    const c = client(p.host);
    const data = bytesOf('mount', 5000);
    const d = sha256Digest(data);
    await c.uploadBlob('mount/src', d, data.length, streamOf(data));
    assert.equal(await c.headBlob('mount/dst', d), undefined);
    assert.equal(await c.mountBlob('mount/dst', d, 'mount/src'), true);
    assert.equal(await c.headBlob('mount/dst', d), data.length);
    const other = sha256Digest('never uploaded');
    assert.equal(await c.mountBlob('mount/dst2', other, 'mount/src'), false);
    assert.equal(await c.headBlob('mount/dst2', other), undefined);
    // The session opened by the refused mount was cancelled.
    assert.equal(p.count('DELETE', /^\/v2\/mount\/dst2\/blobs\/uploads\//), 1);
  });

  it('GET of a missing blob names the request and the registry error code', async () => {
    const c = client(reg.host);
    const missing = sha256Digest('missing');
    await assert.rejects(c.getBlob('blobs/mono', missing), (err: unknown) => {
      assert.ok(err instanceof RegistryHttpError);
      assert.equal(err.status, 404);
      assert.match(err.message, /GET http:\/\/127\.0\.0\.1:\d+\/v2\/blobs\/mono\/blobs\/sha256:/);
      assert.match(err.message, /BLOB_UNKNOWN/);
      return true;
    });
  });
});

describe('manifests', () => {
  it('puts and gets an OCI manifest byte for byte (skopeo agrees)', async () => {
    const c = client(reg.host);
    const img = await pushImage(c, 'man/app', 'one');
    const digest = await c.putManifest('man/app', 'v1', img.bytes, MediaType.OciManifest);
    assert.equal(digest, img.digest);
    const got = await c.getManifest('man/app', 'v1');
    assert.deepEqual(got.bytes, img.bytes);
    assert.equal(got.mediaType, MediaType.OciManifest);
    assert.equal(got.digest, img.digest);
    const byDigest = await c.getManifest('man/app', img.digest);
    assert.deepEqual(byDigest.bytes, img.bytes);
    const head = await c.headManifest('man/app', 'v1');
    assert.deepEqual(head, { mediaType: MediaType.OciManifest, digest: img.digest, size: img.bytes.length });
    assert.equal(await c.headManifest('man/app', 'nope'), undefined);
    const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/man/app:v1`], { encoding: 'buffer' });
    assert.deepEqual(Buffer.from(stdout), img.bytes);
  });

  it('puts and gets an image index byte for byte, by digest without a tag', async () => {
    const c = client(reg.host);
    const a = await pushImage(c, 'man/multi', 'amd');
    const b = await pushImage(c, 'man/multi', 'arm');
    await c.putManifest('man/multi', a.digest, a.bytes, MediaType.OciManifest);
    await c.putManifest('man/multi', b.digest, b.bytes, MediaType.OciManifest);
    const index = Buffer.from(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: MediaType.OciIndex,
          manifests: [
            { mediaType: MediaType.OciManifest, digest: a.digest, size: a.bytes.length, platform: { architecture: 'amd64', os: 'linux' } },
            { mediaType: MediaType.OciManifest, digest: b.digest, size: b.bytes.length, platform: { architecture: 'arm64', os: 'linux' } },
          ],
        },
        null,
        3,
      ),
    );
    await c.putManifest('man/multi', 'latest', index, MediaType.OciIndex);
    const got = await c.getManifest('man/multi', 'latest');
    assert.deepEqual(got.bytes, index);
    assert.equal(got.mediaType, MediaType.OciIndex);
    assert.equal(got.digest, sha256Digest(index));
    const child = await c.getManifest('man/multi', b.digest);
    assert.deepEqual(child.bytes, b.bytes);
  });

  it('docker.io is contacted at registry-1.docker.io', () => {
    const c = client('docker.io');
    assert.equal(c.registry, 'docker.io');
    assert.equal(c.host, 'registry-1.docker.io');
    assert.equal(client('index.docker.io').host, 'registry-1.docker.io');
  });

  it('a manifest naming a missing blob is refused with the registry error', async () => {
    const c = client(reg.host);
    const bogus = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: sha256Digest('nope'), size: 4 }, layers: [] }));
    await assert.rejects(c.putManifest('man/bad', 'x', bogus, MediaType.OciManifest), (err: unknown) => {
      assert.ok(err instanceof RegistryHttpError);
      assert.match(err.message, /^PUT http:\/\/127\.0\.0\.1:\d+\/v2\/man\/bad\/manifests\/x failed: HTTP 400 MANIFEST_BLOB_UNKNOWN/);
      return true;
    });
  });
});

describe('listing', () => {
  it('lists every tag across Link pages', async () => {
    const c0 = client(reg.host);
    const img = await pushImage(c0, 'list/app', 'tags');
    const tags = ['a1', 'a2', 'b1', 'b2', 'c1'];
    for (const t of tags) await c0.putManifest('list/app', t, img.bytes, MediaType.OciManifest);
    assert.deepEqual((await c0.listTags('list/app')).sort(), tags);
    const p = await proxy();
    const c = client(p.host);
    assert.deepEqual((await c.listTags('list/app', { pageSize: 2 })).sort(), tags);
    assert.equal(p.count('GET', '/v2/list/app/tags/list'), 3);
  });

  it('lists the catalog across Link pages from the real registry', async () => {
    const c0 = client(reg.host);
    for (const r of ['cat/a', 'cat/b', 'cat/c']) {
      const img = await pushImage(c0, r, r);
      await c0.putManifest(r, 'v', img.bytes, MediaType.OciManifest);
    }
    const all = await c0.catalog();
    const p = await proxy();
    const c = client(p.host);
    const paged = await c.catalog({ pageSize: 2 });
    assert.deepEqual(paged, all);
    for (const r of ['cat/a', 'cat/b', 'cat/c']) assert.ok(paged.includes(r), r);
    assert.ok(p.count('GET', '/v2/_catalog') >= Math.ceil(all.length / 2), `pages: ${p.count('GET', '/v2/_catalog')}`);
  });
});

describe('retries', () => {
  const isManifestHead = (r: { method: string; path: string }): boolean => r.method === 'HEAD' && r.path.includes('/manifests/');

  it('two 503s, then success', async () => {
    const p = await proxy({ faults: [{ match: isManifestHead, times: 2, kind: 503 }] });
    const c = client(p.host);
    const img = await pushImage(c, 'retry/a', 'r');
    await c.putManifest('retry/a', 'v', img.bytes, MediaType.OciManifest);
    const d = await c.headManifest('retry/a', 'v');
    assert.equal(d?.digest, img.digest);
    assert.equal(p.count('HEAD', '/v2/retry/a/manifests/v'), 3);
  });

  it('429 with Retry-After is honoured', async () => {
    const p = await proxy({ faults: [{ match: isManifestHead, times: 1, kind: 429, retryAfter: '1' }] });
    const c = client(p.host);
    const img = await pushImage(c, 'retry/b', 'r');
    await c.putManifest('retry/b', 'v', img.bytes, MediaType.OciManifest);
    const t0 = Date.now();
    const d = await c.headManifest('retry/b', 'v');
    const waited = Date.now() - t0;
    assert.equal(d?.digest, img.digest);
    assert.ok(waited >= 950, `waited only ${waited} ms`);
    assert.equal(p.count('HEAD', '/v2/retry/b/manifests/v'), 2);
  });

  it('dropped connections are retried', async () => {
    const p = await proxy({ faults: [{ match: (r) => r.method === 'GET' && r.path.includes('/manifests/'), times: 2, kind: 'drop' }] });
    const c = client(p.host);
    const img = await pushImage(c, 'retry/c', 'r');
    await c.putManifest('retry/c', 'v', img.bytes, MediaType.OciManifest);
    const got = await c.getManifest('retry/c', 'v');
    assert.deepEqual(got.bytes, img.bytes);
    assert.equal(p.count('GET', '/v2/retry/c/manifests/v'), 3);
  });

  it('persistent failures end in one clear error naming the request', async () => {
    const p = await proxy({ faults: [{ match: (r) => r.path.startsWith('/v2/retry/d/'), times: 1000, kind: 503 }] });
    const c = client(p.host, { retries: 3 });
    await assert.rejects(c.getManifest('retry/d', 'v1'), (err: unknown) => {
      assert.ok(err instanceof RegistryHttpError);
      assert.equal(err.status, 503);
      assert.match(err.message, /^GET http:\/\/127\.0\.0\.1:\d+\/v2\/retry\/d\/manifests\/v1 failed: HTTP 503 UNAVAILABLE: injected 503 \(after 3 attempts\)$/);
      return true;
    });
    assert.equal(p.count('GET', '/v2/retry/d/manifests/v1'), 3);
  });

  it('a blob download that breaks off resumes where it stopped (a Range request), as one more attempt', async () => {
    const c0 = client(reg.host);
    const data = bytesOf('resume', 600_000);
    const d = sha256Digest(data);
    await c0.uploadBlob('retry/resume', d, data.length, streamOf(data));
    const p = await proxy({ faults: [{ match: (r) => r.method === 'GET' && r.path.endsWith(`/blobs/${d}`), times: 1, kind: 'truncate' }] });
    const c = client(p.host, { retries: 2 });
    const back = await readAll(await c.getBlob('retry/resume', d));
    assert.equal(sha256Digest(back), d);
    const gets = p.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${d}`));
    assert.equal(gets.length, 2);
    assert.equal(gets[0]!.range, undefined);
    assert.match(gets[1]!.range ?? '', /^bytes=[1-9]\d*-$/, 'the second GET asks only for the rest');
  });

  it('a blob download that breaks off every time: exactly `retries` GETs, and the error names the request', async () => {
    const c0 = client(reg.host);
    const data = bytesOf('resume-never', 300_000);
    const d = sha256Digest(data);
    await c0.uploadBlob('retry/broken', d, data.length, streamOf(data));
    const p = await proxy({ faults: [{ match: (r) => r.method === 'GET' && r.path.endsWith(`/blobs/${d}`), times: 1000, kind: 'truncate' }] });
    const c = client(p.host, { retries: 3 });
    await assert.rejects(readAll(await c.getBlob('retry/broken', d)), (err: unknown) => {
      assert.ok(err instanceof RegistryNetworkError, String(err));
      assert.match(err.message, new RegExp(`^GET http://127\\.0\\.0\\.1:\\d+/v2/retry/broken/blobs/${d} failed: .*\\(after 3 attempts\\)$`));
      return true;
    });
    assert.equal(p.count('GET', `/v2/retry/broken/blobs/${d}`), 3);
  });

  for (const kind of [503, 'drop'] as const) {
    it(`a streamed upload that fails every time (${kind}): exactly \`retries\` PUTs, each from a re-opened source`, async () => {
      const data = bytesOf(`upload-fails-${kind}`, 80_000);
      const d = desc(data);
      const p = await proxy({ faults: [{ match: (r) => r.method === 'PUT' && r.url.includes(encodeURIComponent(d.digest)), times: 1000, kind }] });
      const store = new RegistryStore(client(p.host, { retries: 2 }));
      let opens = 0;
      const open = async (): Promise<Readable> => {
        opens++;
        return streamOf(data);
      };
      await assert.rejects(store.putBlob(`retry/up-${kind}`, d, open), (err: unknown) => {
        assert.ok(err instanceof RegistryHttpError || err instanceof RegistryNetworkError, String(err));
        assert.match(err.message, new RegExp(`^PUT http://127\\.0\\.0\\.1:\\d+/v2/retry/up-${kind}/blobs/uploads/\\S+\\?digest=sha256%3A${d.digest.slice(7)} failed: .*\\(after 2 attempts\\)$`));
        return true;
      });
      assert.equal(p.count('PUT', new RegExp(`^/v2/retry/up-${kind}/blobs/uploads/`)), 2);
      assert.equal(opens, 2);
    });
  }

  it('a 4xx upload answer is not retried', async () => {
    const data = bytesOf('upload-400', 30_000);
    const d = desc(data);
    const p = await proxy();
    const store = new RegistryStore(client(p.host, { retries: 4 }));
    // A descriptor whose digest the bytes do not have: the registry refuses the PUT with 400.
    const wrong: Descriptor = { ...d, digest: sha256Digest('not these bytes') };
    let opens = 0;
    await assert.rejects(
      store.putBlob('retry/bad', wrong, async () => {
        opens++;
        return streamOf(data);
      }),
      (err: unknown) => err instanceof RegistryHttpError && err.status === 400,
    );
    assert.equal(opens, 1);
    assert.equal(p.count('PUT', /^\/v2\/retry\/bad\/blobs\/uploads\//), 1);
  });

  it('connection refused is a clear error', async () => {
    const port = await freePort();
    const c = client(`127.0.0.1:${port}`, { retries: 2 });
    await assert.rejects(c.getManifest('x/y', 'latest'), (err: unknown) => {
      assert.ok(err instanceof RegistryNetworkError);
      assert.match(err.message, new RegExp(`^GET http://127\\.0\\.0\\.1:${port}/v2/x/y/manifests/latest failed: .*ECONNREFUSED`));
      assert.match(err.message, /after 2 attempts/);
      return true;
    });
  });
});

describe('authentication', () => {
  const user = 'robot';
  const password = 's3cret-Pa55word!';

  async function authFile(name: string, auths: Record<string, unknown>): Promise<string> {
    const f = join(work, name);
    await writeFile(f, JSON.stringify({ auths }));
    return f;
  }

  it('Bearer token flow with credentials from an auth file', async () => {
    const p = await proxy({ bearer: { username: user, password } });
    const file = await authFile('bearer-ok.json', { [p.host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } });
    const c = client(p.host, { authfile: file });
    await c.ping();
    const img = await pushImage(c, 'auth/app', 'bearer');
    await c.putManifest('auth/app', 'v1', img.bytes, MediaType.OciManifest);
    const got = await c.getManifest('auth/app', 'v1');
    assert.deepEqual(got.bytes, img.bytes);
    assert.ok(p.tokenRequests.length >= 2 && p.tokenRequests.every((t) => t.granted && t.withCredentials && t.service === 'test'));
    assert.ok(p.tokenRequests.some((t) => t.scopes.includes('repository:auth/app:pull,push')));
    // Tokens are cached per scope: far fewer token requests than registry requests.
    assert.ok(p.tokenRequests.length <= 4, `token requests: ${p.tokenRequests.length}`);
    assert.ok(p.requests.filter((r) => r.path.startsWith('/v2/auth/')).every((r) => r.status !== 401 || !r.authorized));
  });

  it('Bearer flow through $REGISTRY_AUTH_FILE, `access_token` answers and repository-scoped keys', async () => {
    const p = await proxy({ bearer: { username: user, password, accessTokenField: true } });
    const file = await authFile('bearer-env.json', {
      [p.host]: { auth: Buffer.from(`${user}:wrong`).toString('base64') },
      [`${p.host}/scoped`]: { username: user, password },
    });
    const saved = process.env['REGISTRY_AUTH_FILE'];
    process.env['REGISTRY_AUTH_FILE'] = file;
    try {
      const c = new RegistryClient(p.host, { retryDelayMs: 20 });
      cleanups.push(() => c.close());
      const data = Buffer.from('scoped blob');
      await c.uploadBlob('scoped/app', sha256Digest(data), data.length, streamOf(data));
      assert.equal(await c.headBlob('scoped/app', sha256Digest(data)), data.length);
      await assert.rejects(c.headBlob('other/app', sha256Digest(data)), RegistryAuthError);
    } finally {
      if (saved === undefined) delete process.env['REGISTRY_AUTH_FILE'];
      else process.env['REGISTRY_AUTH_FILE'] = saved;
    }
  });

  it('a wrong password is a clear error without the password or a token', async () => {
    const p = await proxy({ bearer: { username: user, password } });
    const wrong = 'Wr0ng-pa55-XYZ';
    const b64 = Buffer.from(`${user}:${wrong}`).toString('base64');
    const file = await authFile('bearer-bad.json', { [p.host]: { auth: b64 } });
    const c = client(p.host, { authfile: file });
    await assert.rejects(c.getManifest('auth/app', 'v1'), (err: unknown) => {
      assert.ok(err instanceof RegistryAuthError);
      assert.match(err.message, new RegExp(`authentication to ${p.host.replace(/\./g, '\\.')} failed as robot: wrong credentials`));
      const all = `${err.message} ${err.hint ?? ''} ${err.stack ?? ''}`;
      for (const secret of [wrong, password, b64, ...p.tokensIssued]) assert.ok(!all.includes(secret), 'secret leaked');
      return true;
    });
    // No retry loop: one registry attempt, one token attempt.
    assert.equal(p.tokenRequests.length, 1);
    assert.equal(p.count('GET', '/v2/auth/app/manifests/v1'), 1);
  });

  it('anonymous tokens when the token service allows them', async () => {
    const p = await proxy({ bearer: { anonymous: true } });
    const c = client(p.host);
    await c.ping();
    assert.ok(p.tokenRequests.length === 1 && !p.tokenRequests[0]!.withCredentials);
  });

  it('htpasswd Basic auth on the real registry', async () => {
    const secured = await startRegistry({ htpasswd: { username: user, password } });
    cleanups.push(() => secured.stop());
    const good = await authFile('basic-ok.json', { [`http://${secured.host}`]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } });
    const c = client(secured.host, { authfile: good });
    const data = bytesOf('basic', 70_000);
    await c.uploadBlob('basic/app', sha256Digest(data), data.length, streamOf(data));
    assert.equal(await c.headBlob('basic/app', sha256Digest(data)), data.length);

    const bad = await authFile('basic-bad.json', { [secured.host]: { username: user, password: 'nope-nope-42' } });
    const cb = client(secured.host, { authfile: bad });
    await assert.rejects(cb.headBlob('basic/app', sha256Digest(data)), (err: unknown) => {
      assert.ok(err instanceof RegistryAuthError);
      assert.match(err.message, /authentication to 127\.0\.0\.1:\d+ failed as robot: wrong credentials/);
      assert.ok(!err.message.includes('nope-nope-42'));
      return true;
    });

    const none = client(secured.host);
    await assert.rejects(none.ping(), /requires authentication and no credentials were found/);
  });
});

describe('TLS and redirects', () => {
  it('a self-signed HTTPS registry: refused by default, fine with tlsVerify=false, a CA file or a cert dir', async () => {
    const certs = join(work, 'certs');
    await run('mkdir', ['-p', certs]);
    const cert = selfSignedCert(certs);
    const secure = await startRegistry({ tls: cert });
    cleanups.push(() => secure.stop());
    const data = Buffer.from('over tls');
    const d = sha256Digest(data);

    const strict = client(secure.host, { retries: 1 });
    await assert.rejects(strict.ping(), (err: unknown) => {
      assert.ok(err instanceof RegistryNetworkError);
      assert.match(err.message, /^GET https:\/\/127\.0\.0\.1:\d+\/v2\/ failed: .*(self-signed|SELF_SIGNED)/i);
      return true;
    });

    const insecure = client(secure.host, { tlsVerify: false });
    await insecure.uploadBlob('tls/app', d, data.length, streamOf(data));
    assert.equal(await insecure.baseUrl(), `https://${secure.host}`);

    const withCa = client(secure.host, { caFiles: [cert.certFile] });
    assert.equal(await withCa.headBlob('tls/app', d), data.length);

    const certDir = join(work, 'certs.d');
    await run('mkdir', ['-p', certDir]);
    await run('cp', [cert.certFile, join(certDir, 'ca.crt')]);
    const withDir = client(secure.host, { certDir });
    assert.equal(await withDir.headBlob('tls/app', d), data.length);
    assert.equal(await withDir.baseUrl(), `https://${secure.host}`);
  });

  it('a plain-HTTP loopback registry works without flags (plain HTTP tried first)', async () => {
    const c = client(reg.host);
    await c.ping();
    assert.equal(await c.baseUrl(), `http://${reg.host}`);
  });

  it('blob redirects to storage are followed without the registry credentials', async () => {
    const storage = await startBlobStorage(reg.host);
    cleanups.push(storage.stop);
    const storageOrigin = storage.origin;
    const user = 'robot';
    const password = 'redirect-pass';
    const p = await proxy({ bearer: { username: user, password }, redirectBlobsTo: storageOrigin });
    const c = client(p.host, { credentials: { kind: 'basic', username: user, password } });
    const data = bytesOf('redirected', 123_456);
    const d = sha256Digest(data);
    await c.uploadBlob('redir/app', d, data.length, streamOf(data));
    const back = await readAll(await c.getBlob('redir/app', d));
    assert.equal(sha256Digest(back), d);
    assert.equal(p.count('GET', `/v2/redir/app/blobs/${d}`), 1); // the token for pull was fetched up front
    assert.deepEqual(storage.authorizations, [undefined]);
  });
});

describe('RegistryStore', () => {
  it('putBlob: written, then exists, then mounted into another repository', async () => {
    const store = createRegistryStore(reg.host, { retryDelayMs: 20, authfile: join(work, 'no-auth.json-does-not-matter') });
    cleanups.push(() => store.close());
    const data = bytesOf('store', 20_000);
    const d = desc(data);
    let opens = 0;
    const open = async (): Promise<Readable> => {
      opens++;
      return streamOf(data);
    };
    assert.equal(await store.putBlob('store/a', d, open), 'written');
    assert.equal(await store.putBlob('store/a', d, open), 'exists');
    assert.equal(await store.putBlob('store/b', d, open, { mountFrom: ['store/nothing', 'store/a'] }), 'mounted');
    assert.equal(opens, 1);
    assert.equal(await store.hasBlob('store/b', d), true);
    assert.equal(sha256Digest(await readAll(await store.openBlob('store/b', d))), d.digest);
  });

  it('putManifest by tags and by digest; resolve and fetchManifest return the same bytes', async () => {
    const store = createRegistryStore(reg.host, { retryDelayMs: 20, authfile: join(work, 'no-auth.json-does-not-matter') });
    cleanups.push(() => store.close());
    const img = await pushImage(store.client, 'store/m', 'm');
    const d: Descriptor = { mediaType: MediaType.OciManifest, digest: img.digest, size: img.bytes.length };
    assert.equal(await store.putManifest('store/m', d, img.bytes, ['1.0', 'stable']), 'written');
    assert.equal(await store.putManifest('store/m', d, img.bytes, ['1.0', 'stable']), 'exists');
    assert.deepEqual(await store.resolve('store/m', 'stable'), d);
    assert.deepEqual((await store.fetchManifest('store/m', d)).bytes, img.bytes);
    const img2 = await pushImage(store.client, 'store/m', 'digest-only');
    const d2: Descriptor = { mediaType: MediaType.OciManifest, digest: img2.digest, size: img2.bytes.length };
    assert.equal(await store.putManifest('store/m', d2, img2.bytes, []), 'written');
    assert.deepEqual(await store.resolve('store/m', img2.digest), d2);
    await assert.rejects(store.resolve('store/m', 'missing'), /store\/m:missing not found/);
  });

  for (const mode of ['monolithic', 'chunked'] as const) {
    it(`a stream failing its digest check never commits the blob (${mode})`, async () => {
      const store = createRegistryStore(reg.host, { retryDelayMs: 20, chunkSize: mode === 'chunked' ? 8192 : undefined, authfile: join(work, 'no-auth.json-does-not-matter') });
      cleanups.push(() => store.close());
      const good = bytesOf(`corrupt-${mode}`, 50_000);
      const d = desc(good);
      const bad = Buffer.from(good);
      bad[bad.length - 1] ^= 0xff; // same size, last byte flipped
      let opens = 0;
      const open = async (): Promise<Readable> => {
        opens++;
        return streamOf(bad, 4096).pipe(new VerifyingStream(d.digest, d.size, 'test blob'));
      };
      await assert.rejects(store.putBlob(`corrupt/${mode}`, d, open), DigestMismatchError);
      assert.equal(opens, 1, 'a digest mismatch is never retried');
      assert.equal(await store.client.headBlob(`corrupt/${mode}`, d.digest), undefined);
      assert.equal(await store.client.headBlob(`corrupt/${mode}`, sha256Digest(bad)), undefined);
    });
  }

  for (const mode of ['monolithic', 'chunked'] as const) {
    it(`a stream that errors after its last byte never commits, even with the right bytes (${mode})`, async () => {
      const store = createRegistryStore(reg.host, { retryDelayMs: 20, chunkSize: mode === 'chunked' ? 8192 : undefined, authfile: join(work, 'no-auth.json-does-not-matter') });
      cleanups.push(() => store.close());
      const data = bytesOf(`late-error-${mode}`, 40_000);
      const d = desc(data);
      let opens = 0;
      const open = async (): Promise<Readable> => {
        opens++;
        let sent = false;
        return new Readable({
          read() {
            if (!sent) {
              sent = true;
              this.push(data);
              // Every byte is out; now the source fails instead of ending.
              setTimeout(() => this.destroy(new DigestMismatchError(d.digest, 'late failure', 'test blob')), 50);
            }
          },
        });
      };
      await assert.rejects(store.putBlob(`late/${mode}`, d, open), /late failure/);
      assert.equal(opens, 1);
      assert.equal(await store.client.headBlob(`late/${mode}`, d.digest), undefined);
    });
  }

  it('a stream claiming the wrong digest leaves the blob absent', async () => {
    const store = createRegistryStore(reg.host, { retryDelayMs: 20, authfile: join(work, 'no-auth.json-does-not-matter') });
    cleanups.push(() => store.close());
    const data = bytesOf('wrong-digest', 30_000);
    const claimed: Descriptor = { mediaType: MediaType.OctetStream, digest: sha256Digest('something else'), size: data.length };
    await assert.rejects(
      store.putBlob('corrupt/claim', claimed, async () => streamOf(data).pipe(new VerifyingStream(claimed.digest, claimed.size, 'test blob'))),
      DigestMismatchError,
    );
    assert.equal(await store.client.headBlob('corrupt/claim', claimed.digest), undefined);
    assert.equal(await store.client.headBlob('corrupt/claim', sha256Digest(data)), undefined);
  });

  it('a dropped upload is retried by re-opening the source', async () => {
    const p = await proxy({ faults: [{ match: (r) => r.method === 'PUT' && r.path.includes('/blobs/uploads/'), times: 1, kind: 'drop' }] });
    const store = new RegistryStore(client(p.host));
    const data = bytesOf('redo', 100_000);
    const d = desc(data);
    let opens = 0;
    assert.equal(
      await store.putBlob('redo/app', d, async () => {
        opens++;
        return streamOf(data);
      }),
      'written',
    );
    assert.equal(opens, 2);
    assert.equal(p.count('PUT', /\/v2\/redo\/app\/blobs\/uploads\//), 2);
    assert.equal(await store.hasBlob('redo/app', d), true);
  });
});

describe('parsing and lookup', () => {
  it('parses WWW-Authenticate with quoted commas and several challenges', () => {
    const c = parseWwwAuthenticate('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull", Basic realm="x, y"');
    assert.equal(c.length, 2);
    assert.deepEqual(c[0], { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push repository:c:pull' } });
    assert.deepEqual(c[1], { scheme: 'basic', params: { realm: 'x, y' } });
    assert.deepEqual(parseWwwAuthenticate('Bearer realm=https://a/t,error="invalid_token"')[0]!.params, { realm: 'https://a/t', error: 'invalid_token' });
  });

  it('parses Retry-After seconds and HTTP dates', () => {
    assert.equal(parseRetryAfter('3'), 3000);
    const now = Date.parse('2024-01-01T00:00:00Z');
    assert.equal(parseRetryAfter('Mon, 01 Jan 2024 00:00:05 GMT', now), 5000);
    assert.equal(parseRetryAfter('soon'), undefined);
  });

  it('plain HTTP only for loopback or tlsVerify=false', () => {
    assert.deepEqual(schemesFor('registry.corp:5000', {}), ['https']);
    assert.deepEqual(schemesFor('registry.corp:5000', { tlsVerify: false }), ['https', 'http']);
    assert.deepEqual(schemesFor('localhost:5000', {}), ['http', 'https']);
    assert.deepEqual(schemesFor('localhost:5000', { tlsVerify: false }), ['https', 'http']);
  });

  it('auth files: Docker Hub key forms, longest repository match, env order', async () => {
    assert.equal(normaliseAuthKey('https://index.docker.io/v1/'), 'docker.io');
    assert.equal(normaliseAuthKey('registry-1.docker.io'), 'docker.io');
    assert.equal(normaliseAuthKey('http://Quay.io'), 'quay.io');
    const hub = join(work, 'hub.json');
    const enc = (s: string): string => Buffer.from(s).toString('base64');
    await writeFile(
      hub,
      JSON.stringify({
        auths: {
          'https://index.docker.io/v1/': { auth: enc('hubuser:hubpass') },
          'quay.io': { auth: enc('q:all') },
          'quay.io/org': { auth: enc('q:org') },
          'quay.io/org/team': { auth: enc('q:team') },
          'reg.example': { identitytoken: 'refresh-me' },
        },
      }),
    );
    assert.deepEqual(findCredentials('docker.io', 'library/alpine', hub).credentials, { kind: 'basic', username: 'hubuser', password: 'hubpass' });
    assert.deepEqual(findCredentials('quay.io', 'org/team/app', hub).credentials, { kind: 'basic', username: 'q', password: 'team' });
    assert.deepEqual(findCredentials('quay.io', 'org/other', hub).credentials, { kind: 'basic', username: 'q', password: 'org' });
    assert.deepEqual(findCredentials('quay.io', 'organisation/x', hub).credentials, { kind: 'basic', username: 'q', password: 'all' });
    assert.equal(findCredentials('reg.example', undefined, hub).credentials?.kind, 'identityToken');
    assert.equal(findCredentials('ghcr.io', 'x', hub).credentials, undefined);

    // Search order without an explicit file: XDG_RUNTIME_DIR first, then ~/.docker/config.json.
    const home = join(work, 'home');
    const runtime = join(work, 'runtime');
    await run('mkdir', ['-p', join(home, '.docker'), join(runtime, 'containers')]);
    await writeFile(join(home, '.docker', 'config.json'), JSON.stringify({ auths: { 'a.example': { auth: enc('docker:1') }, 'b.example': { auth: enc('docker:2') } } }));
    await writeFile(join(runtime, 'containers', 'auth.json'), JSON.stringify({ auths: { 'a.example': { auth: enc('podman:1') } } }));
    const env = { HOME: home, XDG_RUNTIME_DIR: runtime };
    assert.deepEqual(findCredentials('a.example', undefined, undefined, env).credentials, { kind: 'basic', username: 'podman', password: '1' });
    assert.deepEqual(findCredentials('b.example', undefined, undefined, env).credentials, { kind: 'basic', username: 'docker', password: '2' });
    assert.deepEqual(findCredentials('b.example', undefined, undefined, { ...env, REGISTRY_AUTH_FILE: hub }).credentials, undefined);
  });

  it('a malformed auth file is a usage error naming the file, not its contents', async () => {
    const f = join(work, 'broken.json');
    await writeFile(f, '{"auths": {"x.example": {"auth": "c2VjcmV0LXN0dWZm"}'); // truncated JSON
    assert.throws(
      () => findCredentials('x.example', undefined, f),
      (err: unknown) => {
        assert.ok(err instanceof UsageError);
        assert.ok(err.message.includes(f));
        assert.ok(!err.message.includes('c2VjcmV0LXN0dWZm'));
        return true;
      },
    );
    const g = join(work, 'badauth.json');
    await writeFile(g, JSON.stringify({ auths: { 'x.example': { auth: Buffer.from('no-colon-here').toString('base64') } } }));
    assert.throws(() => findCredentials('x.example', undefined, g), (err: unknown) => err instanceof UsageError && !err.message.includes('no-colon-here'));
    assert.throws(() => findCredentials('x.example', undefined, join(work, 'absent.json')), UsageError);
  });
});
