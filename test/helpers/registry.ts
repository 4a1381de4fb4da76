/**
 * Starts Debian's real Docker Distribution (`/usr/bin/docker-registry`) on a free
 * loopback port with a throw-away filesystem store. Never a mock: tests talk to
 * the same server code the secure zone runs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const REGISTRY_BIN = process.env['DOCKER_REGISTRY_BIN'] ?? '/usr/bin/docker-registry';

export interface RunningRegistry {
  /** `127.0.0.1:PORT` */
  host: string;
  /** The temp dir holding config, htpasswd and the storage root. */
  dataDir: string;
  /** The registry process (the bench reads its CPU time). */
  pid: number | undefined;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  htpasswd?: { username: string; password: string };
  /** Serve HTTPS with this PEM certificate and key (e.g. from selfSignedCert). */
  tls?: { certFile: string; keyFile: string };
}

/**
 * A self-signed certificate for 127.0.0.1 / localhost (openssl), written to `dir`.
 * Returns the paths; the certificate is its own CA.
 */
export function selfSignedCert(dir: string): { certFile: string; keyFile: string } {
  const certFile = path.join(dir, 'registry.crt');
  const keyFile = path.join(dir, 'registry.key');
  const r = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', keyFile, '-out', certFile],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { certFile, keyFile };
}

const children = new Set<ChildProcess>();
let exitHooked = false;

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  const killAll = (): void => {
    for (const c of children) {
      try {
        c.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    children.clear();
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      killAll();
      process.kill(process.pid, sig);
    });
  }
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** A bcrypt htpasswd line. Uses `htpasswd` (apache2-utils), else python3's crypt module. */
export function bcryptHtpasswdLine(username: string, password: string): string {
  const ht = spawnSync('htpasswd', ['-nbB', '-C', '5', username, password], { encoding: 'utf8' });
  if (ht.status === 0 && ht.stdout.includes(':$2')) return ht.stdout.trim();
  const py = spawnSync(
    'python3',
    ['-W', 'ignore', '-c', 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)))', password],
    { encoding: 'utf8' },
  );
  if (py.status === 0 && py.stdout.startsWith('$2')) return `${username}:${py.stdout.trim()}`;
  throw new Error('cannot create a bcrypt htpasswd entry: install apache2-utils (htpasswd)');
}

function probe(host: string, secure: boolean): Promise<number | undefined> {
  return new Promise((resolve) => {
    const get = secure ? https.get : http.get;
    const req = get({ host: '127.0.0.1', port: Number(host.split(':')[1]), path: '/v2/', agent: false, timeout: 1000, rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => {
      req.destroy();
      resolve(undefined);
    });
  });
}

function configYaml(dataDir: string, addr: string, htpasswdFile: string | undefined, tls: StartRegistryOptions['tls']): string {
  const lines = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(path.join(dataDir, 'storage'))}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${addr}`,
  ];
  if (tls) lines.push('  tls:', `    certificate: ${JSON.stringify(tls.certFile)}`, `    key: ${JSON.stringify(tls.keyFile)}`);
  if (htpasswdFile) {
    lines.push('auth:', '  htpasswd:', '    realm: test-registry', `    path: ${JSON.stringify(htpasswdFile)}`);
  }
  return `${lines.join('\n')}\n`;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child);
    return;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
  children.delete(child);
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RunningRegistry> {
  if (!existsSync(REGISTRY_BIN)) throw new Error(`${REGISTRY_BIN} not found: apt-get install docker-registry`);
  hookExit();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'bundle-registry-'));
  let htpasswdFile: string | undefined;
  if (opts.htpasswd) {
    htpasswdFile = path.join(dataDir, 'htpasswd');
    await writeFile(htpasswdFile, `${bcryptHtpasswdLine(opts.htpasswd.username, opts.htpasswd.password)}\n`);
  }
  let lastError = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const configFile = path.join(dataDir, 'config.yml');
    await writeFile(configFile, configYaml(dataDir, host, htpasswdFile, opts.tls));
    const child = spawn(REGISTRY_BIN, ['serve', configFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, OTEL_TRACES_EXPORTER: 'none' },
    });
    children.add(child);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const deadline = Date.now() + 15_000;
    let up = false;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      const status = await probe(host, opts.tls !== undefined);
      if (status === 200 || status === 401) {
        up = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (up) {
      let stopped = false;
      return {
        host,
        dataDir,
        pid: child.pid,
        async stop() {
          if (stopped) return;
          stopped = true;
          await stopChild(child);
          await rm(dataDir, { recursive: true, force: true });
        },
      };
    }
    lastError = stderr.trim();
    await stopChild(child);
  }
  await rm(dataDir, { recursive: true, force: true });
  throw new Error(`docker-registry did not start: ${lastError}`);
}

/** `repo:tag -> digest` of every tag under `prefix/` of a registry, read from its own API (a witness independent of the tool). */
export async function targetState(registryHost: string, prefix: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const catalog = (await (await fetch(`http://${registryHost}/v2/_catalog?n=1000`)).json()) as { repositories: string[] };
  for (const repo of catalog.repositories.filter((r) => r.startsWith(`${prefix}/`))) {
    const tags = ((await (await fetch(`http://${registryHost}/v2/${repo}/tags/list`)).json()) as { tags: string[] | null }).tags ?? [];
    for (const tag of tags) {
      const res = await fetch(`http://${registryHost}/v2/${repo}/manifests/${tag}`, {
        method: 'HEAD',
        headers: {
          accept:
            'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json',
        },
      });
      out.set(`${repo.slice(prefix.length + 1)}:${tag}`, res.headers.get('docker-content-digest') ?? '?');
    }
  }
  return out;
}
