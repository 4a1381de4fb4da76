/**
 * Update bundles (`bundle create --since BASE`): a bundle that leaves out the blobs
 * its base bundle already carried, for the monthly refresh of a secure site that
 * pushed the base before. Its manifest still lists every image in full, and names
 * the base (`base`: the sha256 of the base's manifest bytes, its file name, when it
 * was made) with every blob left out, so that:
 * - verify checks the update alone (a left-out blob is not "missing"), or with
 *   `--base` that the base is the one named and carries what was left out;
 * - push first asks the target whether it has every left-out blob an image needs
 *   (HEAD, in the repository the image lands in) and pushes nothing when not.
 * Only image layers are left out: manifests, configs and artifact files are always
 * carried, so the update alone describes every image and push can walk every graph
 * and deliver every artifact from it.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { ArchiveReader } from '../archive/reader.js';
import { parseManifest } from '../oci/manifest.js';
import type { Descriptor } from '../oci/types.js';
import type { ManifestBytes, PutBlobOptions, PutResult, ResolveOptions, WritableContentStore } from '../store/store.js';
import { sha256Digest } from '../util/digest.js';
import { BundleError, errorMessage, UsageError } from '../util/errors.js';
import type { BundleManifest, BundleBase } from './manifest.js';
import { validateManifest } from './validate.js';

/**
 * Container image layers are what an update leaves out (they are nearly all the
 * bytes). Everything else is carried again: manifests, configs and the files of
 * artifacts (devfiles, catalogs, signatures) that push reads to deliver them.
 */
export function isImageLayer(mediaType: string): boolean {
  return /^application\/vnd\.(oci\.image\.layer\.|docker\.image\.rootfs\.)/.test(mediaType);
}

/** What every update of `base` may leave out: its image layers, and what it left out itself. */
function leftOutCandidates(base: BundleManifest): Map<string, Descriptor> {
  const out = new Map<string, Descriptor>();
  for (const b of base.base?.blobs ?? []) out.set(b.digest, b);
  for (const m of base.members) {
    if (m.path.startsWith('blobs/sha256/') && isImageLayer(m.mediaType)) out.set(m.digest, { digest: m.digest, size: m.size, mediaType: m.mediaType });
  }
  return out;
}

export interface LoadedBase {
  record: Omit<BundleBase, 'blobs'>;
  candidates: Map<string, Descriptor>;
}

/** The base named by `--since`: a .airgap file, or its manifest saved by `bundle inspect --manifest-out`. */
export async function loadBase(file: string): Promise<LoadedBase> {
  let bytes: Buffer;
  let name = basename(file);
  const head = await readFile(file).catch((err: unknown) => {
    throw new UsageError(`--since ${file}: ${errorMessage(err)}`);
  });
  if (head.length > 0 && head[0] === 0x7b /* { */) {
    bytes = head;
  } else {
    const reader = await ArchiveReader.open(file);
    bytes = reader.manifestBytes;
    await reader.close();
  }
  let manifest: BundleManifest;
  try {
    manifest = validateManifest(JSON.parse(bytes.toString('utf8')));
  } catch (err) {
    throw new UsageError(`--since ${file}: not a bundle or a bundle manifest (${errorMessage(err)})`);
  }
  if (manifest.base?.name) name = basename(file);
  return { record: { digest: sha256Digest(bytes), name, created: manifest.created }, candidates: leftOutCandidates(manifest) };
}

/**
 * The archive writer as create's destination for an update: a blob the base carried
 * is not written but recorded as left out (and reported to the engine as there).
 */
export class LeaveOutStore implements WritableContentStore {
  readonly description: string;
  private readonly left = new Map<string, Descriptor>();

  constructor(
    private readonly inner: WritableContentStore,
    private readonly candidates: Map<string, Descriptor>,
  ) {
    this.description = inner.description;
  }

  /** The writer schedules its own requests once it is laid out. */
  get schedulesTransfers(): boolean | undefined {
    return this.inner.schedulesTransfers;
  }

  /** The blobs left out so far, in digest order (deterministic). */
  leftOut(): Descriptor[] {
    return [...this.left.values()].sort((a, b) => a.digest.localeCompare(b.digest));
  }

  resolve(repo: string, reference: string, opts?: ResolveOptions): Promise<Descriptor> {
    return this.inner.resolve(repo, reference, opts);
  }

  fetchManifest(repo: string, desc: Descriptor): Promise<ManifestBytes> {
    return this.inner.fetchManifest(repo, desc);
  }

  async hasBlob(repo: string, desc: Descriptor): Promise<boolean> {
    return this.candidates.has(desc.digest) || this.inner.hasBlob(repo, desc);
  }

  openBlob(repo: string, desc: Descriptor): Promise<Readable> {
    return this.inner.openBlob(repo, desc);
  }

  async putBlob(repo: string, desc: Descriptor, open: () => Promise<Readable>, opts?: PutBlobOptions): Promise<PutResult> {
    const base = this.candidates.get(desc.digest);
    if (base) {
      this.left.set(desc.digest, { digest: desc.digest, size: desc.size, mediaType: desc.mediaType ?? base.mediaType });
      return 'exists';
    }
    return this.inner.putBlob(repo, desc, open, opts);
  }

  putManifest(repo: string, desc: Descriptor, bytes: Buffer, tags: string[]): Promise<PutResult> {
    return this.inner.putManifest(repo, desc, bytes, tags);
  }
}

/** One left-out blob an image needs, and where. */
export interface NeededBlob {
  repository: string;
  desc: Descriptor;
  image: string;
}

/** Every blob (not manifest) an image's graph in a bundle needs, once each (manifests are always carried). */
export async function imageBlobs(reader: ArchiveReader, image: { digest: string; mediaType: string; size: number; source: string }): Promise<Descriptor[]> {
  const out = new Map<string, Descriptor>();
  const stack: Descriptor[] = [{ digest: image.digest, mediaType: image.mediaType, size: image.size }];
  const seen = new Set<string>();
  while (stack.length) {
    const d = stack.pop()!;
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    const parsed = parseManifest((await reader.fetchManifest('', d)).bytes, d.mediaType, `${image.source} ${d.digest}`);
    stack.push(...parsed.manifests);
    for (const b of parsed.blobs) out.set(b.digest, b);
  }
  return [...out.values()];
}

/** Walk an image's graph in the update and list the left-out blobs it needs. */
export async function leftOutNeeds(reader: ArchiveReader, manifest: BundleManifest, image: { digest: string; mediaType: string; size: number; source: string }, repository: string): Promise<NeededBlob[]> {
  const left = new Map((manifest.base?.blobs ?? []).map((b) => [b.digest, b]));
  return (await imageBlobs(reader, image)).flatMap((b) => {
    const l = left.get(b.digest);
    return l ? [{ repository, desc: l, image: image.source }] : [];
  });
}

/**
 * Where the target holds each left-out blob. A registry links a blob per repository:
 * a blob the base put in one repository must be mounted into a new repository that
 * needs it. Every repository that needs a blob is asked (HEAD) first; a blob found
 * in none of them is looked for in the other repositories of the push. Returns the
 * repositories holding each blob (for mounts) and the needs no repository can meet.
 */
export async function locateLeftOut(
  needs: NeededBlob[],
  otherRepositories: string[],
  has: (repository: string, desc: Descriptor) => Promise<boolean>,
  limit: <T, R>(items: T[], fn: (item: T) => Promise<R>) => Promise<R[]>,
): Promise<{ holders: Map<string, string[]>; missing: NeededBlob[] }> {
  const found = await limit(needs, async (n) => ({ n, there: await has(n.repository, n.desc) }));
  const holders = new Map<string, string[]>();
  for (const { n, there } of found) if (there) holders.set(n.desc.digest, [...(holders.get(n.desc.digest) ?? []), n.repository]);
  const lacking = found.filter((f) => !f.there && !holders.has(f.n.desc.digest)).map((f) => f.n);
  // Needed only where absent: look in the push's other repositories.
  const byDigest = new Map<string, NeededBlob>();
  for (const n of lacking) byDigest.set(n.desc.digest, n);
  const elsewhere = await limit([...byDigest.values()], async (n) => {
    for (const repo of otherRepositories) if (await has(repo, n.desc)) return { digest: n.desc.digest, repo };
    return undefined;
  });
  for (const e of elsewhere) if (e) holders.set(e.digest, [e.repo]);
  return { holders, missing: lacking.filter((n) => !holders.has(n.desc.digest)) };
}

/** The refusal when the target lacks what the update leaves out: which base to push first. */
export function missingBaseError(base: BundleBase, missing: NeededBlob[], target: string): BundleError {
  const first = missing[0]!;
  return new BundleError(
    `this is an update bundle: it leaves out ${base.blobs.length} blobs of its base bundle ${base.name} (created ${base.created}, manifest ${base.digest}), ` +
      `and ${target} lacks ${missing.length} of those its images need (first: ${first.desc.digest} in ${first.repository}, for ${first.image}); ` +
      `nothing was pushed. Push ${base.name} to ${target} first, then this update.`,
    1,
  );
}
