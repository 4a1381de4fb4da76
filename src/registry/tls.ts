/**
 * TLS trust for one registry, the way podman and skopeo set it up:
 * verified by default, extra CAs from files or a containers-certs.d style
 * directory (`*.crt` CAs, `*.cert` + `*.key` client certificate), and
 * `tlsVerify: false` for self-signed certificates and plain HTTP.
 */
import { readFileSync, readdirSync, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { Agent } from './undici-agent.js';
import { isLoopbackHost } from '../oci/reference.js';
import { UsageError } from '../util/errors.js';

export interface TlsOptions {
  /** Verify certificates (default true). False also allows plain HTTP. */
  tlsVerify?: boolean;
  /** Extra CA bundles (PEM) to trust. */
  caFiles?: string[];
  /** A certs.d style directory for this registry: `*.crt`, `*.cert` + `*.key`. */
  certDir?: string;
}

export interface TlsMaterial {
  rejectUnauthorized: boolean;
  /** Full CA list (system roots + extras) when extras exist, else undefined (system roots). */
  ca?: string[];
  cert?: string;
  key?: string;
}

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** The system directories podman and docker read for a registry, when they exist. */
function defaultCertDirs(host: string): string[] {
  const dirs = [path.join('/etc/containers/certs.d', host), path.join('/etc/docker/certs.d', host)];
  return dirs.filter((d) => {
    try {
      return statSync(d).isDirectory();
    } catch {
      return false;
    }
  });
}

export function loadTlsMaterial(host: string, opts: TlsOptions): TlsMaterial {
  const extraCa: string[] = [];
  let cert: string | undefined;
  let key: string | undefined;
  for (const f of opts.caFiles ?? []) extraCa.push(readPem(f, 'CA file'));
  const dirs = opts.certDir !== undefined ? [opts.certDir] : defaultCertDirs(host);
  for (const dir of dirs) {
    if (!existsSync(dir)) throw new UsageError(`certificate directory ${dir} does not exist`);
    const names = readdirSync(dir).sort();
    for (const name of names) {
      const full = path.join(dir, name);
      if (name.endsWith('.crt')) extraCa.push(readPem(full, 'CA file'));
      else if (name.endsWith('.cert') && cert === undefined) {
        const keyFile = full.slice(0, -'.cert'.length) + '.key';
        if (!existsSync(keyFile)) throw new UsageError(`client certificate ${full} has no matching key ${path.basename(keyFile)}`);
        cert = readPem(full, 'client certificate');
        key = readPem(keyFile, 'client key');
      } else if (name.endsWith('.key')) {
        const certFile = full.slice(0, -'.key'.length) + '.cert';
        if (!existsSync(certFile)) throw new UsageError(`client key ${full} has no matching certificate ${path.basename(certFile)}`);
      }
    }
  }
  return {
    rejectUnauthorized: opts.tlsVerify !== false,
    // node:tls is loaded only when extra CAs are given: a plain-HTTP loopback push never needs it.
    ca: extraCa.length ? [...(createRequire(import.meta.url)('node:tls') as typeof import('node:tls')).rootCertificates, ...extraCa] : undefined,
    cert,
    key,
  };
}

/**
 * Schemes to try, in order. https only, unless TLS verification is off (then
 * https first and plain http as the fallback, as skopeo does) or the host is
 * loopback (then plain http first: a local registry usually speaks it, and a
 * TLS one answers plain HTTP with 400, which sends the client to https).
 */
export function schemesFor(host: string, opts: TlsOptions): Array<'https' | 'http'> {
  if (opts.tlsVerify === false) return ['https', 'http'];
  if (isLoopbackHost(host)) return ['http', 'https'];
  return ['https'];
}

/** Default idle timeout: nothing received for this long fails an attempt (--timeout). */
export const DEFAULT_IDLE_TIMEOUT_MS = 120_000;

export function createAgent(material: TlsMaterial, connections?: number, idleTimeoutMs = DEFAULT_IDLE_TIMEOUT_MS): Agent {
  return new Agent({
    connections: connections && connections > 0 ? connections : null,
    connect: {
      rejectUnauthorized: material.rejectUnauthorized,
      ...(material.ca ? { ca: material.ca } : {}),
      ...(material.cert ? { cert: material.cert, key: material.key } : {}),
      timeout: Math.min(30_000, idleTimeoutMs),
    },
    headersTimeout: idleTimeoutMs,
    bodyTimeout: idleTimeoutMs,
  });
}
