/**
 * Real parts for devfile registry tests: a git daemon serving local repositories on
 * loopback, a plain HTTP server serving files on loopback, hand-made zips (even
 * hostile ones), and a registry folder in the upstream devfile/registry layout.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { crc32 } from 'node:zlib';
import { freePort } from './registry.js';

const run = promisify(execFile);

export async function git(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('git', args, {
    cwd,
    env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.invalid', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.invalid', GIT_CONFIG_NOSYSTEM: '1' },
  });
  return stdout.trim();
}

export async function writeFiles(root: string, files: Record<string, string>): Promise<void> {
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, rel)), { recursive: true });
    await writeFile(join(root, rel), text);
  }
}

/** A bare repository `<base>/<name>.git` made from commits (each a set of files, tagged when `tag` is given). */
export async function makeRepo(base: string, name: string, commits: { files: Record<string, string>; tag?: string }[]): Promise<void> {
  const work = join(base, `${name}-work`);
  await mkdir(work, { recursive: true });
  await git(work, 'init', '--quiet', '-b', 'main');
  for (const [i, c] of commits.entries()) {
    await writeFiles(work, c.files);
    await git(work, 'add', '-A');
    await git(work, 'commit', '--quiet', '-m', `commit ${i}`);
    if (c.tag) await git(work, 'tag', c.tag);
  }
  await git(base, 'clone', '--quiet', '--bare', work, `${name}.git`);
}

export interface GitDaemon {
  url(name: string): string;
  stop(): Promise<void>;
}

/** `git daemon` on 127.0.0.1, exporting every repository under `base`. */
export async function startGitDaemon(base: string): Promise<GitDaemon> {
  const port = await freePort();
  const child: ChildProcess = spawn('git', ['daemon', '--reuseaddr', '--export-all', `--base-path=${base}`, '--listen=127.0.0.1', `--port=${port}`, '--informative-errors', base], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Ready when it accepts a connection.
  for (let i = 0; i < 100; i++) {
    try {
      await run('git', ['ls-remote', `git://127.0.0.1:${port}/none.git`]);
      break;
    } catch (err) {
      if (/not exported|does not appear|repository/i.test(String((err as { stderr?: string }).stderr))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    url: (name) => `git://127.0.0.1:${port}/${name}.git`,
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

export interface FileServer {
  url(path: string): string;
  /** Paths requested, in order. */
  requests: string[];
  stop(): Promise<void>;
}

/** A plain HTTP server on 127.0.0.1 serving the given bodies by path (404 otherwise). */
export async function startFileServer(files: Record<string, Buffer>): Promise<FileServer> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    requests.push(path);
    const body = files[path];
    if (!body) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/zip', 'Content-Length': body.length }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: (p) => `http://127.0.0.1:${port}${p}`,
    requests,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A zip with stored (uncompressed) entries, names taken as given (so a hostile `../x` can be made). */
export function storedZip(entries: Record<string, string>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, text] of Object.entries(entries)) {
    const data = Buffer.from(text);
    const nameBuf = Buffer.from(name);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(0x031e, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBuf.length, 28);
    central.writeUInt32LE((0o100644 << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBuf, data);
    centrals.push(central, nameBuf);
    offset += 30 + nameBuf.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(Object.keys(entries).length, 8);
  eocd.writeUInt16LE(Object.keys(entries).length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, eocd]);
}
