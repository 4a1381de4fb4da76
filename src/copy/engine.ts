import { MediaType } from '../oci/media-types.js';
import { keptPlatformManifests, parseManifest } from '../oci/manifest.js';
import { platformString, type Descriptor } from '../oci/types.js';
import type { ContentStore, PutResult, WritableContentStore } from '../store/store.js';
import { sha256Digest, verified, verifyBuffer } from '../util/digest.js';
import { BundleError, DigestMismatchError, errorMessage } from '../util/errors.js';
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
  /** Extra attempts for a blob whose source stream broke off (not for digest mismatches). */
  retries?: number;
  /** Share one limit on concurrent transfers between engines. */
  limiter?: Limiter;
  /**
   * Skip an image whose every tag already points at its digest at the
   * destination: a registry accepts a manifest only once everything it needs is
   * there, so nothing below it needs checking. For registry destinations.
   */
  skipPresent?: boolean;
}

const TRANSIENT = /ECONNRESET|EPIPE|ETIMEDOUT|UND_ERR_SOCKET|UND_ERR_BODY_TIMEOUT|terminated|aborted|other side closed/i;

/**
 * The one copy engine: walks the graph of an image from a source store and
 * writes it into a destination store, children before the manifests that need
 * them, each blob once per destination repository, every byte verified against
 * its digest on the way, with bounded concurrency and retries.
 */
export class CopyEngine {
  readonly stats: CopyStats = { blobsWritten: 0, blobsSkipped: 0, blobsMounted: 0, bytesWritten: 0, manifestsWritten: 0, imagesSkipped: 0 };
  private readonly limiter: Limiter;
  private readonly blobs = new Map<string, Promise<PutResult>>();
  private readonly firstTransfer = new Map<string, Promise<PutResult>>();
  private readonly manifests = new Map<string, Promise<void>>();
  /** Repositories of the destination known to hold a digest (for cross-repository mounts). */
  private readonly holders = new Map<string, Set<string>>();
  /** Bytes reported to progress per digest: each digest counts once, however many repositories get it. */
  private readonly credited = new Map<string, number>();
  private readonly retries: number;

  constructor(
    private readonly src: ContentStore,
    private readonly dst: WritableContentStore,
    private readonly opts: CopyEngineOptions = {},
  ) {
    this.limiter = opts.limiter ?? new Limiter(opts.concurrency ?? 4);
    this.retries = opts.retries ?? 2;
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
    const top = await this.fetchVerified(root.srcRepo, root.desc, root.label);
    const parsed = parseManifest(top, root.desc.mediaType, root.label);
    const wanted = keptPlatformManifests(parsed, root.platforms);
    // Platforms that pick every entry of the index keep the index as it is.
    if (!wanted || !root.platforms) {
      await this.copyTree(root.srcRepo, root.dstRepo, root.desc, top, root.label, root.tags);
      const platforms = parsed.isIndex
        ? parsed.manifests.map((m) => platformString(m.platform)).filter((p): p is string => !!p)
        : await this.platformOf(root.srcRepo, parsed.blobs[0], root.label);
      this.opts.progress?.item();
      return { desc: root.desc, platforms };
    }
    if (wanted.length === 0) {
      const have = parsed.manifests.map((m) => platformString(m.platform)).filter(Boolean).join(', ');
      throw new BundleError(`${root.label}: no platform ${root.platforms.join(', ')} in the index (it has ${have || 'none'})`);
    }
    const platforms = wanted.map((m) => platformString(m.platform)!);
    if (wanted.length === 1) {
      const only = wanted[0]!;
      const bytes = await this.fetchVerified(root.srcRepo, only, `${root.label} (${platforms[0]})`);
      await this.copyTree(root.srcRepo, root.dstRepo, only, bytes, root.label, root.tags);
      this.opts.progress?.item();
      return { desc: only, platforms, filteredFrom: root.desc.digest };
    }
    // Several platforms of many: a new index lists exactly those; every manifest it names keeps its bytes.
    await settleAll(wanted.map((m) => this.copyChild(root.srcRepo, root.dstRepo, m, root.label)));
    const subset = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: parsed.mediaType, manifests: wanted }, null, 2) + '\n',
    );
    const desc: Descriptor = { mediaType: parsed.mediaType, digest: sha256Digest(subset), size: subset.length };
    if ((await this.dst.putManifest(root.dstRepo, desc, subset, root.tags)) === 'written') this.stats.manifestsWritten++;
    this.credit(desc.digest, subset.length, subset.length);
    this.opts.progress?.item();
    return { desc, platforms, filteredFrom: root.desc.digest };
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
    const stream = await this.src.openBlob(repo, config);
    const chunks: Buffer[] = [];
    for await (const c of verified(stream, config.digest, config.size, `${label} config`)) chunks.push(c as Buffer);
    try {
      const cfg = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { os?: string; architecture?: string; variant?: string };
      if (cfg.os && cfg.architecture) return [`${cfg.os}/${cfg.architecture}${cfg.variant ? `/${cfg.variant}` : ''}`];
    } catch {
      /* not JSON: no platform to report */
    }
    return [];
  }

  private async fetchVerified(repo: string, desc: Descriptor, label: string): Promise<Buffer> {
    const m = await this.src.fetchManifest(repo, desc);
    verifyBuffer(m.bytes, desc.digest, desc.size, `manifest ${desc.digest} of ${label}`);
    return m.bytes;
  }

  private copyChild(srcRepo: string, dstRepo: string, desc: Descriptor, label: string): Promise<void> {
    const key = `${dstRepo}|${desc.digest}`;
    let p = this.manifests.get(key);
    if (!p) {
      p = (async () => {
        const bytes = await this.fetchVerified(srcRepo, desc, label);
        await this.copyTree(srcRepo, dstRepo, desc, bytes, label, []);
      })();
      this.manifests.set(key, p);
    }
    return p;
  }

  /** Children first, then the manifest itself. */
  private async copyTree(srcRepo: string, dstRepo: string, desc: Descriptor, bytes: Buffer, label: string, tags: string[]): Promise<void> {
    const parsed = parseManifest(bytes, desc.mediaType, label);
    const mediaType = parsed.mediaType;
    if (parsed.isIndex) {
      await settleAll(parsed.manifests.map((m) => this.copyChild(srcRepo, dstRepo, m, label)));
    } else {
      await settleAll(parsed.blobs.map((b) => this.copyBlob(srcRepo, dstRepo, b, label)));
    }
    if ((await this.dst.putManifest(dstRepo, { ...desc, mediaType }, bytes, tags)) === 'written') this.stats.manifestsWritten++;
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

  copyBlob(srcRepo: string, dstRepo: string, desc: Descriptor, label: string): Promise<PutResult> {
    const key = `${dstRepo}|${desc.digest}`;
    let p = this.blobs.get(key);
    if (!p) {
      // A blob going to several repositories is sent once; the others wait for it and then mount it.
      const first = this.firstTransfer.get(desc.digest);
      p = (async () => {
        if (first) await first.catch(() => undefined);
        return this.limiter.run(() => this.transferBlob(srcRepo, dstRepo, desc, label));
      })();
      this.blobs.set(key, p);
      if (!first) this.firstTransfer.set(desc.digest, p);
    }
    return p;
  }

  private async transferBlob(srcRepo: string, dstRepo: string, desc: Descriptor, label: string): Promise<PutResult> {
    const holders = this.holders.get(desc.digest) ?? new Set<string>();
    this.holders.set(desc.digest, holders);
    const mountFrom = [...holders].filter((r) => r !== dstRepo);
    const what = `blob ${desc.digest} of ${label}`;
    for (let attempt = 0; ; attempt++) {
      let sent = 0;
      try {
        const result = await this.dst.putBlob(
          dstRepo,
          desc,
          async () =>
            verified(await this.src.openBlob(srcRepo, desc), desc.digest, desc.size, what, (n) => {
              sent += this.credit(desc.digest, desc.size, n);
            }),
          { mountFrom },
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
        if (err instanceof DigestMismatchError || attempt >= this.retries || !TRANSIENT.test(errorMessage(err))) throw err;
        await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
      }
    }
  }
}

/** Wait for every promise; then throw the first failure (so no transfer is left running). */
async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(ps);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
}
