/**
 * The `releases` source kind: an OpenShift release payload, every component it
 * names, and the release's signatures.
 *
 * The payload's `release-manifests/image-references` (an ImageStream listing
 * every component by digest) and `release-manifests/release-metadata`
 * (`cincinnati-metadata-v0`, the version) are read out of its layers as they
 * stream by (src/oci/layer-files.ts): nothing is unpacked, memory stays flat
 * whatever the layer's size. A multi-arch release (an index) carries the
 * platforms asked for, each with its own components.
 */
import type { BundleImage } from '../bundle/manifest.js';
import { mapLimit } from '../copy/limit.js';
import { readImageFiles, readSmallBlob } from '../oci/layer-files.js';
import { parseManifest, platformMatches } from '../oci/manifest.js';
import { MediaType } from '../oci/media-types.js';
import { formatReference, parseReference, referenceSelector, repositoryName, type ImageReference } from '../oci/reference.js';
import { platformString, type Descriptor } from '../oci/types.js';
import type { CreateContext, SourceKind, SourcePlan } from './source.js';
import { finishPlan, NeededImages, resolveNeeded } from '../openshift/needed-images.js';
import { buildSignaturesArtifact, DEFAULT_SIGNATURE_STORE, fetchSignatures, signaturesTag } from '../openshift/signatures.js';
import { MemoryStore } from '../store/memory-store.js';
import type { ContentStore } from '../store/store.js';
import { verifyBuffer } from '../util/digest.js';
import { BundleError, errorMessage } from '../util/errors.js';
import type { SourceImage } from './images.js';

export interface ReleaseSpec {
  image: string;
  /** Base URL of the signature store, or `none`. */
  signatureStore?: string;
  /** For a multi-arch release: the platforms to carry (default: all). */
  platforms?: string[];
}

export const IMAGE_REFERENCES = 'release-manifests/image-references';
export const RELEASE_METADATA = 'release-manifests/release-metadata';

/** OpenShift's names for architectures, as release tags spell them. */
const ARCH_NAMES: Record<string, string> = { amd64: 'x86_64', arm64: 'aarch64', ppc64le: 'ppc64le', s390x: 's390x' };

export function releaseArch(goArch: string): string {
  return ARCH_NAMES[goArch] ?? goArch;
}

export interface ReleaseComponent {
  /** The component's name in image-references (`cli`, `machine-config-operator`). */
  name: string;
  /** `repo@sha256:...`: also its refName in the bundle. */
  image: string;
}

/** One architecture's payload and its components. */
export interface ReleasePayload {
  arch: string;
  digest: string;
  components: ReleaseComponent[];
}

/** What the manifest records for each release (`sources.releases[]`). */
export interface ReleaseRecord {
  /** The release as the config named it, fully qualified. */
  image: string;
  /** The payload's refName in the bundle. */
  refName: string;
  /** Digest of what is carried under refName (the payload, or an index of the payloads kept). */
  digest: string;
  version: string;
  /** `x86_64`, `aarch64`, ... or `multi` when several payloads are kept. */
  arch: string;
  payloads: ReleasePayload[];
  /** Components left out with --skip-missing. */
  skippedComponents: string[];
  /** Signed digests and the refName of the artifact carrying their signatures. */
  signatures: { digest: string; refName: string; count: number }[];
}

interface ReadPayload {
  arch: string;
  digest: string;
  version: string;
  components: ReleaseComponent[];
}

/** Parse `image-references`: every `DockerImage` component, pinned by digest. */
export function parseImageReferences(bytes: Buffer, what: string): { version: string; components: ReleaseComponent[] } {
  let doc: { kind?: unknown; apiVersion?: unknown; metadata?: { name?: unknown }; spec?: { tags?: unknown } };
  try {
    doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
  } catch {
    throw new BundleError(`${what}: ${IMAGE_REFERENCES} is not JSON`);
  }
  if (doc.kind !== 'ImageStream') throw new BundleError(`${what}: ${IMAGE_REFERENCES} is a ${JSON.stringify(doc.kind)}, not an ImageStream`);
  if (typeof doc.apiVersion === 'string' && !doc.apiVersion.startsWith('image.openshift.io/')) {
    throw new BundleError(`${what}: ${IMAGE_REFERENCES} has apiVersion ${doc.apiVersion}, not image.openshift.io/v1`);
  }
  const tags = doc.spec?.tags;
  if (!Array.isArray(tags) || tags.length === 0) throw new BundleError(`${what}: ${IMAGE_REFERENCES} lists no components`);
  const components: ReleaseComponent[] = [];
  const bad: string[] = [];
  for (const t of tags as { name?: unknown; from?: { kind?: unknown; name?: unknown } }[]) {
    if (t?.from?.kind !== 'DockerImage') continue;
    const name = typeof t.name === 'string' ? t.name : '';
    const image = typeof t.from.name === 'string' ? t.from.name : '';
    let ref: ImageReference | undefined;
    try {
      ref = parseReference(image);
    } catch {
      ref = undefined;
    }
    if (!name || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(name) || !ref?.digest) {
      bad.push(`${name || '(unnamed)'} (${image || 'no image'})`);
      continue;
    }
    components.push({ name, image: `${repositoryName(ref)}@${ref.digest}` });
  }
  if (bad.length > 0) throw new BundleError(`${what}: components not pinned by digest: ${bad.join(', ')}`);
  return { version: typeof doc.metadata?.name === 'string' ? doc.metadata.name : '', components };
}

/** Parse `release-metadata`; returns the version. */
export function parseReleaseMetadata(bytes: Buffer, what: string): string {
  let doc: { kind?: unknown; version?: unknown };
  try {
    doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
  } catch {
    throw new BundleError(`${what}: ${RELEASE_METADATA} is not JSON`);
  }
  if (doc.kind !== 'cincinnati-metadata-v0') throw new BundleError(`${what}: ${RELEASE_METADATA} is a ${JSON.stringify(doc.kind)}, not cincinnati-metadata-v0`);
  if (typeof doc.version !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/.test(doc.version)) throw new BundleError(`${what}: ${RELEASE_METADATA} has no usable version`);
  return doc.version.replace(/\+/g, '-');
}

async function fetchVerified(store: ContentStore, repo: string, desc: Descriptor, what: string): Promise<Buffer> {
  const m = await store.fetchManifest(repo, desc);
  verifyBuffer(m.bytes, desc.digest, desc.size, what);
  return m.bytes;
}

/** Read one payload manifest: its architecture, version and components. */
async function readPayload(store: ContentStore, repo: string, desc: Descriptor, what: string): Promise<ReadPayload> {
  const parsed = parseManifest(await fetchVerified(store, repo, desc, what), desc.mediaType, what);
  if (parsed.isIndex) throw new BundleError(`${what}: an index inside an index is not a release payload`);
  const [config, ...layers] = parsed.blobs;
  let arch = 'unknown';
  if (config && (config.mediaType === MediaType.OciConfig || config.mediaType === MediaType.DockerConfig) && config.size < 4 << 20) {
    const cfg = await readSmallBlob(store, repo, config, `${what} config`);
    const a = (JSON.parse(cfg.toString('utf8')) as { architecture?: unknown }).architecture;
    if (typeof a === 'string') arch = releaseArch(a);
  }
  const files = await readImageFiles(store, repo, layers, [IMAGE_REFERENCES, RELEASE_METADATA], what);
  const refs = files.get(IMAGE_REFERENCES);
  const meta = files.get(RELEASE_METADATA);
  if (!refs || !meta) {
    throw new BundleError(`${what} is not an OpenShift release: no /${!refs ? IMAGE_REFERENCES : RELEASE_METADATA} in its layers`);
  }
  const version = parseReleaseMetadata(meta, what);
  const { components } = parseImageReferences(refs, what);
  return { arch, digest: desc.digest, version, components };
}


/** Plan every release of the config: payloads, components, signatures. */
export async function planReleases(specs: ReleaseSpec[], ctx: CreateContext): Promise<SourcePlan> {
  const plan: SourcePlan & { records: ReleaseRecord[] } = { images: [], failures: [], skipped: [], records: [], record: () => plan.records };
  const signatureStore = new MemoryStore('release signatures');
  const needed = new NeededImages();
  const releases: { spec: ReleaseSpec; ref: ImageReference; source: string; desc: Descriptor; payloads: ReadPayload[]; store: ContentStore }[] = [];
  await mapLimit(specs, Math.max(1, Math.min(ctx.concurrency, 4)), async (spec) => {
    const source = formatReference(parseReference(spec.image));
    try {
      const ref = parseReference(spec.image);
      const store = ctx.storeFor(ref.registry);
      const desc = await store.resolve(ref.repository, referenceSelector(ref));
      const what = `release ${source}`;
      ctx.progress?.info(`  reading ${what}`);
      const top = parseManifest(await fetchVerified(store, ref.repository, desc, what), desc.mediaType, what);
      let payloads: ReadPayload[];
      if (top.isIndex) {
        const wanted = spec.platforms?.length ? top.manifests.filter((m) => spec.platforms!.some((p) => platformMatches(m.platform, p))) : top.manifests;
        if (wanted.length === 0) {
          const have = top.manifests.map((m) => platformString(m.platform)).filter(Boolean).join(', ');
          throw new BundleError(`${what}: no platform ${spec.platforms!.join(', ')} in the release (it has ${have})`);
        }
        payloads = [];
        for (const m of wanted) payloads.push(await readPayload(store, ref.repository, m, `${what} (${platformString(m.platform) ?? m.digest})`));
      } else {
        payloads = [await readPayload(store, ref.repository, desc, what)];
      }
      const versions = new Set(payloads.map((p) => p.version));
      if (versions.size > 1) throw new BundleError(`${what}: its payloads disagree on the version (${[...versions].join(', ')})`);
      for (const p of payloads) for (const c of p.components) needed.add(c.image, `release ${source} (component ${c.name})`);
      releases.push({ spec, ref, source, desc, payloads, store });
    } catch (err) {
      plan.failures.push({ source, error: errorMessage(err) });
    }
  });

  const resolved = await resolveNeeded(needed, ctx, 'release');
  plan.images.push(...resolved.images);
  plan.failures.push(...resolved.failures);
  plan.skipped.push(...resolved.skipped);
  const skippedSources = new Set(resolved.skipped.map((s) => s.source));

  for (const r of releases) {
    const tags = r.ref.tag ? [r.ref.tag] : [];
    const platforms = r.desc.mediaType === MediaType.OciIndex || r.desc.mediaType === MediaType.DockerManifestList ? r.spec.platforms : undefined;
    const payload: SourceImage = {
      store: r.store,
      source: r.source,
      refName: r.source,
      origin: 'release',
      tags,
      root: { srcRepo: r.ref.repository, dstRepo: repositoryName(r.ref), desc: r.desc, tags, platforms, label: `release ${r.source}` },
    };
    plan.images.push(payload);
    const arch = r.payloads.length === 1 ? r.payloads[0]!.arch : 'multi';
    const record: ReleaseRecord = {
      image: r.source,
      refName: r.source,
      digest: r.desc.digest,
      version: r.payloads[0]!.version,
      arch,
      payloads: r.payloads.map((p) => ({ arch: p.arch, digest: p.digest, components: p.components.filter((c) => !skippedSources.has(c.image)) })),
      skippedComponents: [...new Set(r.payloads.flatMap((p) => p.components.filter((c) => skippedSources.has(c.image)).map((c) => c.name)))].sort(),
      signatures: [],
    };
    // Signatures: of what the config named, and of each payload kept from an index.
    const storeUrl = r.spec.signatureStore ?? DEFAULT_SIGNATURE_STORE;
    if (storeUrl !== 'none') {
      const digests = [...new Set([r.desc.digest, ...r.payloads.map((p) => p.digest)])];
      for (const digest of digests) {
        try {
          const sigs = await fetchSignatures(storeUrl, digest);
          if (sigs.length === 0) {
            if (digest === r.desc.digest) throw new BundleError(`no signatures for ${digest} in the signature store ${storeUrl} (signatureStore: none to carry the release unsigned)`);
            continue;
          }
          const desc = buildSignaturesArtifact(signatureStore, digest, sigs, r.source);
          const tag = signaturesTag(digest);
          const sigSource = `${repositoryName(r.ref)}:${tag}`;
          plan.images.push({
            store: signatureStore,
            source: sigSource,
            refName: sigSource,
            origin: 'release',
            tags: [tag],
            root: { srcRepo: '', dstRepo: repositoryName(r.ref), desc, tags: [tag], label: `signatures of release ${r.source}` },
          });
          record.signatures.push({ digest, refName: sigSource, count: sigs.length });
        } catch (err) {
          plan.failures.push({ source: `${r.source} (signatures)`, error: errorMessage(err) });
        }
      }
    }
    plan.records.push(record);
  }
  plan.record = (copied: ReadonlyMap<string, BundleImage>) =>
    plan.records
      .filter((rec) => copied.has(rec.refName))
      .map((rec) => ({
        ...rec,
        // What the bundle holds under the refName (a platform subset of an index has its own digest).
        digest: copied.get(rec.refName)!.digest,
        payloads: rec.payloads.map((p) => ({ ...p, components: p.components.filter((c) => copied.has(c.image)) })),
        signatures: rec.signatures.filter((s) => copied.has(s.refName)),
      }));
  return finishPlan(plan, ctx);
}

export const releasesKind: SourceKind<ReleaseSpec[]> = {
  kind: 'releases',
  section: (config) => (config.releases.length > 0 ? config.releases : undefined),
  plan: planReleases,
};
