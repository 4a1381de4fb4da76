/**
 * A file from removable media is untrusted input. This file injects, with a seeded
 * generator so every run makes the same cases:
 *
 * - a corruption matrix over a real signed bundle: bytes flipped at seeded positions in
 *   every kind of region (blob data in raw and in compressed frames, tar headers, zstd frame
 *   and block headers, the seek table, the manifest, the signature, index.json, the tar end),
 *   truncations at seeded offsets, garbage appended; verify must fail every one (exit 1, or 2
 *   for a file that is not a bundle at all) naming what is wrong, and push of such files must
 *   never let a blob or manifest that fails its digest reach the registry (checked at the
 *   proxy, which hashes every upload body it forwards);
 * - hostile bundles built by hand (test/helpers/handmade.ts): every one refused, nothing
 *   written outside the working directory, peak RSS bounded;
 * - a fuzz run mutating bundles (bytes, frames, and manifests re-signed with the trusted key
 *   so the mutation reaches the checks behind the signature) and configs, in process against
 *   the library entry points, plus a smaller number of CLI runs: no crash, no hang, no
 *   unhandled exception, every run ends in exit 0, 1 or 2.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ArchiveReader } from '../src/archive/reader.js';
import { ArchiveWriter } from '../src/archive/writer.js';
import { decodeFrame, encodeRawFrame, parseFrameHeader, rawFrameContent, encodeSeekTable } from '../src/archive/zstd-frames.js';
import { MANIFEST_MEMBER, MANIFEST_PAYLOAD_TYPE, SIGNATURE_MEMBER } from '../src/bundle/manifest.js';
import { verifyBundle } from '../src/bundle/verify.js';
import { parseConfig } from '../src/config/config.js';
import { signEnvelope } from '../src/sign/dsse.js';
import { generateKeyPair, loadPrivateKey, loadTrustedKeys, type TrustedKey } from '../src/sign/keys.js';
import { BundleError } from '../src/util/errors.js';
import binding from 'zstd-napi/binding.js';
import { assertNoStack, runBundle, runBundleRss, type RunResult } from './helpers/cli.js';
import { handImage, writeHandmadeBundle, type HandImage } from './helpers/handmade.js';
import { rng } from './helpers/seeded.js';
import { startProxy, type RunningProxy, writeRequests } from './helpers/proxy.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { joinFrames, replaceControlMembers, splitFrames } from './helpers/tamper.js';

const pick = (r: () => number, n: number): number => Math.floor(r() * n);

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const CREATED = new Date('2026-03-01T00:00:00Z');
/** Peak RSS allowed to any run on a hostile file. */
const RSS_LIMIT_MIB = 200;

let work: string;
let key: KeyObject;
let pubFile: string;
let trusted: TrustedKey[];
let base: Buffer;
let baseFile: string;
let baseManifest: Buffer;
let baseEnvelope: Buffer;
/** Digests of every member of the clean bundle: the only content allowed to land. */
const legit = new Set<string>();
let reg: RunningRegistry;
let proxy: RunningProxy;

/** Pseudo-random bytes that look like gzip (stored in raw frames), or compressible text (compressed frames). */
function gzipLooking(seed: number, n: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = pick(r, 256);
  b[0] = 0x1f;
  b[1] = 0x8b;
  return b;
}
function textLike(seed: number, n: number): Buffer {
  const r = rng(seed);
  const words = ['layer', 'usr', 'lib', 'bin', 'etc', 'config', 'image', 'airgap', 'bundle', 'zstd'];
  let s = '';
  while (s.length < n) s += `${words[pick(r, words.length)]}${pick(r, 1000)} `;
  return Buffer.from(s.slice(0, n));
}

/** A clean, signed bundle of two images: one layer stored raw, one compressed; small frames so there are many. */
async function buildBase(file: string): Promise<void> {
  const w = await ArchiveWriter.create(file, { chunkSize: 64 * 1024, created: CREATED });
  const put = async (data: Buffer, mediaType: string) => {
    const desc = { mediaType, digest: sha(data), size: data.length };
    await w.putBlob('', desc, async () => Readable.from([data]));
    return desc;
  };
  for (const [n, layer] of [
    [1, gzipLooking(1, 200_000)],
    [2, textLike(2, 300_000)],
  ] as const) {
    const l = await put(layer, n === 1 ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar');
    const config = await put(Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [l.digest] } })), 'application/vnd.oci.image.config.v1+json');
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [l] }));
    const desc = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length };
    await w.putManifest('', desc, manifest, ['1.0']);
    const source = `example.com/matrix/app${n}:1.0`;
    w.addImage({ source, refName: source, ...desc, platforms: ['linux/amd64'], tags: ['1.0'], origin: 'registry' });
  }
  await w.finish({ tool: { name: 'test', version: '0' }, sign: async (payload) => signEnvelope(payload, MANIFEST_PAYLOAD_TYPE, key) });
}

interface Outcome {
  code: number;
  text: string;
}

/** What `bundle verify FILE --key PUB` decides, in process: exit code and every message. Anything but a BundleError propagates. */
async function verifyInProcess(file: string, keys: TrustedKey[] | undefined = trusted): Promise<Outcome> {
  let reader: ArchiveReader;
  try {
    reader = await ArchiveReader.open(file);
  } catch (err) {
    if (err instanceof BundleError) return { code: err.exitCode, text: err.message };
    throw err;
  }
  try {
    const report = await verifyBundle(reader, keys);
    return { code: report.ok ? 0 : 1, text: report.problems.map((p) => `${p.kind}: ${p.message}`).join('\n') };
  } catch (err) {
    if (err instanceof BundleError) return { code: err.exitCode, text: err.message };
    throw err;
  } finally {
    await reader.close();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`hang: ${what} took more than ${ms} ms`)), ms);
    }),
  ]);
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-hostile-'));
  const pair = await generateKeyPair(join(work, 'site'));
  key = await loadPrivateKey(pair.privatePath);
  pubFile = pair.publicPath;
  trusted = await loadTrustedKeys([pubFile]);
  baseFile = join(work, 'base.airgap');
  await buildBase(baseFile);
  base = await readFile(baseFile);
  const r = await ArchiveReader.open(baseFile);
  for (const m of r.manifest.members) legit.add(m.digest);
  baseManifest = r.manifestBytes;
  baseEnvelope = r.envelopeBytes;
  await r.close();
  reg = await startRegistry();
  proxy = await startProxy(reg.host);
});

after(async () => {
  await proxy?.stop();
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

const writes = writeRequests;

/**
 * Everything that reached the registry whole is content of the clean bundle with its true
 * digest: every completed blob upload's body hashes to the digest it is committed under, and
 * every manifest written is one of the bundle's manifests, byte for byte.
 */
function assertNothingBadLanded(p: RunningProxy, what: string): void {
  for (const r of p.requests) {
    if (!r.bodySha256 || r.bodyBytes === 0) continue;
    if (r.method === 'PUT' && /\/blobs\/uploads\//.test(r.path)) {
      const digest = new URL(r.url, 'http://x').searchParams.get('digest');
      assert.equal(r.bodySha256, digest, `${what}: a blob upload whose body is not the digest it claims reached the registry`);
      assert.ok(legit.has(r.bodySha256), `${what}: a blob that is not in the clean bundle reached the registry`);
    }
    if (r.method === 'PUT' && /\/manifests\//.test(r.path)) {
      assert.ok(legit.has(r.bodySha256), `${what}: a manifest that is not in the clean bundle reached the registry (${r.path})`);
    }
  }
}

type Region = 'blob data (raw frames)' | 'blob data (compressed frames)' | 'tar headers' | 'frame headers' | 'raw block headers' | 'seek table' | 'manifest' | 'signature' | 'index.json' | 'end of archive';

interface Position {
  region: Region;
  at: number;
  /** Frame the byte is in (undefined in the seek table). */
  frame?: number;
  /** The member whose data or header the byte belongs to. */
  member?: string;
}

/** Every byte of the clean bundle, sorted into the regions the matrix covers. */
async function regions(): Promise<Map<Region, Position[]>> {
  const reader = await ArchiveReader.open(baseFile);
  const out = new Map<Region, Position[]>();
  const add = (p: Position) => {
    let l = out.get(p.region);
    if (!l) out.set(p.region, (l = []));
    l.push(p);
  };
  try {
    const frames = reader.frames;
    const n = frames.length;
    const members = [...reader.manifest.members].sort((a, b) => a.offset - b.offset);
    for (let i = 0; i < n; i++) {
      const f = frames[i]!;
      const bytes = base.subarray(f.compressedOffset, f.compressedOffset + f.compressedSize);
      const header = parseFrameHeader(bytes);
      for (let b = 0; b < header.headerSize; b++) add({ region: 'frame headers', at: f.compressedOffset + b, frame: i });
      const end = f.decompressedOffset + f.decompressedSize;
      const headerOf = members.find((m) => m.offset === end);
      const dataOf = members.find((m) => f.decompressedOffset >= m.offset && f.decompressedOffset < m.offset + m.size);
      let region: Region;
      let member: string | undefined;
      if (i === n - 1) region = 'end of archive';
      else if (i >= n - 5) {
        region = i < n - 3 ? 'manifest' : 'signature';
        member = i < n - 3 ? MANIFEST_MEMBER : SIGNATURE_MEMBER;
      } else if (headerOf && f.decompressedSize > 0 && !dataOf) {
        region = 'tar headers';
        member = headerOf.path;
      } else if (dataOf?.path === 'index.json') {
        region = 'index.json';
        member = dataOf.path;
      } else if (dataOf?.path.startsWith('blobs/')) {
        region = rawFrameContent(bytes) ? 'blob data (raw frames)' : 'blob data (compressed frames)';
        member = dataOf.path;
      } else continue; // oci-layout
      const raw = rawFrameContent(bytes);
      if (raw) {
        // Raw blocks: 3-byte block headers between the data.
        let pos = header.headerSize;
        for (const part of raw.length ? raw : [Buffer.alloc(0)]) {
          for (let b = 0; b < 3; b++) add({ region: region === 'blob data (raw frames)' ? 'raw block headers' : region, at: f.compressedOffset + pos + b, frame: i, member });
          for (let b = 0; b < part.length; b++) add({ region, at: f.compressedOffset + pos + 3 + b, frame: i, member });
          pos += 3 + part.length;
        }
      } else {
        for (let b = header.headerSize; b < bytes.length; b++) add({ region, at: f.compressedOffset + b, frame: i, member });
      }
    }
    const tableStart = frames[n - 1]!.compressedOffset + frames[n - 1]!.compressedSize;
    for (let b = tableStart; b < base.length; b++) add({ region: 'seek table', at: b });
  } finally {
    await reader.close();
  }
  return out;
}

/** Words a message about a case must contain one of: the member, the frame, or the structure hit. */
function names(p: Position): RegExp {
  const alts = [p.member, p.frame !== undefined ? `frame ${p.frame}` : undefined, p.region === 'seek table' ? 'seek table' : undefined, p.region === 'end of archive' ? 'end-of-archive' : undefined]
    .filter((s): s is string => !!s)
    .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(alts.join('|'));
}

const PER_REGION = 24;

describe('corruption matrix', () => {
  const pushCases: { file: string; what: string }[] = [];

  it(`flips a byte at ${PER_REGION} seeded positions in each region: verify fails every one, naming what is wrong`, async () => {
    const all = await regions();
    assert.equal(all.size, 10, `every region is present: ${[...all.keys()].join(', ')}`);
    const r = rng(11);
    const undetected: string[] = [];
    const unnamed: string[] = [];
    let cases = 0;
    for (const [region, positions] of all) {
      const chosen = new Set<number>();
      while (chosen.size < Math.min(PER_REGION, positions.length)) chosen.add(pick(r, positions.length));
      let k = 0;
      for (const idx of chosen) {
        const pos = positions[idx]!;
        const mask = 1 + pick(r, 255);
        const bad = Buffer.from(base);
        bad[pos.at] = bad[pos.at]! ^ mask;
        const file = join(work, `flip.airgap`);
        await writeFile(file, bad);
        const o = await verifyInProcess(file);
        cases++;
        const what = `${region} @${pos.at} ^0x${mask.toString(16)}`;
        if (o.code !== 1 && o.code !== 2) undetected.push(`${what}: exit ${o.code}`);
        else if (!names(pos).test(o.text)) unnamed.push(`${what}: ${o.text.split('\n')[0]}`);
        if (k++ < 2 && region !== 'seek table') {
          const keep = join(work, `push-${pushCases.length}.airgap`);
          await writeFile(keep, bad);
          pushCases.push({ file: keep, what });
        }
      }
    }
    assert.deepEqual(undetected, [], `every flipped byte is detected (${cases} cases)`);
    assert.deepEqual(unnamed, [], 'every report names the member, the frame or the structure that is wrong');
    assert.ok(cases >= 200, `${cases} cases`);
  });

  it('bytes a lenient parser forgives are found too: tar padding, a header field, unused bits, whitespace and base64 slack', async () => {
    const reader = await ArchiveReader.open(baseFile);
    const frames = reader.frames;
    const layer = reader.manifest.members.find((m) => m.mediaType.endsWith('tar+gzip'))!;
    const lastData = frames.findIndex((f) => f.decompressedOffset + f.decompressedSize === layer.offset + layer.size + (512 - (layer.size % 512)));
    const headerFrame = frames.findIndex((f) => f.decompressedOffset + f.decompressedSize === layer.offset);
    await reader.close();
    assert.ok(lastData > 0 && headerFrame > 0 && layer.size % 512 !== 0);
    const { frames: parts } = splitFrames(base);
    const header = Buffer.concat(decodeFrame(parts[headerFrame]!, 512));
    const rawFrame = (b: Buffer) => Buffer.concat(encodeRawFrame([b]).buffers);
    const withHeader = (h: Buffer) => {
      const copy = [...parts];
      copy[headerFrame] = rawFrame(h);
      return joinFrames(copy);
    };
    const retagged = (edit: (h: Buffer) => void) => {
      const h = Buffer.from(header);
      edit(h);
      h.fill(0x20, 148, 156);
      let sum = 0;
      for (const b of h) sum += b;
      h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
      return h;
    };
    const envelope = JSON.parse(baseEnvelope.toString('utf8')) as { payload: string; signatures: { keyid: string; sig: string }[] };
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const slack = (b64: string) => {
      const at = b64.replace(/=+$/, '').length - 1;
      return b64.slice(0, at) + alphabet[alphabet.indexOf(b64[at]!) ^ 1] + b64.slice(at + 1);
    };
    const envelopeWith = (e: unknown, indent = 2) => Buffer.from(`${JSON.stringify(e, null, indent)}\n`);
    const cases: [string, Buffer][] = [
      ['a non-zero byte in the tar padding after a layer', (() => {
        const c = Buffer.from(base);
        const f = splitFrames(base);
        let end = 0;
        for (let i = 0; i <= lastData; i++) end += f.entries[i]!.compressedSize;
        c[end - 1] = 0x01;
        return c;
      })()],
      ['the tar checksum field\'s terminator changed (the checksum still parses)', withHeader((() => {
        const h = Buffer.from(header);
        h[155] = 0x20;
        return h;
      })())],
      ['a tar header whose mode is 0755, with a correct checksum', withHeader(retagged((h) => h.write('000755 ', 100, 'ascii')))],
      ['a tar header whose mtime moved, with a correct checksum', withHeader(retagged((h) => h.write('00000000001 ', 136, 'ascii')))],
      ['the unused bit of a zstd frame header set', (() => {
        const c = Buffer.from(base);
        const f = splitFrames(base);
        let at = 0;
        for (let i = 0; i < lastData; i++) at += f.entries[i]!.compressedSize;
        c[at + 4] = c[at + 4]! | 0x10;
        return c;
      })()],
      ['an unused bit of the seek table descriptor set', (() => {
        const c = Buffer.from(base);
        c[c.length - 5] = c[c.length - 5]! | 0x01;
        return c;
      })()],
      ['whitespace of the signature envelope changed', replaceControlMembers(base, baseManifest, envelopeWith(envelope, '\t' as unknown as number), CREATED)],
      ['the unused bits of the signature\'s last base64 character changed', replaceControlMembers(base, baseManifest, envelopeWith({ ...envelope, signatures: [{ ...envelope.signatures[0]!, sig: slack(envelope.signatures[0]!.sig) }] }), CREATED)],
      ['the unused bits of the payload\'s last base64 character changed', replaceControlMembers(base, baseManifest, envelopeWith({ ...envelope, payload: slack(envelope.payload) }), CREATED)],
    ];
    // The rebuilding itself changes nothing a reader cares about: unchanged, it verifies.
    const file = join(work, 'forgiven.airgap');
    await writeFile(file, replaceControlMembers(base, baseManifest, baseEnvelope, CREATED));
    assert.equal((await verifyInProcess(file)).code, 0, 'the control frames rebuilt unchanged verify');
    await writeFile(file, withHeader(header));
    assert.equal((await verifyInProcess(file)).code, 0, 'the header frame rebuilt unchanged verifies');
    for (const [what, bad] of cases) {
      assert.notDeepEqual(bad, base);
      await writeFile(file, bad);
      const o = await verifyInProcess(file);
      assert.ok(o.code === 1 || o.code === 2, `${what}: not detected`);
      assert.match(o.text, /blobs\/sha256|seek table|frame|manifest\.dsse\.json/, `${what}: ${o.text}`);
    }
  });

  it('truncated at 40 seeded offsets, and with garbage appended: every one refused as not a (whole) bundle', async () => {
    const r = rng(12);
    const offsets = new Set([0, 1, base.length - 1, base.length - 9, base.length - 17]);
    while (offsets.size < 40) offsets.add(pick(r, base.length));
    const file = join(work, 'cut.airgap');
    for (const at of offsets) {
      await writeFile(file, base.subarray(0, at));
      const o = await verifyInProcess(file);
      assert.ok(o.code === 2 || o.code === 1, `truncated at ${at}: exit ${o.code}`);
      assert.match(o.text, /truncated|not an \.airgap|too short|empty|seek table/, `truncated at ${at}: ${o.text}`);
    }
    for (const n of [1, 9, 17, 512, 4096, 100_000]) {
      const g = rng(n);
      const garbage = Buffer.alloc(n);
      for (let i = 0; i < n; i++) garbage[i] = pick(g, 256);
      await writeFile(file, Buffer.concat([base, garbage]));
      const o = await verifyInProcess(file);
      assert.equal(o.code, 2, `${n} bytes appended: ${o.text}`);
      assert.match(o.text, /not an \.airgap/);
    }
    // Garbage that ends like a seek table (its footer copied): still not this file's table.
    await writeFile(file, Buffer.concat([base, Buffer.alloc(1000, 7), base.subarray(base.length - 9)]));
    assert.equal((await verifyInProcess(file)).code, 2);
  });

  it('the CLI agrees: exit 1 or 2, one line on stderr, no stack, for a sample of the matrix', async () => {
    assert.ok(pushCases.length >= 10);
    for (const c of pushCases.filter((_, i) => i % 3 === 0)) {
      const v = await runBundle(['verify', c.file, '--key', pubFile, '--quiet']);
      assert.ok(v.code === 1 || v.code === 2, `${c.what}: exit ${v.code}`);
      assertNoStack(v);
      assert.ok(v.stderr.trim().split('\n').length <= 1, `${c.what}: ${v.stderr}`);
      if (v.code === 1) assert.match(v.stdout, /^FAILED .*problem/m);
    }
  });

  it('push of corrupt files never lets a blob or manifest that fails its digest reach the registry', async () => {
    let n = 0;
    for (const c of pushCases) {
      proxy.reset();
      const p = await runBundle(['push', c.file, '--to', `${proxy.host}/matrix${n++}`, '--key', pubFile, '--out-dir', join(work, 'matrix-out')]);
      assert.ok([0, 1, 2].includes(p.code), `${c.what}: exit ${p.code}`);
      assertNoStack(p);
      assertNothingBadLanded(proxy, c.what);
    }
  });
});

/** A hostile bundle, run through verify and push with a fresh working directory. */
interface Hostile {
  name: string;
  make(file: string, dir: string): Promise<void>;
  /** Blob and manifest digests a push may write (content of a good image beside the hostile one). */
  allowedWrites?: () => Set<string>;
  verify: RegExp;
}

// Built at load time: the cases below name their blobs.
const imgA: HandImage = await handImage('example.com/hostile/a:1.0', 'a');
const imgB: HandImage = await handImage('example.com/hostile/b:1.0', 'b');

describe('hostile bundles', () => {
  before(() => {
    for (const b of [...imgA.blobs, ...imgB.blobs]) legit.add(sha(b.data));
  });

  const layerOf = (img: HandImage) => img.blobs[0]!;
  const mk = (spec: Omit<Parameters<typeof writeHandmadeBundle>[1], 'signKey'>) => (file: string) => writeHandmadeBundle(file, { ...spec, signKey: key }).then(() => undefined);

  const cases: Hostile[] = [
    {
      name: 'a member name with .. segments',
      make: (file, dir) => mk({ members: [...imgA.blobs, { path: `blobs/sha256/../../../../${dir.slice(1)}/escaped-dotdot`, data: Buffer.from('x') }], images: [imgA.entry] })(file),
      verify: /FAIL manifest: .*members\[\d+\]\.path/,
    },
    {
      name: 'an unlisted member whose name climbs out',
      make: mk({ members: [...imgA.blobs, { path: '../../escaped-unlisted', data: Buffer.from('x'), listed: false }], images: [imgA.entry] }),
      verify: /FAIL unlisted: \.\.\/\.\.\/escaped-unlisted is in the archive but not in the manifest/,
    },
    {
      name: 'an absolute member path',
      make: (file, dir) => mk({ members: [...imgA.blobs, { path: `${dir}/escaped-absolute`, data: Buffer.from('x') }], images: [imgA.entry] })(file),
      verify: /FAIL manifest: .*members\[\d+\]\.path/,
    },
    {
      name: 'a symlink member in place of a layer',
      make: mk({ members: [{ ...layerOf(imgA), type: 'symlink', linkname: '/etc/passwd' }, ...imgA.blobs.slice(1)], images: [imgA.entry] }),
      verify: /is a symlink entry; a bundle holds only files/,
    },
    {
      name: 'a hard link member in place of a layer',
      make: mk({ members: [{ ...layerOf(imgA), type: 'link', linkname: '../../etc/shadow' }, ...imgA.blobs.slice(1)], images: [imgA.entry] }),
      verify: /is a link entry; a bundle holds only files/,
    },
    {
      name: 'a duplicate member, both copies listed',
      make: mk({ members: [...imgA.blobs, layerOf(imgA)], images: [imgA.entry] }),
      verify: /FAIL (manifest|unlisted): .*(more than once|members)/,
    },
    {
      name: 'a manifest size that lies',
      make: mk({ members: [{ ...layerOf(imgA), entry: { size: layerOf(imgA).data.length + 4096 } }, ...imgA.blobs.slice(1)], images: [imgA.entry] }),
      verify: /FAIL corrupt: blobs\/sha256\/[0-9a-f]{64}: expected sha256:[0-9a-f]{64} \(\d+ bytes\), found/,
    },
    {
      name: 'a tar header size that lies (more than the frames hold)',
      make: mk({ members: [{ ...layerOf(imgA), headerSize: layerOf(imgA).data.length + 1_000_000 }, ...imgA.blobs.slice(1)], images: [imgA.entry] }),
      verify: /FAIL/,
    },
    {
      name: 'a zstd frame that claims a huge size (3 GiB)',
      make: async (file) => {
        await mk({ members: imgA.blobs, images: [imgA.entry] })(file);
        const { frames } = splitFrames(await readFile(file));
        // The layer's data frame (frame 3: oci-layout header+data, layer header) says it holds 3 GiB.
        const claim = Buffer.alloc(9);
        claim.writeUInt32LE(0xfd2fb528, 0);
        claim[4] = 0x80 | 0x20; // 4-byte Frame_Content_Size, single segment
        claim.writeUInt32LE(3 * 1024 ** 3, 5);
        frames[3] = Buffer.concat([claim, frames[3]!.subarray(parseFrameHeader(frames[3]!).headerSize)]);
        await writeFile(file, joinFrames(frames));
      },
      verify: /frame 3 .*seek table says this frame holds 3221225472 bytes, more than a frame may/,
    },
    {
      name: 'zstd bombs: frames of 64 MiB of zeros, a few KiB each, in place of a layer',
      make: async (file) => {
        await mk({ members: imgA.blobs, images: [imgA.entry] })(file);
        const { frames } = splitFrames(await readFile(file));
        const cctx = new binding.CCtx();
        cctx.setParameter(binding.CParameter.contentSizeFlag, 1);
        const zeros = Buffer.alloc(64 * 1024 * 1024);
        const out = Buffer.alloc(binding.compressBound(zeros.length));
        const bomb = Buffer.from(out.subarray(0, cctx.compress2(out, zeros)));
        frames.splice(3, 1, bomb, bomb, bomb, bomb, bomb, bomb);
        await writeFile(file, joinFrames(frames));
      },
      verify: /FAIL/,
    },
    {
      name: 'seek-table entries pointing outside the file',
      make: async (file) => {
        await mk({ members: imgA.blobs, images: [imgA.entry] })(file);
        const whole = await readFile(file);
        const { frames, entries } = splitFrames(whole);
        entries[2] = { compressedSize: entries[2]!.compressedSize + 100_000, decompressedSize: entries[2]!.decompressedSize };
        await writeFile(file, Buffer.concat([...frames, encodeSeekTable(entries)]));
      },
      verify: /not an \.airgap bundle: its seek table covers/,
    },
    {
      name: 'a seek table claiming more frames than the file holds',
      make: async (file) => {
        await mk({ members: imgA.blobs, images: [imgA.entry] })(file);
        const whole = await readFile(file);
        whole.writeUInt32LE(0x0fffffff, whole.length - 9);
        await writeFile(file, whole);
      },
      verify: /not an \.airgap bundle/,
    },
    {
      name: 'manifest entries that do not match the members (digests swapped, one offset moved)',
      make: mk({
        members: [{ ...imgA.blobs[0]!, entry: { digest: sha(imgA.blobs[1]!.data) } }, { ...imgA.blobs[1]!, entry: { digest: sha(imgA.blobs[0]!.data), offset: 7 } }, imgA.blobs[2]!],
        images: [imgA.entry],
      }),
      verify: /FAIL (corrupt|manifest)/,
    },
    {
      name: 'a listed member that is not in the archive',
      make: mk({ members: [...imgA.blobs, { path: `blobs/sha256/${'ab'.repeat(32)}`, data: Buffer.from('gone'), listed: true, hidden: false, entry: { offset: 999_999_999 } }], images: [imgA.entry] }),
      verify: /FAIL/,
    },
    {
      name: 'a signature over other bytes',
      make: async (file) => {
        const other = Buffer.from('{"kind":"AirgapBundleManifest","note":"something else was signed"}\n');
        const envelope = Buffer.from(`${JSON.stringify(signEnvelope(other, MANIFEST_PAYLOAD_TYPE, key), null, 2)}\n`);
        await writeHandmadeBundle(file, { members: imgA.blobs, images: [imgA.entry], signKey: key, envelope });
      },
      verify: /FAIL signature: airgap\/manifest\.json is not the manifest that was signed/,
    },
    {
      name: 'an image pointed at a blob another image owns (its layer, as if a manifest)',
      make: mk({
        members: [...imgA.blobs, ...imgB.blobs],
        images: [imgA.entry, { ...imgB.entry, digest: sha(layerOf(imgA).data), size: layerOf(imgA).data.length }],
      }),
      allowedWrites: () => new Set(imgA.blobs.map((b) => sha(b.data))),
      verify: /FAIL incomplete: example\.com\/hostile\/b:1\.0/,
    },
  ];

  for (const c of cases) {
    it(`${c.name}: refused by verify and push, nothing written outside, peak RSS < ${RSS_LIMIT_MIB} MB`, async (t) => {
      const dir = join(work, 'hostile', c.name.replace(/[^a-z0-9]+/gi, '-'));
      const cwd = join(dir, 'cwd');
      await mkdir(cwd, { recursive: true });
      const file = join(cwd, 'hostile.airgap');
      await c.make(file, dir);
      const v = await runBundleRss(['verify', file, '--key', pubFile], { cwd });
      assert.ok(v.code === 1 || v.code === 2, `verify exit ${v.code}: ${v.stdout}${v.stderr}`);
      assert.match(v.stdout + v.stderr, c.verify);
      assertNoStack(v);
      assert.ok(v.rssMiB < RSS_LIMIT_MIB, `verify peak RSS ${v.rssMiB.toFixed(0)} MiB`);

      proxy.reset();
      const repo = `hostile/${c.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;
      const p = await runBundleRss(['push', 'hostile.airgap', '--to', `${proxy.host}/${repo}`, '--key', pubFile], { cwd });
      assert.ok(p.code === 1 || p.code === 2, `push exit ${p.code}: ${p.stdout}${p.stderr}`);
      assertNoStack(p);
      assert.ok(p.rssMiB < RSS_LIMIT_MIB, `push peak RSS ${p.rssMiB.toFixed(0)} MiB`);
      const allowed = c.allowedWrites?.() ?? new Set<string>();
      for (const w of writes(proxy)) {
        const digest = new URL(w.url, 'http://x').searchParams.get('digest') ?? w.bodySha256;
        if (w.method === 'POST' && allowed.size > 0) continue; // upload sessions for the good image
        assert.ok(digest && allowed.has(digest) && w.bodySha256 !== undefined && (w.bodyBytes === 0 || allowed.has(w.bodySha256)), `push wrote ${w.method} ${w.path}`);
      }
      assertNothingBadLanded(proxy, c.name);
      t.diagnostic(`peak RSS: verify ${v.rssMiB.toFixed(0)} MiB, push ${p.rssMiB.toFixed(0)} MiB`);

      // Nothing outside the working directory: the case's folder holds only it, and no escaped file exists.
      assert.deepEqual(await readdir(dir), ['cwd']);
      for (const f of ['escaped-dotdot', 'escaped-absolute', 'escaped-unlisted']) {
        assert.equal(existsSync(join(dir, f)), false);
        assert.equal(existsSync(join(work, f)), false);
      }
    });
  }

  it('devfile stack content (archive.tar) with paths climbing out of --devfile-out: refused before anything is written', async () => {
    // The check push's devfile delivery runs on every stack archive it unpacks into --devfile-out.
    const { readArchiveTar } = await import('../src/devfile/artifact.js');
    const tar = (await import('tar-stream')).default;
    const { gzipSync } = await import('node:zlib');
    const archive = async (names: string[]) => {
      const pack = tar.pack();
      const chunks: Buffer[] = [];
      pack.on('data', (c: unknown) => {
        chunks.push(c as Buffer);
      });
      const done = new Promise<void>((r) => pack.on('end', () => r()));
      for (const name of names) pack.entry({ name, size: 2 }, 'x\n');
      pack.finalize();
      await done;
      return gzipSync(Buffer.concat(chunks));
    };
    for (const bad of ['../../escaped-devfile', '/abs/escaped-devfile', 'stack/../../../escaped-devfile', './../escaped-devfile']) {
      const seen: string[] = [];
      await assert.rejects(
        readArchiveTar(Readable.from([await archive(['devfile.yaml', bad])]), async (name, _mode, body) => {
          seen.push(name);
          for await (const _ of body) void _;
        }),
        (err: Error) => err instanceof BundleError && /leaves the stack folder/.test(err.message),
        bad,
      );
      assert.deepEqual(seen, ['devfile.yaml'], `${bad}: nothing past it is handed on to be written`);
    }
  });
});

// ---- fuzz ----

const FUZZ_BUNDLES = 1000;
const FUZZ_CONFIGS = 1000;
const FUZZ_CLI = 12;

type Mutation = (b: Buffer, r: () => number) => Buffer;

function randomBytes(r: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = pick(r, 256);
  return b;
}

/** A random change somewhere in a JSON value: a field dropped, retyped, set to a hostile value. */
function mutateJson(value: unknown, r: () => number): unknown {
  const hostile: unknown[] = [null, -1, 0, 1e308, 2 ** 53, '', '../../etc/passwd', '/abs', 'sha256:' + '0'.repeat(64), [], {}, true, 'x'.repeat(10_000), { $ref: '#' }];
  const paths: (string | number)[][] = [];
  const walk = (v: unknown, path: (string | number)[]) => {
    paths.push(path);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]));
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
  };
  walk(value, []);
  const root = structuredClone(value) as Record<string | number, unknown>;
  const path = paths[pick(r, paths.length)]!;
  if (path.length === 0) return hostile[pick(r, hostile.length)];
  let parent = root;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  const op = pick(r, 4);
  if (op === 0 && Array.isArray(parent)) parent.splice(last as number, 1);
  else if (op === 0) delete parent[last];
  else if (op === 1 && Array.isArray(parent)) parent.push(structuredClone(parent[last as number]));
  else if (op === 2) parent[`extra${pick(r, 9)}`] = hostile[pick(r, hostile.length)];
  else parent[last] = hostile[pick(r, hostile.length)];
  return root;
}

const bundleMutations: [string, Mutation][] = [
  ['flip bytes', (b, r) => {
    const c = Buffer.from(b);
    for (let k = 1 + pick(r, 8); k > 0; k--) c[pick(r, c.length)] ^= 1 + pick(r, 255);
    return c;
  }],
  ['overwrite a range', (b, r) => {
    const c = Buffer.from(b);
    const at = pick(r, c.length);
    randomBytes(r, Math.min(c.length - at, 1 + pick(r, 600))).copy(c, at);
    return c;
  }],
  ['delete a range', (b, r) => {
    const at = pick(r, b.length);
    return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + pick(r, 2000)))]);
  }],
  ['insert bytes', (b, r) => {
    const at = pick(r, b.length);
    return Buffer.concat([b.subarray(0, at), randomBytes(r, 1 + pick(r, 600)), b.subarray(at)]);
  }],
  ['duplicate a range', (b, r) => {
    const at = pick(r, b.length);
    const piece = b.subarray(at, at + 1 + pick(r, 5000));
    return Buffer.concat([b.subarray(0, at), piece, b.subarray(at)]);
  }],
  ['truncate', (b, r) => b.subarray(0, pick(r, b.length))],
  ['swap two frames', (b, r) => {
    const { frames } = splitFrames(b);
    const i = pick(r, frames.length);
    const j = pick(r, frames.length);
    [frames[i], frames[j]] = [frames[j]!, frames[i]!];
    return joinFrames(frames);
  }],
  ['drop a frame', (b, r) => {
    const { frames } = splitFrames(b);
    frames.splice(pick(r, frames.length), 1);
    return joinFrames(frames);
  }],
  ['repeat a frame', (b, r) => {
    const { frames } = splitFrames(b);
    const i = pick(r, frames.length);
    frames.splice(i, 0, frames[i]!);
    return joinFrames(frames);
  }],
  ['change the manifest and sign it with the trusted key', (b, r) => {
    const mutated = Buffer.from(`${JSON.stringify(mutateJson(JSON.parse(baseManifest.toString('utf8')), r), null, 2)}\n`);
    return replaceControlMembers(b, mutated, { sign: key }, CREATED);
  }],
  ['change the envelope', (b, r) => {
    const env = Buffer.from(`${JSON.stringify(mutateJson(JSON.parse(baseEnvelope.toString('utf8')), r), null, 2)}\n`);
    return replaceControlMembers(b, baseManifest, env, CREATED);
  }],
];

const CONFIG = `apiVersion: airgap.bundle/v1alpha1
kind: BundleConfig
images:
  - 127.0.0.1:1/ns/app:1.2
  - name: 127.0.0.1:1/library/alpine:3.20
    platforms: [linux/amd64, linux/arm64/v8]
  - 127.0.0.1:1/ns/pinned@sha256:${'a'.repeat(64)}
ociLayouts:
  - path: ./layout
    refs: [app-one, app-two]
`;

describe('fuzz', () => {
  it(`${FUZZ_BUNDLES} seeded mutations of a signed bundle, in process: every one ends in exit 0, 1 or 2, none hangs or throws anything unhandled`, async () => {
    const r = rng(21);
    const file = join(work, 'fuzz.airgap');
    const failures: string[] = [];
    const codes = [0, 0, 0];
    for (let i = 0; i < FUZZ_BUNDLES; i++) {
      const [name, mutate] = bundleMutations[pick(r, bundleMutations.length)]!;
      let mutated: Buffer;
      try {
        mutated = mutate(base, r);
      } catch {
        continue; // the mutation itself could not apply (e.g. a frame swap on a file it broke): not a case
      }
      await writeFile(file, mutated);
      try {
        const o = await withTimeout(verifyInProcess(file), 15_000, `${name} #${i}`);
        if (![0, 1, 2].includes(o.code)) failures.push(`${name} #${i}: exit ${o.code}`);
        else codes[o.code]!++;
        if (o.code !== 0 && o.text.trim() === '') failures.push(`${name} #${i}: failed without a message`);
      } catch (err) {
        failures.push(`${name} #${i}: ${(err as Error).stack?.split('\n').slice(0, 3).join(' | ')}`);
        await writeFile(join(work, `fuzz-failure-${i}.airgap`), mutated);
      }
    }
    assert.deepEqual(failures, []);
    assert.ok(codes[1]! + codes[2]! > FUZZ_BUNDLES / 2, `most mutations are refused: ${codes.join('/')}`);
  });

  it(`${FUZZ_CONFIGS} seeded mutations of a config (text and structure), in process: accepted or refused with a config error, never anything else`, async () => {
    const r = rng(22);
    const dir = join(work, 'fuzz-config');
    await mkdir(join(dir, 'layout'), { recursive: true });
    await writeFile(join(dir, 'layout', 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(dir, 'layout', 'index.json'), '{"schemaVersion":2,"manifests":[]}');
    const { parse, stringify } = await import('yaml');
    const failures: string[] = [];
    for (let i = 0; i < FUZZ_CONFIGS; i++) {
      let text: string;
      const op = pick(r, 5);
      if (op === 0) {
        const c = Buffer.from(CONFIG);
        for (let k = 1 + pick(r, 6); k > 0; k--) c[pick(r, c.length)] = pick(r, 128);
        text = c.toString('latin1');
      } else if (op === 1) {
        const lines = CONFIG.split('\n');
        lines.splice(pick(r, lines.length), 1 + pick(r, 3));
        text = lines.join('\n');
      } else if (op === 2) {
        const lines = CONFIG.split('\n');
        const at = pick(r, lines.length);
        lines.splice(at, 0, ...lines.slice(pick(r, lines.length)).slice(0, 3).map((l) => ' '.repeat(pick(r, 4)) + l));
        text = lines.join('\n');
      } else if (op === 3) {
        text = stringify(mutateJson(parse(CONFIG), r));
      } else {
        text = JSON.stringify(mutateJson(parse(CONFIG), r));
      }
      try {
        await withTimeout(parseConfig(text, op === 4 ? 'fuzz.json' : 'fuzz.yaml', dir), 5000, `config #${i}`);
      } catch (err) {
        if (!(err instanceof BundleError)) failures.push(`config #${i} (op ${op}): ${(err as Error).stack?.split('\n').slice(0, 3).join(' | ')}\n${text}`);
      }
    }
    assert.deepEqual(failures, []);
  });

  it(`${FUZZ_CLI} mutated bundles and configs through the CLI: exit 0, 1 or 2, at most one line on stderr, no stack`, async () => {
    const r = rng(23);
    const results: [string, RunResult][] = [];
    for (let i = 0; i < FUZZ_CLI / 2; i++) {
      const [name, mutate] = bundleMutations[pick(r, bundleMutations.length)]!;
      const file = join(work, `fuzz-cli-${i}.airgap`);
      await writeFile(file, mutate(base, r));
      results.push([`verify after ${name}`, await runBundle(['verify', file, '--key', pubFile])]);
    }
    for (let i = 0; i < FUZZ_CLI / 2; i++) {
      // Configs that name no registry (nothing may reach past loopback): only a local layout, mutated.
      const c = Buffer.from('apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nociLayouts:\n  - path: ./layout\n    refs: [app-one]\n');
      for (let k = 1 + pick(r, 4); k > 0; k--) c[pick(r, c.length)] = 0x20 + pick(r, 95);
      const dir = join(work, 'fuzz-config');
      const cfg = join(dir, `cli-${i}.yaml`);
      await writeFile(cfg, c);
      const parsed = await parseConfig(c.toString(), cfg, dir).catch(() => undefined);
      if (parsed && parsed.images.length > 0) continue; // a mutation that made a registry reference: not run
      results.push([`create with a mutated config`, await runBundle(['create', '-c', cfg, '-o', join(work, `fuzz-cli-${i}-out.airgap`)])]);
    }
    for (const [what, res] of results) {
      assert.ok([0, 1, 2].includes(res.code), `${what}: exit ${res.code}\n${res.stderr}`);
      assertNoStack(res);
      const errors = res.stderr.split('\n').filter((l) => l.startsWith('error:'));
      if (res.code === 2) assert.equal(errors.length, 1, `${what}: ${res.stderr}`);
    }
  });
});
