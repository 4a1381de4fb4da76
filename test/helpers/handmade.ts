/**
 * Builds a .airgap file by hand from the archive primitives (tar headers, raw
 * zstd frames, the seek table, a DSSE signature), without ArchiveWriter: so a
 * test can make what the writer never would (a 1.1 manifest with fields this
 * version does not know, an unlisted member) and still have a well-formed,
 * signed file with a valid seek table.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { encodeFileHeader, padding, TAR_BLOCK } from '../../src/archive/tar.js';
import { encodeRawFrame, encodeSeekTable, type SeekEntry } from '../../src/archive/zstd-frames.js';
import { MANIFEST_MEMBER, MANIFEST_PAYLOAD_TYPE, SIGNATURE_MEMBER } from '../../src/bundle/manifest.js';
import { signEnvelope } from '../../src/sign/dsse.js';
import { pseudoRandom, tarLayer } from './images.js';

export interface HandMember {
  path: string;
  data: Buffer;
  mediaType?: string;
  /** false: written to the archive but left out of the manifest. */
  listed?: boolean;
  /**
   * Unlisted, and hidden: header, data and padding go into the next member's
   * header frame instead of frames of their own (the seek table shows nothing odd).
   */
  hidden?: boolean;
  /** Its header goes at the end of the previous frame instead of a frame of its own (against framing rule 1). */
  joinPrevious?: boolean;
  /** A tar entry of another type than a regular file: a symbolic or hard link to `linkname`. */
  type?: 'symlink' | 'link';
  linkname?: string;
  /** The size its tar header states, when that should differ from its data's. */
  headerSize?: number;
  /** Fields of its manifest entry to state instead of the true ones (a manifest that lies). */
  entry?: Record<string, unknown>;
}

/** A tar header of a regular file changed into a link entry (typeflag, linkname, checksum). */
export function linkHeader(header: Buffer, type: 'symlink' | 'link', linkname: string): Buffer {
  const h = Buffer.from(header);
  const at = h.length - TAR_BLOCK; // the ustar block (after any pax header)
  h[at + 156] = type === 'symlink' ? 0x32 : 0x31;
  h.fill(0, at + 157, at + 257);
  h.write(linkname.slice(0, 100), at + 157, 'utf8');
  h.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = at; i < at + TAR_BLOCK; i++) sum += h[i]!;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 'ascii');
  return h;
}

export interface HandImage {
  /** Blobs to store: layer, config, manifest. */
  blobs: HandMember[];
  /** The `images[]` entry of the bundle manifest. */
  entry: Record<string, unknown>;
}

const digestOf = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export function blobMember(data: Buffer, mediaType: string): HandMember {
  return { path: `blobs/sha256/${digestOf(data).slice(7)}`, data, mediaType };
}

/** A small, real single-layer OCI image named `source`. */
export async function handImage(source: string, seed: string): Promise<HandImage> {
  const layerTar = await tarLayer({ [`${seed}.bin`]: pseudoRandom(seed, 4096) });
  const layer = blobMember(gzipSync(layerTar), 'application/vnd.oci.image.layer.v1.tar+gzip');
  const config = blobMember(
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [digestOf(layerTar)] } })),
    'application/vnd.oci.image.config.v1+json',
  );
  const desc = (m: HandMember) => ({ mediaType: m.mediaType, digest: digestOf(m.data), size: m.data.length });
  const manifest = blobMember(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: desc(config), layers: [desc(layer)] })),
    'application/vnd.oci.image.manifest.v1+json',
  );
  const tag = source.slice(source.lastIndexOf(':') + 1);
  return {
    blobs: [layer, config, manifest],
    entry: { source, refName: source, ...desc(manifest), platforms: ['linux/amd64'], tags: [tag], origin: 'registry' },
  };
}

export interface HandBundle {
  /** Members after oci-layout and before index.json, in archive order. */
  members: HandMember[];
  images: Record<string, unknown>[];
  /** Fields set on (or added to) the manifest after the standard ones, e.g. formatVersion. */
  manifestFields?: Record<string, unknown>;
  signKey?: KeyObject;
  /** The signature member's bytes as given (a signature over other bytes, say), instead of one over this manifest. */
  envelope?: Buffer;
}

/** Write `file`: oci-layout, the members, index.json, the (signed) manifest, the tar end and the seek table. */
export async function writeHandmadeBundle(file: string, spec: HandBundle): Promise<{ manifest: Record<string, unknown> }> {
  const mtime = new Date('2026-01-01T00:00:00Z');
  // Each frame's content; encoded at the end, so a header can still join the frame before it.
  const contents: Buffer[][] = [];
  let tarPos = 0;
  const frame = (parts: Buffer[], joinPrevious = false): void => {
    if (joinPrevious) contents[contents.length - 1]!.push(...parts);
    else contents.push(parts);
    for (const p of parts) tarPos += p.length;
  };
  const listed: Record<string, unknown>[] = [];
  let hidden: Buffer[] = [];
  const put = (m: HandMember): void => {
    if (m.hidden) {
      hidden.push(encodeFileHeader(m.path, m.data.length, mtime), m.data, Buffer.alloc(padding(m.data.length)));
      return;
    }
    let header = encodeFileHeader(m.path, m.headerSize ?? m.data.length, mtime);
    if (m.type) header = linkHeader(header, m.type, m.linkname ?? '');
    frame([...hidden, header], m.joinPrevious);
    hidden = [];
    const offset = tarPos;
    if (m.data.length > 0) frame([m.data, Buffer.alloc(padding(m.data.length))]);
    if (m.listed !== false) listed.push({ path: m.path, digest: digestOf(m.data), size: m.data.length, mediaType: m.mediaType ?? 'application/octet-stream', offset, ...m.entry });
  };
  put({ path: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}'), mediaType: 'application/vnd.oci.layout.header.v1+json' });
  for (const m of spec.members) put(m);
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: spec.images.map((i) => ({
      mediaType: i.mediaType,
      digest: i.digest,
      size: i.size,
      annotations: { 'org.opencontainers.image.ref.name': i.refName, 'io.airgap.bundle.source': i.source },
    })),
  };
  put({ path: 'index.json', data: Buffer.from(`${JSON.stringify(index, null, 2)}\n`), mediaType: 'application/vnd.oci.image.index.v1+json' });
  const manifest: Record<string, unknown> = {
    schemaVersion: 1,
    kind: 'AirgapBundleManifest',
    formatVersion: '1.0',
    created: mtime.toISOString().replace('.000Z', 'Z'),
    tool: { name: 'handmade', version: '0' },
    members: listed,
    images: spec.images,
    ...spec.manifestFields,
  };
  const manifestBytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
  const envelope = spec.signKey
    ? signEnvelope(manifestBytes, MANIFEST_PAYLOAD_TYPE, spec.signKey)
    : { payloadType: MANIFEST_PAYLOAD_TYPE, payload: manifestBytes.toString('base64'), signatures: [] };
  // Control members: one header frame and exactly one data frame each.
  for (const [path, data] of [
    [MANIFEST_MEMBER, manifestBytes],
    [SIGNATURE_MEMBER, spec.envelope ?? Buffer.from(`${JSON.stringify(envelope, null, 2)}\n`)],
  ] as const) {
    frame([encodeFileHeader(path, data.length, mtime)]);
    frame([data, Buffer.alloc(padding(data.length))]);
  }
  frame([Buffer.alloc(2 * TAR_BLOCK)]);
  const chunks: Buffer[] = [];
  const frames: SeekEntry[] = [];
  for (const parts of contents) {
    const f = encodeRawFrame(parts);
    chunks.push(...f.buffers);
    frames.push({ compressedSize: f.size, decompressedSize: f.contentSize });
  }
  chunks.push(encodeSeekTable(frames));
  await writeFile(file, Buffer.concat(chunks));
  return { manifest };
}
