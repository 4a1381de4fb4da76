/**
 * Push's OpenShift part: where release payloads and components land (the
 * `oc adm release mirror` layout), and, once the images are in, the files for
 * the cluster: the release signature ConfigMaps, CatalogSources, the samples
 * operator patch; the install-config snippets and mirror sets come from the
 * one mirror-files writer.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { BundleImage, BundleManifest } from '../bundle/manifest.js';
import { formatReference, parseReference, repositoryName } from '../oci/reference.js';
import { signatureConfigMap, signatureLayers } from '../openshift/signatures.js';
import type { ReleaseRecord } from '../sources/release.js';
import type { RepositorySetRecord } from '../sources/repositories.js';
import type { ImageStreamFileRecord } from '../sources/imagestreams.js';
import type { ContentStore } from '../store/store.js';
import { verified, verifyBuffer } from '../util/digest.js';
import { BundleError } from '../util/errors.js';
import { destinationRepository, type PushTarget } from './destination.js';
import { yamlFile } from './mirror-files.js';

export const DEFAULT_RELEASE_REPO = 'openshift/release';

export interface Destination {
  repository: string;
  tags: string[];
  /** False for artifacts that are not images a cluster pulls (release signatures): left out of the mirror files. */
  mirror: boolean;
}

export const OPENSHIFT_FILES = {
  signatures: 'release-signatures.yaml',
  samples: 'samples-operator-patch.yaml',
} as const;

function releasesOf(manifest: BundleManifest): ReleaseRecord[] {
  return (manifest.sources?.['releases'] as ReleaseRecord[] | undefined) ?? [];
}

/** The release repository under the target's prefix. */
export function releaseRepository(target: PushTarget, releaseRepo: string): string {
  const repo = releaseRepo.replace(/^\/+|\/+$/g, '');
  if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(repo)) {
    throw new BundleError(`--release-repo ${releaseRepo}: not a repository name (lowercase letters, digits, . _ - and /)`, 2);
  }
  return target.prefix ? `${target.prefix}/${repo}` : repo;
}

/**
 * Destinations that differ from the default (source host dropped, path kept):
 * a release payload goes to `<release repo>:<version>-<arch>`, each component to
 * `<release repo>:<version>-<arch>-<component>`, signatures beside them.
 */
export function openShiftDestinations(manifest: BundleManifest, target: PushTarget, releaseRepo = DEFAULT_RELEASE_REPO): Map<string, Destination> {
  const out = new Map<string, Destination>();
  const add = (refName: string, repository: string, tag: string, mirror = true): void => {
    const d = out.get(refName);
    if (d && d.repository === repository) {
      if (!d.tags.includes(tag)) d.tags.push(tag);
    } else out.set(refName, { repository, tags: [tag], mirror });
  };
  const releases = releasesOf(manifest);
  if (releases.length === 0) return out;
  const repo = releaseRepository(target, releaseRepo);
  for (const r of releases) {
    add(r.refName, repo, `${r.version}-${r.arch}`);
    for (const p of r.payloads) for (const c of p.components) add(c.image, repo, `${r.version}-${p.arch}-${c.name}`);
    for (const s of r.signatures) add(s.refName, repo, parseReference(s.refName).tag!, false);
  }
  return out;
}

/** Source repositories of the releases (payload and components), for the install-config snippets. */
export function releaseSourceRepositories(manifest: BundleManifest): string[] {
  const repos = new Set<string>();
  for (const r of releasesOf(manifest)) {
    repos.add(repositoryName(parseReference(r.refName)));
    for (const p of r.payloads) for (const c of p.components) repos.add(repositoryName(parseReference(c.image)));
  }
  return [...repos].sort();
}

async function readVerified(reader: ContentStore, desc: { digest: string; size: number; mediaType: string }, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of verified(await reader.openBlob('', desc), desc.digest, desc.size, what)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export interface PushedImage {
  image: BundleImage;
  repository: string;
  tags: string[];
}

export interface OpenShiftDeliveryContext {
  manifest: BundleManifest;
  reader: ContentStore;
  target: PushTarget;
  outDir: string;
  /** What was pushed where, by refName. */
  pushed: ReadonlyMap<string, PushedImage>;
}

export interface OpenShiftReport {
  releases?: unknown[];
  repositories?: unknown[];
  imageStreams?: unknown[];
  skipped?: BundleManifest['skipped'];
}

/** Write the OpenShift files for what was pushed; returns the report sections and the files written. */
export async function deliverOpenShift(ctx: OpenShiftDeliveryContext): Promise<{ report: OpenShiftReport; files: string[] }> {
  const { manifest, target } = ctx;
  const files: string[] = [];
  const report: OpenShiftReport = {};
  const where = (refName: string): string | null => {
    const p = ctx.pushed.get(refName);
    return p ? `${target.registry}/${p.repository}:${p.tags[0]}` : null;
  };
  const write = async (file: string, content: string): Promise<void> => {
    await mkdir(ctx.outDir, { recursive: true });
    const p = path.join(ctx.outDir, file);
    await writeFile(p, content, 'utf8');
    files.push(p);
  };

  const releases = releasesOf(manifest);
  if (releases.length > 0) {
    const configMaps: unknown[] = [];
    for (const r of releases) {
      for (const s of r.signatures) {
        const img = manifest.images.find((i) => i.refName === s.refName);
        if (!img || !ctx.pushed.has(s.refName)) continue;
        const what = `signatures of ${r.image}`;
        const m = await ctx.reader.fetchManifest('', img);
        verifyBuffer(m.bytes, img.digest, img.size, what);
        const { digest, layers } = signatureLayers(m.bytes, what);
        const sigs = [];
        for (const l of layers) sigs.push(await readVerified(ctx.reader, l, what));
        configMaps.push(signatureConfigMap(digest, sigs));
      }
    }
    if (configMaps.length > 0) {
      await write(
        OPENSHIFT_FILES.signatures,
        yamlFile(
          ['Release signatures: the cluster version operator checks releases against these.', `Apply with: oc apply -f ${OPENSHIFT_FILES.signatures}`],
          ...configMaps,
        ),
      );
    }
    report.releases = releases.map((r) => {
      const components = r.payloads.flatMap((p) => p.components);
      return {
        release: r.image,
        version: r.version,
        arch: r.arch,
        digest: r.digest,
        pushedTo: where(r.refName),
        components: components.length,
        componentsPushed: components.filter((c) => ctx.pushed.has(c.image)).length,
        componentsTo: components.length ? `${target.registry}/${ctx.pushed.get(components[0]!.image)?.repository ?? '?'}:${r.version}-<arch>-<component>` : null,
        signatures: r.signatures.filter((s) => ctx.pushed.has(s.refName)).reduce((n, s) => n + s.count, 0),
        skippedComponents: r.skippedComponents,
      };
    });
  }

  const repoSets = (manifest.sources?.['repositories'] as RepositorySetRecord[] | undefined) ?? [];
  if (repoSets.length > 0) {
    report.repositories = repoSets.map((set) => ({
      registry: set.registry,
      repositories: set.repositories.map((r) => ({
        repository: r.name,
        pushedTo: `${target.registry}/${destinationRepository(target, repositoryName(parseReference(`${set.registry}/${r.name}`)))}`,
        tags: r.tags.filter((t) => ctx.pushed.has(formatReference(parseReference(`${set.registry}/${r.name}:${t}`)))),
      })),
    }));
  }

  const streamFiles = (manifest.sources?.['imageStreams'] as ImageStreamFileRecord[] | undefined) ?? [];
  if (streamFiles.length > 0) {
    const streams = streamFiles.flatMap((f) => f.imageStreams);
    const pushedStream = (s: (typeof streams)[number]): boolean => s.carried && s.tags.every((t) => ctx.pushed.has(t.image));
    const skippedStreams = [...new Set(streams.filter((s) => !pushedStream(s)).map((s) => s.name))].sort();
    // The samples operator swaps the registry host of its image streams for samplesRegistry and keeps
    // the repository path; push keeps the path under the --to prefix, so HOST/PREFIX is the mirror.
    const samplesRegistry = target.prefix ? `${target.registry}/${target.prefix}` : target.registry;
    await write(
      OPENSHIFT_FILES.samples,
      yamlFile(
        [
          'Samples operator: pull its image streams from the mirror; skip those not carried.',
          `Apply with: oc patch configs.samples.operator.openshift.io cluster --type merge --patch-file ${OPENSHIFT_FILES.samples}`,
        ],
        { spec: { managementState: 'Managed', samplesRegistry, skippedImagestreams: skippedStreams } },
      ),
    );
    report.imageStreams = streams.map((s) => ({
      name: s.name,
      pushed: pushedStream(s),
      tags: s.tags.map((t) => ({ tag: t.name, source: t.image, pushedTo: where(t.image) })),
    }));
  }
  if (manifest.skipped?.length) report.skipped = manifest.skipped;
  return { report, files };
}
