import { resolve as resolvePath } from 'node:path';
import { ArchiveReader } from '../archive/reader.js';
import type { BundleImage, BundleManifest } from '../bundle/manifest.js';
import { imageBlobs, leftOutNeeds, locateLeftOut, missingBaseError, type NeededBlob } from '../bundle/update.js';
import type { Progress } from '../util/progress.js';
import { requireTrust, trustedManifest } from '../bundle/trust.js';
import { mapLimit } from '../copy/limit.js';
import { CopyEngine } from '../copy/engine.js';
import { parseReference, repositoryName } from '../oci/reference.js';
import { destinationRepository, digestTag, parseTarget, type PushTarget } from '../push/destination.js';
import { writeMirrorFiles, type MirrorMapping } from '../push/mirror-files.js';
import { createRegistryStore, type RegistryStore } from '../store/registry-store.js';
import { PUSH_PARTS } from '../sources/index.js';
import type { PushPart } from '../sources/source.js';
import { BundleError, UsageError, errorMessage } from '../util/errors.js';
import { humanBytes } from '../util/progress.js';
import { TOOL_NAME, TOOL_VERSION } from '../version.js';
import { printJson, progressFor, type OutputOptions } from './common.js';

export interface PushOptions extends OutputOptions {
  to: string;
  key?: string[];
  insecureSkipSignature?: boolean;
  keepRegistryHost?: boolean;
  dryRun?: boolean;
  recheck?: boolean;
  outDir: string;
  concurrency: number;
  retries: number;
  /** Idle timeout per registry connection, seconds (--timeout). */
  timeout?: number;
  chunkSize?: number;
  destTlsVerify: boolean;
  destCertDir?: string;
  caFile?: string[];
  authfile?: string;
  destAuthfile?: string;
  /** Devfile registries: write the offline registry folder here. */
  devfileOut?: string;
  devfileIndexTag?: string;
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

export function planPush(
  images: BundleImage[],
  target: PushTarget,
  parts: { part: PushPart; record: unknown }[] = [],
  options: Record<string, unknown> = {},
): PushItem[] {
  const overrides = new Map<string, { repository: string; tags: string[]; mirror?: boolean }>();
  for (const { part, record } of parts) {
    for (const [ref, d] of part.destinations?.(record, images, target, options) ?? []) overrides.set(ref, d);
  }
  return images.map((image) => {
    const o = overrides.get(image.refName);
    const repository = o?.repository ?? destinationRepository(target, sourceRepository(image));
    const tags = o?.tags ?? (image.tags.length > 0 ? [...image.tags] : [digestTag(image.digest)]);
    return { image, repository, tags, destination: `${target.registry}/${repository}:${tags[0]}`, ...(o?.mirror === false ? { mirror: false } : {}) };
  });
}

/**
 * Refuse a plan in which two different images would get the same destination
 * tag (the last pushed would silently win it): every clash, with both sources,
 * before the first request. The same image named twice is no clash.
 */
export function checkClashes(plan: PushItem[], target: PushTarget): void {
  const owner = new Map<string, PushItem>();
  const clashes: string[] = [];
  for (const item of plan) {
    for (const tag of item.tags) {
      const dest = `${target.registry}/${item.repository}:${tag}`;
      const prior = owner.get(dest);
      if (!prior) owner.set(dest, item);
      else if (prior.image.digest !== item.image.digest) {
        clashes.push(`${dest}: ${prior.image.source} (${prior.image.digest}) and ${item.image.source} (${item.image.digest})`);
      }
    }
  }
  if (clashes.length === 0) return;
  const what = clashes.length === 1 ? `two images would be pushed to ${clashes[0]}` : `${clashes.length} destination tags would each get two images:\n  ${clashes.join('\n  ')}`;
  throw new UsageError(
    `${what}; nothing was pushed`,
    target.keepRegistryHost
      ? 'the sources differ only in ways the destination path cannot show; bundle them under different names'
      : 'pass --keep-registry-host to keep each source\'s registry host in the path (quay.io/ns/app:1 lands at HOST/PREFIX/quay.io/ns/app:1)',
  );
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

/**
 * An update bundle leaves out blobs its base carried: before anything is sent, every
 * one an image needs must already be in the repository the image lands in.
 */
async function checkTargetHasBase(reader: ArchiveReader, manifest: BundleManifest, plan: PushItem[], dst: RegistryStore, opts: PushOptions, progress: Progress): Promise<Map<string, string[]>> {
  const base = manifest.base!;
  progress.phase(`checking that ${opts.to} holds what this update of ${base.name} leaves out`);
  const needs = new Map<string, NeededBlob>();
  for (const list of await mapLimit(plan, opts.concurrency, (item) => leftOutNeeds(reader, manifest, item.image, item.repository))) {
    for (const n of list) needs.set(`${n.repository}|${n.desc.digest}`, n);
  }
  const repositories = [...new Set(plan.map((p) => p.repository))];
  const { holders, missing } = await locateLeftOut([...needs.values()], repositories, (repo, desc) => dst.hasBlob(repo, desc), (items, fn) => mapLimit(items, opts.concurrency * 2, fn));
  progress.finishPhase(missing.length === 0);
  if (missing.length > 0) throw missingBaseError(base, missing, opts.to);
  progress.info(`  ${opts.to} holds all ${holders.size} blobs this update leaves out that its images need`);
  return holders;
}

export async function pushCommand(file: string, opts: PushOptions): Promise<number> {
  const started = Date.now();
  const target = parseTarget(opts.to, opts.keepRegistryHost);
  const trusted = await requireTrust(opts, 'push');
  const progress = await progressFor(opts);
  // No request goes out before the bundle is checked and the plan is known to be sound.
  const store = opts.dryRun
    ? undefined
    : createRegistryStore(target.registry, {
        tlsVerify: opts.destTlsVerify,
        certDir: opts.destCertDir,
        caFiles: opts.caFile,
        authfile: opts.destAuthfile ?? opts.authfile,
        concurrency: opts.concurrency,
        retries: opts.retries,
        timeoutMs: opts.timeout ? opts.timeout * 1000 : undefined,
        chunkSize: opts.chunkSize ? opts.chunkSize * 1024 * 1024 : undefined,
        userAgent: `${TOOL_NAME}/${TOOL_VERSION}`,
      });
  const reader = await ArchiveReader.open(file, { volumesDirs: opts.volumesDir });
  try {
    const manifest = await trustedManifest(reader, trusted, 'push');
    if (!trusted) progress.warn('--insecure-skip-signature: pushing without checking who made this bundle');
    const parts = PUSH_PARTS.filter((p) => manifest.sources?.[p.kind] !== undefined);
    const kindOptions = opts as unknown as Record<string, unknown>;
    const fullPlan = planPush(manifest.images, target, parts.map((p) => ({ part: p, record: manifest.sources![p.kind] })), kindOptions);
    // Images a kind delivers itself (e.g. a devfile stack's artifact, rewritten) are left to it.
    const selfDelivered = new Set(parts.flatMap((p) => [...(p.delivers?.(manifest.sources![p.kind]) ?? [])]));
    const plan = fullPlan.filter((p) => !selfDelivered.has(p.image.refName));
    const skipped = manifest.skipped ?? [];
    checkClashes(fullPlan, target);
    for (const p of parts) await p.check?.(manifest.sources![p.kind], kindOptions);
    const totalBytes = manifest.members.filter((m) => m.path.startsWith('blobs/')).reduce((n, m) => n + m.size, 0);

    if (opts.dryRun) {
      if (opts.json) printJson({ dryRun: true, target: opts.to, images: fullPlan.map((p) => ({ source: p.image.source, digest: p.image.digest, destination: p.destination, tags: p.tags })), bytes: totalBytes, skipped });
      else {
        process.stdout.write(`would push ${plan.length} images (${humanBytes(totalBytes)} at most) to ${opts.to}:\n`);
        if (manifest.base) process.stdout.write(`this is an update of ${manifest.base.name} (manifest ${manifest.base.digest}): ${opts.to} must hold the ${manifest.base.blobs.length} blobs it leaves out\n`);
        for (const p of fullPlan) {
          const own = selfDelivered.has(p.image.refName) ? ' (its source kind delivers it, rewritten: new digest)' : ` (${p.image.digest})`;
          process.stdout.write(`  ${p.image.source}\n    -> ${target.registry}/${p.repository}:${p.tags.join(',')}${own}\n`);
        }
        for (const sk of skipped) process.stdout.write(`SKIPPED at create ${sk.source}: ${sk.reason} (needed by ${sk.neededBy.join('; ')})\n`);
      }
      return 0;
    }

    const dst = store!; // dry runs have returned above
    // One clear failure up front for an unreachable registry or wrong credentials, not one per image.
    await dst.client.ping();
    const baseHolders = manifest.base ? await checkTargetHasBase(reader, manifest, plan, dst, opts, progress) : undefined;
    // Which repositories need each shared blob: after an interrupted push, one of them may hold it already.
    const needs = new Map<string, Set<string>>();
    const graphs = await mapLimit(plan, opts.concurrency, async (item) => ({ repo: item.repository, blobs: await imageBlobs(reader, item.image).catch(() => []) }));
    for (const { repo, blobs } of graphs) for (const b of blobs) needs.set(b.digest, (needs.get(b.digest) ?? new Set()).add(repo));
    for (const [digest, repos] of needs) if (repos.size < 2) needs.delete(digest);
    const engine = new CopyEngine(reader, dst, { needs, concurrency: opts.concurrency, progress, skipPresent: !opts.recheck });
    // Blobs an update leaves out are mounted from where the base put them.
    for (const [digest, repos] of baseHolders ?? []) for (const repo of repos) engine.holdsAlready(digest, repo);
    // Blobs an update leaves out count too: they are mounted, or found there, as the engine walks the images.
    progress.phase(`pushing to ${opts.to}`, plan.length, totalBytes + (manifest.base?.blobs.reduce((n, b) => n + b.size, 0) ?? 0));
    const failures: { source: string; error: string }[] = [];
    const pushed: PushItem[] = [];
    // Interrupted (Ctrl-C, a service stop): say what is done and what is not. Nothing half-done is
    // visible at the target: a blob lands only whole and proven, a tag only once its image is complete.
    const interrupted = (signal: NodeJS.Signals): void => {
      progress.finishPhase(false);
      const s = engine.stats;
      process.stderr.write(
        `interrupted (${signal}): ${pushed.length} of ${plan.length} images pushed to ${opts.to} (${s.blobsWritten} blobs uploaded, ${s.blobsSkipped} already there); ` +
          `the other ${plan.length - pushed.length} are not tagged there and no mirror files were written; run the same push again: it sends only what is missing\n`,
      );
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    process.once('SIGINT', interrupted);
    process.once('SIGTERM', interrupted);
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
      .filter((p) => p.mirror !== false && (p.image.origin === 'registry' || namesRegistry(p.image.source)))
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
    const files = pushed.length > 0 ? await writeMirrorFiles(outDir, mappings, { insecure: opts.destTlsVerify === false }) : [];

    // Each source kind's part of the delivery (devfile registry, ...), after its images are in.
    const byRef = new Map(manifest.images.map((i) => [i.refName, i]));
    const planByRef = new Map(fullPlan.map((p) => [p.image.refName, p]));
    const reports: Record<string, unknown> = {};
    for (const part of parts) {
      try {
        const done = await part.deliver(manifest.sources![part.kind], {
          reader,
          dst,
          target,
          images: byRef,
          destinationOf(image: BundleImage) {
            const p = planByRef.get(image.refName);
            if (!p) throw new BundleError(`${image.refName} is not in the bundle`);
            return { repository: p.repository, tags: p.tags, reference: p.destination };
          },
          outDir,
          options: kindOptions,
          concurrency: opts.concurrency,
          progress,
        });
        reports[part.kind] = done.report;
        files.push(...done.files);
        failures.push(...(done.failures ?? []));
      } catch (err) {
        failures.push({ source: part.kind, error: errorMessage(err) });
        progress.warn(`${part.kind}: ${errorMessage(err)}`);
      }
    }
    const summary = {
      bundle: file,
      target: opts.to,
      pushed: pushed.length,
      failed: failures,
      stats: engine.stats,
      outDir: files.length ? outDir : null,
      files,
      skipped,
      ...(Object.keys(reports).length ? { sources: reports } : {}),
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
      for (const part of parts) part.printReport?.(reports[part.kind], process.stdout);
      for (const sk of skipped) process.stdout.write(`SKIPPED at create ${sk.source}: ${sk.reason} (needed by ${sk.neededBy.join('; ')})\n`);
      for (const f of failures) process.stdout.write(`FAILED ${f.source}: ${f.error}\n`);
    }
    await dst.close();
    return failures.length ? 1 : 0;
  } finally {
    await reader.close();
  }
}
