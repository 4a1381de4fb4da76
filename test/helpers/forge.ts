/**
 * Builds a .airgap file by hand from the format's primitives (tar headers,
 * zstd frames, seek table, DSSE), the way an attacker who holds a signing key
 * (or a buggy writer) could: member names and the manifest's entries are
 * whatever the test says, the framing and the signature are valid.
 */
import { writeFile } from 'node:fs/promises';
import { encodeFileHeader, padding } from '../../src/archive/tar.js';
import { encodeRawFrame, encodeSeekTable, FrameCompressor, type SeekEntry } from '../../src/archive/zstd-frames.js';
import { MANIFEST_MEMBER, MANIFEST_PAYLOAD_TYPE, SIGNATURE_MEMBER, type BundleImage, type BundleManifest } from '../../src/bundle/manifest.js';
import { signEnvelope } from '../../src/sign/dsse.js';
import { loadPrivateKey } from '../../src/sign/keys.js';
import { sha256Digest } from '../../src/util/digest.js';

export interface ForgedMember {
  /** Name in the tar header. */
  name: string;
  /** Path the manifest lists it under (default: `name`). */
  listedAs?: string;
  data: Buffer;
  mediaType: string;
}

export async function forgeBundle(file: string, members: ForgedMember[], images: BundleImage[], signKeyFile: string): Promise<void> {
  const created = new Date('2026-01-01T00:00:00Z');
  const compressor = new FrameCompressor(3);
  const out: Buffer[] = [];
  const frames: SeekEntry[] = [];
  let tarPos = 0;
  const compressed = (data: Buffer): void => {
    const f = compressor.compress(data);
    out.push(f);
    frames.push({ compressedSize: f.length, decompressedSize: data.length });
    tarPos += data.length;
  };
  const raw = (data: Buffer): void => {
    const f = encodeRawFrame([data]);
    out.push(...f.buffers);
    frames.push({ compressedSize: f.size, decompressedSize: f.contentSize });
    tarPos += f.contentSize;
  };
  const member = (name: string, data: Buffer): number => {
    compressed(encodeFileHeader(name, data.length, created));
    const offset = tarPos;
    if (data.length) raw(Buffer.concat([data, Buffer.alloc(padding(data.length))]));
    return offset;
  };
  const listed = members.map((m) => ({ path: m.listedAs ?? m.name, digest: sha256Digest(m.data), size: m.data.length, mediaType: m.mediaType, offset: member(m.name, m.data) }));
  const manifest: BundleManifest = {
    schemaVersion: 1,
    kind: 'AirgapBundleManifest',
    formatVersion: '1.0',
    created: '2026-01-01T00:00:00Z',
    tool: { name: 'forge', version: '0' },
    members: listed,
    images,
  };
  const manifestBytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
  const envelope = signEnvelope(manifestBytes, MANIFEST_PAYLOAD_TYPE, await loadPrivateKey(signKeyFile));
  // Control members: one header frame and exactly one data frame each.
  member(MANIFEST_MEMBER, manifestBytes);
  member(SIGNATURE_MEMBER, Buffer.from(`${JSON.stringify(envelope, null, 2)}\n`));
  compressed(Buffer.alloc(1024));
  await writeFile(file, Buffer.concat([...out, encodeSeekTable(frames)]));
}
