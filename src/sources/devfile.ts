/**
 * The `devfile` source kind: a devfile registry (stacks, every image they need,
 * their starter projects, samples) carried in the bundle and delivered in the
 * secure zone. Create: src/devfile/collect.ts; push: src/devfile/deliver.ts.
 */
import type { BundleImage } from '../bundle/manifest.js';
import type { LoadedConfig } from '../config/config.js';
import { mapLimit } from '../copy/limit.js';
import { artifactStore } from '../devfile/artifact.js';
import { collectDevfile, type DevfileSection } from '../devfile/collect.js';
import { checkDevfileOut, deliverDevfile, printDevfileReport } from '../devfile/deliver.js';
import { INDEX_ARTIFACT, type DevfileRecord } from '../devfile/record.js';
import { formatReference, parseReference } from '../oci/reference.js';
import { BundleError } from '../util/errors.js';
import { resolveImages } from './images.js';
import type { PushPart, ResolveFailure, SkippedImage, SourceImage, SourceKind } from './source.js';

export const devfileKind: SourceKind<DevfileSection> = {
  kind: 'devfile',
  section(config: LoadedConfig) {
    return config.sections.devfile as DevfileSection | undefined;
  },
  async plan(section, ctx) {
    const scratch = await ctx.tempDir();
    const store = artifactStore();
    ctx.progress.info('devfile registry: reading stacks');
    const collected = await collectDevfile(section, { configDir: ctx.configDir, scratch, created: ctx.created, progress: ctx.progress, store, concurrency: ctx.concurrency, storeFor: (h) => ctx.storeFor(h) });

    // Who needs each image, for messages and the skipped list.
    const neededBy = new Map<string, string[]>();
    const need = (source: string, who: string) => neededBy.set(source, [...(neededBy.get(source) ?? []), who]);
    for (const v of collected.versions) {
      for (const img of v.record.images) {
        const file = img.file === 'devfile.yaml' ? `${v.record.path}/devfile.yaml` : `${v.record.path}/${img.file} (of ${v.record.path}/devfile.yaml)`;
        need(img.source, `${v.record.type} ${v.record.name} ${v.record.version}, component ${img.component}, ${file}`);
      }
    }
    const indexBase = section.indexBase ? formatReference(parseReference(section.indexBase)) : undefined;
    if (indexBase) need(indexBase, 'devfile.indexBase');
    const extra = (section.extraImages ?? []).map((r) => formatReference(parseReference(r)));
    for (const e of extra) need(e, 'devfile.extraImages');

    const images: SourceImage[] = [];
    const failures: ResolveFailure[] = [];
    const skipped: SkippedImage[] = [];
    const warnings: string[] = [...collected.notes];
    await mapLimit([...neededBy.keys()], ctx.concurrency, async (source) => {
      const r = await resolveImages([{ ref: source }], [], (reg) => ctx.storeFor(reg), 1, true, ctx.signatures);
      const who = neededBy.get(source)!;
      if (r.failures.some((f) => f.source === source)) {
        const reason = r.failures.find((f) => f.source === source)!.error;
        if (ctx.skipMissing) skipped.push({ source, reason, neededBy: who });
        else failures.push({ source, error: `cannot pull it (needed by ${who.join('; ')}): ${reason}` });
        return;
      }
      for (const img of r.images) images.push(img.source === source ? { ...img, origin: 'devfile' } : img);
      failures.push(...r.failures); // cosign companions that failed
      warnings.push(...r.warnings);
    });
    if (failures.length > 0 && !ctx.keepGoing) {
      const lines = failures.map((f) => `${f.source}: ${f.error}`);
      throw new BundleError(lines.length === 1 ? `devfile: ${lines[0]}` : `devfile: ${lines.length} images cannot be pulled:\n  ${lines.join('\n  ')}`);
    }

    for (const v of collected.versions) {
      const [repo, tag] = splitRef(v.record.artifact);
      images.push({
        store,
        source: v.record.artifact,
        refName: v.record.artifact,
        origin: 'devfile',
        tags: [tag],
        root: { srcRepo: '', dstRepo: repo, desc: v.artifact.desc, tags: [tag], label: `devfile ${v.record.type} ${v.record.name} ${v.record.version}` },
      });
    }
    const [indexRepo, indexTag] = splitRef(INDEX_ARTIFACT);
    images.push({
      store,
      source: INDEX_ARTIFACT,
      refName: INDEX_ARTIFACT,
      origin: 'devfile',
      tags: [indexTag],
      root: { srcRepo: '', dstRepo: indexRepo, desc: collected.index.desc, tags: [indexTag], label: 'devfile registry index' },
    });

    return {
      images,
      failures,
      skipped,
      warnings,
      record(copied: ReadonlyMap<string, BundleImage>): DevfileRecord {
        return {
          index: INDEX_ARTIFACT,
          ...(indexBase && copied.has(indexBase) ? { indexBase } : {}),
          extraImages: extra.filter((e) => copied.has(e)),
          stacks: collected.versions
            .filter((v) => copied.has(v.record.artifact))
            .map((v) => ({
              ...v.record,
              images: v.record.images.map((i) => ({
                written: i.written,
                source: i.source,
                ...(copied.has(i.source) ? { refName: i.source } : {}),
                component: i.component,
                file: i.file,
              })),
            })),
        };
      },
    };
  },
};

function splitRef(ref: string): [string, string] {
  const i = ref.lastIndexOf(':');
  return [ref.slice(0, i), ref.slice(i + 1)];
}

export const devfilePushPart: PushPart = {
  kind: 'devfile',
  delivers(record: unknown) {
    const r = record as DevfileRecord;
    // Stack artifacts are pushed rewritten; samples and the index go into the index image and the folder.
    return new Set([r.index, ...r.stacks.map((s) => s.artifact)]);
  },
  check: (_record, options) => checkDevfileOut(options.devfileOut as string | undefined),
  deliver: (record, ctx) => deliverDevfile(record as DevfileRecord, ctx),
  printReport: (report, out) => printDevfileReport(report, out),
};
