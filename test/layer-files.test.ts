/**
 * Files read out of layers as they stream: gzip (Node's zlib), zstd (made by the
 * zstd command) and plain tar layers, later layers and whiteouts applied, every
 * layer checked against its digest.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { readImageFiles } from '../src/oci/layer-files.js';
import type { Descriptor } from '../src/oci/types.js';
import type { ContentStore } from '../src/store/store.js';
import { tarLayer } from './helpers/images.js';

/** Blobs in memory, served as a registry would (raw bytes, possibly in small pieces). */
function storeOf(blobs: Buffer[], piece = 7): { store: ContentStore; descs: Descriptor[] } {
  const byDigest = new Map<string, Buffer>();
  const descs = blobs.map((b) => {
    const digest = `sha256:${createHash('sha256').update(b).digest('hex')}`;
    byDigest.set(digest, b);
    return { mediaType: 'application/octet-stream', digest, size: b.length };
  });
  const store: ContentStore = {
    description: 'test',
    resolve: () => Promise.reject(new Error('no')),
    fetchManifest: () => Promise.reject(new Error('no')),
    hasBlob: async (_r, d) => byDigest.has(d.digest),
    openBlob: async (_r, d) => {
      const b = byDigest.get(d.digest)!;
      const parts: Buffer[] = [];
      for (let i = 0; i < b.length; i += piece) parts.push(b.subarray(i, i + piece));
      return Readable.from(parts);
    },
  };
  return { store, descs };
}

const WANT = ['release-manifests/image-references', 'release-manifests/release-metadata'];

describe('readImageFiles', () => {
  it('reads named files from gzip, zstd and plain tar layers, the last layer winning', async () => {
    const one = gzipSync(await tarLayer({ 'release-manifests/image-references': 'old', 'etc/x': 'x' }));
    const two = execFileSync('zstd', ['-q', '-c'], { input: await tarLayer({ './release-manifests/image-references': 'new', 'bin/y': 'y' }) });
    const three = await tarLayer({ '/release-manifests/release-metadata': '{"kind":"cincinnati-metadata-v0"}' });
    const { store, descs } = storeOf([one, two, three]);
    const files = await readImageFiles(store, 'r', descs, WANT, 'test image');
    assert.equal(files.get(WANT[0]!)?.toString(), 'new');
    assert.equal(files.get(WANT[1]!)?.toString(), '{"kind":"cincinnati-metadata-v0"}');
  });

  it('applies whiteouts and opaque folders of later layers', async () => {
    const one = gzipSync(await tarLayer({ 'release-manifests/image-references': 'a', 'release-manifests/release-metadata': 'b' }));
    const two = gzipSync(await tarLayer({ 'release-manifests/.wh.image-references': '' }));
    let { store, descs } = storeOf([one, two]);
    let files = await readImageFiles(store, 'r', descs, WANT, 'test image');
    assert.deepEqual([...files.keys()], [WANT[1]]);
    const opaque = gzipSync(await tarLayer({ 'release-manifests/.wh..wh..opq': '', 'release-manifests/release-metadata': 'c' }));
    ({ store, descs } = storeOf([one, opaque]));
    files = await readImageFiles(store, 'r', descs, WANT, 'test image');
    assert.deepEqual([...files.entries()].map(([k, v]) => [k, v.toString()]), [[WANT[1], 'c']]);
  });

  it('reads from the top layer down and stops once every file is settled, leaving lower layers unread', async () => {
    const base = gzipSync(await tarLayer({ 'release-manifests/image-references': 'base', 'usr/big': Buffer.alloc(4096, 1) }));
    const middle = gzipSync(await tarLayer({ 'usr/lib/x': 'x' }));
    const top = gzipSync(await tarLayer({ 'release-manifests/image-references': 'top', 'release-manifests/release-metadata': 'meta' }));
    const { store, descs } = storeOf([base, middle, top]);
    const opened: string[] = [];
    const counting: ContentStore = { ...store, openBlob: (r, d) => (opened.push(d.digest), store.openBlob(r, d)) };
    const files = await readImageFiles(counting, 'r', descs, WANT, 'test image');
    assert.deepEqual([...files.entries()].map(([k, v]) => [k, v.toString()]).sort(), [[WANT[0], 'top'], [WANT[1], 'meta']]);
    assert.deepEqual(opened, [descs[2]!.digest]);
    // One file only in the base: every layer is read, top first.
    opened.length = 0;
    const files2 = await readImageFiles(counting, 'r', [descs[0]!, descs[1]!], WANT, 'test image');
    assert.deepEqual([...files2.keys()], [WANT[0]]);
    assert.deepEqual(opened, [descs[1]!.digest, descs[0]!.digest]);
  });

  it('refuses a layer whose bytes do not match its digest, naming it', async () => {
    const good = gzipSync(await tarLayer({ 'release-manifests/image-references': 'a' }));
    const { store, descs } = storeOf([good]);
    const lying = { ...descs[0]!, digest: `sha256:${'0'.repeat(64)}` };
    const s2: ContentStore = { ...store, openBlob: () => store.openBlob('r', descs[0]!) };
    await assert.rejects(readImageFiles(s2, 'r', [lying], WANT, 'test image'), /digest mismatch/);
  });

  it('refuses a file larger than the limit', async () => {
    const big = gzipSync(await tarLayer({ 'release-manifests/image-references': Buffer.alloc(5000, 97) }));
    const { store, descs } = storeOf([big], 1000);
    await assert.rejects(readImageFiles(store, 'r', descs, WANT, 'test image', 4096), /more than the 4096 allowed/);
  });
});
