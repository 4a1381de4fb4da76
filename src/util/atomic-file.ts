import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

let counter = 0;

/** The temporary name `writeAtomically` uses next to `path` (`.<name>.partial-<pid>-<n>`). */
export const PARTIAL_NAME = /^\..+\.partial-\d+-\d+$/;

/**
 * Fill a new temporary file next to `path`, then rename it over `path`: a file
 * under its final name is always whole. The temporary file is created
 * exclusively (never through an existing file or link), the rename replaces a
 * link at `path` rather than writing through it, and on any failure the
 * temporary file is removed.
 */
export async function writeAtomically(path: string, fill: (fh: FileHandle) => Promise<unknown>): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.partial-${process.pid}-${counter++}`);
  const fh = await open(temp, 'wx', 0o644);
  try {
    await fill(fh);
    await fh.close();
    await rename(temp, path);
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw err;
  }
}
