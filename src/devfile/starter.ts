/**
 * Starter projects (and samples) made offline, the way the upstream offline build
 * does: a git one cloned at `checkoutFrom.revision` (only `subDir` when set, never
 * `.git`), a zip one downloaded; each stored as `<name>-offline.zip`. Everything is
 * written under the scratch folder given; nothing elsewhere.
 */
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { BundleError, errorMessage } from '../util/errors.js';
import type { StarterProject } from './devfile-images.js';
import { repackZip, zipDirectory } from './zip.js';

const run = promisify(execFile);

/** The file name the upstream offline build gives a starter project. */
export function offlineZipName(name: string): string {
  return `${name}-offline.zip`;
}

/**
 * Git transports a devfile may name: `ext::` could run commands, and `file://` would
 * let a downloaded devfile put a local repository of this machine into the bundle.
 */
const GIT_PROTOCOLS = 'http:https:git:ssh';

async function git(args: string[], cwd: string | undefined, what: string): Promise<void> {
  try {
    await run('git', args, {
      cwd,
      env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_ALLOW_PROTOCOL: GIT_PROTOCOLS, GIT_CONFIG_NOSYSTEM: '1', LC_ALL: 'C' },
      maxBuffer: 8 << 20,
    });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim().split('\n').filter(Boolean).pop();
    throw new BundleError(`${what}: git ${args[0]} failed: ${stderr ?? errorMessage(err)}`);
  }
}

/** Clone `url` at `revision` (a branch, tag or commit; default branch when absent) into `dir`. */
export async function cloneAt(url: string, revision: string | undefined, dir: string, what: string): Promise<void> {
  if (url.startsWith('-')) throw new BundleError(`${what}: ${JSON.stringify(url)} is not a git URL`);
  if (!revision) {
    await git(['clone', '--quiet', '--depth', '1', '--', url, dir], undefined, what);
    return;
  }
  if (revision.startsWith('-')) throw new BundleError(`${what}: ${JSON.stringify(revision)} is not a revision`);
  await git(['clone', '--quiet', '--no-checkout', '--', url, dir], undefined, what);
  await git(['-c', 'advice.detachedHead=false', 'checkout', '--quiet', revision, '--'], dir, `${what} (revision ${revision})`);
}

/** The folder `subDir` names inside `root`, refusing one that leaves it. */
function inside(root: string, subDir: string | undefined, what: string): string {
  if (!subDir) return root;
  const full = resolve(root, subDir);
  const rel = relative(root, full);
  if (rel.startsWith('..') || resolve(rel) === rel) throw new BundleError(`${what}: subDir ${JSON.stringify(subDir)} leaves the project`);
  return full;
}

async function download(url: string, file: string, what: string): Promise<void> {
  if (!/^https?:\/\//i.test(url)) throw new BundleError(`${what}: zip location ${JSON.stringify(url)} is not an http(s) URL`);
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow' });
  } catch (err) {
    throw new BundleError(`${what}: cannot download ${url}: ${errorMessage((err as { cause?: unknown }).cause ?? err)}`);
  }
  if (!res.ok || !res.body) throw new BundleError(`${what}: cannot download ${url}: HTTP ${res.status}`);
  await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(file));
}

export interface OfflineZip {
  name: string;
  /** `<name>-offline.zip` */
  fileName: string;
  /** Where it was written (under the scratch folder). */
  path: string;
  entries: string[];
  /** Where it came from, for the record and the comment at push. */
  origin: string;
}

/**
 * Make `<name>-offline.zip` for one starter project in `outDir`, working in `scratch`.
 * `what` names the stack and file for messages.
 */
export async function offlineStarterZip(sp: StarterProject, outDir: string, scratch: string, mtime: Date, what: string): Promise<OfflineZip> {
  const label = `${what}: starter project ${sp.name}`;
  const fileName = offlineZipName(sp.name);
  const out = join(outDir, fileName);
  await mkdir(outDir, { recursive: true });
  const work = await mkdtemp(join(scratch, 'sp-'));
  try {
    if (sp.git) {
      const remoteName = sp.git.checkoutFrom?.remote ?? Object.keys(sp.git.remotes)[0]!;
      const url = sp.git.remotes[remoteName];
      if (!url) throw new BundleError(`${label}: checkoutFrom.remote ${remoteName} is not one of its remotes`);
      const clone = join(work, 'clone');
      await cloneAt(url, sp.git.checkoutFrom?.revision, clone, label);
      const root = inside(clone, sp.subDir, label);
      if (!(await stat(root).catch(() => undefined))?.isDirectory()) throw new BundleError(`${label}: subDir ${JSON.stringify(sp.subDir)} is not in ${url}`);
      const entries = await zipDirectory(root, out, mtime);
      const rev = sp.git.checkoutFrom?.revision;
      return { name: sp.name, fileName, path: out, entries, origin: `git ${url}${rev ? ` at ${rev}` : ''}${sp.subDir ? `, subDir ${sp.subDir}` : ''}` };
    }
    const url = sp.zip!.location;
    const downloaded = join(work, 'download.zip');
    await download(url, downloaded, label);
    const entries = await repackZip(downloaded, out, mtime, label, sp.subDir);
    return { name: sp.name, fileName, path: out, entries, origin: `zip ${url}${sp.subDir ? `, subDir ${sp.subDir}` : ''}` };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
