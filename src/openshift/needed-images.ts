/**
 * Images a release, a catalog or an image stream names: resolved all at once
 * (bounded), each remembering who needs it, so that a missing one is reported
 * (or, with `--skip-missing`, skipped) naming its release, catalog or bundle.
 */
import { mapLimit } from '../copy/limit.js';
import { formatReference, parseReference, referenceSelector, repositoryName } from '../oci/reference.js';
import { resolutionError } from '../sources/images.js';
import type { CreateContext, ResolveFailure, SkippedImage, SourceImage, SourcePlan } from '../sources/source.js';
import { errorMessage, NotFoundError } from '../util/errors.js';

/** Image references (as written) and who needs each. */
export class NeededImages {
  private readonly byRef = new Map<string, Set<string>>();

  add(ref: string, neededBy: string): void {
    const key = formatReference(parseReference(ref));
    let s = this.byRef.get(key);
    if (!s) this.byRef.set(key, (s = new Set()));
    s.add(neededBy);
  }

  get size(): number {
    return this.byRef.size;
  }

  neededBy(ref: string): string[] {
    return [...(this.byRef.get(ref) ?? [])];
  }

  refs(): string[] {
    return [...this.byRef.keys()];
  }
}

export interface ResolvedNeeded {
  images: SourceImage[];
  failures: ResolveFailure[];
  skipped: SkippedImage[];
}

/**
 * Resolve every needed image at its registry. An image the registry does not
 * have is skipped with `ctx.skipMissing`, else a failure naming who needs it;
 * any other error is a failure.
 */
export async function resolveNeeded(needed: NeededImages, ctx: CreateContext, origin: string, platforms?: string[]): Promise<ResolvedNeeded> {
  const out: ResolvedNeeded = { images: [], failures: [], skipped: [] };
  await mapLimit(needed.refs(), ctx.concurrency, async (source) => {
    const who = needed.neededBy(source);
    const ref = parseReference(source);
    try {
      const store = ctx.storeFor(ref.registry);
      const desc = await store.resolve(ref.repository, referenceSelector(ref));
      const tags = ref.tag ? [ref.tag] : [];
      out.images.push({
        store,
        source,
        refName: source,
        origin,
        tags,
        root: { srcRepo: ref.repository, dstRepo: repositoryName(ref), desc, tags, platforms, label: `${source} (needed by ${who.join(', ')})` },
      });
    } catch (err) {
      if (err instanceof NotFoundError && ctx.skipMissing) {
        out.skipped.push({ source, reason: 'not found at the source', neededBy: who });
        ctx.progress?.warn(`skipping ${source}: not found (needed by ${who.join(', ')})`);
      } else {
        out.failures.push({ source, error: `${errorMessage(err)} (needed by ${who.join(', ')})` });
      }
    }
  });
  out.images.sort((a, b) => a.source.localeCompare(b.source));
  return out;
}

/** A kind's plan as it stands: every failure at once, thrown unless --continue-on-error. */
export function finishPlan<P extends SourcePlan>(plan: P, ctx: CreateContext): P {
  if (plan.failures.length > 0 && !ctx.keepGoing) throw resolutionError(plan.failures);
  return plan;
}
