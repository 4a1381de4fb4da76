/**
 * The `operators` source kind: an operator catalog (file-based, `/configs`)
 * filtered to the packages, channels and versions asked for.
 *
 * The catalog image's layers are streamed (src/oci/layer-files.ts) and its
 * `/configs` read entry by entry (src/openshift/fbc.ts): the entries of the
 * selected packages go to a scratch file, their metadata stays in memory. The
 * bundles selected and their `relatedImages` are carried; a filtered catalog
 * image is built (src/oci/image-builder.ts: the catalog image plus one layer
 * that hides the old `/configs`, holds the selected packages with a default
 * channel among those kept, and removes opm's pre-built cache, whose flags are
 * dropped from the command so opm serves the new `/configs`). The original
 * catalog image travels too only with `full: true`.
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import type { BundleImage } from '../bundle/manifest.js';
import type { ConfigOperatorCatalog } from '../config/config.js';
import { prepareImage, preparedRoot } from '../oci/image-builder.js';
import { forEachLayerEntry, readEntry, readSmallBlob, whiteoutTarget } from '../oci/layer-files.js';
import { parseManifest, platformMatches } from '../oci/manifest.js';
import { formatReference, parseReference, referenceSelector, repositoryName, type ImageReference } from '../oci/reference.js';
import { platformString, type Descriptor } from '../oci/types.js';
import { addEntry, filteredEntry, JsonObjectSplitter, MAX_YAML_FILE_BYTES, selectPackage, yamlEntries, entryPackage, type PackageMeta, type SelectedPackage } from '../openshift/fbc.js';
import { finishPlan, NeededImages, resolveNeeded } from '../openshift/needed-images.js';
import type { ContentStore } from '../store/store.js';
import { digestHex, verified, verifyBuffer } from '../util/digest.js';
import { BundleError, errorMessage } from '../util/errors.js';
import type { CreateContext, SourceImage, SourceKind, SourcePlan } from './source.js';

export const CONFIGS_LABEL = 'operators.operatorframework.io.index.configs.v1';

/** What the manifest records for each catalog (`sources.operators[]`). */
export interface CatalogRecord {
  /** The catalog as the config named it. */
  catalog: string;
  /** Digest of the catalog image read (the platform's manifest). */
  digest: string;
  /** The filtered catalog image built from it. */
  filtered: { refName: string; digest: string };
  /** The original catalog image, when carried (`full: true`). */
  full?: { refName: string };
  packages: {
    name: string;
    defaultChannel: string;
    originalDefaultChannel?: string;
    channels: string[];
    bundles: { name: string; version?: string; image: string }[];
  }[];
  relatedImages: string[];
}

interface CatalogImage {
  ref: ImageReference;
  source: string;
  store: ContentStore;
  top: Descriptor;
  manifest: Descriptor;
  platform?: string;
  layers: Descriptor[];
  configsDir: string;
  cmd?: string[];
  entrypoint?: string[];
}

async function openCatalog(spec: ConfigOperatorCatalog, ctx: CreateContext): Promise<CatalogImage> {
  const ref = parseReference(spec.catalog);
  const source = formatReference(ref);
  const store = ctx.storeFor(ref.registry);
  const top = await store.resolve(ref.repository, referenceSelector(ref));
  const fetch = async (d: Descriptor, what: string): Promise<Buffer> => {
    const m = await store.fetchManifest(ref.repository, d);
    verifyBuffer(m.bytes, d.digest, d.size, what);
    return m.bytes;
  };
  let manifest = top;
  let parsed = parseManifest(await fetch(top, source), top.mediaType, source);
  let platform: string | undefined;
  if (parsed.isIndex) {
    const wanted = spec.platforms?.[0] ?? 'linux/amd64';
    const entries = parsed.manifests.filter((m) => m.platform && m.platform.architecture !== 'unknown');
    const chosen = entries.find((m) => platformMatches(m.platform, wanted)) ?? (entries.length === 1 && !spec.platforms ? entries[0] : undefined);
    if (!chosen) throw new BundleError(`catalog ${source} has no platform ${wanted} (it has ${entries.map((m) => platformString(m.platform)).join(', ')})`);
    platform = platformString(chosen.platform);
    manifest = chosen;
    parsed = parseManifest(await fetch(chosen, `${source} (${platform})`), chosen.mediaType, source);
  }
  const [config, ...layers] = parsed.blobs;
  if (!config) throw new BundleError(`catalog ${source}: an image without a config`);
  const cfg = JSON.parse((await readSmallBlob(store, ref.repository, config, `${source} config`)).toString('utf8')) as {
    config?: { Labels?: Record<string, string>; Cmd?: string[]; Entrypoint?: string[] };
  };
  const configsDir = (cfg.config?.Labels?.[CONFIGS_LABEL] ?? '/configs').replace(/^\/+|\/+$/g, '');
  if (!configsDir) throw new BundleError(`catalog ${source}: label ${CONFIGS_LABEL} names no folder`);
  return { ref, source, store, top, manifest, platform, layers, configsDir, cmd: cfg.config?.Cmd, entrypoint: cfg.config?.Entrypoint };
}

/** opm's pre-built cache: the folder its command names, and the command without the cache flags. */
export function cacheOf(args: string[] | undefined): { dir?: string; args?: string[] } {
  if (!args) return {};
  let dir: string | undefined;
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const m = /^--cache-dir(?:=(.*))?$/.exec(a);
    if (m) {
      dir = m[1] ?? args[++i];
      continue;
    }
    if (/^--cache-(only|enforce-integrity)(=.*)?$/.test(a)) continue;
    out.push(a);
  }
  return dir === undefined && out.length === args.length ? {} : { dir, args: out };
}

/**
 * Stream the catalog's layers; write every entry of a wanted package (all when
 * `wanted` is undefined) to `scratch` as `<layer>\t<file>\t<json>` lines. Returns
 * the files still alive after later layers replaced or whited out earlier ones.
 */
async function readConfigs(cat: CatalogImage, wanted: Set<string> | undefined, scratch: WriteStream): Promise<Map<string, number>> {
  const live = new Map<string, number>();
  const prefix = `${cat.configsDir}/`;
  const write = async (line: string): Promise<void> => {
    if (!scratch.write(line)) await once(scratch, 'drain');
  };
  for (const [index, layer] of cat.layers.entries()) {
    const label = `catalog ${cat.source} layer ${layer.digest}`;
    const seen: string[] = [];
    const removed: { path: string; opaque: boolean }[] = [];
    const raw = await cat.store.openBlob(cat.ref.repository, layer);
    await forEachLayerEntry(verified(raw, layer.digest, layer.size, label), label, async (entry) => {
      const wh = whiteoutTarget(entry.path);
      if (wh) {
        removed.push(wh);
        return;
      }
      if (entry.type !== 'file' || !entry.path.startsWith(prefix)) return;
      const isJson = entry.path.endsWith('.json');
      const isYaml = /\.ya?ml$/.test(entry.path);
      if (!isJson && !isYaml) return;
      seen.push(entry.path);
      const what = `catalog ${cat.source}: ${entry.path}`;
      const keep = async (e: Record<string, unknown>, text?: string): Promise<void> => {
        const pkg = entryPackage(e);
        if (!pkg || (wanted && !wanted.has(pkg))) return;
        await write(`${index}\t${entry.path}\t${text !== undefined && !text.includes('\n') ? text : JSON.stringify(e)}\n`);
      };
      if (isJson) {
        const splitter = new JsonObjectSplitter(what);
        for await (const chunk of entry.stream) {
          for (const text of splitter.push(chunk)) {
            let e: Record<string, unknown>;
            try {
              e = JSON.parse(text) as Record<string, unknown>;
            } catch (err) {
              throw new BundleError(`${what}: ${errorMessage(err)}`);
            }
            await keep(e, text);
          }
        }
        splitter.end();
      } else {
        for (const e of yamlEntries((await readEntry(entry, MAX_YAML_FILE_BYTES, what)).toString('utf8'), what)) await keep(e);
      }
    });
    for (const wh of removed) {
      for (const p of [...live.keys()]) if ((!wh.opaque && p === wh.path) || p.startsWith(`${wh.path}/`)) live.delete(p);
    }
    for (const p of seen) live.set(p, index);
  }
  return live;
}

/** Every live entry of the scratch file, in order. */
async function* liveEntries(file: string, live: Map<string, number>): AsyncGenerator<Record<string, unknown>> {
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line) continue;
    const a = line.indexOf('\t');
    const b = line.indexOf('\t', a + 1);
    if (live.get(line.slice(a + 1, b)) !== Number(line.slice(0, a))) continue;
    yield JSON.parse(line.slice(b + 1)) as Record<string, unknown>;
  }
}

function safeName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]+/g, '_') || 'package';
}

async function planCatalog(spec: ConfigOperatorCatalog, ctx: CreateContext, needed: NeededImages, images: SourceImage[]): Promise<CatalogRecord> {
  const cat = await openCatalog(spec, ctx);
  ctx.progress.info(`  reading catalog ${cat.source}${cat.platform ? ` (${cat.platform})` : ''}`);
  const dir = await ctx.tempDir();
  const scratchFile = join(dir, 'entries.tsv');
  const scratch = createWriteStream(scratchFile);
  const wanted = spec.packages ? new Set(spec.packages.map((p) => p.name)) : undefined;
  let live: Map<string, number>;
  try {
    live = await readConfigs(cat, wanted, scratch);
  } finally {
    scratch.end();
    await once(scratch, 'close');
  }
  const packages = new Map<string, PackageMeta>();
  for await (const e of liveEntries(scratchFile, live)) addEntry(packages, e, `catalog ${cat.source}`);
  const requests = spec.packages ?? [...packages.keys()].sort().map((name) => ({ name }));
  const absent = requests.filter((r) => !packages.has(r.name)).map((r) => r.name);
  if (absent.length) throw new BundleError(`catalog ${cat.source} has no package ${absent.join(', ')}`);
  if (requests.length === 0) throw new BundleError(`catalog ${cat.source} has no packages under /${cat.configsDir}`);
  const selected = new Map<string, SelectedPackage>();
  for (const r of requests) selected.set(r.name, selectPackage(packages.get(r.name)!, r, `catalog ${cat.source}`));
  const related = new Set<string>();
  for (const sel of selected.values()) {
    for (const b of sel.bundles) {
      needed.add(b.image, `catalog ${cat.source} bundle ${b.name}`);
      for (const img of b.relatedImages) {
        needed.add(img, `catalog ${cat.source} bundle ${b.name} (related image)`);
        related.add(formatReference(parseReference(img)));
      }
    }
  }

  // The filtered /configs: one catalog.json per package, every entry on a line.
  const outs = new Map<string, { path: string; stream: WriteStream }>();
  for await (const e of liveEntries(scratchFile, live)) {
    const sel = selected.get(entryPackage(e)!);
    const kept = sel && filteredEntry(e, sel);
    if (!kept) continue;
    let out = outs.get(sel.name);
    if (!out) {
      const path = join(dir, `${safeName(sel.name)}.json`);
      out = { path, stream: createWriteStream(path) };
      outs.set(sel.name, out);
    }
    if (!out.stream.write(`${JSON.stringify(kept)}\n`)) await once(out.stream, 'drain');
  }
  for (const o of outs.values()) {
    o.stream.end();
    await once(o.stream, 'close');
  }
  const cmdCache = cacheOf(cat.cmd);
  const entryCache = cacheOf(cat.entrypoint);
  const cacheDir = (cmdCache.dir ?? entryCache.dir)?.replace(/^\/+|\/+$/g, '');
  const prepared = await prepareImage({
    base: { store: cat.store, repo: cat.ref.repository, desc: cat.top, platform: cat.platform, label: cat.source },
    layer: {
      files: [...outs.entries()].map(([name, o]) => ({ path: `${cat.configsDir}/${safeName(name)}/catalog.json`, fromFile: o.path })),
      opaqueDirs: [cat.configsDir],
      ...(cacheDir ? { whiteouts: [cacheDir] } : {}),
    },
    config: { ...(cmdCache.args ? { cmd: cmdCache.args } : {}), ...(entryCache.args ? { entrypoint: entryCache.args } : {}) },
    created: ctx.created,
    createdBy: `bundle create: ${cat.source} filtered to ${[...selected.keys()].join(', ')}`,
    tmpDir: dir,
  });
  const tag = cat.ref.tag && !cat.ref.digest ? `${cat.ref.tag}-filtered` : `filtered-${digestHex(cat.top.digest).slice(0, 12)}`;
  const filteredSource = `${repositoryName(cat.ref)}:${tag}`;
  images.push({
    store: prepared.store,
    source: filteredSource,
    refName: filteredSource,
    origin: 'operator',
    tags: [tag],
    root: preparedRoot(prepared, repositoryName(cat.ref), [tag], `filtered catalog ${filteredSource}`),
  });
  let full: CatalogRecord['full'];
  if (spec.full) {
    const tags = cat.ref.tag ? [cat.ref.tag] : [];
    images.push({
      store: cat.store,
      source: cat.source,
      refName: cat.source,
      origin: 'operator',
      tags,
      root: { srcRepo: cat.ref.repository, dstRepo: repositoryName(cat.ref), desc: cat.top, tags, platforms: spec.platforms, label: `catalog ${cat.source}` },
    });
    full = { refName: cat.source };
  }
  return {
    catalog: cat.source,
    digest: cat.manifest.digest,
    filtered: { refName: filteredSource, digest: prepared.manifest.digest },
    ...(full ? { full } : {}),
    packages: [...selected.values()].map((s) => ({
      name: s.name,
      defaultChannel: s.defaultChannel,
      ...(s.originalDefaultChannel ? { originalDefaultChannel: s.originalDefaultChannel } : {}),
      channels: s.channels.map((c) => c.name),
      bundles: s.bundles.map((b) => ({ name: b.name, ...(b.version ? { version: b.version } : {}), image: formatReference(parseReference(b.image)) })),
    })),
    relatedImages: [...related].sort(),
  };
}

export async function planCatalogs(catalogs: ConfigOperatorCatalog[], ctx: CreateContext): Promise<SourcePlan> {
  const needed = new NeededImages();
  const images: SourceImage[] = [];
  const failures: SourcePlan['failures'] = [];
  const records: CatalogRecord[] = [];
  for (const spec of catalogs) {
    try {
      records.push(await planCatalog(spec, ctx, needed, images));
    } catch (err) {
      failures.push({ source: spec.catalog, error: errorMessage(err) });
    }
  }
  const resolved = await resolveNeeded(needed, ctx, 'operator');
  return finishPlan(
    {
      images: [...images, ...resolved.images],
      failures: [...failures, ...resolved.failures],
      skipped: resolved.skipped,
      record: (copied: ReadonlyMap<string, BundleImage>): CatalogRecord[] =>
        records
          .filter((r) => copied.has(r.filtered.refName))
          .map(({ full, ...r }) => (full && copied.has(full.refName) ? { ...r, full } : r)),
    },
    ctx,
  );
}

export const operatorsKind: SourceKind<ConfigOperatorCatalog[]> = {
  kind: 'operators',
  section: (config) => (config.operators.length > 0 ? config.operators : undefined),
  plan: planCatalogs,
};
