import { writeFile } from 'node:fs/promises';
import { ArchiveReader } from '../archive/reader.js';
import { FORMAT_VERSION } from '../bundle/manifest.js';
import { isNewerMinor, unknownFields } from '../bundle/validate.js';
import { humanBytes } from '../util/progress.js';
import { printJson, type OutputOptions } from './common.js';

/** What is inside, from the manifest alone: instant whatever the size. Nothing here is verified. */
export interface InspectOptions extends OutputOptions {
  /** Save the manifest's exact bytes: enough for a later `create --since`. */
  manifestOut?: string;
}

export async function inspectCommand(file: string, opts: InspectOptions): Promise<number> {
  const reader = await ArchiveReader.open(file, { volumesDirs: opts.volumesDir });
  try {
    const m = reader.manifest;
    if (opts.manifestOut) await writeFile(opts.manifestOut, reader.manifestBytes);
    const contentBytes = m.members.reduce((n, x) => n + x.size, 0);
    const signers = reader.envelope.signatures.map((s) => s.keyid);
    // What a newer minor of the format added: carried along, reported, not understood.
    const unknown = unknownFields(m);
    if (opts.json) {
      printJson({
        file,
        fileSize: reader.fileSize,
        formatVersion: m.formatVersion,
        created: m.created,
        tool: m.tool,
        signatures: signers,
        verified: false,
        members: m.members.length,
        contentBytes,
        images: m.images,
        base: m.base ? { name: m.base.name, digest: m.base.digest, created: m.base.created, blobsLeftOut: m.base.blobs.length } : null,
        manifestOut: opts.manifestOut ?? null,
        unknownFields: unknown,
      });
      return 0;
    }
    const out = process.stdout;
    out.write(`${file}\n`);
    out.write(`  format ${m.formatVersion}, created ${m.created} by ${m.tool.name} ${m.tool.version}\n`);
    out.write(`  ${m.members.length} members, ${humanBytes(contentBytes)} of content in ${humanBytes(reader.fileSize)} on disk\n`);
    if (unknown.length) {
      const why = isNewerMinor(m) ? `format ${m.formatVersion} is newer than this tool's ${FORMAT_VERSION}` : `NOT valid format ${m.formatVersion}`;
      out.write(`  unknown to this version (${why}): ${unknown.join(', ')}\n`);
    }
    out.write(`  ${signers.length ? `signed by key ${signers.join(', ')}` : 'UNSIGNED'} (not checked here: run bundle verify --key)\n`);
    if (m.base) {
      const bytes = m.base.blobs.reduce((n, b) => n + b.size, 0);
      out.write(`  update of ${m.base.name} (created ${m.base.created}, manifest ${m.base.digest}): ${m.base.blobs.length} blobs (${humanBytes(bytes)}) left out\n`);
    }
    if (opts.manifestOut) out.write(`  manifest saved to ${opts.manifestOut} (for create --since)\n`);
    const exe = m.tool.executable;
    if (exe) out.write(`  carries the executable for ${exe.platform} (${humanBytes(exe.size)}), sha256 ${exe.digest.slice('sha256:'.length)}: bundle extract-tool\n`);
    out.write(`  ${m.images.length} images:\n`);
    for (const img of m.images) {
      out.write(`    ${img.source}\n      ${img.digest} ${img.mediaType.replace(/^application\//, '')}${img.platforms.length ? ` [${img.platforms.join(', ')}]` : ''}\n`);
    }
    return 0;
  } finally {
    await reader.close();
  }
}
