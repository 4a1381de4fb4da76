import assert from 'node:assert/strict';
import { FORMAT_VERSION } from '../src/bundle/manifest.js';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { MANIFEST_MEMBER, MANIFEST_PAYLOAD_TYPE, SIGNATURE_MEMBER, type BundleImage } from '../src/bundle/manifest.js';
import { ArchiveReader, ArchiveCorruptError } from '../src/archive/reader.js';
import { ArchiveWriter, blobPath } from '../src/archive/writer.js';
import { encodeFileHeader } from '../src/archive/tar.js';
import {
  decodeFrame,
  decodeSeekTable,
  encodeRawFrame,
  encodeSeekTable,
  FrameCompressor,
  parseFrameHeader,
  parseSeekTableFooter,
  rawFrameContent,
} from '../src/archive/zstd-frames.js';
import { decompress as zstdDecompress } from 'zstd-napi';
import { MediaType } from '../src/oci/media-types.js';
import type { Descriptor } from '../src/oci/types.js';
import { sha256Digest, VerifyingStream } from '../src/util/digest.js';
import { DigestMismatchError, UsageError } from '../src/util/errors.js';

const run = promisify(execFile);
const CREATED = new Date('2024-05-01T12:00:00Z');
const TOOL = { name: 'bundle', version: '0.0.0-test' };

function sh(script: string, opts: { encoding?: BufferEncoding | 'buffer' } = {}): Promise<{ stdout: string | Buffer; stderr: string | Buffer }> {
  return run('bash', ['-o', 'pipefail', '-c', script], { maxBuffer: 64 * 1024 * 1024, encoding: opts.encoding ?? 'utf8' });
}

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

interface TestBlob {
  desc: Descriptor;
  bytes: Buffer;
}

function blob(bytes: Buffer, mediaType: string): TestBlob {
  return { desc: { mediaType, digest: sha256Digest(bytes), size: bytes.length }, bytes };
}

/** Split `b` into a stream of small chunks, like a network body. */
function streamOf(b: Buffer, chunk = 16 * 1024): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += chunk) parts.push(b.subarray(i, i + chunk));
  return Readable.from(parts, { objectMode: false });
}

async function tarGz(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name, mtime: CREATED }, content);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

/** A tiny but real single-platform image: gzip layer, config, manifest. */
async function tinyImage(): Promise<{ layer: TestBlob; config: TestBlob; manifest: TestBlob }> {
  const layer = blob(await tarGz({ 'hello.txt': 'hello from the air gap\n', 'etc/os-release': 'ID=test\n' }), MediaType.OciLayerGzip);
  const diffId = sha256Digest(gunzipSync(layer.bytes));
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        created: CREATED.toISOString(),
        config: { Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: [diffId] },
        history: [{ created: CREATED.toISOString(), created_by: 'test' }],
      }),
    ),
    MediaType.OciConfig,
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: config.desc,
        layers: [layer.desc],
      }),
    ),
    MediaType.OciManifest,
  );
  return { layer, config, manifest };
}

function imageOf(m: TestBlob, refName: string, source: string): BundleImage {
  return {
    source,
    refName,
    digest: m.desc.digest,
    mediaType: m.desc.mediaType,
    size: m.desc.size,
    platforms: ['linux/amd64'],
    tags: [refName],
    origin: 'registry',
  };
}

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function fileSha(p: string): Promise<string> {
  return createHash('sha256').update(await readFile(p)).digest('hex');
}

function assertOneLineUsageError(err: unknown, file: string): true {
  assert.ok(err instanceof UsageError, `expected UsageError, got ${String(err)}`);
  assert.equal(err.exitCode, 2);
  assert.ok(!err.message.includes('\n'), `message is not one line: ${err.message}`);
  assert.ok(err.message.includes(file), `message does not name the file: ${err.message}`);
  return true;
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archive-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('ArchiveWriter + ArchiveReader: a full bundle', () => {
  const CHUNK = 64 * 1024;
  let file: string;
  let img: Awaited<ReturnType<typeof tinyImage>>;
  let json: TestBlob;
  let big: TestBlob;
  let empty: TestBlob;
  let gzBig: TestBlob;
  let all: TestBlob[];

  async function writeBundle(path: string): Promise<void> {
    const w = await ArchiveWriter.create(path, { chunkSize: CHUNK, created: CREATED });
    assert.equal(await w.putBlob('r', img.layer.desc, async () => streamOf(img.layer.bytes)), 'written');
    assert.equal(await w.putBlob('r', img.config.desc, async () => streamOf(img.config.bytes)), 'written');
    assert.equal(await w.putBlob('r', json.desc, async () => streamOf(json.bytes, 1000)), 'written');
    assert.equal(await w.putBlob('r', big.desc, async () => streamOf(big.bytes, 100_000)), 'written');
    assert.equal(await w.putBlob('r', gzBig.desc, async () => streamOf(gzBig.bytes, 7_000)), 'written');
    assert.equal(await w.putBlob('r', empty.desc, async () => streamOf(empty.bytes)), 'written');
    assert.equal(await w.putManifest('r', img.manifest.desc, img.manifest.bytes, ['v1']), 'written');
    w.addImage(imageOf(img.manifest, 'example.com/test/tiny:v1', 'example.com/test/tiny:v1'));
    const res = await w.finish({ tool: TOOL });
    assert.equal(res.path, path);
    assert.equal(res.size, (await stat(path)).size);
    assert.equal(res.manifest.members.length, 9); // oci-layout, 7 blobs, index.json
  }

  before(async () => {
    img = await tinyImage();
    json = blob(Buffer.from(JSON.stringify({ list: Array.from({ length: 20000 }, (_, i) => ({ i, name: `item-${i}` })) })), 'application/json');
    big = blob(randomBytes(3 * CHUNK + 777), MediaType.OctetStream);
    gzBig = blob(gzipSync(randomBytes(5 * CHUNK + 3)), MediaType.OciLayerGzip);
    empty = blob(Buffer.alloc(0), MediaType.OctetStream);
    all = [img.layer, img.config, json, big, gzBig, empty, img.manifest];
    file = join(dir, 'full.airgap');
    await writeBundle(file);
  });

  it('is a valid zstd stream (zstd -t) and leaves no temporary file', async () => {
    await run('zstd', ['-q', '-t', file]);
    const names = await readdir(dir);
    assert.deepEqual(names.filter((n) => n.startsWith('full.airgap')), ['full.airgap']);
  });

  it('zstd -dc | tar t lists the OCI layout and control members in order', async () => {
    const { stdout } = await sh(`zstd -dc ${q(file)} | tar t`);
    const names = (stdout as string).trim().split('\n');
    assert.deepEqual(names, ['oci-layout', ...all.map((b) => blobPath(b.desc.digest)), 'index.json', MANIFEST_MEMBER, SIGNATURE_MEMBER]);
    const { stdout: verbose } = await sh(`zstd -dc ${q(file)} | tar tv --numeric-owner --full-time`);
    for (const line of (verbose as string).trim().split('\n')) {
      assert.match(line, /^-rw-r--r-- 0\/0 /);
      assert.ok(line.includes('2024-05-01 12:00:00'), line);
    }
  });

  it('zstd -dc | tar x gives byte-identical files, and skopeo reads the OCI layout', async () => {
    const out = join(dir, 'extract');
    await sh(`mkdir -p ${q(out)} && zstd -dc ${q(file)} | tar x -C ${q(out)}`);
    for (const b of all) {
      assert.ok((await readFile(join(out, blobPath(b.desc.digest)))).equals(b.bytes), `blob ${b.desc.digest}`);
    }
    assert.deepEqual(JSON.parse(await readFile(join(out, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
    assert.equal(index.schemaVersion, 2);
    assert.deepEqual(index.manifests, [
      {
        mediaType: MediaType.OciManifest,
        digest: img.manifest.desc.digest,
        size: img.manifest.desc.size,
        annotations: { 'org.opencontainers.image.ref.name': 'example.com/test/tiny:v1', 'io.airgap.bundle.source': 'example.com/test/tiny:v1' },
      },
    ]);
    const { stdout } = await run('skopeo', ['inspect', `oci:${out}:example.com/test/tiny:v1`]);
    const inspected = JSON.parse(stdout);
    assert.equal(inspected.Digest, img.manifest.desc.digest);
    assert.deepEqual(inspected.Layers, [img.layer.desc.digest]);
    const { stdout: raw } = await run('skopeo', ['inspect', '--raw', `oci:${out}:example.com/test/tiny:v1`]);
    assert.equal(raw, img.manifest.bytes.toString());
  });

  it('is deterministic: the same content and creation time give the same bytes', async () => {
    const again = join(dir, 'again.airgap');
    await writeBundle(again);
    assert.equal(await fileSha(again), await fileSha(file));
    await rm(again);
  });

  it('opens from the end: manifest, envelope, seek table', async () => {
    const r = await ArchiveReader.open(file);
    try {
      assert.equal(r.fileSize, (await stat(file)).size);
      assert.equal(r.manifest.kind, 'AirgapBundleManifest');
      assert.equal(r.manifest.formatVersion, FORMAT_VERSION);
      assert.equal(r.manifest.created, '2024-05-01T12:00:00Z');
      assert.deepEqual(r.manifest.tool, TOOL);
      assert.deepEqual(
        r.manifest.members.map((m) => m.path),
        ['oci-layout', ...all.map((b) => blobPath(b.desc.digest)), 'index.json'],
      );
      for (const b of all) {
        const m = r.member(blobPath(b.desc.digest))!;
        assert.equal(m.digest, b.desc.digest);
        assert.equal(m.size, b.desc.size);
        assert.equal(m.mediaType, b.desc.mediaType);
      }
      assert.equal(r.manifest.members[0]!.offset, 512);
      assert.equal(r.manifest.images.length, 1);
      assert.equal(r.envelope.payloadType, MANIFEST_PAYLOAD_TYPE);
      assert.deepEqual(r.envelope.signatures, []);
      assert.ok(Buffer.from(r.envelope.payload, 'base64').equals(r.manifestBytes));
      assert.deepEqual(JSON.parse(r.manifestBytes.toString()), r.manifest);

      // The seek table, decoded independently from the file's tail.
      const data = await readFile(file);
      const footer = parseSeekTableFooter(data.subarray(data.length - 9));
      const entries = decodeSeekTable(data.subarray(data.length - footer.tableSize));
      assert.equal(entries.length, r.frames.length);
      assert.equal(
        entries.reduce((n, e) => n + e.compressedSize, 0),
        data.length - footer.tableSize,
      );
      // Frame layout rule: header frame + one data frame for each control member, then the tar end.
      const n = r.frames.length;
      assert.equal(r.frames[n - 1]!.decompressedSize, 1024);
      assert.equal(r.frames[n - 5]!.decompressedSize, 512);
      assert.equal(r.frames[n - 3]!.decompressedSize, 512);
      assert.equal(r.frames[n - 4]!.decompressedOffset, r.frames[n - 5]!.decompressedOffset + 512);
      assert.equal(r.frames[n - 4]!.decompressedSize, r.manifestBytes.length + ((512 - (r.manifestBytes.length % 512)) % 512));
      // Every member starts right after its own header frame, on a frame boundary.
      const starts = new Set(r.frames.map((f) => f.decompressedOffset));
      for (const m of r.manifest.members) if (m.size > 0) assert.ok(starts.has(m.offset), `${m.path} starts on a frame`);
      // gzip data went into raw frames; JSON was compressed; the big blob spans several frames of at most CHUNK.
      const frameAt = (off: number) => r.frames.find((f) => f.decompressedOffset === off)!;
      const rawOf = (off: number) => {
        const f = frameAt(off);
        const frame = data.subarray(f.compressedOffset, f.compressedOffset + f.compressedSize);
        return rawFrameContent(frame, parseFrameHeader(frame));
      };
      assert.ok(rawOf(r.member(blobPath(gzBig.desc.digest))!.offset), 'gzip blob is stored raw');
      assert.ok(rawOf(r.member(blobPath(img.layer.desc.digest))!.offset), 'gzip layer is stored raw');
      const jsonFrame = frameAt(r.member(blobPath(json.desc.digest))!.offset);
      assert.equal(rawOf(jsonFrame.decompressedOffset), null);
      assert.ok(jsonFrame.compressedSize < jsonFrame.decompressedSize / 3, 'JSON is compressed');
      const gzm = r.member(blobPath(gzBig.desc.digest))!;
      const gzFrames = r.frames.filter((f) => f.decompressedOffset >= gzm.offset && f.decompressedOffset < gzm.offset + gzm.size);
      assert.equal(gzFrames.length, Math.ceil(gzm.size / CHUNK));
      for (const f of gzFrames) assert.ok(f.decompressedSize <= CHUNK);
      const rawOverhead = gzFrames.reduce((s, f) => s + f.compressedSize - f.decompressedSize, 0);
      assert.ok(rawOverhead / gzm.size < 0.001, `raw framing overhead ${rawOverhead}`);
    } finally {
      await r.close();
    }
  });

  it('openMember returns the exact bytes of every member; ContentStore methods work', async () => {
    const r = await ArchiveReader.open(file);
    try {
      for (const b of all) {
        assert.ok((await collect(r.openMember(blobPath(b.desc.digest)))).equals(b.bytes), blobPath(b.desc.digest));
        assert.ok((await collect(await r.openBlob('any', b.desc))).equals(b.bytes));
        assert.equal(await r.hasBlob('any', b.desc), true);
      }
      assert.equal(await r.hasBlob('any', blob(Buffer.from('nope'), 'x').desc), false);
      await assert.rejects(r.openBlob('any', blob(Buffer.from('nope'), 'x').desc), /does not hold blob/);
      assert.ok((await collect(r.openMember(MANIFEST_MEMBER))).equals(r.manifestBytes));
      assert.deepEqual(JSON.parse((await collect(r.openMember(SIGNATURE_MEMBER))).toString()), r.envelope);
      // A range in the middle of the multi-frame blob.
      const m = r.member(blobPath(big.desc.digest))!;
      assert.ok((await collect(r.openRange(m.offset + CHUNK - 10, CHUNK + 20))).equals(big.bytes.subarray(CHUNK - 10, 2 * CHUNK + 10)));

      const desc = await r.resolve('example.com/test/tiny', 'v1');
      assert.equal(desc.digest, img.manifest.desc.digest);
      assert.equal((await r.resolve('', 'example.com/test/tiny:v1')).digest, img.manifest.desc.digest);
      assert.equal((await r.resolve('', img.manifest.desc.digest)).digest, img.manifest.desc.digest);
      await assert.rejects(r.resolve('example.com/test/tiny', 'v2'), /holds no image/);
      const mb = await r.fetchManifest('x', img.manifest.desc);
      assert.ok(mb.bytes.equals(img.manifest.bytes));
      assert.equal(mb.mediaType, MediaType.OciManifest);
    } finally {
      await r.close();
    }
  });

  it('hashMembers sees every physical member once, in order, with correct digests and offsets', async () => {
    const r = await ArchiveReader.open(file);
    try {
      const seen: { path: string; digest: string; offset: number; size: number }[] = [];
      let bytes = 0;
      for await (const m of r.hashMembers({}, (n) => (bytes += n))) seen.push({ path: m.path, digest: m.digest, offset: m.offset, size: m.size });
      assert.deepEqual(
        seen.map((s) => s.path),
        [...r.manifest.members.map((m) => m.path), MANIFEST_MEMBER, SIGNATURE_MEMBER],
      );
      for (const m of r.manifest.members) {
        const s = seen.find((x) => x.path === m.path)!;
        assert.deepEqual({ digest: s.digest, offset: s.offset, size: s.size }, { digest: m.digest, offset: m.offset, size: m.size }, m.path);
      }
      assert.equal(seen.at(-2)!.digest, sha256Digest(r.manifestBytes));
      assert.equal(seen.at(-1)!.digest, sha256Digest(r.envelopeBytes));
      // Every data byte is reported once, and nothing else.
      assert.equal(bytes, seen.reduce((n, s) => n + s.size, 0));
    } finally {
      await r.close();
    }
  });

  it('hashMembers reports a corrupt frame; a flipped byte in a raw frame changes the digest', async () => {
    const r0 = await ArchiveReader.open(file);
    const jsonOff = r0.member(blobPath(json.desc.digest))!.offset;
    const gzOff = r0.member(blobPath(gzBig.desc.digest))!.offset;
    const jsonFrame = r0.frames.find((f) => f.decompressedOffset === jsonOff)!;
    const gzFrame = r0.frames.find((f) => f.decompressedOffset === gzOff)!;
    await r0.close();
    const data = await readFile(file);

    const flipped = Buffer.from(data);
    flipped[gzFrame.compressedOffset + gzFrame.compressedSize - 100]! ^= 0xff;
    const f1 = join(dir, 'flipped.airgap');
    await writeFile(f1, flipped);
    const r1 = await ArchiveReader.open(f1);
    try {
      let found = false;
      for await (const m of r1.hashMembers()) {
        if (m.path === blobPath(gzBig.desc.digest)) {
          found = true;
          assert.notEqual(m.digest, gzBig.desc.digest);
        }
      }
      assert.ok(found);
    } finally {
      await r1.close();
    }

    const broken = Buffer.from(data);
    broken.fill(0x55, jsonFrame.compressedOffset + 8, jsonFrame.compressedOffset + 40);
    const f2 = join(dir, 'broken.airgap');
    await writeFile(f2, broken);
    const r2 = await ArchiveReader.open(f2);
    try {
      await assert.rejects(async () => {
        for await (const m of r2.hashMembers()) void m;
      }, ArchiveCorruptError);
      await assert.rejects(collect(r2.openMember(blobPath(json.desc.digest))), ArchiveCorruptError);
    } finally {
      await r2.close();
    }
  });

  it('open rejects truncated, random, empty and plain .tar.zst files with one clear line', async () => {
    const data = await readFile(file);
    const cases: Record<string, Buffer> = {
      'truncated-tail.airgap': data.subarray(0, data.length - 100),
      'truncated-half.airgap': data.subarray(0, Math.floor(data.length / 2)),
      'truncated-1.airgap': data.subarray(0, data.length - 1),
      'random.airgap': randomBytes(100_000),
      'empty.airgap': Buffer.alloc(0),
      'tiny.airgap': Buffer.from('hi'),
    };
    // A seek table whose frames do not match the file: drop the first frame's bytes.
    const r = await ArchiveReader.open(file);
    cases['shifted.airgap'] = data.subarray(r.frames[1]!.compressedOffset);
    await r.close();
    for (const [name, bytes] of Object.entries(cases)) {
      const p = join(dir, name);
      await writeFile(p, bytes);
      await assert.rejects(ArchiveReader.open(p), (err) => assertOneLineUsageError(err, p), name);
    }
    const tz = join(dir, 'plain.tar.zst');
    await sh(`tar c -C ${q(dir)} full.airgap | zstd -q -o ${q(tz)}`);
    await assert.rejects(ArchiveReader.open(tz), (err) => {
      assertOneLineUsageError(err, tz);
      assert.match((err as Error).message, /no zstd seek table at its end/);
      return true;
    });
    await assert.rejects(ArchiveReader.open(join(dir, 'missing.airgap')), (err) => assertOneLineUsageError(err, 'missing.airgap'));
    await assert.rejects(ArchiveReader.open(dir), (err) => assertOneLineUsageError(err, dir));
  });
});

describe('ArchiveWriter: dedupe, ordering, failures', () => {
  it('stores a digest once; a second put returns exists without opening', async () => {
    const p = join(dir, 'dedupe.airgap');
    const w = await ArchiveWriter.create(p, { created: CREATED });
    const b = blob(Buffer.from('{"same":true}'), 'application/json');
    let opens = 0;
    const open = async () => {
      opens++;
      return streamOf(b.bytes);
    };
    const results = await Promise.all([w.putBlob('a', b.desc, open), w.putBlob('b', b.desc, open)]);
    assert.deepEqual(results, ['written', 'exists']);
    assert.equal(await w.putBlob('c', b.desc, open), 'exists');
    assert.equal(await w.putManifest('c', b.desc, b.bytes, []), 'exists');
    assert.equal(opens, 1);
    assert.equal(await w.hasBlob('x', b.desc), true);
    await assert.rejects(w.openBlob(), /not readable while it is being written/);
    const res = await w.finish({ tool: TOOL });
    assert.equal(res.manifest.members.filter((m) => m.digest === b.desc.digest).length, 1);
    const { stdout } = await sh(`zstd -dc ${q(p)} | tar t`);
    assert.equal((stdout as string).split('\n').filter((l) => l === blobPath(b.desc.digest)).length, 1);
  });

  it('serialises puts: open() is called only when it is that blob’s turn', async () => {
    const p = join(dir, 'serial.airgap');
    const w = await ArchiveWriter.create(p, { created: CREATED });
    const events: string[] = [];
    const blobs = [0, 1, 2].map((i) => blob(randomBytes(200_000 + i), MediaType.OctetStream));
    const puts = blobs.map((b, i) =>
      w.putBlob('r', b.desc, async () => {
        events.push(`open${i}`);
        const s = streamOf(b.bytes);
        s.on('end', () => events.push(`end${i}`));
        return s;
      }),
    );
    assert.deepEqual(await Promise.all(puts), ['written', 'written', 'written']);
    assert.deepEqual(events, ['open0', 'end0', 'open1', 'end1', 'open2', 'end2']);
    assert.equal(w.progress.members, 4);
    assert.equal(w.progress.dataBytes, 30 + 600_003);
    await w.finish({ tool: TOOL });
    const r = await ArchiveReader.open(p);
    for (const b of blobs) assert.ok((await collect(r.openMember(blobPath(b.desc.digest)))).equals(b.bytes));
    await r.close();
  });

  it('a blob that fails its digest or size is cut out of the file; the bundle stays valid', async () => {
    const p = join(dir, 'failing.airgap');
    const w = await ArchiveWriter.create(p, { created: CREATED, chunkSize: 1024 * 1024 });
    const good1 = blob(randomBytes(50_000), MediaType.OctetStream);
    const good2 = blob(Buffer.from(JSON.stringify({ good: 2 })), 'application/json');
    // Large enough that part of it has been flushed to disk before the failure (truncate path).
    const badLarge = randomBytes(20 * 1024 * 1024);
    const wrong = sha256Digest(Buffer.from('something else'));
    const badLargeDesc: Descriptor = { mediaType: MediaType.OctetStream, digest: wrong, size: badLarge.length };
    // Small: still in the write buffer at failure time (buffer-trim path).
    const badSmall = blob(Buffer.from('small but wrong'), MediaType.OctetStream);
    const badSmallDesc: Descriptor = { ...badSmall.desc, digest: sha256Digest(Buffer.from('other')) };
    // Longer than its descriptor says.
    const tooLong = blob(randomBytes(5000), MediaType.OctetStream);
    const tooLongDesc: Descriptor = { ...tooLong.desc, size: 4000 };

    assert.equal(await w.putBlob('r', good1.desc, async () => streamOf(good1.bytes)), 'written');
    const before = w.progress.fileBytes;
    await assert.rejects(
      w.putBlob('r', badLargeDesc, async () => streamOf(badLarge, 256 * 1024).pipe(new VerifyingStream(wrong, badLarge.length, 'bad blob'))),
      DigestMismatchError,
    );
    assert.equal(w.progress.fileBytes, before);
    assert.equal((await stat(w.tempPath)).size <= before, true);
    await assert.rejects(
      w.putBlob('r', badSmallDesc, async () => streamOf(badSmall.bytes).pipe(new VerifyingStream(badSmallDesc.digest, badSmallDesc.size, 'bad small'))),
      DigestMismatchError,
    );
    // Without a VerifyingStream the writer's own hash catches it too.
    await assert.rejects(w.putBlob('r', badSmallDesc, async () => streamOf(badSmall.bytes)), DigestMismatchError);
    await assert.rejects(w.putBlob('r', tooLongDesc, async () => streamOf(tooLong.bytes, 1000)), DigestMismatchError);
    // An open() that throws also leaves nothing behind.
    await assert.rejects(
      w.putBlob('r', good2.desc, async () => {
        throw new Error('connection reset');
      }),
      /connection reset/,
    );
    assert.equal(await w.hasBlob('r', good2.desc), false);
    assert.equal(w.progress.fileBytes, before);
    assert.equal(await w.putBlob('r', good2.desc, async () => streamOf(good2.bytes)), 'written');
    const res = await w.finish({ tool: TOOL });

    const paths = res.manifest.members.map((m) => m.path);
    assert.deepEqual(paths, ['oci-layout', blobPath(good1.desc.digest), blobPath(good2.desc.digest), 'index.json']);
    assert.ok(res.size < 20 * 1024 * 1024, 'the failed 20 MiB blob is not in the file');
    await run('zstd', ['-q', '-t', p]);
    const { stdout } = await sh(`zstd -dc ${q(p)} | tar t`);
    assert.deepEqual((stdout as string).trim().split('\n'), [...paths, MANIFEST_MEMBER, SIGNATURE_MEMBER]);
    const r = await ArchiveReader.open(p);
    try {
      const scanned: string[] = [];
      for await (const m of r.hashMembers()) {
        const listed = r.member(m.path);
        if (listed) {
          assert.equal(m.digest, listed.digest);
          assert.equal(m.offset, listed.offset);
        }
        scanned.push(m.path);
      }
      assert.deepEqual(scanned, [...paths, MANIFEST_MEMBER, SIGNATURE_MEMBER]);
    } finally {
      await r.close();
    }
  });

  it('abort removes the temporary file; finish refuses an image whose manifest is missing', async () => {
    const p = join(dir, 'aborted.airgap');
    const w = await ArchiveWriter.create(p, { created: CREATED });
    assert.ok((await stat(w.tempPath)).isFile());
    assert.match(w.tempPath, /aborted\.airgap\.partial-\d+$/);
    await w.abort();
    await assert.rejects(stat(w.tempPath), { code: 'ENOENT' });
    await assert.rejects(stat(p), { code: 'ENOENT' });

    const w2 = await ArchiveWriter.create(p, { created: CREATED });
    const m = blob(Buffer.from('{}'), MediaType.OciManifest);
    w2.addImage(imageOf(m, 'x:1', 'example.com/x:1'));
    await assert.rejects(w2.finish({ tool: TOOL }), /manifest is not in the bundle/);
    await assert.rejects(stat(w2.tempPath), { code: 'ENOENT' });
    await assert.rejects(stat(p), { code: 'ENOENT' });
  });

  it('finish embeds the signer’s envelope and rejects one for another payload', async () => {
    const p = join(dir, 'signed.airgap');
    const w = await ArchiveWriter.create(p, { created: CREATED });
    let signed: Buffer | undefined;
    await w.finish({
      tool: TOOL,
      sign: async (payload) => {
        signed = payload;
        return { payloadType: MANIFEST_PAYLOAD_TYPE, payload: payload.toString('base64'), signatures: [{ keyid: 'ab'.repeat(32), sig: 'c2ln' }] };
      },
    });
    const r = await ArchiveReader.open(p);
    assert.ok(r.manifestBytes.equals(signed!));
    assert.deepEqual(r.envelope.signatures, [{ keyid: 'ab'.repeat(32), sig: 'c2ln' }]);
    await r.close();

    const w2 = await ArchiveWriter.create(join(dir, 'badsign.airgap'), { created: CREATED });
    await assert.rejects(
      w2.finish({ tool: TOOL, sign: async () => ({ payloadType: MANIFEST_PAYLOAD_TYPE, payload: 'e30=', signatures: [] }) }),
      /different payload/,
    );
  });
});

describe('zstd frames', () => {
  it('hand-built raw frames decode with libzstd and report their content size', () => {
    for (const size of [0, 1, 255, 256, 65791, 65792, 131072, 131073, 300_000]) {
      const data = randomBytes(size);
      // Split the input at odd places: frames are built from several buffers without copying.
      const parts = size > 10 ? [data.subarray(0, 7), data.subarray(7, size - 3), data.subarray(size - 3)] : [data];
      const { buffers, size: frameSize, contentSize } = encodeRawFrame(parts);
      const frame = Buffer.concat(buffers);
      assert.equal(frame.length, frameSize);
      assert.equal(contentSize, size);
      assert.ok(zstdDecompress(frame).equals(data), `libzstd decodes a raw frame of ${size}`);
      const h = parseFrameHeader(frame);
      assert.equal(h.contentSize, size);
      assert.equal(h.singleSegment, true);
      const content = rawFrameContent(frame, h)!;
      assert.ok(Buffer.concat(content).equals(data));
      assert.ok(decodeFrame(frame, size).every((b) => b.buffer === frame.buffer), 'raw content is zero-copy');
      assert.throws(() => decodeFrame(frame, size + 1), /seek table says/);
    }
  });

  it('compressed frames carry their content size; seek tables round-trip', () => {
    const data = Buffer.from('abc'.repeat(100_000));
    const frame = new FrameCompressor(3).compress(data);
    assert.ok(frame.length < 1000);
    assert.equal(parseFrameHeader(frame).contentSize, data.length);
    assert.ok(Buffer.concat(decodeFrame(frame, data.length)).equals(data));
    assert.throws(() => decodeFrame(Buffer.concat([frame, Buffer.from([1, 2, 3])]), data.length), /does not decompress/);
    const entries = [
      { compressedSize: 10, decompressedSize: 512 },
      { compressedSize: 4_194_400, decompressedSize: 4_194_304 },
    ];
    const table = encodeSeekTable(entries);
    assert.equal(table.length, 17 + 16);
    assert.equal(table.readUInt32LE(0), 0x184d2a5e);
    assert.equal(table.readUInt32LE(table.length - 4), 0x8f92eab1);
    assert.deepEqual(decodeSeekTable(table), entries);
    const bad = Buffer.from(table);
    bad[4]! ^= 1;
    assert.throws(() => decodeSeekTable(bad), /inconsistent/);
  });
});

describe('tar headers', () => {
  it('uses a pax header for a long or non-ASCII name, which GNU tar reads back', async () => {
    const long = `${'d'.repeat(120)}/${'f'.repeat(120)}-ü.txt`;
    const data = Buffer.from('long name content\n');
    const tarBytes = Buffer.concat([
      encodeFileHeader(long, data.length, CREATED),
      data,
      Buffer.alloc(512 - data.length),
      encodeFileHeader('short', 0, CREATED),
      Buffer.alloc(1024),
    ]);
    const p = join(dir, 'long.tar');
    await writeFile(p, tarBytes);
    const { stdout } = await run('tar', ['tf', p]);
    assert.deepEqual(stdout.trim().split('\n'), [long, 'short']);
    const { stdout: content } = await run('tar', ['xOf', p, long]);
    assert.equal(content, data.toString());
  });
});

describe('memory stays flat for a large blob', () => {
  const SIZE = 300 * 1024 * 1024;
  const PIECE = 1024 * 1024;

  /** A deterministic ~300 MB stream, generated piece by piece (never held whole). */
  function* pieces(): Generator<Buffer> {
    for (let off = 0; off < SIZE; off += PIECE) {
      const b = Buffer.allocUnsafe(Math.min(PIECE, SIZE - off));
      b.fill(off / PIECE);
      for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE(off + i, i);
      if (off === 0) b.set([0x1f, 0x8b, 0x08, 0x00]); // gzip magic: stored raw, as real layers are
      yield b;
    }
  }

  it('writes and reads back 300 MB with RSS growth well under 100 MB', async (t) => {
    // Baseline first: the digest pass below also allocates, and counts against the budget.
    const base = process.memoryUsage().rss;
    const h = createHash('sha256');
    for (const b of pieces()) h.update(b);
    const desc: Descriptor = { mediaType: MediaType.OciLayerGzip, digest: `sha256:${h.digest('hex')}`, size: SIZE };
    const p = join(dir, 'big.airgap');
    let peak = base;
    const sample = () => {
      peak = Math.max(peak, process.memoryUsage().rss);
    };
    const timer = setInterval(sample, 20);
    try {
      const w = await ArchiveWriter.create(p, { created: CREATED });
      const src = Readable.from(
        (function* () {
          for (const b of pieces()) {
            sample();
            yield b;
          }
        })(),
        { objectMode: false },
      );
      assert.equal(await w.putBlob('r', desc, async () => src), 'written');
      await w.finish({ tool: TOOL });
      assert.ok(peak - base < 100 * 1024 * 1024, `RSS grew by ${((peak - base) / 1048576).toFixed(0)} MiB while writing`);
      t.diagnostic(`RSS growth while writing 300 MB: ${((peak - base) / 1048576).toFixed(1)} MiB`);
      const r = await ArchiveReader.open(p);
      const rh = createHash('sha256');
      let n = 0;
      for await (const c of r.openMember(blobPath(desc.digest))) {
        rh.update(c as Buffer);
        n += (c as Buffer).length;
        sample();
      }
      await r.close();
      assert.equal(n, SIZE);
      assert.equal(`sha256:${rh.digest('hex')}`, desc.digest);
      assert.ok(peak - base < 100 * 1024 * 1024, `RSS grew by ${((peak - base) / 1048576).toFixed(0)} MiB while reading`);
      t.diagnostic(`RSS growth after reading it back: ${((peak - base) / 1048576).toFixed(1)} MiB`);
      assert.ok((await stat(p)).size < SIZE * 1.001);
    } finally {
      clearInterval(timer);
      await truncate(p).catch(() => undefined);
      await rm(p, { force: true });
    }
  });
});
