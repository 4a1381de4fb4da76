/**
 * What `bundle serve` offers, per repository: the bundle's images named as
 * `push` would name them (src/push/destination.ts, push's plan), each
 * repository holding the tags, manifests and blobs of its images' graphs,
 * and who refers to what (manifests with a `subject`, and cosign's
 * `sha256-<hex>.sig/.att/.sbom` companions) for the referrers API.
 *
 * Built once at start-up from the manifests alone (each read from the
 * archive once and checked against its digest); blobs are never read here.
 */
import type { ArchiveReader } from '../archive/reader.js';
import type { BundleImage } from '../bundle/manifest.js';
import { checkClashes, planPush } from '../commands/push.js';
import { mapLimit } from '../copy/limit.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import type { PushTarget } from '../push/destination.js';
import type { ContentStore } from '../store/store.js';
import { isSha256Digest } from '../util/digest.js';
import { errorMessage } from '../util/errors.js';

/** A manifest of the bundle, as its descriptor in a referrers list needs it. */
export interface ManifestInfo {
  mediaType: string;
  size: number;
  /** `artifactType`, else the config's media type (the OCI rule for referrers). */
  artifactType?: string;
  annotations?: Record<string, string>;
  /** Digest of the manifest's `subject`. */
  subject?: string;
}

export interface Repository {
  name: string;
  /** tag -> manifest digest */
  tags: Map<string, string>;
  /** Manifests and blobs of every image tagged here. */
  manifests: Set<string>;
  blobs: Set<string>;
  /** subject digest -> digests of the manifests in this repository that refer to it */
  referrers: Map<string, Set<string>>;
  /** Where this repository's images came from (for the start-up listing). */
  sources: string[];
}

export interface ServedImage {
  image: BundleImage;
  repository: string;
  tags: string[];
}

const COSIGN_TAG = /^sha256-([a-f0-9]{64})\.(sig|att|sbom)$/;

interface RawManifest {
  mediaType?: string;
  artifactType?: string;
  annotations?: Record<string, string>;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  subject?: Descriptor;
}

interface Parsed {
  info: ManifestInfo;
  children: Descriptor[];
  blobs: string[];
}

export class RepositoryView {
  readonly repositories = new Map<string, Repository>();
  readonly manifests = new Map<string, ManifestInfo>();
  /** Problems met while building (images left out), for the log. */
  readonly warnings: string[] = [];
  readonly images: ServedImage[] = [];

  private constructor(private readonly reader: ArchiveReader) {}

  /** Walk every image's graph (manifests only, verified) with at most `concurrency` reads at once. */
  static async build(reader: ArchiveReader, images: BundleImage[], target: PushTarget, concurrency = 8): Promise<RepositoryView> {
    const view = new RepositoryView(reader);
    const parsed = new Map<string, Promise<Parsed>>();
    const load = (desc: Descriptor): Promise<Parsed> => {
      let p = parsed.get(desc.digest);
      if (!p) {
        p = view.parse(desc);
        parsed.set(desc.digest, p);
      }
      return p;
    };
    const plan = planPush(images, target);
    // Two images on one tag are refused, as by push (--keep-registry-host keeps them apart).
    checkClashes(plan, target);
    await mapLimit(plan, concurrency, async (item) => {
      const repo = view.repository(item.repository);
      const manifests = new Set<string>();
      const blobs = new Set<string>();
      const referrers: [string, string][] = [];
      const walk = async (desc: Descriptor): Promise<void> => {
        if (manifests.has(desc.digest)) return;
        manifests.add(desc.digest);
        const p = await load(desc);
        if (p.info.subject) referrers.push([p.info.subject, desc.digest]);
        for (const b of p.blobs) blobs.add(b);
        await Promise.all(p.children.map(walk));
      };
      try {
        await walk({ digest: item.image.digest, mediaType: item.image.mediaType, size: item.image.size });
      } catch (err) {
        view.warnings.push(`${item.image.source} is not served: ${errorMessage(err)}`);
        return;
      }
      for (const d of manifests) repo.manifests.add(d);
      for (const b of blobs) repo.blobs.add(b);
      for (const [subject, digest] of referrers) view.addReferrer(repo, subject, digest);
      for (const tag of item.tags) {
        const had = repo.tags.get(tag);
        if (had && had !== item.image.digest) {
          view.warnings.push(`${item.repository}:${tag} is claimed by two images; serving ${had}, not ${item.image.digest} (${item.image.source})`);
          continue;
        }
        repo.tags.set(tag, item.image.digest);
        // cosign's tag scheme: sha256-<hex>.sig names the image it signs.
        const cosign = COSIGN_TAG.exec(tag);
        if (cosign) view.addReferrer(repo, `sha256:${cosign[1]}`, item.image.digest);
      }
      repo.sources.push(item.image.source);
      view.images.push({ image: item.image, repository: item.repository, tags: item.tags });
    });
    // Repositories whose every image failed hold nothing.
    for (const [name, repo] of view.repositories) if (repo.manifests.size === 0) view.repositories.delete(name);
    return view;
  }

  /** Manifests made at start-up, and the store each is read from (the archive holds the others). */
  private readonly madeManifests = new Map<string, ContentStore>();

  /** The store a manifest made at start-up is read from; undefined for the archive's own. */
  storeOf(digest: string): ContentStore | undefined {
    return this.madeManifests.get(digest);
  }

  /**
   * Serve a manifest made at start-up (read from `store`) as `repository:tag`, in
   * place of what the bundle has there: a devfile stack's artifact with its devfile
   * rewritten for this server, as push delivers it.
   */
  replace(repository: string, tag: string, desc: Descriptor, artifactType: string | undefined, blobs: string[], store: ContentStore): void {
    const repo = this.repository(repository);
    repo.tags.set(tag, desc.digest);
    repo.manifests.add(desc.digest);
    for (const b of blobs) repo.blobs.add(b);
    this.manifests.set(desc.digest, { mediaType: desc.mediaType, size: desc.size, ...(artifactType ? { artifactType } : {}) });
    this.madeManifests.set(desc.digest, store);
  }

  /** Repository names, sorted (the `_catalog` order). */
  names(): string[] {
    return [...this.repositories.keys()].sort();
  }

  /** The referrers of `subject` in `repo` as OCI descriptors, optionally only those of one artifact type. */
  referrersOf(repo: Repository, subject: string, artifactType?: string): Descriptor[] {
    const out: Descriptor[] = [];
    for (const digest of [...(repo.referrers.get(subject) ?? [])].sort()) {
      const info = this.manifests.get(digest);
      if (!info) continue;
      if (artifactType !== undefined && info.artifactType !== artifactType) continue;
      const d: Descriptor = { mediaType: info.mediaType, digest, size: info.size };
      if (info.artifactType) d.artifactType = info.artifactType;
      if (info.annotations && Object.keys(info.annotations).length) d.annotations = info.annotations;
      out.push(d);
    }
    return out;
  }

  private repository(name: string): Repository {
    let r = this.repositories.get(name);
    if (!r) {
      r = { name, tags: new Map(), manifests: new Set(), blobs: new Set(), referrers: new Map(), sources: [] };
      this.repositories.set(name, r);
    }
    return r;
  }

  private addReferrer(repo: Repository, subject: string, digest: string): void {
    if (subject === digest) return;
    let s = repo.referrers.get(subject);
    if (!s) repo.referrers.set(subject, (s = new Set()));
    s.add(digest);
  }

  private async parse(desc: Descriptor): Promise<Parsed> {
    const { bytes } = await this.reader.fetchManifest('', desc);
    let raw: RawManifest;
    try {
      raw = JSON.parse(bytes.toString('utf8')) as RawManifest;
    } catch {
      throw new Error(`manifest ${desc.digest} is not JSON`);
    }
    let mediaType = raw.mediaType && isManifestMediaType(raw.mediaType) ? raw.mediaType : desc.mediaType;
    if (!isManifestMediaType(mediaType)) mediaType = raw.manifests ? MediaType.OciIndex : MediaType.OciManifest;
    const digests = (list: (Descriptor | undefined)[]): Descriptor[] =>
      list.filter((d): d is Descriptor => !!d && typeof d.digest === 'string' && isSha256Digest(d.digest) && !(d.urls && d.urls.length));
    const info: ManifestInfo = { mediaType, size: bytes.length };
    const artifactType = raw.artifactType ?? raw.config?.mediaType;
    if (artifactType) info.artifactType = artifactType;
    if (raw.annotations) info.annotations = raw.annotations;
    if (raw.subject && isSha256Digest(raw.subject.digest)) info.subject = raw.subject.digest;
    this.manifests.set(desc.digest, info);
    if (isIndexMediaType(mediaType)) return { info, children: digests(raw.manifests ?? []), blobs: [] };
    return { info, children: [], blobs: digests([raw.config, ...(raw.layers ?? [])]).map((d) => d.digest) };
  }
}
