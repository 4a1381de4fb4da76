/**
 * The registry's index (`index.json`, served at /index and /v2index), generated
 * the way the registry's index generator does: one entry per stack or sample,
 * its fields from stack.yaml / extraDevfileEntries.yaml and the default version's
 * devfile metadata, and `versions[]` with each version's schemaVersion, links,
 * resources (the files of the version) and starter project names.
 */
export interface IndexVersionInput {
  version: string;
  isDefault: boolean;
  schemaVersion: string;
  metadata: Record<string, unknown>;
  /** `devfile-catalog/<stack>:<version>` */
  self: string;
  resources: string[];
  starterProjects: string[];
  git?: { remotes: Record<string, string>; revision?: string };
}

export interface IndexEntryInput {
  name: string;
  type: 'stack' | 'sample';
  /** stack.yaml's fields, or the sample's entry in extraDevfileEntries.yaml. */
  meta: Record<string, unknown>;
  versions: IndexVersionInput[];
}

const COPIED = ['displayName', 'description', 'tags', 'architectures', 'icon', 'projectType', 'language', 'provider', 'supportUrl'] as const;

function pick(from: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (from[k] !== undefined && from[k] !== null) out[k] = from[k];
  return out;
}

export function buildIndex(entries: IndexEntryInput[]): unknown[] {
  return [...entries]
    .sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === 'stack' ? -1 : 1))
    .map((e) => {
      const versions = [...e.versions].sort((a, b) => compareVersions(a.version, b.version));
      const def = versions.find((v) => v.isDefault) ?? versions[versions.length - 1]!;
      const fromDevfile = pick(def.metadata, COPIED);
      const fromMeta = pick(e.meta, COPIED);
      const entry: Record<string, unknown> = {
        name: e.name,
        ...(e.type === 'stack' ? { version: def.version } : {}),
        ...fromDevfile,
        ...fromMeta,
        type: e.type,
      };
      if (e.type === 'stack') {
        entry.links = { self: def.self };
        entry.resources = def.resources;
        entry.starterProjects = def.starterProjects;
      } else if (def.git) {
        entry.git = def.git;
      }
      entry.versions = versions.map((v) => ({
        version: v.version,
        schemaVersion: v.schemaVersion,
        ...(v.isDefault ? { default: true } : {}),
        ...pick(v.metadata, ['description', 'tags', 'icon', 'architectures']),
        ...(e.type === 'stack' ? { links: { self: v.self }, resources: v.resources, starterProjects: v.starterProjects } : v.git ? { git: v.git } : {}),
      }));
      return entry;
    });
}

/** Semantic-version order (numeric parts compared as numbers), then text. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+-]/);
  const pb = b.split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) {
      if (nx !== ny) return nx - ny;
    } else if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}
