/**
 * The `images` and `ociLayouts` sources: turn what the config names into copy
 * roots (a store to read from, a repository, a resolved top descriptor), all
 * resolved before any blob is downloaded so that a typo fails in seconds.
 */
import { basename, resolve as resolvePath } from 'node:path';
import { mapLimit } from '../copy/limit.js';
import { formatReference, parseReference, referenceSelector, repositoryName } from '../oci/reference.js';
import { OciLayoutStore } from '../store/oci-layout-store.js';
import type { ContentStore } from '../store/store.js';
import { BundleError, errorMessage } from '../util/errors.js';
import type { LoadedConfig } from '../config/config.js';
import { cosignArtifacts } from './cosign.js';
import type { ResolveFailure, SourceImage, SourceKind } from './source.js';

export interface ImageSpec {
  ref: string;
  platforms?: string[];
}

export interface LayoutSpec {
  path: string;
  refs?: string[];
}

export type { ResolveFailure, SourceImage } from './source.js';

export type RegistryStoreFactory = (registry: string) => ContentStore;

/** The `images` kind's section: the config's `images` and `ociLayouts`. */
export interface ImagesSection {
  images: ImageSpec[];
  ociLayouts: LayoutSpec[];
}

/** The first source kind: images from registries and OCI layout folders. */
export const imagesKind: SourceKind<ImagesSection> = {
  kind: 'images',
  section(config: LoadedConfig) {
    if (config.images.length === 0 && config.ociLayouts.length === 0) return undefined;
    return { images: config.images.map((i) => ({ ref: i.ref, platforms: i.platforms })), ociLayouts: config.ociLayouts };
  },
  async plan(section, ctx) {
    const r = await resolveImagesEarly(section.images, section.ociLayouts, (reg) => ctx.storeFor(reg), ctx.concurrency, ctx.keepGoing, ctx.signatures, ctx.planAhead);
    return { images: r.images, failures: r.failures, skipped: [], warnings: [], later: r.later };
  },
};

type Found = { images: SourceImage[]; failures: ResolveFailure[]; warnings: string[] };

/**
 * Resolve every image of the config. All failures are reported together: as one
 * error, or, with `keepGoing`, returned beside the images that did resolve.
 */
export async function resolveImages(
  images: ImageSpec[],
  layouts: LayoutSpec[],
  registryStore: RegistryStoreFactory,
  concurrency = 8,
  keepGoing = false,
  withCosign = true,
): Promise<Found> {
  const first = await resolveImagesEarly(images, layouts, registryStore, concurrency, true, withCosign);
  const later = await first.later;
  const failures = [...first.failures, ...later.failures];
  if (failures.length > 0 && !keepGoing) throw resolutionError(failures);
  return { images: unique([...first.images, ...later.images]), failures, warnings: later.warnings };
}

/**
 * The images of the config, resolved, and `later` their cosign companions: an
 * image's look-ups start the moment it is resolved and run while the images'
 * manifests are read (`resolved` hears of each image and companion as soon as
 * it is known). Without `keepGoing` the failures of each part are one error.
 */
export async function resolveImagesEarly(
  images: ImageSpec[],
  layouts: LayoutSpec[],
  registryStore: RegistryStoreFactory,
  concurrency = 8,
  keepGoing = false,
  withCosign = true,
  resolved?: (img: SourceImage) => void,
): Promise<Found & { later: Promise<Found> }> {
  const failures: ResolveFailure[] = [];
  // Each image with its companions to come, in the config's order whatever order they come in.
  const fromRegistries = await mapLimit(images, concurrency, async (spec) => {
    let img: SourceImage;
    try {
      img = await resolveRegistryImage(spec, registryStore);
    } catch (err) {
      failures.push({ source: spec.ref, error: errorMessage(err) });
      return undefined;
    }
    resolved?.(img);
    const companions = withCosign ? cosignOf(img, resolved) : undefined;
    companions?.catch(() => undefined); // settled below
    return { img, companions };
  });
  const resolvedImages = fromRegistries.filter((r) => r !== undefined);
  const later = (async (): Promise<Found> => {
    const found = await Promise.all(resolvedImages.map((r) => r.companions ?? { images: [], failures: [], warnings: [] }));
    const f = { images: found.flatMap((c) => c.images), failures: found.flatMap((c) => c.failures), warnings: found.flatMap((c) => c.warnings) };
    if (f.failures.length > 0 && !keepGoing) throw resolutionError(f.failures);
    return f;
  })();
  later.catch(() => undefined); // the caller awaits it
  const fromLayouts: SourceImage[] = [];
  for (const layout of layouts) {
    try {
      fromLayouts.push(...(await resolveLayoutImages(layout)));
    } catch (err) {
      failures.push({ source: layout.path, error: errorMessage(err) });
    }
  }
  // Failures in the config's order.
  failures.sort((a, b) => order(a.source) - order(b.source));
  function order(source: string): number {
    const i = images.findIndex((s) => s.ref === source);
    return i < 0 ? images.length + layouts.findIndex((l) => l.path === source) : i;
  }
  if (failures.length > 0 && !keepGoing) throw resolutionError(failures);
  return { images: unique([...resolvedImages.map((r) => r.img), ...fromLayouts]), failures, warnings: [], later };
}

/** An image's cosign companions (each told to `resolved` when found). */
async function cosignOf(img: SourceImage, resolved?: (img: SourceImage) => void): Promise<Found> {
  try {
    const found = await cosignArtifacts(img);
    for (const c of found.images) resolved?.(c);
    return { images: found.images, failures: [], warnings: found.warnings };
  } catch (err) {
    return { images: [], failures: [{ source: `${img.source} (cosign signatures)`, error: errorMessage(err) }], warnings: [] };
  }
}

/** One image per refName (the last named wins); two different images under one name are an error. */
function unique(all: SourceImage[]): SourceImage[] {
  const seen = new Map<string, SourceImage>();
  for (const img of all) {
    const prior = seen.get(img.refName);
    if (prior && prior.root.desc.digest !== img.root.desc.digest) {
      throw new BundleError(`two different images would both be called ${img.refName} in the bundle`);
    }
    seen.set(img.refName, img);
  }
  return [...seen.values()];
}

/** One error naming every source that could not be resolved. */
export function resolutionError(failures: ResolveFailure[]): BundleError {
  const lines = failures.map((f) => `${f.source}: ${f.error}`);
  return new BundleError(lines.length === 1 ? `cannot resolve ${lines[0]}` : `cannot resolve ${lines.length} sources:\n  ${lines.join('\n  ')}`);
}

async function resolveRegistryImage(spec: ImageSpec, registryStore: RegistryStoreFactory): Promise<SourceImage> {
  const ref = parseReference(spec.ref);
  const store = registryStore(ref.registry);
  // Its manifest is read next: in the same request.
  const desc = await store.resolve(ref.repository, referenceSelector(ref), { fetch: true });
  const source = formatReference(ref);
  const tags = ref.tag ? [ref.tag] : [];
  return {
    store,
    source,
    refName: source,
    origin: 'registry',
    tags,
    root: { srcRepo: ref.repository, dstRepo: repositoryName(ref), desc, tags, platforms: spec.platforms, label: source },
  };
}

async function resolveLayoutImages(spec: LayoutSpec): Promise<SourceImage[]> {
  const dir = resolvePath(spec.path);
  const store = await OciLayoutStore.open(dir);
  const name = layoutRepositoryName(dir);
  const wanted = spec.refs && spec.refs.length > 0 ? spec.refs : undefined;
  const entries = wanted
    ? await Promise.all(wanted.map(async (r) => ({ refName: r as string | undefined, desc: await store.resolve('', r) })))
    : store.images();
  if (entries.length === 0) throw new BundleError('index.json lists no images');
  return entries.map(({ refName, desc }) => {
    // A layout ref that is itself a full reference keeps it; otherwise the layout's folder names the repository.
    let source: string;
    let tags: string[];
    const full = refName ? tryFullReference(refName) : undefined;
    if (full) {
      source = formatReference(full);
      tags = full.tag ? [full.tag] : [];
    } else if (refName && /^[\w][\w.-]{0,127}$/.test(refName)) {
      source = `${name}:${refName}`;
      tags = [refName];
    } else {
      source = `${name}@${desc.digest}`;
      tags = [];
    }
    return {
      store,
      source,
      refName: source,
      origin: 'oci-layout' as const,
      tags,
      root: { srcRepo: '', dstRepo: full ? repositoryName(full) : name, desc, tags, label: `${dir}:${refName ?? desc.digest}` },
    };
  });
}

function tryFullReference(s: string) {
  if (!s.includes('/')) return undefined;
  try {
    const r = parseReference(s);
    return s.startsWith(r.registry) ? r : undefined;
  } catch {
    return undefined;
  }
}

/** A repository name made from a layout folder's name (lowercase, registry-safe). */
export function layoutRepositoryName(dir: string): string {
  const n = basename(dir)
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return n || 'oci-layout';
}
