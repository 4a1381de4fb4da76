import { readFile } from 'node:fs/promises';
import { ArchiveReader } from '../archive/reader.js';
import { requireTrust, trustedManifest, type TrustOptions } from '../bundle/trust.js';
import { parseTarget, type PushTarget } from '../push/destination.js';
import { BlobSource } from '../serve/blobs.js';
import type { DevfileRecord } from '../devfile/record.js';
import { DevfileRegistry } from '../serve/devfile.js';
import { DistributionApi } from '../serve/distribution.js';
import { ServeLog, type LogFormat } from '../serve/log.js';
import { RepositoryView } from '../serve/repositories.js';
import { startServer, type Route } from '../serve/server.js';
import { BundleError, errorMessage, UsageError } from '../util/errors.js';

export interface ServeOptions extends TrustOptions {
  listen: string;
  /** Folders holding more volumes of a bundle written in volumes (--volumes-dir). */
  volumesDir?: string[];
  prefix?: string;
  keepRegistryHost?: boolean;
  advertise?: string;
  tlsCert?: string;
  tlsKey?: string;
  logFormat: LogFormat;
}

/** How long requests in flight may run on after SIGTERM before they are cut. */
const SHUTDOWN_GRACE_MS = 10_000;
/** Images listed one per line at start-up (the rest are counted). */
const LISTED_IMAGES = 50;

/** `HOST:PORT`, `[V6]:PORT` or a bare `PORT` (loopback). Any address but loopback must be named. */
export function parseListen(listen: string): { host: string; port: number } {
  const bad = (why: string): UsageError => new UsageError(`--listen ${listen}: ${why}`);
  let host = '127.0.0.1';
  let portText = listen;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d+)$/.exec(listen);
  if (m) {
    host = m[1] ?? m[2]!;
    portText = m[3]!;
    if (!host) throw bad('name the address to listen on (127.0.0.1:PORT for this host only, 0.0.0.0:PORT for every interface)');
  } else if (!/^\d+$/.test(listen)) {
    throw bad('expected HOST:PORT, e.g. 127.0.0.1:5000');
  }
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw bad('the port must be 0 to 65535');
  return { host, port };
}

export async function serveCommand(file: string, opts: ServeOptions): Promise<number> {
  const { host, port } = parseListen(opts.listen);
  if (!!opts.tlsCert !== !!opts.tlsKey) throw new UsageError('--tls-cert and --tls-key go together');
  if (opts.logFormat !== 'text' && opts.logFormat !== 'json') throw new UsageError(`--log-format ${String(opts.logFormat)}: expected text or json`);
  const trusted = await requireTrust(opts, 'serve');
  const tls = opts.tlsCert && opts.tlsKey ? { cert: await readPem(opts.tlsCert, '--tls-cert'), key: await readPem(opts.tlsKey, '--tls-key') } : undefined;
  const reader = await ArchiveReader.open(file, { volumesDirs: opts.volumesDir });
  const log = new ServeLog(opts.logFormat);
  try {
    const manifest = await trustedManifest(reader, trusted, 'serve');
    if (!trusted) log.event('warn', '--insecure-skip-signature: serving without checking who made this bundle');
    const target = servedTarget(opts);
    const view = await RepositoryView.build(reader, manifest.images, target);
    for (const w of view.warnings) log.event('warn', w);
    if (manifest.base) {
      log.event('warn', `this is an update of ${manifest.base.name}: the ${manifest.base.blobs.length} layers it leaves out are not served (404); serve or push the base for those`);
    }
    const blobs = new BlobSource(reader);
    const api = new DistributionApi(view, blobs, reader);
    const routes: Route[] = [(req, res, url) => (url.pathname === '/v2' || url.pathname.startsWith('/v2/') ? api.handle(req, res, url) : undefined)];
    const devfileRecord = manifest.sources?.devfile as DevfileRecord | undefined;
    let devfiles: DevfileRegistry | undefined;
    let server;
    try {
      server = await startServer({ host, port, tls, routes, log });
    } catch (err) {
      throw new UsageError(`cannot listen on ${opts.listen}: ${errorMessage(err)}`);
    }
    const advertised = opts.advertise ?? server.address;
    try {
      if (devfileRecord) {
        // Devfiles name images where this server serves them: rewritten once the address is known.
        devfiles = await DevfileRegistry.build(reader, manifest.images, devfileRecord, view, blobs, { ...target, registry: advertised });
        for (const f of devfiles.failures) log.event('warn', `devfile ${f}`);
        const registry = devfiles;
        routes.push((req, res, url) => registry.route(req, res, url));
      }
    } catch (err) {
      await server.close(0);
      throw err;
    }
    const images = view.images.map((i) => ({ source: i.image.source, reference: `${advertised}/${i.repository}:${i.tags[0]}`, digest: i.image.digest }));
    const signer = trusted ? 'signature verified' : 'signature NOT checked';
    if (log.format === 'json') {
      log.event('info', 'listening', {
        address: server.address,
        url: `${server.scheme}://${server.address}/v2/`,
        ...(devfiles ? { devfileIndex: `${server.scheme}://${server.address}/index` } : {}),
        bundle: file,
        repositories: view.repositories.size,
        images,
      });
    } else {
      log.event('info', `serving ${file} (${images.length} images in ${view.repositories.size} repositories, ${signer}) at ${server.scheme}://${server.address}/v2/`);
      if (devfiles) log.event('info', `devfile registry (${devfiles.size} stacks and samples, images at ${advertised}) at ${server.scheme}://${server.address}/index`);
      for (const i of images.slice(0, LISTED_IMAGES)) log.event('info', `  ${i.reference}  <- ${i.source}`);
      if (images.length > LISTED_IMAGES) log.event('info', `  ... and ${images.length - LISTED_IMAGES} more (GET /v2/_catalog)`);
    }
    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    log.event('info', `${signal}: shutting down (requests in flight get ${SHUTDOWN_GRACE_MS / 1000} s to finish)`);
    const { cut } = await server.close(SHUTDOWN_GRACE_MS);
    await devfiles?.close();
    log.event(cut ? 'warn' : 'info', cut ? `stopped; ${cut} requests were cut off` : 'stopped', { cut });
    return 0;
  } finally {
    await reader.close();
  }
}

/** Where images are served, as push's target: `--advertise` (or a placeholder host) and `--prefix`. */
function servedTarget(opts: ServeOptions): PushTarget {
  const prefix = opts.prefix?.replace(/^\/+|\/+$/g, '') ?? '';
  try {
    return parseTarget(`${opts.advertise ?? 'served.invalid'}${prefix ? `/${prefix}` : ''}`, opts.keepRegistryHost);
  } catch (err) {
    const which = opts.advertise && !/^[a-zA-Z0-9.-]+(:\d+)?$|^\[[0-9a-fA-F:]+\](:\d+)?$/.test(opts.advertise) ? `--advertise ${opts.advertise}: expected HOST:PORT` : `--prefix ${opts.prefix}: not a valid repository path (lowercase letters, digits, . _ - and /)`;
    throw err instanceof UsageError ? new UsageError(which) : err;
  }
}

async function readPem(file: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new BundleError(`${flag} ${file}: ${errorMessage(err)}`, 2);
  }
}
