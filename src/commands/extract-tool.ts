import { constants } from 'node:fs';
import { chmod, open, rename, rm, stat } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ArchiveReader } from '../archive/reader.js';
import { blobPath } from '../archive/writer.js';
import { checkSignature } from '../bundle/trust.js';
import { validateManifest } from '../bundle/validate.js';
import { loadTrustedKeys } from '../sign/keys.js';
import { verified } from '../util/digest.js';
import { BundleError, UsageError } from '../util/errors.js';
import { humanBytes } from '../util/progress.js';
import { printJson, progressFor, type OutputOptions } from './common.js';

export interface ExtractToolOptions extends OutputOptions {
  output: string;
  key?: string[];
  insecureSkipSignature?: boolean;
  force?: boolean;
}

/**
 * Write out the executable a bundle carries (`create --include-tool`), after the
 * signature check and with every byte checked against the digest the signed
 * manifest lists; it appears under its name only when complete.
 */
export async function extractToolCommand(file: string, opts: ExtractToolOptions): Promise<number> {
  if (!opts.key?.length && !opts.insecureSkipSignature) {
    throw new UsageError('extract-tool needs --key PUB (a trusted public key or a directory of them) to check who signed the bundle; --insecure-skip-signature extracts without that check');
  }
  const trusted = opts.key?.length ? await loadTrustedKeys(opts.key) : undefined;
  const output = resolvePath(opts.output);
  const existing = await stat(output).catch(() => undefined);
  if (existing?.isDirectory()) throw new UsageError(`-o ${opts.output} is a directory; name the file to write`);
  if (existing && !opts.force) throw new UsageError(`${opts.output} exists; pass --force to replace it`);
  const progress = await progressFor(opts);
  const reader = await ArchiveReader.open(file, { volumesDirs: opts.volumesDir });
  try {
    const sig = checkSignature(reader, trusted);
    if (sig.problems.length > 0) throw new BundleError(`refusing to extract from ${file}: ${sig.problems.map((p) => p.message).join('; ')}`, 1);
    if (!trusted) progress.warn('--insecure-skip-signature: extracting without checking who made this bundle');
    const manifest = validateManifest(JSON.parse(reader.manifestBytes.toString('utf8')));
    const exe = manifest.tool.executable;
    if (!exe) throw new BundleError(`${file} carries no executable (it was created without --include-tool)`, 1);
    const member = reader.member(blobPath(exe.digest));
    if (!member) throw new BundleError(`${file}: the manifest names the executable ${exe.digest}, but the bundle has no such member`, 1);
    const temp = `${output}.partial-${process.pid}`;
    const fh = await open(temp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o700);
    try {
      await pipeline(verified(reader.openMember(member.path), exe.digest, exe.size, `executable ${exe.digest}`), fh.createWriteStream());
      await chmod(temp, 0o755);
      await rename(temp, output);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    } finally {
      await fh.close().catch(() => undefined);
    }
    const hex = exe.digest.slice('sha256:'.length);
    if (opts.json) printJson({ bundle: file, output, sha256: hex, size: exe.size, platform: exe.platform, signedBy: sig.status.signedBy });
    else if (!opts.quiet) {
      process.stdout.write(`wrote ${output} (${exe.platform}, ${humanBytes(exe.size)}), sha256 ${hex}, ${trusted ? `signed by trusted key ${sig.status.signedBy.join(', ')}` : 'SIGNATURE NOT CHECKED'}\n`);
    }
    return 0;
  } finally {
    await reader.close();
  }
}
