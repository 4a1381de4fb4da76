import { ArchiveReader } from '../archive/reader.js';
import { verifyBundle, type VerifyReport } from '../bundle/verify.js';
import { loadTrustedKeys } from '../sign/keys.js';
import { humanBytes } from '../util/progress.js';
import { printJson, progressFor, type OutputOptions } from './common.js';

export interface VerifyOptions extends OutputOptions {
  key?: string[];
  /** The base bundle of an update: check the pair. */
  base?: string;
}

export const NO_SIGNATURE_WARNING =
  'WARNING: no --key given: NOBODY\'S SIGNATURE WAS CHECKED. Integrity only: this proves the file is whole, not who made it.';

export async function verifyCommand(file: string, opts: VerifyOptions): Promise<number> {
  const trusted = opts.key && opts.key.length > 0 ? await loadTrustedKeys(opts.key) : undefined;
  const reader = await ArchiveReader.open(file, { volumesDirs: opts.volumesDir });
  const baseReader = opts.base ? await ArchiveReader.open(opts.base, { volumesDirs: opts.volumesDir }).catch(async (err: unknown) => {
    await reader.close();
    throw err;
  }) : undefined;
  try {
    const progress = await progressFor(opts);
    const report = await verifyBundle(reader, trusted, progress, baseReader);
    if (opts.json) printJson({ file, ...report });
    else printReport(file, report);
    return report.ok ? 0 : 1;
  } finally {
    await reader.close();
    await baseReader?.close();
  }
}

function printReport(file: string, r: VerifyReport): void {
  const out = process.stdout;
  if (!r.signature.checked) process.stderr.write(`${NO_SIGNATURE_WARNING}\n`);
  for (const p of r.problems) {
    out.write(`FAIL ${p.kind}: ${p.message}${p.images && p.images.length ? `\n     needed by: ${p.images.join(', ')}` : ''}\n`);
  }
  const sig = r.signature.checked
    ? r.signature.trusted
      ? `signature by trusted key ${r.signature.signedBy.join(', ')} is valid`
      : 'signature NOT trusted'
    : 'signature not checked';
  if (r.base) {
    out.write(
      `update of ${r.base.name} (created ${r.base.created}, manifest ${r.base.digest}): ${r.base.blobsLeftOut} blobs left out, ` +
        `${r.base.checked ? 'the base carries them' : 'not checked here (verify --base BASE checks the pair)'}\n`,
    );
  }
  if (r.ok) {
    out.write(`OK ${file}: ${r.images} images, ${r.members} members, ${humanBytes(r.bytes)} verified; ${sig}\n`);
  } else {
    out.write(`FAILED ${file}: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}; ${sig}\n`);
  }
}
