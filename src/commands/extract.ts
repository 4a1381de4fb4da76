import { resolve as resolvePath } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ArchiveReader } from '../archive/reader.js';
import { blobPath, INDEX_MEMBER } from '../archive/writer.js';
import type { BundleManifest, BundleMember } from '../bundle/manifest.js';
import { requireTrust, trustedManifest, type TrustOptions } from '../bundle/trust.js';
import { CopyEngine } from '../copy/engine.js';
import { mapLimit } from '../copy/limit.js';
import { ANNOTATION_REF_NAME } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import { OciLayoutWriter } from '../store/oci-layout-writer.js';
import { writeAtomically } from '../util/atomic-file.js';
import { isSha256Digest, verified, verifyBuffer } from '../util/digest.js';
import { BundleError, UsageError, errorMessage } from '../util/errors.js';
import { humanBytes } from '../util/progress.js';
import { printJson, progressFor, type OutputOptions } from './common.js';

export interface ExtractOptions extends OutputOptions, TrustOptions {
  ociLayout?: string;
  member?: string;
  output?: string;
  concurrency: number;
}

export async function extractCommand(file: string, opts: ExtractOptions): Promise<number> {
  if (!!opts.ociLayout === !!opts.member) throw new UsageError('extract needs --oci-layout DIR, or --member PATH with -o OUT (one of them)');
  if (opts.member && !opts.output) throw new UsageError('--member needs -o OUT (a file, or - for stdout)');
  if (opts.ociLayout && opts.output) throw new UsageError('-o goes with --member; --oci-layout names the folder itself');
  const trusted = await requireTrust(opts, 'extract');
  const reader = await ArchiveReader.open(file, { volumesDirs: opts.volumesDir });
  try {
    const manifest = await trustedManifest(reader, trusted, 'extract');
    const progress = await progressFor(opts);
    if (!trusted) progress.warn('--insecure-skip-signature: extracting without checking who made this bundle');
    return opts.member ? await extractMember(reader, manifest, opts.member, opts.output!, opts) : await extractLayout(reader, manifest, opts.ociLayout!, opts);
  } finally {
    await reader.close();
  }
}

/** One member, by its path in the bundle or its digest, checked as it is written. */
async function extractMember(reader: ArchiveReader, manifest: BundleManifest, wanted: string, output: string, opts: ExtractOptions): Promise<number> {
  const path = isSha256Digest(wanted) ? blobPath(wanted) : wanted;
  const member = manifest.members.find((m) => m.path === path);
  if (!member) throw new UsageError(`${reader.path} has no member ${wanted}`, 'bundle inspect lists the images; members are oci-layout, index.json and blobs/sha256/<hex>');
  const source = verified(reader.openMember(member.path), member.digest, member.size, member.path);
  if (output === '-') {
    // The last piece is held back until the digest is proven: a bad member never reaches stdout whole.
    await pipeline(source, process.stdout, { end: false });
  } else {
    await writeAtomically(resolvePath(output), async (fh) => {
      for await (const chunk of source) await fh.write(chunk as Buffer);
    }).catch((err: unknown) => {
      throw err instanceof BundleError ? err : new UsageError(`cannot write ${output}: ${errorMessage(err)}`);
    });
  }
  if (opts.json) printJson({ bundle: reader.path, member: member.path, digest: member.digest, size: member.size, output });
  else if (!opts.quiet && output !== '-') process.stdout.write(`wrote ${member.path} (${humanBytes(member.size)}, ${member.digest} verified) to ${output}\n`);
  return 0;
}

/** Every image into a standard OCI image layout, by the one copy engine. */
async function extractLayout(reader: ArchiveReader, manifest: BundleManifest, dir: string, opts: ExtractOptions): Promise<number> {
  const started = Date.now();
  const progress = await progressFor(opts);
  const layout = await OciLayoutWriter.open(dir);
  // The bundle's own index.json (checked against its digest) gives each image's descriptor and annotations.
  const indexMember = manifest.members.find((m) => m.path === INDEX_MEMBER);
  const entries = indexMember ? await bundleIndex(reader, indexMember) : [];
  const engine = new CopyEngine(reader, layout, { concurrency: opts.concurrency, progress });
  const totalBytes = manifest.members.filter((m) => m.path.startsWith('blobs/')).reduce((n, m) => n + m.size, 0);
  progress.phase(`extracting to ${dir}`, manifest.images.length, totalBytes);
  const failures: { source: string; error: string }[] = [];
  const done = new Set<string>();
  await mapLimit(manifest.images, opts.concurrency * 2, async (image) => {
    try {
      await engine.copyImage({ srcRepo: '', dstRepo: '', desc: { digest: image.digest, mediaType: image.mediaType, size: image.size }, tags: [], label: image.source });
      done.add(image.refName);
    } catch (err) {
      failures.push({ source: image.source, error: errorMessage(err) });
      progress.warn(`${image.source}: ${errorMessage(err)}`);
    }
  });
  progress.finishPhase(failures.length === 0);
  const listed = manifest.images
    .filter((i) => done.has(i.refName))
    .map((i) => entries.find((e) => e.annotations?.[ANNOTATION_REF_NAME] === i.refName) ?? { mediaType: i.mediaType, digest: i.digest, size: i.size, annotations: { [ANNOTATION_REF_NAME]: i.refName } });
  if (listed.length > 0) await layout.writeIndex(listed);
  const s = engine.stats;
  const summary = {
    bundle: reader.path,
    ociLayout: dir,
    images: listed.length,
    failed: failures,
    blobsWritten: s.blobsWritten,
    manifestsWritten: s.manifestsWritten,
    blobsKept: s.blobsSkipped,
    bytesWritten: s.bytesWritten,
    seconds: (Date.now() - started) / 1000,
  };
  if (opts.json) printJson(summary);
  else if (!opts.quiet || failures.length) {
    process.stdout.write(
      `extracted ${listed.length} of ${manifest.images.length} images to ${dir}: ${s.blobsWritten} blobs written (${humanBytes(s.bytesWritten)}), ` +
        `${s.blobsSkipped} already there, ${s.manifestsWritten} manifests written, in ${summary.seconds.toFixed(1)} s\n`,
    );
    for (const f of failures) process.stdout.write(`FAILED ${f.source}: ${f.error}\n`);
  }
  if (failures.length && manifest.base) {
    progress.warn(`this is an update of ${manifest.base.name}: it leaves out the layers its base carried; extract ${manifest.base.name} into ${dir} first, then this`);
  }
  return failures.length ? 1 : 0;
}

async function bundleIndex(reader: ArchiveReader, member: BundleMember): Promise<Descriptor[]> {
  const bytes = await reader.readMember(member.path);
  verifyBuffer(bytes, member.digest, member.size, member.path);
  try {
    return (JSON.parse(bytes.toString('utf8')) as { manifests?: Descriptor[] }).manifests ?? [];
  } catch {
    throw new BundleError(`${member.path} of ${reader.path} is not valid JSON`);
  }
}
