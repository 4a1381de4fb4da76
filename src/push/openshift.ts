/**
 * Push's OpenShift parts, one per source kind:
 *
 * - releases: payloads to `<release repo>:<version>-<arch>`, components to
 *   `<release repo>:<version>-<arch>-<component>` (the `oc adm release mirror`
 *   layout; `--release-repo`, default `openshift/release`, under the --to prefix),
 *   signatures beside them; writes the signature ConfigMaps
 *   (release-signatures.yaml) and the install-config.yaml snippets;
 * - operators: the filtered catalog (left out of the mirror sets: clusters name it
 *   in a CatalogSource, by digest at the mirror), one CatalogSource per catalog
 *   (catalogsource-<name>.yaml); its bundles and related images get mirror-set
 *   entries like any image;
 * - repositories: a report of what went where;
 * - imageStreams: the samples operator patch (samples-operator-patch.yaml).
 *
 * The mirror sets (idms.yaml, ...) for all of them come from the one mirror-files writer.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { BundleImage } from '../bundle/manifest.js';
import { formatReference, parseReference, repositoryName } from '../oci/reference.js';
import { signatureConfigMap, signatureLayers } from '../openshift/signatures.js';
import type { CatalogRecord } from '../sources/catalog.js';
import type { ImageStreamFileRecord } from '../sources/imagestreams.js';
import type { ReleaseRecord } from '../sources/release.js';
import type { RepositorySetRecord } from '../sources/repositories.js';
import type { PushContext, PushPart } from '../sources/source.js';
import { readSmallBlob } from '../oci/layer-files.js';
import { verifyBuffer } from '../util/digest.js';
import { UsageError } from '../util/errors.js';
import { destinationRepository, type PushTarget } from './destination.js';
import { writeInstallConfigSources, yamlFile } from './mirror-files.js';

export const DEFAULT_RELEASE_REPO = 'openshift/release';

export const OPENSHIFT_FILES = {
  signatures: 'release-signatures.yaml',
  samples: 'samples-operator-patch.yaml',
} as const;

const REPO_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

/** The release repository under the target's prefix. */
export function releaseRepository(target: PushTarget, releaseRepo: unknown): string {
  const repo = typeof releaseRepo === 'string' ? releaseRepo.replace(/^\/+|\/+$/g, '') : DEFAULT_RELEASE_REPO;
  if (!REPO_RE.test(repo)) throw new UsageError(`--release-repo ${String(releaseRepo)}: not a repository name (lowercase letters, digits, . _ - and /)`);
  return target.prefix ? `${target.prefix}/${repo}` : repo;
}

async function writeOut(outDir: string, file: string, content: string): Promise<string> {
  await mkdir(outDir, { recursive: true });
  const p = path.join(outDir, file);
  await writeFile(p, content, 'utf8');
  return p;
}

/** The ConfigMap of one signatures artifact in the bundle, every byte checked against its digest. */
async function configMapOf(ctx: PushContext, image: BundleImage, what: string): Promise<Record<string, unknown>> {
  const m = await ctx.reader.fetchManifest('', image);
  verifyBuffer(m.bytes, image.digest, image.size, what);
  const { digest, layers } = signatureLayers(m.bytes, what);
  const sigs: Buffer[] = [];
  for (const l of layers) sigs.push(await readSmallBlob(ctx.reader, '', l, what, 1 << 20));
  return signatureConfigMap(digest, sigs);
}

interface ReleaseReport {
  release: string;
  version: string;
  arch: string;
  digest: string;
  pushedTo: string;
  components: number;
  componentsTo: string;
  signatures: number;
  skippedComponents: string[];
}

export const releasesPushPart: PushPart = {
  kind: 'releases',
  destinations(record, _images, target, options) {
    const out = new Map<string, { repository: string; tags: string[]; mirror?: boolean }>();
    const repository = releaseRepository(target, options['releaseRepo']);
    const add = (refName: string, tag: string, mirror = true): void => {
      const d = out.get(refName);
      if (d) {
        if (!d.tags.includes(tag)) d.tags.push(tag);
      } else out.set(refName, { repository, tags: [tag], ...(mirror ? {} : { mirror: false }) });
    };
    for (const r of record as ReleaseRecord[]) {
      add(r.refName, `${r.version}-${r.arch}`);
      for (const p of r.payloads) for (const c of p.components) add(c.image, `${r.version}-${p.arch}-${c.name}`);
      for (const s of r.signatures) add(s.refName, parseReference(s.refName).tag!, false);
    }
    return out;
  },
  async deliver(record, ctx) {
    const releases = record as ReleaseRecord[];
    const files: string[] = [];
    const configMaps: Record<string, unknown>[] = [];
    const installSources = new Map<string, Set<string>>();
    const mirrorOf = (source: string, refName: string): void => {
      const image = ctx.images.get(refName);
      if (!image) return;
      const dst = `${ctx.target.registry}/${ctx.destinationOf(image).repository}`;
      const repo = repositoryName(parseReference(source));
      if (!installSources.has(repo)) installSources.set(repo, new Set());
      installSources.get(repo)!.add(dst);
    };
    const report: ReleaseReport[] = [];
    for (const r of releases) {
      mirrorOf(r.image, r.refName);
      for (const p of r.payloads) for (const c of p.components) mirrorOf(c.image, c.image);
      let signatures = 0;
      for (const s of r.signatures) {
        const image = ctx.images.get(s.refName);
        if (!image) continue;
        configMaps.push(await configMapOf(ctx, image, `signatures of ${r.image}`));
        signatures += s.count;
      }
      const payload = ctx.images.get(r.refName);
      const first = r.payloads.flatMap((p) => p.components)[0];
      report.push({
        release: r.image,
        version: r.version,
        arch: r.arch,
        digest: r.digest,
        pushedTo: payload ? ctx.destinationOf(payload).reference : '',
        components: r.payloads.reduce((n, p) => n + p.components.length, 0),
        componentsTo: first && ctx.images.get(first.image) ? `${ctx.target.registry}/${ctx.destinationOf(ctx.images.get(first.image)!).repository}:${r.version}-<arch>-<component>` : '',
        signatures,
        skippedComponents: r.skippedComponents,
      });
    }
    if (configMaps.length > 0) {
      files.push(
        await writeOut(
          ctx.outDir,
          OPENSHIFT_FILES.signatures,
          yamlFile(['Release signatures: the cluster version operator checks releases against these.', `Apply with: oc apply -f ${OPENSHIFT_FILES.signatures}`], ...configMaps),
        ),
      );
    }
    files.push(...(await writeInstallConfigSources(ctx.outDir, installSources)));
    return { report, files };
  },
  printReport(report, out) {
    for (const r of report as ReleaseReport[]) {
      out.write(`release ${r.release} -> ${r.pushedTo}: ${r.components} components (${r.componentsTo}), ${r.signatures} signatures\n`);
      if (r.skippedComponents.length) out.write(`  components skipped at create (--skip-missing): ${r.skippedComponents.join(', ')}\n`);
    }
  },
};

interface RepositorySetReport {
  registry: string;
  repositories: { repository: string; pushedTo: string; tags: string[] }[];
}

export const repositoriesPushPart: PushPart = {
  kind: 'repositories',
  async deliver(record, ctx) {
    const report: RepositorySetReport[] = (record as RepositorySetRecord[]).map((set) => ({
      registry: set.registry,
      repositories: set.repositories.map((r) => {
        const first = ctx.images.get(formatReference(parseReference(`${set.registry}/${r.name}:${r.tags[0]}`)));
        return { repository: r.name, pushedTo: first ? `${ctx.target.registry}/${ctx.destinationOf(first).repository}` : '', tags: r.tags };
      }),
    }));
    return { report, files: [] };
  },
  printReport(report, out) {
    for (const set of report as RepositorySetReport[]) {
      out.write(`repositories of ${set.registry}: ${set.repositories.length} repositories, ${set.repositories.reduce((n, x) => n + x.tags.length, 0)} tags\n`);
      for (const x of set.repositories) out.write(`  ${x.repository} -> ${x.pushedTo} (${x.tags.join(', ')})\n`);
    }
  },
};

interface ImageStreamReport {
  name: string;
  carried: boolean;
  tags: { tag: string; source: string; pushedTo: string }[];
}

export const imageStreamsPushPart: PushPart = {
  kind: 'imageStreams',
  async deliver(record, ctx) {
    const streams = (record as ImageStreamFileRecord[]).flatMap((f) => f.imageStreams);
    const skippedStreams = [...new Set(streams.filter((s) => !s.carried).map((s) => s.name))].sort();
    // The samples operator swaps the registry host of its image streams for samplesRegistry and
    // keeps the repository path; push keeps the path under the --to prefix, so HOST/PREFIX is the mirror.
    const samplesRegistry = ctx.target.prefix ? `${ctx.target.registry}/${ctx.target.prefix}` : ctx.target.registry;
    const file = await writeOut(
      ctx.outDir,
      OPENSHIFT_FILES.samples,
      yamlFile(
        [
          'Samples operator: pull its image streams from the mirror; skip those not carried.',
          `Apply with: oc patch configs.samples.operator.openshift.io cluster --type merge --patch-file ${OPENSHIFT_FILES.samples}`,
        ],
        { spec: { managementState: 'Managed', samplesRegistry, skippedImagestreams: skippedStreams } },
      ),
    );
    const report: ImageStreamReport[] = streams.map((s) => ({
      name: s.name,
      carried: s.carried,
      tags: s.tags.map((t) => {
        const image = ctx.images.get(t.image);
        return { tag: t.name, source: t.image, pushedTo: image ? ctx.destinationOf(image).reference : '' };
      }),
    }));
    return { report, files: [file] };
  },
  printReport(report, out) {
    for (const s of report as ImageStreamReport[]) {
      out.write(`image stream ${s.name}: ${s.carried ? s.tags.map((t) => `${t.tag} -> ${t.pushedTo}`).join(', ') || 'no images' : 'NOT CARRIED (listed in skippedImagestreams)'}\n`);
    }
  },
};

/** A CatalogSource name (DNS-1123 label) from a catalog reference: `redhat-operator-index-v4-15`. */
export function catalogSourceName(catalog: string): string {
  const ref = parseReference(catalog);
  const base = `${ref.repository.split('/').pop()}${ref.tag ? `-${ref.tag}` : ''}`;
  return (
    base
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 63)
      .replace(/-+$/, '') || 'catalog'
  );
}

interface CatalogReport {
  catalog: string;
  filtered: string;
  catalogSource: string;
  full: string | null;
  packages: { name: string; defaultChannel: string; channels: string[]; bundles: number }[];
  relatedImages: number;
}

export const operatorsPushPart: PushPart = {
  kind: 'operators',
  destinations(record, _images, target) {
    const out = new Map<string, { repository: string; tags: string[]; mirror?: boolean }>();
    for (const r of record as CatalogRecord[]) {
      const ref = parseReference(r.filtered.refName);
      out.set(r.filtered.refName, { repository: destinationRepository(target, repositoryName(ref)), tags: [ref.tag!], mirror: false });
    }
    return out;
  },
  async deliver(record, ctx) {
    const files: string[] = [];
    const report: CatalogReport[] = [];
    const names = new Set<string>();
    for (const r of record as CatalogRecord[]) {
      const image = ctx.images.get(r.filtered.refName);
      if (!image) continue;
      let name = catalogSourceName(r.catalog);
      for (let i = 2; names.has(name); i++) name = `${catalogSourceName(r.catalog).slice(0, 59)}-${i}`;
      names.add(name);
      const pinned = `${ctx.target.registry}/${ctx.destinationOf(image).repository}@${image.digest}`;
      const file = `catalogsource-${name}.yaml`;
      const catalogSource = {
        apiVersion: 'operators.coreos.com/v1alpha1',
        kind: 'CatalogSource',
        metadata: { name, namespace: 'openshift-marketplace' },
        spec: {
          sourceType: 'grpc',
          image: pinned,
          displayName: `${r.catalog} (filtered: ${r.packages.map((p) => p.name).join(', ')})`,
          publisher: 'airgap bundle',
        },
      };
      files.push(
        await writeOut(
          ctx.outDir,
          file,
          yamlFile([`CatalogSource for ${r.catalog}, filtered, at the mirror.`, 'Apply idms.yaml first (bundles and their images pull from the mirror), then:', `oc apply -f ${file}`], catalogSource),
        ),
      );
      const full = r.full ? ctx.images.get(r.full.refName) : undefined;
      report.push({
        catalog: r.catalog,
        filtered: pinned,
        catalogSource: name,
        full: full ? ctx.destinationOf(full).reference : null,
        packages: r.packages.map((p) => ({ name: p.name, defaultChannel: p.defaultChannel, channels: p.channels, bundles: p.bundles.length })),
        relatedImages: r.relatedImages.length,
      });
    }
    return { report, files };
  },
  printReport(report, out) {
    for (const c of report as CatalogReport[]) {
      out.write(`catalog ${c.catalog} -> ${c.filtered} (CatalogSource ${c.catalogSource})${c.full ? `; full catalog -> ${c.full}` : ''}\n`);
      for (const p of c.packages) out.write(`  ${p.name}: channels ${p.channels.join(', ')} (default ${p.defaultChannel}), ${p.bundles} bundles\n`);
    }
  },
};
