/**
 * Registry credentials from auth files, in the order podman and skopeo look:
 * an explicit `--authfile`, `$REGISTRY_AUTH_FILE`, then
 * `$XDG_RUNTIME_DIR/containers/auth.json`, `$XDG_CONFIG_HOME/containers/auth.json`,
 * `~/.docker/config.json`. An explicit file (flag or variable) is the only one read.
 * Keys are `host[:port]`, optionally with a repository path (`host/ns`,
 * longest match wins), or URL forms (`https://index.docker.io/v1/`).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../util/errors.js';

export type Credentials =
  | { kind: 'basic'; username: string; password: string }
  | { kind: 'identityToken'; username?: string; token: string };

const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/** The auth files to read, first one with a matching entry wins. */
export function authFileCandidates(explicit?: string, env: NodeJS.ProcessEnv = process.env): { files: string[]; explicit: boolean } {
  if (explicit) return { files: [explicit], explicit: true };
  const fromEnv = env['REGISTRY_AUTH_FILE'];
  if (fromEnv) return { files: [fromEnv], explicit: true };
  const files: string[] = [];
  const runtime = env['XDG_RUNTIME_DIR'];
  if (runtime) files.push(path.join(runtime, 'containers', 'auth.json'));
  const configHome = env['XDG_CONFIG_HOME'] || path.join(env['HOME'] || os.homedir(), '.config');
  files.push(path.join(configHome, 'containers', 'auth.json'));
  files.push(path.join(env['HOME'] || os.homedir(), '.docker', 'config.json'));
  return { files, explicit: false };
}

/** Normalise an auth-file key to `host[/path]`, Docker Hub aliases folded into docker.io. */
export function normaliseAuthKey(key: string): string {
  let k = key.trim();
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(k);
  if (scheme) {
    // URL forms carry only a host (plus an API path such as /v1/ to ignore).
    k = k.slice(scheme[0].length);
    const slash = k.indexOf('/');
    if (slash >= 0) k = k.slice(0, slash);
  }
  k = k.replace(/\/+$/, '');
  const slash = k.indexOf('/');
  const host = (slash >= 0 ? k.slice(0, slash) : k).toLowerCase();
  const rest = slash >= 0 ? k.slice(slash) : '';
  return `${DOCKER_HUB_ALIASES.has(host) ? 'docker.io' : host}${rest}`;
}

interface AuthEntry {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
  identitytoken?: unknown;
}

function entryCredentials(entry: AuthEntry, file: string, key: string): Credentials | undefined {
  let username = typeof entry.username === 'string' ? entry.username : undefined;
  let password = typeof entry.password === 'string' ? entry.password : undefined;
  if (typeof entry.auth === 'string' && entry.auth !== '') {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new UsageError(`malformed auth file ${file}: the "auth" value for ${key} is not base64 of user:password`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  if (typeof entry.identitytoken === 'string' && entry.identitytoken !== '') {
    return { kind: 'identityToken', username, token: entry.identitytoken };
  }
  if (username !== undefined && password !== undefined && (username !== '' || password !== '')) {
    return { kind: 'basic', username, password };
  }
  return undefined;
}

/** Parse one auth file into normalised key -> entry. Throws UsageError naming the file. */
export function parseAuthFile(file: string, text: string): Map<string, AuthEntry> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UsageError(`malformed auth file ${file}: not valid JSON`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new UsageError(`malformed auth file ${file}: expected a JSON object with "auths"`);
  }
  const auths = (parsed as { auths?: unknown }).auths;
  const out = new Map<string, AuthEntry>();
  if (auths === undefined || auths === null) return out;
  if (typeof auths !== 'object' || Array.isArray(auths)) {
    throw new UsageError(`malformed auth file ${file}: "auths" must be an object`);
  }
  for (const [key, value] of Object.entries(auths as Record<string, unknown>)) {
    if (!value || typeof value !== 'object' || Array.isArray(value)) {
      throw new UsageError(`malformed auth file ${file}: the entry for ${normaliseAuthKey(key)} must be an object`);
    }
    const norm = normaliseAuthKey(key);
    // A plain host key and its URL form may both exist; keep the first seen.
    if (!out.has(norm)) out.set(norm, value as AuthEntry);
  }
  return out;
}

/** Credentials from one parsed file for `registry` (as the user wrote it) and optional `repo`. */
export function lookupInEntries(
  entries: Map<string, AuthEntry>,
  registry: string,
  repo: string | undefined,
  file: string,
): Credentials | undefined {
  const host = normaliseAuthKey(registry);
  const candidates: string[] = [];
  if (repo) {
    const parts = repo.split('/');
    for (let i = parts.length; i >= 1; i--) candidates.push(`${host}/${parts.slice(0, i).join('/')}`);
  }
  candidates.push(host);
  for (const key of candidates) {
    const entry = entries.get(key);
    if (entry) {
      const creds = entryCredentials(entry, file, key);
      if (creds) return creds;
    }
  }
  return undefined;
}

export interface CredentialLookup {
  credentials?: Credentials;
  /** The file the credentials came from, for messages. */
  file?: string;
}

/**
 * Find credentials for `registry` (docker.io for Docker Hub, never the API host)
 * and an optional repository. A missing explicit auth file is a UsageError;
 * missing default files are skipped.
 */
export function findCredentials(registry: string, repo?: string, authfile?: string, env: NodeJS.ProcessEnv = process.env): CredentialLookup {
  const { files, explicit } = authFileCandidates(authfile, env);
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && !explicit) continue;
      if (code === 'ENOENT' && authfile === undefined) continue; // $REGISTRY_AUTH_FILE not created yet
      throw new UsageError(`cannot read auth file ${file}: ${code ?? 'error'}`);
    }
    const entries = parseAuthFile(file, text);
    const credentials = lookupInEntries(entries, registry, repo, file);
    if (credentials) return { credentials, file };
  }
  return {};
}
