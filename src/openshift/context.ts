/**
 * What the OpenShift source kinds need from `create`, and what they give back:
 * the images to copy, the failures met while resolving them, the images skipped
 * with `--skip-missing`, and the kind's record for the signed manifest.
 */
import type { BundleImage } from '../bundle/manifest.js';
import type { SourceImage, ResolveFailure } from '../sources/images.js';
import type { ContentStore } from '../store/store.js';
import type { Progress } from '../util/progress.js';

export interface KindContext {
  /** Relative paths in the config resolve here. */
  configDir: string;
  storeFor(registry: string): ContentStore;
  concurrency: number;
  /** `--skip-missing`: an image the source no longer has is recorded as skipped, not a failure. */
  skipMissing: boolean;
  progress?: Progress;
  /** Scratch space, removed at the end of the run. */
  tempDir(): Promise<string>;
}

export type { SkippedImage } from '../bundle/manifest.js';
import type { SkippedImage } from '../bundle/manifest.js';

export interface KindPlan {
  images: SourceImage[];
  failures: ResolveFailure[];
  skipped: SkippedImage[];
  /** After the copy: the kind's record for the manifest (`sources[kind]`). */
  record(copied: ReadonlyMap<string, BundleImage>): unknown;
}
