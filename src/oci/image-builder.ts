/**
 * The one image-building helper: a base image plus ONE new layer (like
 * go-containerregistry's mutate.Append), for images made inside the tool (the
 * devfile registry index, filtered operator catalogs).
 *
 * API:
 *   prepareImage(spec: ImageBuildSpec): Promise<PreparedImage>
 *     Builds the new layer, config and manifest. `prepared.store` serves them
 *     over the base store, so `{ store, root: preparedRoot(prepared, dstRepo, tags, label) }`
 *     is copied by the copy engine like any other source (e.g. by `bundle
 *     create`). Call `prepared.close()` once copied (removes the layer's
 *     temporary file, if one was needed).
 *   buildImage(spec: ImageBuildSpec, out: BuildOutput): Promise<BuiltImage>
 *     prepareImage + copy into `out.dst` (any WritableContentStore: the archive
 *     writer, a RegistryStore) under `out.repo` and `out.tags` + close.
 *   sourceDateEpoch(env = process.env): Date | undefined
 *     SOURCE_DATE_EPOCH as a Date (UsageError when it is not whole seconds).
 *
 * What comes out:
 * - the base's layers byte for byte (the copy engine reads them from the base
 *   store, verifies every byte, skips or mounts what the destination has);
 * - the new layer: a deterministic gzip tar (see layer-builder.ts), mtimes =
 *   `created`; kept in memory when small, else in ONE temporary file;
 * - the config: the base config's JSON with `rootfs.diff_ids` + the new
 *   diff_id, `history` + `{created, created_by, comment?}`, `created`, and the
 *   edits (labels, env, cmd, entrypoint, workingDir, user); every other field
 *   kept;
 * - the manifest in the base's family: Docker schema 2 base -> Docker media
 *   types, OCI -> OCI; base manifest fields kept (annotations merged with
 *   `annotations`, OCI only), `subject` dropped (the new image is not the
 *   base's referrer).
 * An index base contributes one platform's manifest: `base.platform`, else the
 * only platform, else linux/amd64. The result is a single-platform image.
 *
 * Example, a source of `bundle create` (the create loop copies it like any image):
 *   const store = storeFor(ref.registry);           // pulls honour --registries-conf
 *   const desc = await store.resolve(ref.repository, referenceSelector(ref));
 *   const p = await prepareImage({
 *     base: { store, repo: ref.repository, desc, label: formatReference(ref) },
 *     layer: { files: [{ path: 'index.json', data }], opaqueDirs: ['/stacks'], whiteouts: ['/tmp/cache'] },
 *     config: { labels: { 'org.example.built-by': 'bundle' } },
 *     created: sourceDateEpoch(), createdBy: 'bundle create: devfile registry index',
 *   });
 *   const image = { store: p.store, root: preparedRoot(p, 'devfile/index', ['latest'], 'devfile index'), ... };
 *   // after the bundle is written: await p.close()
 *
 * Deterministic: the same base, layer content, edits, `created` and
 * `createdBy` give the same digests. `created` defaults to SOURCE_DATE_EPOCH,
 * else 1970-01-01T00:00:00Z.
 */
import { Readable } from 'node:stream';
import { CopyEngine, type CopiedImage, type CopyRoot } from '../copy/engine.js';
import type { Limiter } from '../copy/limit.js';
import { OverlayStore } from '../store/overlay-store.js';
import type { ContentStore, WritableContentStore } from '../store/store.js';
import { sha256Digest, verified, verifyBuffer } from '../util/digest.js';
import { BundleError, UsageError } from '../util/errors.js';
import type { Progress } from '../util/progress.js';
import { buildLayer, type NewLayer } from './layer-builder.js';
import { platformMatches } from './manifest.js';
import { isIndexMediaType, MediaType } from './media-types.js';
import { platformString, type Descriptor } from './types.js';

export type { LayerFile, NewLayer } from './layer-builder.js';

export interface BaseImage {
  store: ContentStore;
  repo: string;
  /** The base's top descriptor: an image manifest, or an index. */
  desc: Descriptor;
  /** For an index: the platform (`os/arch[/variant]`) to build on. */
  platform?: string;
  /** Names the base in messages (default repo@digest). */
  label?: string;
}

export interface ConfigEdits {
  /** Labels to set; null removes one. */
  labels?: Record<string, string | null>;
  /** Environment variables to set (replacing one of the same name); null removes one. */
  env?: Record<string, string | null>;
  cmd?: string[];
  entrypoint?: string[];
  workingDir?: string;
  user?: string;
}

export interface ImageBuildSpec {
  base: BaseImage;
  layer: NewLayer;
  config?: ConfigEdits;
  /** Manifest annotations to set (OCI bases; a Docker schema 2 manifest has none). */
  annotations?: Record<string, string>;
  /** Image creation time and every entry's mtime. Default SOURCE_DATE_EPOCH, else the Unix epoch. */
  created?: Date;
  /** The history entry's created_by, e.g. `bundle create: devfile registry index`. */
  createdBy: string;
  comment?: string;
  /** Where a large layer's temporary file goes (default the OS temp folder). */
  tmpDir?: string;
  /** Largest new layer kept in memory rather than a temporary file (default 4 MiB). */
  memoryLimit?: number;
}

export interface BuiltImage {
  manifest: Descriptor;
  manifestBytes: Buffer;
  config: Descriptor;
  configBytes: Buffer;
  layer: Descriptor & { diffId: string };
  base: { manifest: Descriptor; platform?: string };
}

export interface PreparedImage extends BuiltImage {
  /** The new blobs and manifest over the base store. */
  store: ContentStore;
  /** The repository to read from `store` (the base's). */
  repo: string;
  close(): Promise<void>;
}

export interface BuildOutput {
  dst: WritableContentStore;
  repo: string;
  tags: string[];
  limiter?: Limiter;
  progress?: Progress;
  /** Names the new image in messages. */
  label?: string;
  /**
   * Repositories of `dst` that already hold the base image (e.g. where push put it):
   * a base layer missing from `repo` is mounted from there, not read from the base
   * store, which may not hold it (an update bundle leaves out layers its base carried).
   */
  baseHeldIn?: string[];
}

const MAX_CONFIG_BYTES = 16 << 20;
const MAX_MANIFEST_BYTES = 4 << 20;

/** SOURCE_DATE_EPOCH (whole seconds since 1970) as a Date, or undefined when unset. */
export function sourceDateEpoch(env: NodeJS.ProcessEnv = process.env): Date | undefined {
  const raw = env['SOURCE_DATE_EPOCH'];
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d{1,12}$/.test(raw.trim())) throw new UsageError(`SOURCE_DATE_EPOCH=${raw} is not a whole number of seconds since 1970`);
  return new Date(Number(raw.trim()) * 1000);
}

/** The copy root of a prepared image: copy it with `new CopyEngine(prepared.store, dst)`. */
export function preparedRoot(p: PreparedImage, dstRepo: string, tags: string[], label: string): CopyRoot {
  return { srcRepo: p.repo, dstRepo, desc: p.manifest, tags, label };
}

interface RawManifest {
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  annotations?: Record<string, string>;
  subject?: unknown;
  manifests?: Descriptor[];
  [k: string]: unknown;
}

interface RawConfig {
  created?: string;
  config?: Record<string, unknown>;
  rootfs?: { type?: string; diff_ids?: string[] };
  history?: Record<string, unknown>[];
  [k: string]: unknown;
}

async function fetchJson<T>(store: ContentStore, repo: string, desc: Descriptor, what: string): Promise<{ bytes: Buffer; json: T }> {
  if (desc.size > MAX_MANIFEST_BYTES) throw new BundleError(`${what} is ${desc.size} bytes, more than a manifest may be`);
  const m = await store.fetchManifest(repo, desc);
  verifyBuffer(m.bytes, desc.digest, desc.size, what);
  try {
    return { bytes: m.bytes, json: JSON.parse(m.bytes.toString('utf8')) as T };
  } catch {
    throw new BundleError(`${what} is not valid JSON`);
  }
}

async function fetchConfig(store: ContentStore, repo: string, desc: Descriptor, what: string): Promise<RawConfig> {
  if (desc.size > MAX_CONFIG_BYTES) throw new BundleError(`${what} is ${desc.size} bytes, more than the ${MAX_CONFIG_BYTES} allowed`);
  const chunks: Buffer[] = [];
  for await (const c of verified(await store.openBlob(repo, desc), desc.digest, desc.size, what)) chunks.push(c as Buffer);
  try {
    const cfg = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new Error('not an object');
    return cfg as RawConfig;
  } catch {
    throw new BundleError(`${what} is not a JSON object`);
  }
}

/** The image manifest to build on: the base itself, or one platform of its index. */
async function baseManifest(base: BaseImage, label: string): Promise<{ desc: Descriptor; raw: RawManifest; platform?: string }> {
  const top = await fetchJson<RawManifest>(base.store, base.repo, base.desc, `base image ${label}`);
  const topType = top.json.mediaType ?? base.desc.mediaType;
  if (!isIndexMediaType(topType) && !Array.isArray(top.json.manifests)) {
    if (base.platform) {
      const cfgDesc = top.json.config;
      if (cfgDesc) {
        const cfg = await fetchConfig(base.store, base.repo, cfgDesc, `config of base image ${label}`);
        const have = `${String(cfg['os'])}/${String(cfg['architecture'])}${cfg['variant'] ? `/${String(cfg['variant'])}` : ''}`;
        if (!platformMatches({ os: String(cfg['os']), architecture: String(cfg['architecture']), variant: cfg['variant'] as string | undefined }, base.platform)) {
          throw new BundleError(`base image ${label} is ${have}, not ${base.platform}`);
        }
      }
    }
    return { desc: { ...base.desc, mediaType: topType }, raw: top.json };
  }
  const entries = (top.json.manifests ?? []).filter((m) => m.platform && m.platform.os !== 'unknown' && m.platform.architecture !== 'unknown');
  const have = entries.map((m) => platformString(m.platform)).join(', ') || 'none';
  let chosen: Descriptor | undefined;
  if (base.platform) {
    chosen = entries.find((m) => platformMatches(m.platform, base.platform!));
    if (!chosen) throw new BundleError(`base image ${label} has no platform ${base.platform} (it has ${have})`);
  } else if (entries.length === 1) {
    chosen = entries[0];
  } else {
    chosen = entries.find((m) => platformMatches(m.platform, 'linux/amd64'));
    if (!chosen) throw new BundleError(`base image ${label} has several platforms and no linux/amd64 (it has ${have}); name one`);
  }
  const platform = platformString(chosen!.platform);
  const child = await fetchJson<RawManifest>(base.store, base.repo, chosen!, `base image ${label} (${platform})`);
  const mediaType = child.json.mediaType ?? chosen!.mediaType;
  if (isIndexMediaType(mediaType) || Array.isArray(child.json.manifests)) throw new BundleError(`base image ${label} (${platform}) is an index inside an index`);
  return { desc: { mediaType, digest: chosen!.digest, size: chosen!.size }, raw: child.json, platform };
}

function setEnv(env: unknown, edits: Record<string, string | null>): string[] {
  const list = Array.isArray(env) ? env.filter((e): e is string => typeof e === 'string') : [];
  const out = [...list];
  for (const [name, value] of Object.entries(edits)) {
    if (!/^[^=\s]+$/.test(name)) throw new UsageError(`environment variable name ${JSON.stringify(name)} is not valid`);
    const at = out.findIndex((e) => e === name || e.startsWith(`${name}=`));
    if (value === null) {
      if (at >= 0) out.splice(at, 1);
    } else if (at >= 0) out[at] = `${name}=${value}`;
    else out.push(`${name}=${value}`);
  }
  return out;
}

function editConfig(cfg: RawConfig, edits: ConfigEdits | undefined): void {
  if (!edits) return;
  const c = (cfg.config && typeof cfg.config === 'object' ? cfg.config : {}) as Record<string, unknown>;
  if (edits.labels) {
    const labels = { ...((c['Labels'] as Record<string, string> | null | undefined) ?? {}) };
    for (const [k, v] of Object.entries(edits.labels)) {
      if (v === null) delete labels[k];
      else labels[k] = v;
    }
    c['Labels'] = labels;
  }
  if (edits.env) c['Env'] = setEnv(c['Env'], edits.env);
  if (edits.cmd) c['Cmd'] = edits.cmd;
  if (edits.entrypoint) c['Entrypoint'] = edits.entrypoint;
  if (edits.workingDir !== undefined) c['WorkingDir'] = edits.workingDir;
  if (edits.user !== undefined) c['User'] = edits.user;
  cfg.config = c;
}

/** Build the new layer, config and manifest on top of the base; nothing is written anywhere yet. */
export async function prepareImage(spec: ImageBuildSpec): Promise<PreparedImage> {
  const { base } = spec;
  const label = base.label ?? `${base.repo}@${base.desc.digest}`;
  const created = spec.created ?? sourceDateEpoch() ?? new Date(0);
  if (Number.isNaN(created.getTime()) || created.getTime() < 0) throw new UsageError(`image creation time ${String(spec.created)} is not a date after 1970`);
  const createdIso = new Date(Math.floor(created.getTime() / 1000) * 1000).toISOString().replace('.000Z', 'Z');

  const bm = await baseManifest(base, label);
  const docker = bm.desc.mediaType === MediaType.DockerManifest;
  if (!docker && bm.desc.mediaType !== MediaType.OciManifest) throw new BundleError(`base image ${label} is a ${bm.desc.mediaType}, not an image manifest`);
  const baseCfgDesc = bm.raw.config;
  if (!baseCfgDesc || (baseCfgDesc.mediaType !== MediaType.OciConfig && baseCfgDesc.mediaType !== MediaType.DockerConfig)) {
    throw new BundleError(`base image ${label} has no image config (config media type ${baseCfgDesc?.mediaType ?? 'none'}): it is an artifact, not an image`);
  }
  const layers = Array.isArray(bm.raw.layers) ? bm.raw.layers : [];
  const cfg = await fetchConfig(base.store, base.repo, baseCfgDesc, `config of base image ${label}`);
  const diffIds = cfg.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== layers.length) {
    throw new BundleError(`base image ${label}: its config lists ${Array.isArray(diffIds) ? diffIds.length : 'no'} diff_ids for ${layers.length} layers`);
  }
  if (spec.annotations && docker) throw new UsageError(`base image ${label} is Docker schema 2, whose manifests carry no annotations`);

  const layer = await buildLayer(spec.layer, { mtime: created, tmpDir: spec.tmpDir, memoryLimit: spec.memoryLimit });
  try {
    cfg.created = createdIso;
    cfg.rootfs = { ...cfg.rootfs, type: cfg.rootfs?.type ?? 'layers', diff_ids: [...diffIds, layer.diffId] };
    const entry: Record<string, unknown> = { created: createdIso, created_by: spec.createdBy };
    if (spec.comment) entry['comment'] = spec.comment;
    cfg.history = [...(Array.isArray(cfg.history) ? cfg.history : []), entry];
    editConfig(cfg, spec.config);
    const configBytes = Buffer.from(JSON.stringify(cfg));
    const config: Descriptor = { mediaType: baseCfgDesc.mediaType, digest: sha256Digest(configBytes), size: configBytes.length };
    const layerDesc: Descriptor = { mediaType: docker ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip, digest: layer.digest, size: layer.size };

    const raw: RawManifest = { ...bm.raw, config, layers: [...layers, layerDesc] };
    delete raw.subject;
    if (spec.annotations) raw.annotations = { ...(bm.raw.annotations ?? {}), ...spec.annotations };
    const manifestBytes = Buffer.from(JSON.stringify(raw));
    const manifest: Descriptor = { mediaType: bm.desc.mediaType, digest: sha256Digest(manifestBytes), size: manifestBytes.length };

    const store = new OverlayStore(base.store, `${base.store.description} + new layer`);
    store.addBlob(layerDesc, (): Promise<Readable> => layer.open());
    store.addBlob(config, () => Promise.resolve(Readable.from([configBytes])));
    store.addManifest(manifest, manifestBytes);
    return {
      store,
      repo: base.repo,
      manifest,
      manifestBytes,
      config,
      configBytes,
      layer: { ...layerDesc, diffId: layer.diffId },
      base: { manifest: bm.desc, ...(bm.platform ? { platform: bm.platform } : {}) },
      close: () => layer.close(),
    };
  } catch (err) {
    await layer.close();
    throw err;
  }
}

/** prepareImage, then copy the new image into `out.dst` (base layers through the copy engine). */
export async function buildImage(spec: ImageBuildSpec, out: BuildOutput): Promise<BuiltImage & { copied: CopiedImage }> {
  const p = await prepareImage(spec);
  try {
    const engine = new CopyEngine(p.store, out.dst, { limiter: out.limiter, progress: out.progress });
    if (out.baseHeldIn?.length) {
      const layers = (JSON.parse(p.manifestBytes.toString('utf8')) as { layers: Descriptor[] }).layers;
      for (const l of layers.slice(0, -1)) for (const repo of out.baseHeldIn) engine.holdsAlready(l.digest, repo);
    }
    const copied = await engine.copyImage(preparedRoot(p, out.repo, out.tags, out.label ?? `${out.repo} (built on ${spec.base.label ?? spec.base.repo})`));
    const { manifest, manifestBytes, config, configBytes, layer, base } = p;
    return { manifest, manifestBytes, config, configBytes, layer, base, copied };
  } finally {
    await p.close();
  }
}
