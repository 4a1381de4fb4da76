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

async function listen(server: Server, requests: string[]): Promise<FileServer> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: (p) => `http://127.0.0.1:${port}${p}`,
    requests,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
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
  return listen(server, requests);
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

/** Upload a blob to a registry (monolithic POST then PUT); returns its descriptor. */
export async function uploadBlob(host: string, repo: string, data: Buffer, mediaType: string, annotations?: Record<string, string>): Promise<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }> {
  const { createHash } = await import('node:crypto');
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const start = await fetch(`http://${host}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status}`);
  const loc = new URL(start.headers.get('location')!, `http://${host}`);
  loc.searchParams.set('digest', digest);
  const put = await fetch(loc, { method: 'PUT', body: new Uint8Array(data), headers: { 'Content-Type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`upload: HTTP ${put.status}`);
  return { mediaType, digest, size: data.length, ...(annotations ? { annotations } : {}) };
}

/** Push a devfile stack artifact (config {} + titled layers) as the registry's OCI side stores it. */
export async function pushStackArtifact(host: string, stack: string, version: string, files: { title: string; mediaType: string; data: Buffer }[]): Promise<void> {
  const repo = `devfile-catalog/${stack}`;
  const config = await uploadBlob(host, repo, Buffer.from('{}'), 'application/vnd.devfileio.devfile.config.v2+json');
  const layers = [];
  for (const f of files) layers.push(await uploadBlob(host, repo, f.data, f.mediaType, { 'org.opencontainers.image.title': f.title }));
  const manifest = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers });
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${version}`, { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  if (res.status !== 201) throw new Error(`manifest: HTTP ${res.status} ${await res.text()}`);
}

/** A devfile index server on loopback: /index and /v2index from `index`, /v2/ forwarded to a real registry. */
export async function startIndexServer(index: unknown[], registryHost: string): Promise<FileServer> {
  const { request } = await import('node:http');
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    requests.push(`${req.method} ${path}`);
    if (path === '/index' || path === '/v2index' || path === '/index/all' || path === '/v2index/all') {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(index));
      return;
    }
    if (!path.startsWith('/v2/')) {
      res.writeHead(404).end();
      return;
    }
    const [h, p] = registryHost.split(':');
    const fwd = request({ host: h, port: Number(p), path, method: req.method, headers: { ...req.headers, host: registryHost } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  return listen(server, requests);
}
