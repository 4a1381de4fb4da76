/**
 * A running devfile registry, read by URL: its index (`/v2index`, else `/index`)
 * and, for each stack version, the artifact its OCI side serves at
 * `devfile-catalog/<stack>:<version>` on the same host (the index server forwards
 * `/v2/` to its OCI registry). Each version is unpacked into a scratch folder
 * (devfile.yaml, the files of archive.tar, the other layers) so the rest of create
 * reads it exactly like a version folder of a checkout.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { stringify } from 'yaml';
import type { Descriptor } from '../oci/types.js';
import type { ContentStore } from '../store/store.js';
import { verified, verifyBuffer } from '../util/digest.js';
import { BundleError, errorMessage } from '../util/errors.js';
import { ARCHIVE_NAME, readArchiveTar, TITLE } from './artifact.js';
import type { RegistryFolder, SampleSource, StackSource } from './registry-folder.js';

const NAME = /^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$/i;
const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]*$/;
const MAX_INDEX = 32 << 20;

interface IndexEntry {
  name?: unknown;
  type?: unknown;
  version?: unknown;
  versions?: { version?: unknown; default?: unknown; git?: unknown }[];
  git?: unknown;
  [k: string]: unknown;
}

async function fetchIndex(base: string): Promise<IndexEntry[]> {
  const tried: string[] = [];
  for (const path of ['/v2index/all', '/v2index', '/index/all', '/index']) {
    const url = `${base}${path}`;
    let res: Response;
    try {
      res = await fetch(url, { headers: { Accept: 'application/json' } });
    } catch (err) {
      throw new BundleError(`devfile registry ${base}: cannot reach it: ${errorMessage((err as { cause?: unknown }).cause ?? err)}`);
    }
    if (res.status === 404) {
      tried.push(`${path}: 404`);
      continue;
    }
    if (!res.ok) throw new BundleError(`devfile registry ${base}: GET ${path} answered HTTP ${res.status}`);
    const text = await res.text();
    if (text.length > MAX_INDEX) throw new BundleError(`devfile registry ${base}: ${path} is larger than ${MAX_INDEX} bytes`);
    try {
      const parsed = JSON.parse(text) as unknown;
      if (!Array.isArray(parsed)) throw new Error('not a list');
      return parsed as IndexEntry[];
    } catch (err) {
      throw new BundleError(`devfile registry ${base}: ${path} is not an index (${errorMessage(err)})`);
    }
  }
  throw new BundleError(`devfile registry ${base} has no index (${tried.join(', ')})`);
}

const COPIED = ['name', 'displayName', 'description', 'icon', 'tags', 'architectures', 'projectType', 'language', 'provider', 'supportUrl'];

/** Unpack one stack version's artifact into `dir`. */
async function unpackArtifact(store: ContentStore, repo: string, version: string, dir: string, what: string): Promise<void> {
  let desc: Descriptor;
  try {
    desc = await store.resolve(repo, version);
  } catch (err) {
    throw new BundleError(`${what}: cannot find ${repo}:${version} on the registry's OCI side: ${errorMessage(err)}`);
  }
  const m = await store.fetchManifest(repo, desc);
  verifyBuffer(m.bytes, desc.digest, desc.size, what);
  const manifest = JSON.parse(m.bytes.toString('utf8')) as { layers?: Descriptor[] };
  await mkdir(dir, { recursive: true });
  for (const layer of manifest.layers ?? []) {
    const title = layer.annotations?.[TITLE];
    if (!title || title.includes('/') || title.includes('\\') || title === '..' || title === '.') throw new BundleError(`${what}: layer ${layer.digest} has no usable title (${JSON.stringify(title)})`);
    const stream = verified(await store.openBlob(repo, layer), layer.digest, layer.size, `${what} ${title}`);
    if (title === ARCHIVE_NAME) {
      await readArchiveTar(stream, async (name, mode, body) => {
        const full = join(dir, name);
        if (relative(dir, full).startsWith('..')) throw new BundleError(`${what}: archive.tar entry ${name} leaves the stack folder`);
        await mkdir(join(full, '..'), { recursive: true });
        await pipeline(body, createWriteStream(full, { mode: mode & 0o777 }));
      });
    } else {
      await pipeline(stream, createWriteStream(join(dir, title)));
    }
  }
}

/**
 * Read a registry by URL into `scratch` in the layout of a checkout. `wanted(name)`
 * says whether a stack is asked for (others are not downloaded).
 */
export async function readRegistryUrl(url: string, scratch: string, storeFor: (host: string) => ContentStore, wanted: (name: string) => boolean): Promise<RegistryFolder> {
  const base = url.replace(/\/+$/, '');
  const host = new URL(base).host;
  const index = await fetchIndex(base);
  const store = storeFor(host);
  const stacks: StackSource[] = [];
  const samples: SampleSource[] = [];
  for (const [i, e] of index.entries()) {
    const name = typeof e.name === 'string' ? e.name : '';
    if (!NAME.test(name)) throw new BundleError(`devfile registry ${base}: index entry ${i} has no valid name`);
    const versions = Array.isArray(e.versions) && e.versions.length > 0 ? e.versions : [{ version: e.version, default: true, git: e.git }];
    if (e.type === 'sample') {
      for (const v of versions) {
        const git = (v.git ?? e.git) as { remotes?: Record<string, string>; revision?: string } | undefined;
        if (!git?.remotes || Object.keys(git.remotes).length === 0) continue;
        const version = v.version === undefined ? undefined : String(v.version);
        samples.push({ name, ...(version && versions.length > 1 ? { version } : {}), isDefault: v.default === true || versions.length === 1, git: { remotes: git.remotes, ...(git.revision ? { revision: git.revision } : {}) }, entry: e });
      }
      continue;
    }
    if (!wanted(name)) continue;
    const meta: Record<string, unknown> = {};
    for (const k of COPIED) if (e[k] !== undefined) meta[k] = e[k];
    const multi = versions.length > 1;
    const stack: StackSource = { name, meta, versions: [] };
    for (const v of versions) {
      const version = String(v.version ?? '');
      if (!VERSION.test(version)) throw new BundleError(`devfile registry ${base}: stack ${name} has a version ${JSON.stringify(v.version)} that is not one`);
      const layoutPath = multi ? `stacks/${name}/${version}` : `stacks/${name}`;
      const dir = join(scratch, layoutPath);
      await unpackArtifact(store, `devfile-catalog/${name}`, version, dir, `devfile registry ${base}: stack ${name} ${version}`);
      stack.versions.push({ stack: name, version, isDefault: v.default === true || !multi, dir, layoutPath });
    }
    if (multi) {
      stack.stackYaml = stringify({ ...meta, versions: versions.map((v) => ({ version: String(v.version), ...(v.default === true ? { default: true } : {}) })) });
      stack.meta = { ...meta, versions: stack.versions.map((v) => ({ version: v.version, default: v.isDefault })) };
      await writeFile(join(scratch, 'stacks', name, 'stack.yaml'), stack.stackYaml);
    }
    stacks.push(stack);
  }
  return { root: base, stacks, samples };
}
