/**
 * verify on a bundle large enough to be hashed in two halves at once (main
 * thread + worker thread): a clean bundle passes, and a flipped byte in either
 * half is found and named.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ArchiveReader } from '../src/archive/reader.js';
import { ArchiveWriter } from '../src/archive/writer.js';
import { verifyBundle } from '../src/bundle/verify.js';
import { flipByteAfter } from './helpers/tamper.js';
import { runBundle } from './helpers/cli.js';

const LAYER = 40 << 20;
let dir: string;
let file: string;
const layers: { digest: string; needle: Buffer }[] = [];

function gzipLooking(): Buffer {
  const b = randomBytes(LAYER);
  b[0] = 0x1f; // gzip magic: stored in raw frames, so a byte flipped in the file is a byte flipped in the blob
  b[1] = 0x8b;
  return b;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bundle-verify-'));
  file = join(dir, 'big.airgap');
  const w = await ArchiveWriter.create(file);
  const descs = [];
  for (let n = 0; n < 2; n++) {
    const data = gzipLooking();
    const desc = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${createHash('sha256').update(data).digest('hex')}`, size: data.length };
    await w.putBlob('', desc, async () => Readable.from([data.subarray(0, LAYER / 2), data.subarray(LAYER / 2)]));
    layers.push({ digest: desc.digest, needle: data.subarray(LAYER - 4096, LAYER - 4032) });
    descs.push(desc);
  }
  const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] } }));
  const configDesc = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${createHash('sha256').update(config).digest('hex')}`, size: config.length };
  await w.putBlob('', configDesc, async () => Readable.from([config]));
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDesc, layers: descs }));
  const mdesc = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${createHash('sha256').update(manifest).digest('hex')}`, size: manifest.length };
  await w.putManifest('', mdesc, manifest, ['1.0']);
  w.addImage({ source: 'example.com/big/image:1.0', refName: 'example.com/big/image:1.0', digest: mdesc.digest, mediaType: mdesc.mediaType, size: mdesc.size, platforms: ['linux/amd64'], tags: ['1.0'], origin: 'registry' });
  await w.finish({ tool: { name: 'test', version: '0' } });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function verifyFile(path: string) {
  const reader = await ArchiveReader.open(path);
  try {
    return { report: await verifyBundle(reader, undefined), split: reader.splitFrame(), frames: reader.frames.length };
  } finally {
    await reader.close();
  }
}

describe('verify in two halves', () => {
  it('a whole bundle passes, and it is split between two threads', async () => {
    const { report, split, frames } = await verifyFile(file);
    assert.equal(report.ok, true, JSON.stringify(report.problems));
    assert.equal(report.members, 6); // oci-layout, 2 layers, config, manifest, index.json
    assert.ok(split !== undefined && split > 0 && split < frames, 'a split point exists');
  });

  it('the CLI (the bundled build, whose worker lives elsewhere) verifies it too', async () => {
    const r = await runBundle(['verify', file, '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(JSON.parse(r.stdout).ok, true);
  });

  for (const [i, half] of [
    [0, 'first (main thread)'],
    [1, 'second (worker thread)'],
  ] as const) {
    it(`a flipped byte in the ${half} half is named`, async () => {
      const copy = join(dir, `flip-${i}.airgap`);
      await copyFile(file, copy);
      await flipByteAfter(copy, layers[i]!.needle, 7, 0x01);
      const { report } = await verifyFile(copy);
      assert.equal(report.ok, false);
      assert.equal(report.problems.length, 1, JSON.stringify(report.problems));
      const p = report.problems[0]!;
      assert.equal(p.kind, 'corrupt');
      assert.equal(p.member, `blobs/sha256/${layers[i]!.digest.slice(7)}`);
      assert.deepEqual(p.images, ['example.com/big/image:1.0']);
    });
  }
});
