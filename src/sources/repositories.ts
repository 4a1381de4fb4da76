/**
 * The `repositories` source kind (seed 004, "dump a whole registry"): every
 * repository `/v2/_catalog` lists that the include/exclude globs keep, every tag
 * `tags/list` gives that the `tags` regular expression keeps, all platforms.
 * Both listings follow `Link` pagination.
 */
import type { BundleImage } from '../bundle/manifest.js';
import type { ConfigRepositorySet } from '../config/config.js';
import { mapLimit } from '../copy/limit.js';
import type { CreateContext, SourceKind, SourcePlan } from './source.js';
import { finishPlan, NeededImages, resolveNeeded } from '../openshift/needed-images.js';
import { parseReference } from '../oci/reference.js';
import { BundleError, errorMessage } from '../util/errors.js';

export const DEFAULT_PAGE_SIZE = 1000;

/** What the manifest records for each repository set (`sources.repositories[]`). */
export interface RepositorySetRecord {
  registry: string;
  include?: string[];
  exclude?: string[];
  tags?: string;
  /** Every repository carried and its tags. */
  repositories: { name: string; tags: string[] }[];
}

/** A glob over repository names: `*` and `?` stay within one path component, `**` crosses them. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export function selectRepositories(all: string[], include?: string[], exclude?: string[]): string[] {
  const inc = include?.map(globToRegExp);
  const exc = exclude?.map(globToRegExp) ?? [];
  return all.filter((r) => (!inc || inc.some((g) => g.test(r))) && !exc.some((g) => g.test(r)));
}

export async function planRepositories(sets: ConfigRepositorySet[], ctx: CreateContext): Promise<SourcePlan> {
  const needed = new NeededImages();
  const failures: SourcePlan['failures'] = [];
  const listed: { set: ConfigRepositorySet; repos: Map<string, string[]> }[] = [];
  for (const set of sets) {
    const what = `repositories of ${set.registry}`;
    try {
      const store = ctx.storeFor(set.registry);
      if (!store.listRepositories || !store.listTags) throw new BundleError(`${store.description} cannot list its repositories`);
      const pageSize = set.pageSize ?? DEFAULT_PAGE_SIZE;
      const repos = selectRepositories(await store.listRepositories(pageSize), set.include, set.exclude);
      if (repos.length === 0) throw new BundleError(`no repository of ${set.registry} matches ${JSON.stringify({ include: set.include, exclude: set.exclude })}`);
      const tagRe = set.tags ? new RegExp(set.tags) : undefined;
      const byRepo = new Map<string, string[]>();
      await mapLimit(repos, ctx.concurrency, async (repo) => {
        try {
          const tags = (await store.listTags!(repo, pageSize)).filter((t) => !tagRe || tagRe.test(t)).sort();
          byRepo.set(repo, tags);
          for (const t of tags) needed.add(`${set.registry}/${repo}:${t}`, `repository ${set.registry}/${repo}`);
        } catch (err) {
          failures.push({ source: `${set.registry}/${repo}`, error: `cannot list its tags: ${errorMessage(err)}` });
        }
      });
      ctx.progress?.info(`  ${set.registry}: ${byRepo.size} repositories, ${[...byRepo.values()].reduce((n, t) => n + t.length, 0)} tags`);
      listed.push({ set, repos: byRepo });
    } catch (err) {
      failures.push({ source: what, error: errorMessage(err) });
    }
  }
  const resolved = await resolveNeeded(needed, ctx, 'repository');
  return finishPlan(
    {
      images: resolved.images,
      failures: [...failures, ...resolved.failures],
      skipped: resolved.skipped,
      record: (copied: ReadonlyMap<string, BundleImage>): RepositorySetRecord[] =>
        listed.map(({ set, repos }) => ({
          registry: set.registry,
          ...(set.include ? { include: set.include } : {}),
          ...(set.exclude ? { exclude: set.exclude } : {}),
          ...(set.tags ? { tags: set.tags } : {}),
          repositories: [...repos.entries()]
            .sort(([a], [b]) => a.localeCompare(b))
            .map(([name, tags]) => ({ name, tags: tags.filter((t) => copied.has(refOf(set.registry, name, t))) }))
            .filter((r) => r.tags.length > 0),
        })),
    },
    ctx,
  );
}

function refOf(registry: string, repo: string, tag: string): string {
  const r = parseReference(`${registry}/${repo}:${tag}`);
  return `${r.registry}/${r.repository}:${r.tag}`;
}

export const repositoriesKind: SourceKind<ConfigRepositorySet[]> = {
  kind: 'repositories',
  section: (config) => (config.repositories.length > 0 ? config.repositories : undefined),
  plan: planRepositories,
};
