/**
 * containers-registries.conf(5) as podman and skopeo read it, for pulls: which
 * locations to try for an image, in which order, and which are blocked.
 * Parsing and endpoint computation only (pure; no network).
 *
 * API:
 *   loadRegistriesConfig(explicit?: string, env?): Promise<RegistriesConf | undefined>
 *     What podman reads: the file (registriesConfPath) and the drop-in folders
 *     (registriesConfDropInDirs), merged; undefined when there is none.
 *   registriesConfPath(explicit?: string, env?, exists?): string | undefined
 *     --registries-conf FILE, else $HOME/.config/containers/registries.conf,
 *     else /etc/containers/registries.conf, each only when present (an
 *     explicit FILE must exist: UsageError).
 *   loadRegistriesConf(file: string): Promise<RegistriesConf>   (one file)
 *   parseRegistriesConf(text: string, file: string): RegistriesConf
 *     Any problem is one UsageError line naming the file (and the TOML line).
 *   pullPlan(conf, registry, repository, byDigest): PullPlan
 *     { blocked: entry } or { endpoints: Endpoint[] }: mirrors in order (those
 *     allowed for this kind of pull), then the primary (rewritten) location.
 *   matchesRegistry(conf, registry): boolean  (could any entry apply to this host?)
 *
 * Semantics (containers/image sysregistriesv2):
 * - `[[registry]]` `prefix` (default: `location`) matches `host[/path]` of an
 *   image name at a path boundary; the longest prefix wins. `*.example.com`
 *   matches any host under example.com (not example.com itself); such an
 *   entry may not set `location` and pulls from the image's own host; any
 *   other prefix without a location is its own location.
 * - `location` replaces the matched prefix: prefix `registry.access.redhat.com/ubi8`,
 *   location `mirror.corp/rh/ubi8` turns `registry.access.redhat.com/ubi8/ubi:8.9`
 *   into `mirror.corp/rh/ubi8/ubi:8.9`. Mirrors rewrite the same way.
 * - `insecure = true`: plain HTTP and unverified TLS for that location only.
 * - `blocked = true`: pulls matching the entry fail.
 * - `mirror-by-digest-only = true` (entry) or `pull-from-mirror = "digest-only"`
 *   (mirror) keeps a mirror to pulls by digest; `"tag-only"` to pulls by tag.
 * - Version 1 files (`[registries.insecure]`, `[registries.block]`) are read
 *   as their v2 equivalents. Keys this tool has no use for
 *   (`unqualified-search-registries`, `short-name-mode`, `[aliases]`,
 *   `credential-helpers`) are accepted and ignored.
 * - Drop-ins: `*.conf` in /etc/containers/registries.conf.d, then in
 *   ~/.config/containers/registries.conf.d (only the latter when the user's
 *   own registries.conf is the file read), in name order; an entry of a
 *   later file replaces an earlier entry with the same prefix.
 * Difference: a prefix `example.com` does not match `example.com:5000/...`
 * (containers/image matches it, and documents that as a bug not to rely on).
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { DOCKER_HUB } from '../oci/reference.js';
import { UsageError } from '../util/errors.js';

export type PullFromMirror = 'all' | 'digest-only' | 'tag-only';

export interface MirrorEntry {
  location: string;
  insecure: boolean;
  pullFromMirror: PullFromMirror;
}

export interface RegistryEntry {
  /** The file that gave this entry (for messages). */
  file: string;
  prefix: string;
  /** Empty only for a wildcard prefix: the image's own host. */
  location: string;
  insecure: boolean;
  blocked: boolean;
  mirrorByDigestOnly: boolean;
  mirrors: MirrorEntry[];
}

export interface RegistriesConf {
  /** The files read, in order, for messages. */
  file: string;
  registries: RegistryEntry[];
}

/** One place to try: a registry host and the repository there. */
export interface Endpoint {
  /** host[:port] to contact (docker.io for Docker Hub). */
  registry: string;
  repository: string;
  insecure: boolean;
  /** A `[[registry.mirror]]` rather than the primary location. */
  mirror: boolean;
}

export type PullPlan = { blocked: RegistryEntry; endpoints?: undefined } | { blocked?: undefined; endpoints: Endpoint[]; entry?: RegistryEntry };

export const USER_REGISTRIES_CONF = join('.config', 'containers', 'registries.conf');
export const SYSTEM_REGISTRIES_CONF = '/etc/containers/registries.conf';
export const USER_REGISTRIES_CONF_D = join('.config', 'containers', 'registries.conf.d');
export const SYSTEM_REGISTRIES_CONF_D = '/etc/containers/registries.conf.d';

function homeOf(env: NodeJS.ProcessEnv): string {
  return env['HOME'] || homedir();
}

/** The drop-in folders read after `file` (as containers/image chooses them). */
export function registriesConfDropInDirs(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string[] {
  const userFile = join(homeOf(env), USER_REGISTRIES_CONF);
  const userDir = join(homeOf(env), USER_REGISTRIES_CONF_D);
  return file === userFile ? [userDir] : [SYSTEM_REGISTRIES_CONF_D, userDir];
}

/** The registries configuration podman would use for pulls: the file, then its drop-ins, merged. */
export async function loadRegistriesConfig(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<RegistriesConf | undefined> {
  const file = registriesConfPath(explicit, env);
  const parts: RegistriesConf[] = file ? [await loadRegistriesConf(file)] : [];
  for (const dir of registriesConfDropInDirs(file, env)) {
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names.filter((n) => n.endsWith('.conf')).sort()) {
      const f = join(dir, name);
      if ((await stat(f).catch(() => undefined))?.isFile()) parts.push(await loadRegistriesConf(f));
    }
  }
  return parts.length ? mergeRegistriesConf(parts) : undefined;
}

/** Later files' entries replace earlier ones with the same prefix; the rest are kept, in order. */
export function mergeRegistriesConf(parts: RegistriesConf[]): RegistriesConf {
  const byPrefix = new Map<string, RegistryEntry>();
  for (const p of parts) for (const r of p.registries) byPrefix.set(r.prefix, r);
  return { file: parts.map((p) => p.file).join(', '), registries: [...byPrefix.values()] };
}

/** The file podman and skopeo would read, or undefined when there is none. */
export function registriesConfPath(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  exists: (f: string) => boolean = existsSync,
): string | undefined {
  if (explicit !== undefined) {
    if (!exists(explicit)) throw new UsageError(`--registries-conf ${explicit}: no such file`);
    return explicit;
  }
  const user = join(homeOf(env), USER_REGISTRIES_CONF);
  if (exists(user)) return user;
  return exists(SYSTEM_REGISTRIES_CONF) ? SYSTEM_REGISTRIES_CONF : undefined;
}

export async function loadRegistriesConf(file: string): Promise<RegistriesConf> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read registries configuration ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseRegistriesConf(text, file);
}

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** `location`/`prefix` as containers/image cleans it: no trailing slash, no URL scheme. */
function cleanLocation(v: string, what: string, fail: (m: string) => never): string {
  const trimmed = v.replace(/\/+$/, '');
  if (/^https?:\/\//i.test(trimmed)) fail(`${what} "${v}": URL schemes are not allowed (write host[:port][/path])`);
  if (/\s/.test(trimmed)) fail(`${what} "${v}" contains white space`);
  return trimmed;
}

export function parseRegistriesConf(text: string, file: string): RegistriesConf {
  const fail = (m: string): never => {
    throw new UsageError(`${file}: ${m}`);
  };
  let doc: Table;
  try {
    doc = parseToml(text) as Table;
  } catch (err) {
    if (err instanceof TomlError) return fail(`invalid TOML at line ${err.line}, column ${err.column}: ${err.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '')}`);
    return fail(`invalid TOML: ${String(err)}`);
  }
  const str = (t: Table, key: string, where: string): string | undefined => {
    const v = t[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') fail(`${where}.${key} must be a string`);
    return v as string;
  };
  const bool = (t: Table, key: string, where: string): boolean => {
    const v = t[key];
    if (v === undefined) return false;
    if (typeof v !== 'boolean') fail(`${where}.${key} must be true or false`);
    return v as boolean;
  };
  const registries: RegistryEntry[] = [];

  const v1 = doc['registries'];
  if (v1 !== undefined) {
    if (!isTable(v1)) fail('registries must be a table ([registries.search], [registries.insecure], [registries.block])');
    if (doc['registry'] !== undefined) fail('mixes the version 1 [registries.*] tables with version 2 [[registry]] entries');
    const list = (name: string): string[] => {
      const t = (v1 as Table)[name];
      if (t === undefined) return [];
      const regs = isTable(t) ? t['registries'] : undefined;
      if (!Array.isArray(regs) || regs.some((r) => typeof r !== 'string')) fail(`registries.${name}.registries must be a list of strings`);
      return (regs as string[]).map((r) => cleanLocation(r, `registries.${name}`, fail));
    };
    const byLocation = new Map<string, RegistryEntry>();
    const entry = (loc: string): RegistryEntry => {
      let e = byLocation.get(loc);
      if (!e) {
        e = { file, prefix: loc, location: loc, insecure: false, blocked: false, mirrorByDigestOnly: false, mirrors: [] };
        byLocation.set(loc, e);
        registries.push(e);
      }
      return e;
    };
    list('search');
    for (const r of list('insecure')) entry(r).insecure = true;
    for (const r of list('block')) entry(r).blocked = true;
    return { file, registries };
  }

  const raw = doc['registry'];
  if (raw === undefined) return { file, registries };
  if (!Array.isArray(raw)) fail('registry must be an array of tables: write [[registry]]');
  (raw as unknown[]).forEach((r, i) => {
    const where = `registry[${i}]`;
    if (!isTable(r)) fail(`${where} must be a table`);
    const t = r as Table;
    let location = cleanLocation(str(t, 'location', where) ?? '', `${where}.location`, fail);
    let prefix = str(t, 'prefix', where);
    if (prefix === undefined || prefix === '') {
      if (!location) fail(`${where}: set location or prefix`);
      prefix = location;
    } else {
      prefix = cleanLocation(prefix, `${where}.prefix`, fail);
      if (prefix.startsWith('*.')) {
        if (location) fail(`${where}: a wildcard prefix (${prefix}) cannot have a location`);
        if (prefix.includes('/') || prefix.includes(':')) fail(`${where}.prefix ${prefix}: a wildcard prefix names hosts only (*.example.com)`);
      } else if (prefix.includes('*')) fail(`${where}.prefix ${prefix}: a wildcard may only start a prefix (*.example.com)`);
      // A prefix alone (say, to block it, or to give it mirrors) is its own location.
      else if (!location) location = prefix;
    }
    if (t['pull-from-mirror'] !== undefined) fail(`${where}: pull-from-mirror belongs to a [[registry.mirror]], not the registry`);
    const mirrorByDigestOnly = bool(t, 'mirror-by-digest-only', where);
    const mirrorsRaw = t['mirror'];
    if (mirrorsRaw !== undefined && !Array.isArray(mirrorsRaw)) fail(`${where}.mirror must be an array of tables: write [[registry.mirror]]`);
    const mirrors: MirrorEntry[] = ((mirrorsRaw as unknown[] | undefined) ?? []).map((m, j) => {
      const mw = `${where}.mirror[${j}]`;
      if (!isTable(m)) fail(`${mw} must be a table`);
      const mloc = cleanLocation(str(m as Table, 'location', mw) ?? '', `${mw}.location`, fail);
      if (!mloc) fail(`${mw}: location is not set`);
      const pfm = str(m as Table, 'pull-from-mirror', mw);
      if (pfm !== undefined && !['all', 'digest-only', 'tag-only'].includes(pfm)) fail(`${mw}.pull-from-mirror "${pfm}" is not all, digest-only or tag-only`);
      if (pfm && mirrorByDigestOnly) fail(`${mw}: pull-from-mirror cannot be combined with the registry's mirror-by-digest-only`);
      return { location: mloc, insecure: bool(m as Table, 'insecure', mw), pullFromMirror: (pfm ?? 'all') as PullFromMirror };
    });
    registries.push({ file, prefix, location, insecure: bool(t, 'insecure', where), blocked: bool(t, 'blocked', where), mirrorByDigestOnly, mirrors });
  });
  // The same location given twice must agree on insecure and blocked (containers/image refuses otherwise).
  const seen = new Map<string, RegistryEntry>();
  for (const r of registries) {
    const key = r.location || r.prefix;
    const other = seen.get(key);
    if (other && other.insecure !== r.insecure) fail(`registry ${key} is defined twice with different insecure settings`);
    if (other && other.blocked !== r.blocked) fail(`registry ${key} is defined twice with different blocked settings`);
    seen.set(key, r);
  }
  return { file, registries };
}

/** Length of `prefix` matched at the start of `name` (host/repository), or -1. */
export function prefixMatch(name: string, prefix: string): number {
  if (prefix.startsWith('*.')) {
    const domain = prefix.slice(1); // ".example.com"
    const slash = name.indexOf('/');
    const host = slash < 0 ? name : name.slice(0, slash);
    const hostname = host.replace(/:\d+$/, '');
    return hostname.endsWith(domain) && hostname.length > domain.length ? host.length : -1;
  }
  if (name === prefix) return prefix.length;
  return name.startsWith(prefix) && name[prefix.length] === '/' ? prefix.length : -1;
}

/** The entry with the longest prefix matching `name` (host/repository). */
export function findRegistry(conf: RegistriesConf, name: string): { entry: RegistryEntry; matched: number } | undefined {
  let best: { entry: RegistryEntry; matched: number } | undefined;
  for (const entry of conf.registries) {
    const n = prefixMatch(name, entry.prefix);
    if (n >= 0 && (!best || n > best.matched)) best = { entry, matched: n };
  }
  return best;
}

/** Whether any entry could apply to some repository of `registry` (so a plain store will do when none can). */
export function matchesRegistry(conf: RegistriesConf, registry: string): boolean {
  return conf.registries.some((e) => {
    if (e.prefix.startsWith('*.')) return prefixMatch(registry, e.prefix) >= 0;
    return e.prefix === registry || e.prefix.startsWith(`${registry}/`);
  });
}

function endpointAt(location: string, rest: string, insecure: boolean, mirror: boolean): Endpoint {
  const full = `${location}${rest}`;
  const slash = full.indexOf('/');
  if (slash < 0) throw new UsageError(`registries configuration rewrites to ${full}, which names no repository`);
  let registry = full.slice(0, slash);
  let repository = full.slice(slash + 1);
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  return { registry, repository, insecure, mirror };
}

/**
 * Where to pull `registry/repository` from: mirrors allowed for this kind of
 * pull, in order, then the primary location. No matching entry: the image's
 * own registry.
 */
export function pullPlan(conf: RegistriesConf | undefined, registry: string, repository: string, byDigest: boolean): PullPlan {
  const name = `${registry}/${repository}`;
  const found = conf ? findRegistry(conf, name) : undefined;
  if (!found) return { endpoints: [{ registry, repository, insecure: false, mirror: false }] };
  const { entry, matched } = found;
  if (entry.blocked) return { blocked: entry };
  const rest = name.slice(matched);
  const endpoints: Endpoint[] = [];
  for (const m of entry.mirrors) {
    const allowed = entry.mirrorByDigestOnly ? byDigest : m.pullFromMirror === 'all' || (m.pullFromMirror === 'digest-only') === byDigest;
    if (allowed) endpoints.push(endpointAt(m.location, rest, m.insecure, true));
  }
  endpoints.push(entry.location ? endpointAt(entry.location, rest, entry.insecure, false) : { registry, repository, insecure: entry.insecure, mirror: false });
  return { endpoints, entry };
}
