/**
 * Tar header blocks for .airgap members, built with tar-stream's own header
 * encoder/decoder (ustar, plus a pax extended header when a name or size does
 * not fit ustar).
 */
import { createRequire } from 'node:module';
import path from 'node:path';

export const TAR_BLOCK = 512;
/** Largest size the 11-digit octal ustar field holds. */
const USTAR_MAX_SIZE = 0o77777777777;

interface TarHeaderFields {
  name: string;
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: Date;
  type?: string | null;
  linkname?: string | null;
  uname?: string;
  gname?: string;
  pax?: Record<string, string> | null;
}

interface TarHeadersModule {
  encode(opts: Required<Pick<TarHeaderFields, 'name' | 'mode' | 'uid' | 'gid' | 'size' | 'mtime' | 'type'>> & TarHeaderFields): Buffer | null;
  decode(buf: Buffer, filenameEncoding?: string, allowUnknownFormat?: boolean): (TarHeaderFields & { size: number; type: string | null }) | null;
  encodePax(opts: { name?: string; linkname?: string; pax?: Record<string, string> }): Buffer;
  decodePax(buf: Buffer): Record<string, string>;
}

// tar-stream 3 does not export headers.js through its package "exports"; load it by file path.
const require = createRequire(import.meta.url);
const headers = require(path.join(path.dirname(require.resolve('tar-stream')), 'headers.js')) as TarHeadersModule;

export function padding(size: number): number {
  const r = size % TAR_BLOCK;
  return r === 0 ? 0 : TAR_BLOCK - r;
}

/**
 * Header block(s) for a regular file: mode 0644, uid/gid 0, the given mtime.
 * A pax header precedes the ustar one when the name is too long or not ASCII,
 * or the size exceeds the ustar field.
 */
export function encodeFileHeader(name: string, size: number, mtime: Date): Buffer {
  return encodeEntryHeader({ name, size, mode: 0o644, mtime, type: 'file' });
}

/** Header block(s) for a file or directory entry (uid/gid 0, no user names); pax as for encodeFileHeader. */
export function encodeEntryHeader(entry: { name: string; size: number; mode: number; mtime: Date; type: 'file' | 'directory' }): Buffer {
  const { name, size } = entry;
  const base = { mode: entry.mode, uid: 0, gid: 0, mtime: entry.mtime, type: entry.type, uname: '', gname: '' };
  const needSizePax = size > USTAR_MAX_SIZE;
  const plain = needSizePax ? null : headers.encode({ ...base, name, size });
  if (plain) return plain;
  const pax: Record<string, string> = {};
  if (needSizePax) pax.size = String(size);
  const paxData = headers.encodePax({ name, pax });
  // ASCII stand-in name that fits ustar, for readers without pax support.
  const short = name.replace(/[^\x20-\x7e]/g, '_').slice(-100);
  const paxHeader = headers.encode({ ...base, name: `PaxHeader/${short}`.slice(0, 100), size: paxData.length, type: 'pax-header' });
  const fileHeader = headers.encode({ ...base, name: short, size });
  if (!paxHeader || !fileHeader) throw new Error(`cannot encode a tar header for ${name}`);
  return Buffer.concat([paxHeader, paxData, Buffer.alloc(padding(paxData.length)), fileHeader]);
}

export interface DecodedHeader {
  name: string;
  size: number;
  type: string | null;
}

/** Decode one 512-byte header block; null for an all-zero block. Throws on a bad checksum or format. */
export function decodeHeaderBlock(block: Buffer): DecodedHeader | null {
  const h = headers.decode(block, 'utf-8', false);
  if (!h) return null;
  return { name: h.name, size: h.size, type: h.type };
}

export function decodePax(data: Buffer): Record<string, string> {
  return headers.decodePax(data);
}

export function isZeroBlock(block: Buffer): boolean {
  // Compare 8 bytes at a time; block is 512 bytes.
  for (let i = 0; i < block.length; i += 8) {
    if (block.readBigUInt64LE(i) !== 0n) return false;
  }
  return true;
}
