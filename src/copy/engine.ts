import { Readable } from 'node:stream';
import { MediaType } from '../oci/media-types.js';
import { keptPlatformManifests, parseManifest } from '../oci/manifest.js';
import { platformString, type Descriptor } from '../oci/types.js';
import type { ByteRange, ContentStore, PutResult, RangeResult, WritableContentStore } from '../store/store.js';
import { sha256Digest, verified, verifyBuffer } from '../util/digest.js';
import { BundleError } from '../util/errors.js';
import type { Progress } from '../util/progress.js';
import { Limiter } from './limit.js';

/** One image (manifest or index) to copy, with where it comes from and goes. */
export interface CopyRoot {
  srcRepo: string;
  dstRepo: string;
  /** Descriptor of the top manifest or index at the source. */
  desc: Descriptor;
  /** Tags to give the top manifest at the destination (none: pushed by digest). */
  tags: string[];
  /** Only these platforms of an index (`os/arch[/variant]`); all when absent. */
  platforms?: string[];
  /** For messages: the reference the user named. */
  label: string;
}

export interface CopiedImage {
  /** What the tags point at: the source's bytes, or a subset index when platforms were filtered. */
  desc: Descriptor;
  platforms: string[];
  /** The source index, when platforms were filtered out of it. */
  filteredFrom?: string;
}

export interface CopyStats {
  blobsWritten: number;
  blobsSkipped: number;
  blobsMounted: number;
  bytesWritten: number;
  manifestsWritten: number;
  imagesSkipped: number;
}

export interface CopyEngineOptions {
  concurrency?: number;
  progress?: Progress;
  /** Share one limit on concurrent transfers between engines. */
  limiter?: Limiter;
  /**
   * For each blob, every destination repository that needs it in this run: one that
   * needs it may already hold it from an interrupted run, and is mounted from rather
   * than sent the blob again.
   */
  needs?: ReadonlyMap<string, ReadonlySet<string>>;
  /**
   * Skip an image whose every tag already points at its digest at the
   * destination: a registry accepts a manifest only once everything it needs is
   * there, so nothing below it needs checking. For registry destinations.
   */
  skipPresent?: boolean;
}

/** What planImage found: everything copyPlanned will store. */
export interface ImagePlan {
  root: CopyRoot;
  result: CopiedImage;
  /** Manifests; depth 0 is the top (tagged), deeper ones are listed by shallower ones. */
  manifests: { desc: Descriptor; bytes: Buffer; depth: number }[];
  /** Every blob of the image, once. */
  blobs: Descriptor[];
  /**
   * A single-platform image's config, which says its platform: read while the
   * image is copied, not while planning (nothing needs it before copyPlanned ends).
   */
  config?: Descriptor;
}

/**
 * The one copy engine: walks the graph of an image from a source store and
 * writes it into a destination store, children before the manifests that need
 * them, each blob once per destination repository, every byte verified against
 * its digest on the way, with bounded concurrency. Retries are the stores'
 * business (a registry's one retry policy); a store that retries a blob calls
 * `open` again.
 */
export class CopyEngine {
  readonly stats: CopyStats = { blobsWritten: 0, blobsSkipped: 0, blobsMounted: 0, bytesWritten: 0, manifestsWritten: 0, imagesSkipped: 0 };
  private readonly limiter: Limiter;
  private readonly blobs = new Map<string, Promise<PutResult>>();
  private readonly firstTransfer = new Map<string, Promise<PutResult>>();
  private readonly manifests = new Map<string, Promise<void>>();
  private readonly fetched = new Map<string, Promise<Buffer>>();
  /** Small blobs read for what they say (a config's platform), kept for their transfer so they are fetched once. */
  private readonly readAhead = new Map<string, Promise<Buffer>>();
  /** Bytes reported to progress per digest: each digest counts once, however many repositories get it. */
  private readonly credited = new Map<string, number>();
  /** Repositories of the destination known to hold a digest (for cross-repository mounts). */
  private readonly holders = new Map<string, Set<string>>();

  constructor(
    private readonly src: ContentStore,
    private readonly dst: WritableContentStore,
    private readonly opts: CopyEngineOptions = {},
  ) {
    this.limiter = opts.limiter ?? new Limiter(opts.concurrency ?? 4);
  }

  /** Record that a destination repository already holds a blob, so others can mount it from there. */
  holdsAlready(digest: string, repo: string): void {
    let holders = this.holders.get(digest);
    if (!holders) this.holders.set(digest, (holders = new Set()));
    holders.add(repo);
  }

  async copyImage(root: CopyRoot): Promise<CopiedImage> {
    if (this.opts.skipPresent && root.tags.length > 0 && !root.platforms?.length && (await this.presentAtDestination(root))) {
      this.stats.imagesSkipped++;
      this.opts.progress?.item();
      return { desc: root.desc, platforms: [] };
    }
    return this.copyPlanned(await this.planImage(root));
  }

  /**
   * Everything an image needs, without writing anything: its manifests
   * (fetched and verified; a subset index when platforms are filtered) and
   * every blob's descriptor. Nothing but manifests is waited for.
   */
  async planImage(root: CopyRoot): Promise<ImagePlan> {
    const top = await this.fetchVerified(root.srcRepo, root.desc, root.label);
    const parsed = parseManifest(top, root.desc.mediaType, root.label);
    const plan: ImagePlan = { root, result: { desc: root.desc, platforms: [] }, manifests: [], blobs: [] };
    const wanted = keptPlatformManifests(parsed, root.platforms);
    // Platforms that pick every entry of the index keep the index as it is.
    if (!wanted || !root.platforms) {
      await this.planTree(plan, root.srcRepo, root.desc, top, root.label, 0);
      if (parsed.isIndex) plan.result.platforms = parsed.manifests.map((m) => platformString(m.platform)).filter((p): p is string => !!p);
      else plan.config = parsed.blobs[0];
    } else if (wanted.length === 0) {
      const have = parsed.manifests.map((m) => platformString(m.platform)).filter(Boolean).join(', ');
      throw new BundleError(`${root.label}: no platform ${root.platforms.join(', ')} in the index (it has ${have || 'none'})`);
    } else {
      const platforms = wanted.map((m) => platformString(m.platform)!);
      plan.result = { desc: root.desc, platforms, filteredFrom: root.desc.digest };
      if (wanted.length === 1) {
        const only = wanted[0]!;
        const bytes = await this.fetchVerified(root.srcRepo, only, `${root.label} (${platforms[0]})`);
        await this.planTree(plan, root.srcRepo, only, bytes, root.label, 0);
        plan.result.desc = only;
      } else {
        // Several platforms of many: a new index lists exactly those; every manifest it names keeps its bytes.
        await settleAll(wanted.map(async (m) => this.planTree(plan, root.srcRepo, m, await this.fetchVerified(root.srcRepo, m, root.label), root.label, 1)));
        const subset = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: parsed.mediaType, manifests: wanted }, null, 2) + '\n');
        const desc: Descriptor = { mediaType: parsed.mediaType, digest: sha256Digest(subset), size: subset.length };
        plan.manifests.push({ desc, bytes: subset, depth: 0 });
        plan.result.desc = desc;
      }
    }
    return plan;
  }

  /** Store what planImage found: blobs first, then manifests, every one after those it lists; the top one gets the tags. */
  async copyPlanned(plan: ImagePlan): Promise<CopiedImage> {
    const { root } = plan;
    // Read beside the blobs (the config's transfer takes these bytes rather than fetching it again).
    const platforms = plan.config && this.platformOf(root.srcRepo, plan.config, root.label);
    platforms?.catch(() => undefined); // reported below, once the blobs are settled
    await settleAll(plan.blobs.map((b) => this.copyBlob(root.srcRepo, root.dstRepo, b, root.label)));
    const depths = [...new Set(plan.manifests.map((m) => m.depth))].sort((a, b) => b - a);
    for (const depth of depths) {
      await settleAll(
        plan.manifests
          .filter((m) => m.depth === depth)
          .map((m) => (depth === 0 ? this.putManifest(root.dstRepo, m.desc, m.bytes, root.tags) : this.putChild(root.dstRepo, m.desc, m.bytes))),
      );
    }
    if (platforms) plan.result.platforms = await platforms;
    this.opts.progress?.item();
    return plan.result;
  }

  private async putManifest(dstRepo: string, desc: Descriptor, bytes: Buffer, tags: string[]): Promise<void> {
    if ((await this.dst.putManifest(dstRepo, desc, bytes, tags)) === 'written') this.stats.manifestsWritten++;
    this.credit(desc.digest, bytes.length, bytes.length);
  }

  /**
   * Report `n` more bytes of `digest` done (negative: taken back), never more
   * than `size` in all for one digest, so that bytes done stay within a total
   * counted over unique digests. Returns the bytes actually reported.
   */
  private credit(digest: string, size: number, n: number): number {
    const had = this.credited.get(digest) ?? 0;
    const now = Math.min(size, Math.max(0, had + n));
    this.credited.set(digest, now);
    if (now !== had) this.opts.progress?.bytes(now - had);
    return now - had;
  }

  /** A manifest listed by an index: stored once per destination repository. */
  private putChild(dstRepo: string, desc: Descriptor, bytes: Buffer): Promise<void> {
    const key = `${dstRepo}|${desc.digest}`;
    let p = this.manifests.get(key);
    if (!p) {
      p = this.putManifest(dstRepo, desc, bytes, []);
      this.manifests.set(key, p);
    }
    return p;
  }

  private async presentAtDestination(root: CopyRoot): Promise<boolean> {
    const found = await Promise.all(
      root.tags.map((t) =>
        this.dst.resolve(root.dstRepo, t).then(
          (d) => d.digest === root.desc.digest,
          () => false,
        ),
      ),
    );
    return found.every(Boolean);
  }

  private async platformOf(repo: string, config: Descriptor | undefined, label: string): Promise<string[]> {
    if (!config || (config.mediaType !== MediaType.OciConfig && config.mediaType !== MediaType.DockerConfig)) return [];
    if (config.size > 4 << 20) return [];
    let bytes = this.readAhead.get(config.digest);
    if (!bytes) {
      // Outside the transfer slots: a transfer holding one may be waiting for these bytes.
      bytes = this.readBlob(repo, config, `${label} config`);
      bytes.catch(() => this.readAhead.delete(config.digest));
      this.readAhead.set(config.digest, bytes);
    }
    const cfg = await bytes;
    try {
      const c = JSON.parse(cfg.toString('utf8')) as { os?: string; architecture?: string; variant?: string };
      if (c.os && c.architecture) return [`${c.os}/${c.architecture}${c.variant ? `/${c.variant}` : ''}`];
    } catch {
      /* not JSON: no platform to report */
    }
    return [];
  }

  /** A (small) blob's bytes, verified. */
  private async readBlob(repo: string, desc: Descriptor, label: string): Promise<Buffer> {
    const stream = await this.src.openBlob(repo, desc);
    const chunks: Buffer[] = [];
    for await (const c of verified(stream, desc.digest, desc.size, `blob ${desc.digest} of ${label}`)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  private fetchVerified(repo: string, desc: Descriptor, label: string): Promise<Buffer> {
    // Manifests shared by several images (platform manifests of an index) are fetched once at a time.
    let p = this.fetched.get(desc.digest);
    if (!p) {
      p = (async () => {
        const m = await this.src.fetchManifest(repo, desc);
        verifyBuffer(m.bytes, desc.digest, desc.size, `manifest ${desc.digest} of ${label}`);
        return m.bytes;
      })();
      // Shared while in flight only: kept for the whole run, every image's manifest would stay in memory.
      const drop = (): void => void this.fetched.delete(desc.digest);
      p.then(drop, drop);
      this.fetched.set(desc.digest, p);
    }
    return p;
  }

  /** A manifest and everything below it, into the plan (manifests listed after their children). */
  private async planTree(plan: ImagePlan, srcRepo: string, desc: Descriptor, bytes: Buffer, label: string, depth: number): Promise<void> {
    const parsed = parseManifest(bytes, desc.mediaType, label);
    if (parsed.isIndex) {
      await settleAll(parsed.manifests.map(async (m) => this.planTree(plan, srcRepo, m, await this.fetchVerified(srcRepo, m, label), label, depth + 1)));
    } else {
      for (const b of parsed.blobs) if (!plan.blobs.some((x) => x.digest === b.digest)) plan.blobs.push(b);
    }
    if (!plan.manifests.some((m) => m.desc.digest === desc.digest)) plan.manifests.push({ desc: { ...desc, mediaType: parsed.mediaType }, bytes, depth });
  }

  copyBlob(srcRepo: string, dstRepo: string, desc: Descriptor, label: string): Promise<PutResult> {
    const key = `${dstRepo}|${desc.digest}`;
    let p = this.blobs.get(key);
    if (!p) {
      // A blob going to several repositories is sent once; the others wait for it and then mount it.
      const first = this.firstTransfer.get(desc.digest);
      p = (async () => {
        if (first) await first.catch(() => undefined);
        // A destination that schedules its own requests takes the slots one request at a time.
        if (this.dst.schedulesTransfers) return this.transferBlob(srcRepo, dstRepo, desc, label);
        // Largest first: the run ends no later than its largest blob, which then never starts last.
        return this.limiter.run(() => this.transferBlob(srcRepo, dstRepo, desc, label), desc.size);
      })();
      this.blobs.set(key, p);
      if (!first) this.firstTransfer.set(desc.digest, p);
    }
    return p;
  }

  /** Whether the source has answered a range request with a part (206). */
  private rangesServed = false;

  private async openRange(repo: string, desc: Descriptor, range: ByteRange): Promise<RangeResult> {
    const r = await this.src.openBlobRange!(repo, desc, range);
    if (!r.whole) this.rangesServed = true;
    return r;
  }

  private async transferBlob(srcRepo: string, dstRepo: string, desc: Descriptor, label: string): Promise<PutResult> {
    const holders = this.holders.get(desc.digest) ?? new Set<string>();
    this.holders.set(desc.digest, holders);
    const mountFrom = [...holders].filter((r) => r !== dstRepo);
    // Nobody in this run holds it yet: the other repositories that need it may, from an interrupted run.
    const mayHoldIn = mountFrom.length ? [] : [...(this.opts.needs?.get(desc.digest) ?? [])].filter((r) => r !== dstRepo);
    const what = `blob ${desc.digest} of ${label}`;
    let sent = 0;
    const progress = (n: number): void => {
      sent += this.credit(desc.digest, desc.size, n);
    };
    try {
      const result = await this.dst.putBlob(
        dstRepo,
        desc,
        async () => {
          // A store retrying the blob opens it again: its progress starts over.
          if (sent) this.credit(desc.digest, desc.size, -sent);
          sent = 0;
          // Read already (a config, for its platform): sent from memory, once.
          const early = await this.readAhead.get(desc.digest)?.catch(() => undefined);
          this.readAhead.delete(desc.digest);
          return verified(early ? Readable.from([early], { objectMode: false }) : await this.src.openBlob(srcRepo, desc), desc.digest, desc.size, what, progress);
        },
        {
          mountFrom,
          ...(mayHoldIn.length ? { mayHoldIn } : {}),
          slots: this.limiter,
          onBytes: progress,
          ...(this.src.openBlobRange ? { openRange: (range: ByteRange) => this.openRange(srcRepo, desc, range), rangesServed: this.rangesServed } : {}),
        },
      );
      holders.add(dstRepo);
      if (result === 'written') {
        this.stats.blobsWritten++;
        this.stats.bytesWritten += desc.size;
      } else if (result === 'mounted') this.stats.blobsMounted++;
      else this.stats.blobsSkipped++;
      if (result !== 'written') this.credit(desc.digest, desc.size, desc.size);
      return result;
    } catch (err) {
      this.credit(desc.digest, desc.size, -sent);
      throw err;
    } finally {
      this.readAhead.delete(desc.digest);
    }
  }
}

/** Wait for every promise; then throw the first failure (so no transfer is left running). */
async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(ps);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
}
