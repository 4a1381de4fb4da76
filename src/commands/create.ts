import { constants, createReadStream } from 'node:fs';
import { access, mkdtemp, open, rm, stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve as resolvePath, basename } from 'node:path';
import { parseVolumeSize, volumeName } from '../archive/volumes.js';
import { ArchiveWriter, type LayoutEntry } from '../archive/writer.js';
import { MANIFEST_PAYLOAD_TYPE, type BundleImage } from '../bundle/manifest.js';
import { isIndexMediaType } from '../oci/media-types.js';
import { LeaveOutStore, loadBase } from '../bundle/update.js';
import { loadConfig, type LoadedConfig } from '../config/config.js';
import { CopyEngine, type CopyStats, type ImagePlan } from '../copy/engine.js';
import { Limiter } from '../copy/limit.js';
import { pullStoreFactory } from '../store/mirrored-store.js';
import { loadRegistriesConfig } from '../registry/registries-conf.js';
import type { RegistryOptions } from '../registry/options.js';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { keyId, loadPrivateKey, privateKeyPermissionWarning } from '../sign/keys.js';
import { signEnvelope } from '../sign/dsse.js';
import { sourceDateEpoch } from '../oci/image-builder.js';
import { SOURCE_KINDS } from '../sources/index.js';
import type { CreateContext, SkippedImage, SourceImage, SourcePlan } from '../sources/source.js';
import { defaultExecutable, hashFile, TOOL_EXECUTABLE_MEDIA_TYPE, TOOL_PLATFORM, type ToolExecutable } from '../standalone/executable.js';
import type { ContentStore } from '../store/store.js';
import { digestHex, verified } from '../util/digest.js';
import { BundleError, UsageError, errorMessage } from '../util/errors.js';
import { humanBytes, type Progress } from '../util/progress.js';
import { TOOL_NAME, TOOL_VERSION } from '../version.js';
import { printJson, progressFor, type OutputOptions } from './common.js';

export interface CreateOptions extends OutputOptions {
  config: string;
  output: string;
  signKey?: string;
  force?: boolean;
  continueOnError?: boolean;
  /** Record images a source needs that cannot be found as skipped, instead of failing. */
  skipMissing?: boolean;
  /** Carry cosign signatures, attestations and SBOMs (commander's --no-signatures sets false). */
  signatures: boolean;
  concurrency: number;
  maxConnectionsPerRegistry: number;
  retries: number;
  /** Idle timeout per registry connection, seconds (--timeout). */
  timeout?: number;
  level: number;
  srcTlsVerify: boolean;
  srcCertDir?: string;
  caFile?: string[];
  authfile?: string;
  srcAuthfile?: string;
  /** containers-registries.conf(5) file for pulls (default: the one podman reads, when present). */
  registriesConf?: string;
  /** Carry the standalone executable: true for this one (or the one npm run package built), or a path. */
  includeTool?: boolean | string;
  /** Make an update bundle: leave out the blobs this bundle (or saved manifest) carried. */
  since?: string;
  /** Write volumes of at most this size (`4GiB`, `fat32`, ...). */
  volumeSize?: string;
}

export async function createCommand(opts: CreateOptions): Promise<number> {
  const started = Date.now();
  const progress = await progressFor(opts);
  const config = await loadConfig(opts.config);
  for (const w of config.warnings) progress.warn(w);
  const output = resolvePath(opts.output);
  const dir = await stat(dirname(output)).catch(() => undefined);
  if (!dir?.isDirectory()) throw new UsageError(`-o ${opts.output}: the folder ${dirname(output)} does not exist`);
  await access(dirname(output), constants.W_OK).catch(() => {
    throw new UsageError(`-o ${opts.output}: the folder ${dirname(output)} is not writable`);
  });
  const volumeSize = opts.volumeSize ? parseVolumeSize(opts.volumeSize) : undefined;
  const existing = await stat(output).catch(() => undefined);
  if (existing?.isDirectory()) throw new UsageError(`-o ${opts.output} is a directory; name the .airgap file to write`);
  if (existing && !opts.force) throw new UsageError(`${opts.output} exists; pass --force to replace it`);
  if (volumeSize && !opts.force && (await stat(volumeName(output, 1)).catch(() => undefined))) {
    throw new UsageError(`${volumeName(opts.output, 1)} exists; pass --force to replace the volumes`);
  }
  const toolFile = opts.includeTool === undefined || opts.includeTool === false ? undefined : await executableToInclude(opts.includeTool);
  const base = opts.since ? await loadBase(opts.since) : undefined;
  const signer = opts.signKey ? await loadPrivateKey(opts.signKey) : undefined;
  const keyWarning = opts.signKey ? await privateKeyPermissionWarning(opts.signKey) : undefined;
  if (keyWarning) progress.warn(keyWarning);
  if (!signer) progress.warn('no --sign-key: the bundle will be unsigned, and `bundle push` will refuse it without --insecure-skip-signature');

  const registryOpts: RegistryOptions = {
    tlsVerify: opts.srcTlsVerify,
    certDir: opts.srcCertDir,
    caFiles: opts.caFile,
    authfile: opts.srcAuthfile ?? opts.authfile,
    concurrency: opts.concurrency,
    maxConnections: opts.maxConnectionsPerRegistry,
    retries: opts.retries,
    timeoutMs: opts.timeout ? opts.timeout * 1000 : undefined,
    userAgent: `${TOOL_NAME}/${TOOL_VERSION}`,
  };
  // Every pull goes through the registries configuration (mirrors, rewritten locations, blocked prefixes).
  const registriesConf = await loadRegistriesConfig(opts.registriesConf);
  if (registriesConf?.registries.length) progress.info(`registries configuration: ${registriesConf.file}`);
  const storeFor = pullStoreFactory(registryOpts, registriesConf, { onFallback: (m) => progress.warn(m) });

  const created = sourceDateEpoch() ?? new Date();
  const scratch: string[] = [];
  const ctx: CreateContext = {
    configDir: dirname(config.path),
    storeFor,
    concurrency: opts.concurrency,
    keepGoing: !!opts.continueOnError,
    skipMissing: !!opts.skipMissing,
    signatures: opts.signatures,
    created,
    progress,
    async tempDir() {
      const d = await mkdtemp(join(tmpdir(), 'bundle-create-'));
      scratch.push(d);
      return d;
    },
  };
  try {
    return await createFromSources(config, ctx, opts, { output, signer, started, toolFile, base, volumeSize });
  } finally {
    await Promise.all(scratch.map((d) => rm(d, { recursive: true, force: true })));
  }
}

/** Plan every source kind the config names, all before anything is downloaded. */
async function planSources(config: LoadedConfig, ctx: CreateContext): Promise<{ kind: string; plan: SourcePlan }[]> {
  const planned: { kind: string; plan: SourcePlan }[] = [];
  for (const kind of SOURCE_KINDS) {
    const section: unknown = kind.section(config);
    if (section === undefined) continue;
    planned.push({ kind: kind.kind, plan: await kind.plan(section, ctx) });
  }
  return planned;
}

/** One image per refName across kinds (two kinds may need the same image). */
function mergeImages(planned: { plan: Pick<SourcePlan, 'images'> }[]): SourceImage[] {
  const seen = new Map<string, SourceImage>();
  for (const { plan } of planned) {
    for (const img of plan.images) {
      const prior = seen.get(img.refName);
      if (prior && prior.root.desc.digest !== img.root.desc.digest) {
        throw new BundleError(`two different images would both be called ${img.refName} in the bundle (${prior.root.desc.digest} and ${img.root.desc.digest})`);
      }
      if (!prior) seen.set(img.refName, img);
    }
  }
  return [...seen.values()];
}

async function createFromSources(
  config: LoadedConfig,
  ctx: CreateContext,
  opts: CreateOptions,
  run: { output: string; signer: KeyObject | undefined; started: number; toolFile?: string; base?: Awaited<ReturnType<typeof loadBase>>; volumeSize?: number },
): Promise<number> {
  const { progress } = ctx;
  const { output, signer, started, toolFile, base, volumeSize } = run;
  // The file is opened first: an image's manifests are read the moment it is resolved
  // (while the other sources still resolve), by the engine that then copies it there.
  // Interrupted (Ctrl-C, a service stop): leave no half-written file behind. The handlers
  // are in place before the file exists, so no signal can slip between the two.
  const opening = ArchiveWriter.create(output, { level: opts.level, created: ctx.created, volumeSize });
  const images: BundleImage[] = [];
  let sources: SourceImage[] | undefined;
  const failed: { source: string; error: string }[] = [];
  const skipped: SkippedImage[] = [];
  // Once interrupted, the interruption decides how the command ends (not the errors it causes).
  let interruption: Promise<number> | undefined;
  const interrupted = (signal: NodeJS.Signals) => {
    progress.finishPhase(false);
    interruption = opening
      .then((w) => {
        const done = sources ? ` (${images.length} of ${sources.length} images were complete)` : '';
        process.stderr.write(
          `interrupted (${signal}): ${output} was not written${done}; removed its temporary file ${w.tempPath}; run the same create again to start over\n`,
        );
        return w.abort();
      })
      .catch(() => undefined)
      .then(() => (signal === 'SIGINT' ? 130 : 143));
    void interruption.then((code) => process.exit(code));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const writer = await opening;
  for (const f of writer.staleRemoved) progress.info(`removed ${f}, the temporary file of an earlier run that was killed`);
  // An update writes through a store that leaves out what the base carried.
  const destination = base ? new LeaveOutStore(writer, base.candidates) : writer;
  const limiter = new Limiter(opts.concurrency);
  const engines = new Map<ContentStore, CopyEngine>();
  const engineFor = (store: ContentStore): CopyEngine => {
    let engine = engines.get(store);
    if (!engine) {
      engine = new CopyEngine(store, destination, { limiter, progress });
      engines.set(store, engine);
    }
    return engine;
  };
  // Every image's plan (its manifests), started when the image is resolved, at most 2 x --concurrency at once.
  const planning = new Limiter(opts.concurrency * 2);
  const plansOf = new Map<SourceImage, Promise<ImagePlan>>();
  const planOf = (src: SourceImage): Promise<ImagePlan> => {
    let p = plansOf.get(src);
    if (!p) {
      p = planning.run(() => engineFor(src.store).planImage(src.root));
      p.catch(() => undefined); // reported when the plan is asked for
      plansOf.set(src, p);
    }
    return p;
  };
  ctx.planAhead = (src) => void planOf(src);
  /** Without --continue-on-error the first failure stops everything; with it, the image is listed as failed. */
  let firstError: unknown;
  const giveUp = (src: SourceImage, err: unknown): void => {
    if (!opts.continueOnError) {
      firstError ??= err;
      void writer.abort();
      return;
    }
    failed.push({ source: src.source, error: errorMessage(err) });
    progress.warn(`skipping ${src.source}: ${errorMessage(err)}`);
  };
  try {
    progress.phase(`resolving ${config.images.length + config.ociLayouts.length + Object.keys(config.sections).length} sources`);
    const planned = await planSources(config, ctx);
    sources = mergeImages(planned);
    for (const { plan } of planned) failed.push(...plan.failures);
    const warnings = planned.flatMap(({ plan }) => plan.warnings ?? []);
    skipped.push(...planned.flatMap(({ plan }) => plan.skipped));
    progress.finishPhase(failed.length === 0);
    for (const w of warnings) progress.warn(w);
    for (const f of failed) progress.warn(`skipping ${f.source}: ${f.error}`);
    for (const s of skipped) progress.warn(`skipped (--skip-missing) ${s.source}: ${s.reason}; needed by ${s.neededBy.join('; ')}`);
    if (sources.length === 0) throw new BundleError(`nothing to bundle: every source failed`);

    // Images found later (cosign companions): a batch of their own.
    const later = Promise.all(planned.map(async ({ plan }) => plan.later));
    later.catch(() => undefined); // awaited below
    // Every image is copied as soon as its batch is laid out: first the images given by one
    // manifest (read when they were resolved), then indexes (once their platform manifests are
    // in), then the images found later. Each batch goes after the one before, in digest order,
    // so the same inputs give the same bytes whatever order anything arrives in; an update's
    // left-out blobs take no place.
    progress.phase('copying images', sources.length);
    const space = await freeSpace(output);
    const copies: Promise<void>[] = [];
    const copyBatch = async (batch: SourceImage[]): Promise<void> => {
      const plans: { src: SourceImage; plan: ImagePlan }[] = [];
      await Promise.all(
        batch.map(async (src) => {
          try {
            const plan = await planOf(src);
            if (!firstError) plans.push({ src, plan });
          } catch (err) {
            giveUp(src, err);
          }
        }),
      );
      if (firstError) throw firstError;
      const entries: LayoutEntry[] = [];
      for (const { plan } of plans) {
        for (const m of plan.manifests) entries.push({ desc: m.desc, bytes: m.bytes });
        for (const b of plan.blobs) if (!base?.candidates.has(b.digest)) entries.push({ desc: b });
      }
      progress.more(0, space.add(entries));
      await writer.layout(entries);
      copies.push(...plans.map(({ src, plan }) => copyImage(src, plan)));
    };
    const copyImage = async (src: SourceImage, plan: ImagePlan): Promise<void> => {
      let copied;
      try {
        copied = await engineFor(src.store).copyPlanned(plan);
      } catch (err) {
        giveUp(src, err);
        return;
      }
      images.push({
        source: src.source,
        refName: src.refName,
        digest: copied.desc.digest,
        mediaType: copied.desc.mediaType,
        size: copied.desc.size,
        platforms: copied.platforms,
        tags: src.tags,
        origin: src.origin,
        ...(copied.filteredFrom ? { filteredFrom: copied.filteredFrom } : {}),
      });
      progress.info(`  ${src.source} ${copied.desc.digest}${copied.platforms.length ? ` [${copied.platforms.join(', ')}]` : ''}`);
    };
    await copyBatch(sources.filter((s) => !isIndexMediaType(s.root.desc.mediaType)));
    await copyBatch(sources.filter((s) => isIndexMediaType(s.root.desc.mediaType)));
    const found = (await later).flatMap((l) => (l ? [l] : []));
    for (const l of found) failed.push(...l.failures);
    for (const l of found) for (const w of l.warnings ?? []) {
      warnings.push(w);
      progress.warn(w);
    }
    for (const f of found.flatMap((l) => l.failures)) progress.warn(`skipping ${f.source}: ${f.error}`);
    const known = new Set(sources);
    const extra = mergeImages([...planned, ...found.map((plan) => ({ plan }))]).filter((s) => !known.has(s));
    sources.push(...extra);
    progress.more(extra.length, 0);
    await copyBatch(extra);
    writer.closeLayout();
    space.report(progress);
    await Promise.all(copies);
    if (firstError) throw firstError;
    progress.finishPhase(failed.length === 0);
    if (images.length === 0) throw new BundleError(`nothing to bundle: every image failed (${failed.map((f) => f.source).join(', ')})`);
    images.sort((a, b) => a.refName.localeCompare(b.refName));
    for (const img of images) writer.addImage(img);
    const copied = new Map(images.map((i) => [i.refName, i]));
    const records: Record<string, unknown> = {};
    for (const { kind, plan } of planned) {
      const record = plan.record?.(copied);
      if (record !== undefined) records[kind] = record;
    }
    let executable: ToolExecutable | undefined;
    if (toolFile) {
      progress.phase('adding the executable');
      executable = await addExecutable(writer, toolFile);
      progress.finishPhase();
      progress.info(`  executable ${toolFile} sha256:${digestHex(executable.digest)}`);
    }
    progress.phase('writing manifest');
    const result = await writer.finish({
      tool: { name: TOOL_NAME, version: TOOL_VERSION, ...(executable ? { executable } : {}) },
      fields: {
        ...(base && destination instanceof LeaveOutStore ? { base: { ...base.record, blobs: destination.leftOut() } } : {}),
        ...(Object.keys(records).length ? { sources: records } : {}),
        ...(skipped.length ? { skipped } : {}),
      },
      sign: signer ? async (payload: Buffer) => signEnvelope(payload, MANIFEST_PAYLOAD_TYPE, signer) : undefined,
    });
    progress.finishPhase();
    const stats = sumStats([...engines.values()].map((e) => e.stats));
    const blobBytes = result.manifest.members.reduce((n, m) => n + m.size, 0);
    const summary = {
      bundle: result.path,
      volumes: result.files.length > 1 || volumeSize ? result.files : null,
      size: result.size,
      images: images.length,
      members: result.manifest.members.length,
      contentBytes: blobBytes,
      signedBy: signer ? keyId(createPublicKey(signer)) : null,
      seconds: (Date.now() - started) / 1000,
      base: result.manifest.base ? { name: result.manifest.base.name, digest: result.manifest.base.digest, blobsLeftOut: result.manifest.base.blobs.length } : null,
      executable: executable ? { sha256: digestHex(executable.digest), size: executable.size, platform: executable.platform } : null,
      stats,
      warnings,
      failed,
      skipped,
    };
    if (opts.json) printJson(summary);
    else if (!opts.quiet) {
      process.stdout.write(
        `wrote ${result.path}: ${images.length} images, ${result.manifest.members.length} members, ` +
          `${humanBytes(blobBytes)} of content in ${humanBytes(result.size)}, ` +
          `${signer ? `signed by key ${summary.signedBy}` : 'UNSIGNED'}, in ${summary.seconds.toFixed(1)} s\n`,
      );
      if (volumeSize) {
        process.stdout.write(
          `in ${result.files.length} volume${result.files.length > 1 ? 's' : ''} of at most ${humanBytes(volumeSize)}: ${result.files.map((f) => basename(f)).join(', ')} ` +
            `(verify, inspect and push take any one of them; cat joins them into the single file)\n`,
        );
      }
      const leftOut = result.manifest.base?.blobs ?? [];
      if (result.manifest.base) {
        process.stdout.write(
          `update of ${result.manifest.base.name} (manifest ${result.manifest.base.digest}): ${leftOut.length} blobs ` +
            `(${humanBytes(leftOut.reduce((n, b) => n + b.size, 0))}) left out because it carried them\n`,
        );
      }
      if (executable) process.stdout.write(`carries the executable for ${executable.platform} (${humanBytes(executable.size)}), sha256 ${digestHex(executable.digest)}: bundle extract-tool writes it out\n`);
    }
    if (!opts.json) for (const sk of skipped) process.stdout.write(`SKIPPED ${sk.source}: ${sk.reason} (needed by ${sk.neededBy.join('; ')})\n`);
    if (failed.length > 0) {
      if (!opts.json) for (const f of failed) process.stdout.write(`NOT BUNDLED ${f.source}: ${f.error}\n`);
      return 1;
    }
    return 0;
  } catch (caught) {
    if (interruption) return interruption;
    // A failure that gave up the run explains what failed after it (a batch laid out into an aborted file).
    const err = firstError ?? caught;
    progress.finishPhase(false);
    await writer.abort();
    if (isNoSpace(err)) {
      throw new BundleError(`the disk holding ${dirname(output)} is full: ${output} was not written and its temporary file was removed; free some space or write elsewhere (-o)`);
    }
    throw err;
  }
}

function isNoSpace(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOSPC' || /ENOSPC|no space left on device/i.test(errorMessage(err));
}

/**
 * The bundle's size is known batch by batch as manifests are read: at most the sum of its
 * members (compressible ones only shrink) and a little framing. Refuse before a batch is
 * laid out when the output's file system had less free space than everything so far needs;
 * at the end, say how much it needs.
 */
async function freeSpace(output: string): Promise<{ add(entries: readonly { desc: { digest: string; size: number } }[]): number; report(progress: Progress): void }> {
  const fs = await statfs(dirname(output)).catch(() => undefined);
  const free = fs ? fs.bavail * fs.bsize : undefined;
  const counted = new Set<string>();
  let need = 64 * 1024; // oci-layout, index.json, manifest, signature, seek table
  return {
    /** Count a batch's members not counted before; returns their bytes. */
    add(entries) {
      let bytes = 0;
      for (const { desc } of entries) {
        if (counted.has(desc.digest)) continue;
        counted.add(desc.digest);
        need += desc.size + 2 * 512 + 16 * Math.ceil(desc.size / (1024 * 1024));
        bytes += desc.size;
      }
      if (free !== undefined && need > free) {
        throw new BundleError(
          `not enough free space for ${output}: the bundle needs up to ${humanBytes(need)}, ${dirname(output)} has ${humanBytes(free)} free; nothing was written`,
        );
      }
      return bytes;
    },
    report(progress) {
      if (free !== undefined) progress.info(`the bundle needs up to ${humanBytes(need)}; ${humanBytes(free)} free in ${dirname(output)}`);
    },
  };
}

/** The executable --include-tool names, checked before anything is downloaded. */
async function executableToInclude(option: true | string): Promise<string> {
  const file = option === true ? defaultExecutable() : resolvePath(option);
  if (!file) {
    throw new UsageError('--include-tool: this is not the standalone executable and none was built (npm run package); name one: --include-tool PATH');
  }
  const head = Buffer.alloc(4);
  const fh = await open(file, 'r').catch(() => {
    throw new UsageError(`--include-tool ${file}: cannot read it`);
  });
  try {
    await fh.read(head, 0, 4, 0);
  } finally {
    await fh.close();
  }
  if (!head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) throw new UsageError(`--include-tool ${file}: not a Linux executable`);
  return file;
}

/** Store the executable as a member, hashed first so the archive checks every byte it writes. */
async function addExecutable(writer: ArchiveWriter, file: string): Promise<ToolExecutable> {
  const { digest, size } = await hashFile(file);
  await writer.putBlob('', { mediaType: TOOL_EXECUTABLE_MEDIA_TYPE, digest, size }, async () => verified(createReadStream(file), digest, size, `executable ${file}`));
  return { digest, size, platform: TOOL_PLATFORM };
}

function sumStats(all: CopyStats[]): CopyStats {
  const total: CopyStats = { blobsWritten: 0, blobsSkipped: 0, blobsMounted: 0, bytesWritten: 0, manifestsWritten: 0, imagesSkipped: 0 };
  for (const s of all) for (const k of Object.keys(total) as (keyof CopyStats)[]) total[k] += s[k];
  return total;
}
