/**
 * Low-level zstd framing for the .airgap format (spec/airgap-format.md):
 * hand-built raw frames, one-frame-per-chunk compression, frame header
 * parsing, and the seek table of the zstd seekable format
 * (zstd contrib/seekable_format/zstd_seekable_compression_format.md).
 */
import binding from 'zstd-napi/binding.js';

export const ZSTD_MAGIC = 0xfd2fb528;
/** Skippable frame magic used by the seekable format for its seek table. */
export const SEEK_TABLE_SKIPPABLE_MAGIC = 0x184d2a5e;
export const SKIPPABLE_MAGIC_MASK = 0xfffffff0;
export const SKIPPABLE_MAGIC_BASE = 0x184d2a50;
export const SEEKABLE_MAGIC = 0x8f92eab1;
/** Seek table footer: Number_Of_Frames u32, Seek_Table_Descriptor u8, Seekable_Magic_Number u32. */
export const SEEK_TABLE_FOOTER_SIZE = 9;
/** Largest block a zstd frame may hold (Block_Maximum_Size). */
export const MAX_BLOCK_SIZE = 128 * 1024;
/**
 * Frames larger than this (decompressed) are refused: no frame of format 1.x holds more than
 * 64 MiB of data plus the tar padding (spec 3, 11), and a reader allocates a frame's size to
 * decode it, so a frame claiming more is a bomb, not a bundle.
 */
export const MAX_FRAME_CONTENT = 64 * 1024 * 1024 + 512;

/** Per-frame entry of the seek table. */
export interface SeekEntry {
  compressedSize: number;
  decompressedSize: number;
  /** Only present when the table carries checksums (never written by this tool). */
  checksum?: number;
}

export interface FrameHeader {
  /** Bytes of magic + frame header (offset of the first block). */
  headerSize: number;
  /** Frame_Content_Size when present, else null. */
  contentSize: number | null;
  singleSegment: boolean;
  hasChecksum: boolean;
  dictionaryId: number;
}

export class ZstdFormatError extends Error {}

// ---------------------------------------------------------------------------
// Raw frames

/** Frame header (magic included) for a single-segment frame with the given content size. */
export function rawFrameHeader(contentSize: number): Buffer {
  let fcsFlag: number;
  let fcsBytes: number;
  if (contentSize < 256) {
    fcsFlag = 0;
    fcsBytes = 1;
  } else if (contentSize < 65536 + 256) {
    fcsFlag = 1;
    fcsBytes = 2;
  } else if (contentSize <= 0xffffffff) {
    fcsFlag = 2;
    fcsBytes = 4;
  } else {
    fcsFlag = 3;
    fcsBytes = 8;
  }
  const buf = Buffer.alloc(5 + fcsBytes);
  buf.writeUInt32LE(ZSTD_MAGIC, 0);
  // Frame_Header_Descriptor: FCS flag (bits 7-6), Single_Segment (bit 5), no checksum, no dictionary.
  buf[4] = (fcsFlag << 6) | 0x20;
  switch (fcsBytes) {
    case 1:
      buf[5] = contentSize;
      break;
    case 2:
      buf.writeUInt16LE(contentSize - 256, 5);
      break;
    case 4:
      buf.writeUInt32LE(contentSize, 5);
      break;
    default:
      buf.writeBigUInt64LE(BigInt(contentSize), 5);
  }
  return buf;
}

function blockHeader(size: number, last: boolean): Buffer {
  // Block_Header: Last_Block (bit 0), Block_Type raw = 0 (bits 1-2), Block_Size (bits 3-23).
  const v = (size << 3) | (last ? 1 : 0);
  const b = Buffer.allocUnsafe(3);
  b[0] = v & 0xff;
  b[1] = (v >>> 8) & 0xff;
  b[2] = (v >>> 16) & 0xff;
  return b;
}

/** Stored size of a raw frame holding `contentSize` bytes (the writer plans regions with it). */
export function rawFrameSize(contentSize: number): number {
  const blocks = Math.max(1, Math.ceil(contentSize / MAX_BLOCK_SIZE));
  return rawFrameHeader(contentSize).length + 3 * blocks + contentSize;
}

/**
 * Encode `parts` (logically concatenated) as one raw zstd frame. Returns the
 * frame as a list of buffers to write in order; the data buffers are
 * zero-copy subarrays of `parts`.
 */
export function encodeRawFrame(parts: readonly Buffer[]): { buffers: Buffer[]; size: number; contentSize: number } {
  let contentSize = 0;
  for (const p of parts) contentSize += p.length;
  const out: Buffer[] = [rawFrameHeader(contentSize)];
  let size = out[0]!.length;
  if (contentSize === 0) {
    out.push(blockHeader(0, true));
    return { buffers: out, size: size + 3, contentSize };
  }
  let remainingTotal = contentSize;
  let pi = 0;
  let po = 0;
  while (remainingTotal > 0) {
    const blockSize = Math.min(MAX_BLOCK_SIZE, remainingTotal);
    remainingTotal -= blockSize;
    out.push(blockHeader(blockSize, remainingTotal === 0));
    size += 3 + blockSize;
    let need = blockSize;
    while (need > 0) {
      const p = parts[pi]!;
      const take = Math.min(need, p.length - po);
      out.push(po === 0 && take === p.length ? p : p.subarray(po, po + take));
      po += take;
      need -= take;
      if (po === p.length) {
        pi++;
        po = 0;
      }
    }
  }
  return { buffers: out, size, contentSize };
}

// ---------------------------------------------------------------------------
// Compressed frames

/**
 * Compresses each chunk as one independent frame (content size in the
 * header, no checksum). Input and output go through scratch buffers that are
 * reused, so memory stays flat; only the (small) result is a new Buffer.
 */
export class FrameCompressor {
  private readonly cctx = new binding.CCtx();
  private inBuf: Buffer = Buffer.alloc(0);
  private outBuf: Buffer = Buffer.alloc(0);

  constructor(readonly level: number) {
    this.cctx.setParameter(binding.CParameter.compressionLevel, level);
    this.cctx.setParameter(binding.CParameter.contentSizeFlag, 1);
    this.cctx.setParameter(binding.CParameter.checksumFlag, 0);
  }

  /** One frame holding `parts` (logically concatenated). */
  compress(parts: Buffer | readonly Buffer[]): Buffer {
    let src: Buffer;
    if (Buffer.isBuffer(parts)) {
      src = parts;
    } else if (parts.length === 1) {
      src = parts[0]!;
    } else {
      let n = 0;
      for (const p of parts) n += p.length;
      if (this.inBuf.length < n) this.inBuf = Buffer.allocUnsafe(n);
      let pos = 0;
      for (const p of parts) {
        p.copy(this.inBuf, pos);
        pos += p.length;
      }
      src = this.inBuf.subarray(0, n);
    }
    const bound = binding.compressBound(src.length);
    if (this.outBuf.length < bound) this.outBuf = Buffer.allocUnsafe(bound);
    const len = this.cctx.compress2(this.outBuf, src);
    return Buffer.from(this.outBuf.subarray(0, len));
  }
}

let sharedDctx: binding.DCtx | undefined;

// ---------------------------------------------------------------------------
// Frame parsing

/** Parse the header of the zstd frame at the start of `buf` (which must hold at least 18 bytes or the whole frame). */
export function parseFrameHeader(buf: Buffer): FrameHeader {
  if (buf.length < 6) throw new ZstdFormatError('zstd frame too short');
  const magic = buf.readUInt32LE(0);
  if (magic !== ZSTD_MAGIC) throw new ZstdFormatError(`bad zstd frame magic 0x${magic.toString(16)}`);
  const fhd = buf[4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd & 0x20) !== 0;
  if (fhd & 0x08) throw new ZstdFormatError('reserved bit set in zstd frame header');
  // A decoder must not interpret the unused bit; a writer of this format never sets it, so set it is a changed byte.
  if (fhd & 0x10) throw new ZstdFormatError('unused bit set in zstd frame header (this format never sets it)');
  const hasChecksum = (fhd & 0x04) !== 0;
  const didFlag = fhd & 0x03;
  let pos = 5;
  if (!singleSegment) pos += 1; // Window_Descriptor
  const didBytes = [0, 1, 2, 4][didFlag]!;
  let dictionaryId = 0;
  if (buf.length < pos + didBytes) throw new ZstdFormatError('zstd frame header truncated');
  if (didBytes === 1) dictionaryId = buf[pos]!;
  else if (didBytes === 2) dictionaryId = buf.readUInt16LE(pos);
  else if (didBytes === 4) dictionaryId = buf.readUInt32LE(pos);
  pos += didBytes;
  const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : [0, 2, 4, 8][fcsFlag]!;
  if (buf.length < pos + fcsBytes) throw new ZstdFormatError('zstd frame header truncated');
  let contentSize: number | null = null;
  if (fcsBytes === 1) contentSize = buf[pos]!;
  else if (fcsBytes === 2) contentSize = buf.readUInt16LE(pos) + 256;
  else if (fcsBytes === 4) contentSize = buf.readUInt32LE(pos);
  else if (fcsBytes === 8) contentSize = Number(buf.readBigUInt64LE(pos));
  pos += fcsBytes;
  return { headerSize: pos, contentSize, singleSegment, hasChecksum, dictionaryId };
}

/**
 * If `frame` (exactly one whole frame) consists of raw blocks only, return
 * zero-copy views of its content; otherwise null.
 */
export function rawFrameContent(frame: Buffer, header: FrameHeader = parseFrameHeader(frame)): Buffer[] | null {
  const out: Buffer[] = [];
  let pos = header.headerSize;
  for (;;) {
    if (pos + 3 > frame.length) throw new ZstdFormatError('zstd block header truncated');
    const v = frame[pos]! | (frame[pos + 1]! << 8) | (frame[pos + 2]! << 16);
    const last = (v & 1) === 1;
    const type = (v >> 1) & 3;
    const size = v >>> 3;
    if (type !== 0) return null;
    pos += 3;
    if (pos + size > frame.length) throw new ZstdFormatError('zstd raw block truncated');
    if (size > 0) out.push(frame.subarray(pos, pos + size));
    pos += size;
    if (last) break;
  }
  if (header.hasChecksum) pos += 4;
  if (pos !== frame.length) throw new ZstdFormatError('zstd frame size does not match its blocks');
  return out;
}

/**
 * Decode one whole frame, checking its content size against `expectedSize`.
 * Raw frames are returned as zero-copy views; others go through zstd-napi.
 */
export function decodeFrame(frame: Buffer, expectedSize: number): Buffer[] {
  if (expectedSize > MAX_FRAME_CONTENT) throw new ZstdFormatError(`the seek table says this frame holds ${expectedSize} bytes, more than a frame may`);
  const header = parseFrameHeader(frame);
  if (header.contentSize !== null && header.contentSize !== expectedSize) {
    throw new ZstdFormatError(`zstd frame holds ${header.contentSize} bytes, seek table says ${expectedSize}`);
  }
  if (header.dictionaryId !== 0) throw new ZstdFormatError('zstd frame needs a dictionary');
  const raw = header.hasChecksum ? null : rawFrameContent(frame, header);
  let parts: Buffer[];
  if (raw) {
    parts = raw;
  } else {
    sharedDctx ??= new binding.DCtx();
    // Allocated by Node (so V8 accounts for it and collects it promptly), sized from the seek table.
    const out = Buffer.allocUnsafe(expectedSize);
    try {
      if (binding.findFrameCompressedSize(frame) !== frame.length) throw new Error('frame length does not match the seek table');
      const n = sharedDctx.decompress(out, frame);
      if (n !== expectedSize) throw new Error(`decompressed to ${n} bytes, seek table says ${expectedSize}`);
    } catch (err) {
      throw new ZstdFormatError(`zstd frame does not decompress: ${(err as Error).message}`);
    }
    parts = out.length ? [out] : [];
  }
  let n = 0;
  for (const p of parts) n += p.length;
  if (n !== expectedSize) throw new ZstdFormatError(`zstd frame decompressed to ${n} bytes, seek table says ${expectedSize}`);
  return parts;
}

// ---------------------------------------------------------------------------
// Seek table

/** The seek table as one skippable frame (checksum flag off). */
export function encodeSeekTable(entries: readonly SeekEntry[]): Buffer {
  const n = entries.length;
  const frameSize = n * 8 + SEEK_TABLE_FOOTER_SIZE;
  const buf = Buffer.allocUnsafe(8 + frameSize);
  buf.writeUInt32LE(SEEK_TABLE_SKIPPABLE_MAGIC, 0);
  buf.writeUInt32LE(frameSize, 4);
  let pos = 8;
  for (const e of entries) {
    buf.writeUInt32LE(e.compressedSize, pos);
    buf.writeUInt32LE(e.decompressedSize, pos + 4);
    pos += 8;
  }
  buf.writeUInt32LE(n, pos);
  buf[pos + 4] = 0; // Seek_Table_Descriptor: no checksums
  buf.writeUInt32LE(SEEKABLE_MAGIC, pos + 5);
  return buf;
}

/** Parse the seek table footer (the last 9 bytes of a file). */
export function parseSeekTableFooter(footer: Buffer): { frames: number; checksums: boolean; tableSize: number } {
  if (footer.length !== SEEK_TABLE_FOOTER_SIZE) throw new ZstdFormatError('seek table footer must be 9 bytes');
  if (footer.readUInt32LE(5) !== SEEKABLE_MAGIC) throw new ZstdFormatError('no seekable magic number');
  const frames = footer.readUInt32LE(0);
  const descriptor = footer[4]!;
  // Bits 2-6 are reserved and 0-1 unused: this format never sets them, so a set one is a changed byte.
  if (descriptor & 0x7f) throw new ZstdFormatError('reserved or unused bits set in seek table descriptor');
  const checksums = (descriptor & 0x80) !== 0;
  const tableSize = 8 + frames * (checksums ? 12 : 8) + SEEK_TABLE_FOOTER_SIZE;
  return { frames, checksums, tableSize };
}

/** Decode a whole seek-table skippable frame (as produced by encodeSeekTable, or with checksums). */
export function decodeSeekTable(table: Buffer): SeekEntry[] {
  if (table.length < 8 + SEEK_TABLE_FOOTER_SIZE) throw new ZstdFormatError('seek table too short');
  const { frames, checksums, tableSize } = parseSeekTableFooter(table.subarray(table.length - SEEK_TABLE_FOOTER_SIZE));
  if (tableSize !== table.length) throw new ZstdFormatError('seek table size does not match its frame count');
  if (table.readUInt32LE(0) !== SEEK_TABLE_SKIPPABLE_MAGIC) throw new ZstdFormatError('seek table is not in a skippable frame');
  if (table.readUInt32LE(4) !== table.length - 8) throw new ZstdFormatError('seek table frame size is inconsistent');
  const entrySize = checksums ? 12 : 8;
  const out: SeekEntry[] = new Array<SeekEntry>(frames);
  let pos = 8;
  for (let i = 0; i < frames; i++) {
    const e: SeekEntry = { compressedSize: table.readUInt32LE(pos), decompressedSize: table.readUInt32LE(pos + 4) };
    if (checksums) e.checksum = table.readUInt32LE(pos + 8);
    out[i] = e;
    pos += entrySize;
  }
  return out;
}
