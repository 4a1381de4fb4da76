/**
 * Rewrites one control member of a .airgap file the way an attacker with a hex
 * editor and this format's spec would: the frames are rebuilt, the seek table
 * updated, so the file is still a well-formed archive; only the content lies.
 */
import assert from 'node:assert/strict';
import { open, readFile, writeFile } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import {
  decodeSeekTable,
  encodeRawFrame,
  encodeSeekTable,
  parseFrameHeader,
  parseSeekTableFooter,
  decodeFrame,
  SEEK_TABLE_FOOTER_SIZE,
  type SeekEntry,
} from '../../src/archive/zstd-frames.js';
import { CONTROL_FRAMES } from '../../src/archive/reader.js';
import { encodeFileHeader, padding, TAR_BLOCK } from '../../src/archive/tar.js';
import { MANIFEST_MEMBER, MANIFEST_PAYLOAD_TYPE, SIGNATURE_MEMBER } from '../../src/bundle/manifest.js';
import { signEnvelope } from '../../src/sign/dsse.js';

/** Control frames from the end: manifest header, manifest data, signature header, signature data, end of archive. */
const MANIFEST_DATA = CONTROL_FRAMES - 1;
const SIGNATURE_DATA = CONTROL_FRAMES - 3;

export async function rewriteControlMember(file: string, which: 'manifest' | 'signature', edit: (content: Buffer) => Buffer): Promise<void> {
  const { frames, entries } = splitFrames(await readFile(file));
  const index = entries.length - (which === 'manifest' ? MANIFEST_DATA : SIGNATURE_DATA);
  const content = Buffer.concat(decodeFrame(frames[index]!, entries[index]!.decompressedSize));
  // The data frame holds the member's bytes and then the tar padding; keep the length so the header stays true.
  const json = content.subarray(0, content.indexOf(0) < 0 ? content.length : content.indexOf(0));
  const edited = edit(json);
  if (edited.length !== json.length) throw new Error('edit must keep the length');
  const replaced = Buffer.concat([edited, content.subarray(json.length)]);
  const frame = encodeRawFrame([replaced]);
  frames[index] = Buffer.concat(frame.buffers);
  entries[index] = { compressedSize: frame.size, decompressedSize: frame.contentSize };
  await writeFile(file, Buffer.concat([...frames, encodeSeekTable(entries)]));
}

/** Flip one byte of a stored blob in place: find `needle` (bytes of the blob) in the file, flip the byte `skip` past it. */
export async function flipByteAfter(path: string, needle: Buffer, skip: number, mask = 0xff): Promise<void> {
  const whole = await readFile(path);
  const at = whole.indexOf(needle);
  assert.ok(at > 0, 'the blob\'s bytes are found in the file (stored raw)');
  const fh = await open(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at + skip);
    b[0] = b[0]! ^ mask;
    await fh.write(b, 0, 1, at + skip);
  } finally {
    await fh.close();
  }
}

export interface SplitBundle {
  /** Each frame's bytes, in file order (the seek table not included). */
  frames: Buffer[];
  entries: SeekEntry[];
}

/** The frames of a bundle, as its seek table lists them. */
export function splitFrames(whole: Buffer): SplitBundle {
  const { tableSize } = parseSeekTableFooter(whole.subarray(whole.length - SEEK_TABLE_FOOTER_SIZE));
  const entries = decodeSeekTable(whole.subarray(whole.length - tableSize));
  const frames: Buffer[] = [];
  let pos = 0;
  for (const e of entries) {
    frames.push(whole.subarray(pos, pos + e.compressedSize));
    pos += e.compressedSize;
  }
  return { frames, entries };
}

/** Frames and a seek table that describes them exactly. */
export function joinFrames(frames: readonly Buffer[]): Buffer {
  const entries: SeekEntry[] = frames.map((f) => {
    const size = parseFrameHeader(f).contentSize;
    if (size === null) throw new Error('a frame without a content size');
    return { compressedSize: f.length, decompressedSize: size };
  });
  return Buffer.concat([...frames, encodeSeekTable(entries)]);
}

/**
 * Replace the manifest and its envelope with any bytes (any length): the five control frames
 * are rebuilt as the writer would, so the file stays well framed and only the content says
 * what it says. With `sign`, the envelope is made over the new manifest with that key.
 */
export function replaceControlMembers(whole: Buffer, manifest: Buffer, envelope: Buffer | { sign: KeyObject }, mtime: Date): Buffer {
  const { frames } = splitFrames(whole);
  const env = Buffer.isBuffer(envelope)
    ? envelope
    : Buffer.from(`${JSON.stringify(signEnvelope(manifest, MANIFEST_PAYLOAD_TYPE, envelope.sign), null, 2)}\n`);
  const control: Buffer[] = [];
  for (const [path, data] of [
    [MANIFEST_MEMBER, manifest],
    [SIGNATURE_MEMBER, env],
  ] as const) {
    control.push(Buffer.concat(encodeRawFrame([encodeFileHeader(path, data.length, mtime)]).buffers));
    control.push(Buffer.concat(encodeRawFrame([data, Buffer.alloc(padding(data.length))]).buffers));
  }
  control.push(Buffer.concat(encodeRawFrame([Buffer.alloc(2 * TAR_BLOCK)]).buffers));
  return joinFrames([...frames.slice(0, frames.length - CONTROL_FRAMES), ...control]);
}
