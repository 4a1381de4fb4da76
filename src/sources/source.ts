/**
 * Source kinds: each top-level config section (`images`, `devfile`, ...) is a kind
 * that turns its section into the images and artifacts to copy. `create` runs every
 * kind the config names without knowing what they are; `push` hands each kind with a
 * record in the bundle manifest (`manifest.sources[kind]`) its part of the delivery.
 *
 * Content that is not an image (a devfile stack version, an index, signatures) travels
 * as an OCI artifact in the same OCI layout: a kind builds it into a scratch store and
 * returns it as a SourceImage like any other, so one copy engine, one verify and one
 * push serve everything.
 */
import type { BundleImage, SkippedImage } from '../bundle/manifest.js';
import type { CopyRoot } from '../copy/engine.js';
import type { LoadedConfig } from '../config/config.js';
import type { PushTarget } from '../push/destination.js';
import type { ContentStore, WritableContentStore } from '../store/store.js';
import type { Progress } from '../util/progress.js';

export type { SkippedImage } from '../bundle/manifest.js';

/** An image ready to copy: where it is read from, and what the bundle calls it. */
export interface SourceImage {
  store: ContentStore;
  root: CopyRoot;
  /** Fully qualified reference, as the bundle manifest records it. */
  source: string;
  /** The name index.json gives it. */
  refName: string;
  /** The kind that asked for it (`registry`, `oci-layout`, `devfile`, ...). */
  origin: string;
  tags: string[];
}

export interface ResolveFailure {
  source: string;
  error: string;
}

export interface CreateContext {
  /** Relative paths in the config resolve here. */
  configDir: string;
  /** The registry store for a host (mirrors of --registries-conf applied inside). */
  storeFor(registry: string): ContentStore;
  concurrency: number;
  /** --continue-on-error: failures are returned, not thrown. */
  keepGoing: boolean;
  /** --skip-missing: an image that cannot be found is recorded as skipped. */
  skipMissing: boolean;
  /** Carry cosign signatures, attestations and SBOMs. */
  signatures: boolean;
  /** SOURCE_DATE_EPOCH or now: the time for anything the tool builds. */
  created: Date;
  progress: Progress;
  /** A fresh scratch folder, removed when create ends. */
  tempDir(): Promise<string>;
  /**
   * Told of an image as soon as it is resolved, while other sources are still
   * being resolved: create starts reading its manifests then.
   */
  planAhead?(img: SourceImage): void;
}

/** What one config section asks to carry. */
export interface SourcePlan {
  /** Copied by the one copy engine into the archive. */
  images: SourceImage[];
  /** Resolution failures (all reported together). */
  failures: ResolveFailure[];
  /** Images left out under --skip-missing. */
  skipped: SkippedImage[];
  /** Remarks that do not stop the run (one line each). */
  warnings?: string[];
  /**
   * Images found after the others (cosign companions, looked up once their image
   * is resolved): create lays them out after the rest, so that no layer of the
   * others waits for these look-ups. Rejects (without --continue-on-error) with
   * the failures of the look-ups.
   */
  later?: Promise<Pick<SourcePlan, 'images' | 'failures' | 'warnings'>>;
  /** After the copy: the kind's record for the signed manifest, `manifest.sources[kind]`. */
  record?(copied: ReadonlyMap<string, BundleImage>): unknown;
}

export interface SourceKind<Section = unknown> {
  /** The kind's name: its key in `manifest.sources` and in messages. */
  readonly kind: string;
  /** Its section of the loaded config, or undefined when the config has none. */
  section(config: LoadedConfig): Section | undefined;
  plan(section: Section, ctx: CreateContext): Promise<SourcePlan>;
}

/** Where an image lands at the target. */
export interface Destination {
  repository: string;
  tags: string[];
  /** `host/repo:tag` (or `host/repo@digest` when it has no tag). */
  reference: string;
}

export interface PushContext {
  /** The archive being pushed. */
  reader: ContentStore;
  /** The target registry store. */
  dst: WritableContentStore;
  target: PushTarget;
  /** Where an image of the bundle was (or would be) pushed. */
  destinationOf(image: BundleImage): Destination;
  /** The bundle's images by refName. */
  images: ReadonlyMap<string, BundleImage>;
  /** --out-dir: files for the cluster. */
  outDir: string;
  /** Kind-specific CLI options (--devfile-out, ...). */
  options: Record<string, unknown>;
  concurrency: number;
  progress: Progress;
}

export interface PushPart {
  readonly kind: string;
  /** Optional: where this kind's images land, by refName (others keep the default mapping). */
  destinations?(record: unknown, images: BundleImage[], target: PushTarget, options: Record<string, unknown>): Map<string, { repository: string; tags: string[]; mirror?: boolean }>;
  /** Optional: check this kind's options before any request is sent (e.g. an output folder); throws a UsageError. */
  check?(record: unknown, options: Record<string, unknown>): Promise<void>;
  /** Optional: refNames this kind delivers itself (the generic image push leaves them alone). */
  delivers?(record: unknown): Set<string>;
  /** After the images are pushed: build and push derived content, write files; returns its report section. */
  deliver(record: unknown, ctx: PushContext): Promise<{ report: unknown; files: string[]; failures?: ResolveFailure[] }>;
  /** Optional: the human-readable lines of its report (push without --json). */
  printReport?(report: unknown, out: NodeJS.WritableStream): void;
}
