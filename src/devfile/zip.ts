/**
 * Zips for starter projects, streamed entry by entry (yazl writes, yauzl reads):
 * a folder zipped as it is (without `.git`), or a downloaded zip re-packed with
 * only its `subDir`. Entries are sorted and stamped with one time, so the same
 * content gives the same bytes. A downloaded zip whose entry names leave the
 * folder (`..`, absolute paths, backslashes) is refused whole.
 */
import { createWriteStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import yazl from 'yazl';
import { BundleError, errorMessage } from '../util/errors.js';

/** Whether a zip entry name stays inside the folder it is unpacked in. */
export function safeEntryName(name: string): boolean {
  if (!name || name.includes('\\') || name.includes('\0') || name.startsWith('/') || /^[A-Za-z]:/.test(name)) return false;
  return !name.split('/').some((seg) => seg === '..');
}

async function listFiles(dir: string, prefix = ''): Promise<{ path: string; full: string; mode: number }[]> {
  const out: { path: string; full: string; mode: number }[] = [];
  const entries = (await readdir(join(dir, prefix), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (!prefix && e.name === '.git') continue;
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else if (e.isFile()) out.push({ path: rel, full: join(dir, rel), mode: (await lstat(join(dir, rel))).mode & 0o777 });
    // Symbolic links and special files are left out: a link could point outside the project.
  }
  return out;
}

/** Zip the files under `dir` (not `.git`) into `out`; returns the entry names. */
export async function zipDirectory(dir: string, out: string, mtime: Date): Promise<string[]> {
  const files = await listFiles(dir);
  const zip = new yazl.ZipFile();
  for (const f of files) zip.addFile(f.full, f.path, { mtime, mode: 0o100000 | (f.mode & 0o111 ? 0o755 : 0o644), forceDosTimestamp: true });
  zip.end();
  await pipeline(zip.outputStream, createWriteStream(out, { mode: 0o644 }));
  return files.map((f) => f.path);
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { autoClose: false, lazyEntries: true, decodeStrings: true, validateEntrySizes: true, strictFileNames: true }, (err, z) => (err ? reject(err) : resolve(z)));
  });
}

/** Names of the entries of a zip (for checks and messages). */
export async function zipEntryNames(file: string): Promise<string[]> {
  const z = await openZip(file);
  const names: string[] = [];
  try {
    for await (const e of z.eachEntry()) names.push(e.fileName);
  } finally {
    z.close();
  }
  return names;
}

/**
 * Re-pack a downloaded zip into `out`: every entry checked, and with `subDir` only
 * the entries under it (at the top). A single top folder wrapping everything (as
 * GitHub's archives have) is looked through for `subDir`.
 */
export async function repackZip(src: string, out: string, mtime: Date, what: string, subDir?: string): Promise<string[]> {
  let names: string[];
  try {
    names = await zipEntryNames(src);
  } catch (err) {
    // yauzl refuses such names itself while reading the directory.
    const outside = /^(?:invalid relative path|absolute path): (.*)$/.exec(errorMessage(err));
    if (outside) throw new BundleError(`${what}: zip entry ${JSON.stringify(outside[1])} would be written outside the project folder; refusing the zip`);
    throw new BundleError(`${what}: not a usable zip: ${errorMessage(err)}`);
  }
  const bad = names.find((n) => !safeEntryName(n));
  if (bad !== undefined) throw new BundleError(`${what}: zip entry ${JSON.stringify(bad)} would be written outside the project folder; refusing the zip`);
  let prefix = '';
  if (subDir) {
    const sub = subDir.replace(/^\/+|\/+$/g, '');
    const tops = new Set(names.map((n) => n.split('/')[0]));
    if (names.some((n) => n.startsWith(`${sub}/`))) prefix = `${sub}/`;
    else if (tops.size === 1 && names.some((n) => n.startsWith(`${[...tops][0]}/${sub}/`))) prefix = `${[...tops][0]}/${sub}/`;
    else throw new BundleError(`${what}: subDir ${JSON.stringify(subDir)} is not in the zip`);
  }
  const z = await openZip(src);
  const zip = new yazl.ZipFile();
  const kept: string[] = [];
  const done = pipeline(zip.outputStream, createWriteStream(out, { mode: 0o644 }));
  try {
    const entries: yauzl.Entry[] = [];
    for await (const e of z.eachEntry()) {
      if (e.fileName.endsWith('/') || !e.fileName.startsWith(prefix)) continue;
      entries.push(e);
    }
    entries.sort((a, b) => (a.fileName < b.fileName ? -1 : 1));
    for (const e of entries) {
      const name = e.fileName.slice(prefix.length);
      if (!name) continue;
      const stream = await z.openReadStreamPromise(e);
      const unixMode = (e.externalFileAttributes >>> 16) & 0o777;
      zip.addReadStream(stream, name, { mtime, mode: 0o100000 | (unixMode & 0o111 ? 0o755 : 0o644), forceDosTimestamp: true });
      await new Promise<void>((resolve, reject) => {
        stream.once('end', resolve);
        stream.once('error', reject);
      });
      kept.push(name);
    }
  } finally {
    zip.end();
    await done.catch(() => undefined);
    z.close();
  }
  await done;
  return kept;
}
