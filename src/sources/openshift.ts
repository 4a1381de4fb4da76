/**
 * The OpenShift sections of the config (releases, operators, repositories,
 * imageStreams), each planned by its own source kind; `create` runs them
 * without knowing what is inside.
 */
import type { BundleImage, SkippedImage } from '../bundle/manifest.js';
import type { LoadedConfig } from '../config/config.js';
import type { KindContext, KindPlan } from '../openshift/context.js';
import type { ResolveFailure, SourceImage } from './images.js';

export interface OpenShiftPlan {
  images: SourceImage[];
  failures: ResolveFailure[];
  skipped: SkippedImage[];
  /** After the copy: `manifest.sources`. */
  records(copied: ReadonlyMap<string, BundleImage>): Record<string, unknown>;
}

type Section = 'releases' | 'operators' | 'repositories' | 'imageStreams';

const PLANNERS: Record<Section, (config: LoadedConfig, ctx: KindContext) => Promise<KindPlan>> = {
  releases: async (c, ctx) => (await import('./release.js')).planReleases(c.releases, ctx),
  operators: async (c, ctx) => (await import('./catalog.js')).planCatalogs(c.operators, ctx),
  repositories: async (c, ctx) => (await import('./repositories.js')).planRepositories(c.repositories, ctx),
  imageStreams: async (c, ctx) => (await import('./imagestreams.js')).planImageStreams(c.imageStreams, ctx),
};

export function hasOpenShiftSections(config: LoadedConfig): boolean {
  return (Object.keys(PLANNERS) as Section[]).some((k) => config[k].length > 0);
}

export async function planOpenShift(config: LoadedConfig, ctx: KindContext): Promise<OpenShiftPlan> {
  const plans: [Section, KindPlan][] = [];
  for (const section of Object.keys(PLANNERS) as Section[]) {
    if (config[section].length === 0) continue;
    plans.push([section, await PLANNERS[section](config, ctx)]);
  }
  return {
    images: plans.flatMap(([, p]) => p.images),
    failures: plans.flatMap(([, p]) => p.failures),
    skipped: plans.flatMap(([, p]) => p.skipped),
    records: (copied) => Object.fromEntries(plans.map(([section, p]) => [section, p.record(copied)])),
  };
}
