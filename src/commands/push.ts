import { resolve as resolvePath } from 'node:path';
import { ArchiveReader } from '../archive/reader.js';
import type { BundleImage } from '../bundle/manifest.js';
import { validateManifest } from '../bundle/validate.js';
import { checkSignature } from '../bundle/trust.js';
import { mapLimit } from '../copy/limit.js';
import { CopyEngine } from '../copy/engine.js';
import { parseReference, repositoryName } from '../oci/reference.js';
import { destinationRepository, digestTag, parseTarget, type PushTarget } from '../push/destination.js';
import { writeMirrorFiles, type MirrorMapping } from '../push/mirror-files.js';
import { deliverOpenShift, openShiftDestinations, releaseSourceRepositories, type Destination, type OpenShiftReport } from '../push/openshift.js';
import { loadTrustedKeys } from '../sign/keys.js';
import { createRegistryStore } from '../store/registry-store.js';
import { BundleError, UsageError, errorMessage } from '../util/errors.js';
import { humanBytes } from '../util/progress.js';
import { TOOL_NAME, TOOL_VERSION } from '../version.js';
import { printJson, progressFor, type OutputOptions } from './common.js';

export interface PushOptions extends OutputOptions {
  to: string;
  key?: string[];
  insecureSkipSignature?: boolean;
  dryRun?: boolean;
  recheck?: boolean;
  outDir: string;
  concurrency: number;
  retries: number;
  chunkSize?: number;
  destTlsVerify: boolean;
  destCertDir?: string;
  caFile?: string[];
  authfile?: string;
  destAuthfile?: string;
  /** Repository (under the --to prefix) for OpenShift release payloads and components. */
  releaseRepo?: string;
}

export interface PushItem {
  image: BundleImage;
  repository: string;
  tags: string[];
  /** First destination reference, `host/repo:tag`. */
  destination: string;
  /** False for artifacts clusters do not pull (release signatures): no mirror-file entry. */
  mirror?: boolean;
}

/** Where each image goes; `overrides` (by refName) come from source kinds with a layout of their own. */
export function planPush(images: BundleImage[], target: PushTarget, overrides?: ReadonlyMap<string, Destination>): PushItem[] {
  return images.map((image) => {
    const o = overrides?.get(image.refName);
    if (o) return { image, repository: o.repository, tags: [...o.tags], destination: `${target.registry}/${o.repository}:${o.tags[0]}`, mirror: o.mirror };
    const repository = destinationRepository(target, sourceRepository(image));
    const tags = image.tags.length > 0 ? [...image.tags] : [digestTag(image.digest)];
    return { image, repository, tags, destination: `${target.registry}/${repository}:${tags[0]}` };
  });
}

/** Whether a source reference starts with a registry host (`example.com/ns/app:1`, not `app:1`). */
function namesRegistry(source: string): boolean {
  const first = source.split('/')[0]!;
  return source.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
}

/** `host/repo` of a registry image; the bare name of a layout image not named by a full reference. */
function sourceRepository(image: BundleImage): string {
  if (image.origin === 'registry' || image.source.includes('/')) return repositoryName(parseReference(image.source));
  return image.source.split(/[:@]/)[0]!;
}

export async function pushCommand(file: string, opts: PushOptions): Promise<number> {
  const started = Date.now();
  const target = parseTarget(opts.to);
  if (!opts.key?.length && !opts.insecureSkipSignature) {
    throw new UsageError('push needs --key PUB (a trusted public key or a directory of them) to check who signed the bundle; --insecure-skip-signature pushes without that check');
  }
  const trusted = opts.key?.length ? await loadTrustedKeys(opts.key) : undefined;
  const progress = await progressFor(opts);
  // Reach the registry (and log in) while the bundle is opened and checked.
  const store = opts.dryRun
    ? undefined
    : createRegistryStore(target.registry, {
        tlsVerify: opts.destTlsVerify,
        certDir: opts.destCertDir,
        caFiles: opts.caFile,
        authfile: opts.destAuthfile ?? opts.authfile,
        concurrency: opts.concurrency,
        retries: opts.retries,
        chunkSize: opts.chunkSize ? opts.chunkSize * 1024 * 1024 : undefined,
        userAgent: `${TOOL_NAME}/${TOOL_VERSION}`,
      });
  const reachable = store?.client.ping();
  reachable?.catch(() => undefined); // awaited below, after the bundle's own checks
  const reader = await ArchiveReader.open(file);
  try {
    const sig = checkSignature(reader, trusted);
    if (sig.problems.length > 0) {
      throw new BundleError(`refusing to push ${file}: ${sig.problems.map((p) => p.message).join('; ')}`, 1);
    }
    if (!trusted) progress.warn('--insecure-skip-signature: pushing without checking who made this bundle');
    const manifest = validateManifest(JSON.parse(reader.manifestBytes.toString('utf8')));
    const plan = planPush(manifest.images, target, openShiftDestinations(manifest, target, opts.releaseRepo));
    const totalBytes = manifest.members.filter((m) => m.path.startsWith('blobs/')).reduce((n, m) => n + m.size, 0);

    if (opts.dryRun) {
      if (opts.json) printJson({ dryRun: true, target: opts.to, images: plan.map((p) => ({ source: p.image.source, digest: p.image.digest, destination: p.destination, tags: p.tags })), bytes: totalBytes });
      else {
        process.stdout.write(`would push ${plan.length} images (${humanBytes(totalBytes)} at most) to ${opts.to}:\n`);
        for (const p of plan) process.stdout.write(`  ${p.image.source}\n    -> ${target.registry}/${p.repository}:${p.tags.join(',')} (${p.image.digest})\n`);
      }
      return 0;
    }

    const dst = store!; // dry runs have returned above
    // One clear failure up front for an unreachable registry or wrong credentials, not one per image.
    await reachable;
    const engine = new CopyEngine(reader, dst, { concurrency: opts.concurrency, progress, skipPresent: !opts.recheck });
    progress.phase(`pushing to ${opts.to}`, plan.length, totalBytes);
    const failures: { source: string; error: string }[] = [];
    const pushed: PushItem[] = [];
    // Images in flight are bounded too (manifest requests are not under the blob limit).
    await mapLimit(plan, opts.concurrency * 2, async (item) => {
      try {
        await engine.copyImage({
          srcRepo: '',
          dstRepo: item.repository,
          desc: { digest: item.image.digest, mediaType: item.image.mediaType, size: item.image.size },
          tags: item.tags,
          label: item.image.source,
        });
        pushed.push(item);
        progress.info(`  ${item.image.source} -> ${item.destination}`);
      } catch (err) {
        failures.push({ source: item.image.source, error: errorMessage(err) });
        progress.warn(`${item.image.source}: ${errorMessage(err)}`);
      }
    });
    progress.finishPhase(failures.length === 0);

    const mappings: MirrorMapping[] = pushed
      // Images from OCI layouts count when they are named by a full reference (registry host included).
      .filter((p) => p.mirror !== false && (p.image.origin !== 'oci-layout' || namesRegistry(p.image.source)))
      .map((p) => {
        const src = parseReference(p.image.source);
        return {
          source: p.image.source,
          sourceRepository: repositoryName(src),
          destination: p.destination,
          destinationRepository: `${target.registry}/${p.repository}`,
          digest: p.image.digest,
          tagged: !!src.tag && !src.digest,
        };
      });
    const outDir = resolvePath(opts.outDir);
    const files =
      pushed.length > 0 ? await writeMirrorFiles(outDir, mappings, { insecure: opts.destTlsVerify === false, installConfigSources: releaseSourceRepositories(manifest) }) : [];
    let openshift: OpenShiftReport = {};
    if (manifest.sources || manifest.skipped) {
      const delivered = await deliverOpenShift({ manifest, reader, target, outDir, pushed: new Map(pushed.map((p) => [p.image.refName, p])) });
      openshift = delivered.report;
      files.push(...delivered.files);
    }
    const summary = {
      bundle: file,
      target: opts.to,
      pushed: pushed.length,
      failed: failures,
      stats: engine.stats,
      outDir: files.length ? outDir : null,
      files,
      ...openshift,
      seconds: (Date.now() - started) / 1000,
    };
    if (opts.json) printJson(summary);
    else if (!opts.quiet || failures.length) {
      const s = engine.stats;
      process.stdout.write(
        `pushed ${pushed.length} of ${plan.length} images to ${opts.to}: ${s.blobsWritten} blobs uploaded (${humanBytes(s.bytesWritten)}), ` +
          `${s.blobsSkipped} already there, ${s.blobsMounted} mounted, ${s.manifestsWritten} manifests written` +
          `${s.imagesSkipped ? `, ${s.imagesSkipped} images already complete` : ''}, in ${summary.seconds.toFixed(1)} s\n`,
      );
      if (files.length) process.stdout.write(`mirror configuration in ${outDir}: ${files.map((f) => f.split('/').pop()).join(', ')}\n`);
      printOpenShiftReport(openshift);
      for (const f of failures) process.stdout.write(`FAILED ${f.source}: ${f.error}\n`);
    }
    await dst.close();
    return failures.length ? 1 : 0;
  } finally {
    await reader.close();
  }
}

/** What push did with each release, repository set and image stream, for people. */
function printOpenShiftReport(r: OpenShiftReport): void {
  const out = (s: string): boolean => process.stdout.write(`${s}\n`);
  for (const rel of (r.releases ?? []) as { release: string; pushedTo: string | null; components: number; componentsPushed: number; componentsTo: string | null; signatures: number; skippedComponents: string[] }[]) {
    out(`release ${rel.release} -> ${rel.pushedTo ?? 'NOT PUSHED'}: ${rel.componentsPushed} of ${rel.components} components (${rel.componentsTo ?? '-'}), ${rel.signatures} signatures`);
    if (rel.skippedComponents.length) out(`  components skipped (--skip-missing): ${rel.skippedComponents.join(', ')}`);
  }
  for (const set of (r.repositories ?? []) as { registry: string; repositories: { repository: string; pushedTo: string; tags: string[] }[] }[]) {
    out(`repositories of ${set.registry}: ${set.repositories.length} repositories, ${set.repositories.reduce((n, x) => n + x.tags.length, 0)} tags`);
    for (const x of set.repositories) out(`  ${x.repository} -> ${x.pushedTo} (${x.tags.join(', ')})`);
  }
  for (const s of (r.imageStreams ?? []) as { name: string; pushed: boolean; tags: { tag: string; pushedTo: string | null }[] }[]) {
    out(`image stream ${s.name}: ${s.pushed ? 'pushed' : 'NOT CARRIED (in skippedImagestreams)'}${s.tags.length ? ` (${s.tags.map((t) => `${t.tag} -> ${t.pushedTo ?? '-'}`).join(', ')})` : ''}`);
  }
  for (const s of r.skipped ?? []) out(`SKIPPED at create ${s.source}: ${s.reason} (needed by ${s.neededBy.join(', ')})`);
}
