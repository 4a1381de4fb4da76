/**
 * Create side of the devfile kind: read each registry, pick the stacks asked for,
 * find every image each stack version needs, make its starter projects offline, and
 * build each version as a devfile-registry OCI artifact (plus the index artifact).
 */
import { mkdir, mkdtemp, readFile, stat } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { mapLimit } from '../copy/limit.js';
import { UsageError } from '../util/errors.js';
import type { Progress } from '../util/progress.js';
import { addArtifact, ARCHIVE_NAME, TITLE, DEVFILE_NAME, isOwnLayer, listStackFiles, writeArchiveTar, type ArtifactFile, type BuiltArtifact } from './artifact.js';
import { DevfileError, parseDevfile, type FoundImage, type ParsedDevfile } from './devfile-images.js';
import { buildIndex, type IndexEntryInput } from './index-json.js';
import { artifactRef, type DevfileStackRecord } from './record.js';
import { readRegistryFolder, type SampleSource, type StackSource, type StackVersionSource } from './registry-folder.js';
import { cloneAt, offlineStarterZip, offlineZipName, type OfflineZip } from './starter.js';
import { zipDirectory } from './zip.js';
import type { OverlayStore } from '../store/overlay-store.js';
import type { ContentStore } from '../store/store.js';
import { readRegistryUrl } from './registry-url.js';

export interface DevfileSection {
  registries: ({ path: string } | { url: string })[];
  stacks?: string[];
  samples?: boolean;
  starterProjects?: boolean;
  indexBase?: string;
  extraImages?: string[];
}

export interface CollectedVersion {
  record: Omit<DevfileStackRecord, 'images'> & { images: FoundImage[] };
  artifact: BuiltArtifact;
  /** For the index and messages only (not recorded). */
  extra: { schemaVersion: string; metadata: Record<string, unknown>; notes: string[]; git?: { remotes: Record<string, string>; revision?: string } };
}

export interface Collected {
  versions: CollectedVersion[];
  index: BuiltArtifact;
  notes: string[];
}

interface Wanted {
  /** name -> versions asked for ('*': every version) */
  byName: Map<string, Set<string>>;
  found: Set<string>;
  /** name -> every version the registries have (for messages) */
  available: Map<string, string[]>;
}

function wantedStacks(list: string[] | undefined): Wanted | undefined {
  if (!list) return undefined;
  const byName = new Map<string, Set<string>>();
  for (const s of list) {
    const [name, version] = s.split('@') as [string, string | undefined];
    const set = byName.get(name) ?? new Set<string>();
    if (version) set.add(version);
    else set.add('*');
    byName.set(name, set);
  }
  return { byName, found: new Set(), available: new Map() };
}

function versionWanted(w: Wanted | undefined, name: string, version: string): boolean {
  if (!w) return true;
  const set = w.byName.get(name);
  if (!set) return false;
  return set.has('*') || set.has(version);
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

export interface CollectContext {
  configDir: string;
  scratch: string;
  created: Date;
  progress: Progress;
  store: OverlayStore;
  /** Stack versions read (cloned, zipped) at once. */
  concurrency: number;
  /** Registry stores (registries.conf applied): a URL registry's OCI side. */
  storeFor(host: string): ContentStore;
}

/** Build the artifact of one version folder: devfile.yaml, archive.tar of the other files, own-layer files, offline zips. */
async function versionArtifact(ctx: CollectContext, dir: string, devfilePath: string, zips: OfflineZip[], work: string): Promise<BuiltArtifact> {
  const files: ArtifactFile[] = [{ title: DEVFILE_NAME, path: devfilePath }];
  const zipNames = new Set(zips.map((z) => z.fileName));
  const rest = dir ? await listStackFiles(dir, (n) => n === DEVFILE_NAME || n === '.devfile.yaml' || n === ARCHIVE_NAME || isOwnLayer(n) || zipNames.has(n)) : [];
  if (rest.length > 0) {
    const archive = join(work, ARCHIVE_NAME);
    await writeArchiveTar(dir, rest, archive, ctx.created);
    files.push({ title: ARCHIVE_NAME, path: archive });
  }
  if (dir) {
    for (const own of ['logo.svg', 'logo.png', 'vsx']) if (await isFile(join(dir, own))) files.push({ title: own, path: join(dir, own) });
  }
  for (const z of zips) files.push({ title: z.fileName, path: z.path });
  return addArtifact(ctx.store, files);
}

async function collectStackVersion(
  ctx: CollectContext,
  registry: string,
  stack: StackSource,
  sv: StackVersionSource,
  starterProjects: boolean,
  wanted: Wanted | undefined,
): Promise<CollectedVersion | undefined> {
  const shown = `${sv.layoutPath}/${DEVFILE_NAME}`;
  const devfilePath = join(sv.dir, DEVFILE_NAME);
  let text: string;
  try {
    text = await readFile(devfilePath, 'utf8');
  } catch {
    throw new DevfileError(`${registry}: ${shown}`, `stack ${stack.name}${sv.version ? ` version ${sv.version}` : ''}: the devfile is missing`);
  }
  let parsed: ParsedDevfile;
  try {
    parsed = await parseDevfile(text, sv.dir, shown);
  } catch (err) {
    if (err instanceof DevfileError) throw new DevfileError(`stack ${stack.name}${sv.version ? ` ${sv.version}` : ''}`, err.message);
    throw err;
  }
  const version = sv.version ?? (typeof parsed.metadata.version === 'string' ? parsed.metadata.version : String(parsed.metadata.version ?? 'latest'));
  wanted?.available.set(stack.name, [...(wanted.available.get(stack.name) ?? []), version]);
  if (!versionWanted(wanted, stack.name, version)) return undefined;
  wanted?.found.add(`${stack.name}@${version}`);
  const what = `stack ${stack.name} ${version} (${shown})`;
  const work = await mkdtemp(join(ctx.scratch, `${stack.name}-`));
  const zips: OfflineZip[] = [];
  if (starterProjects) {
    for (const sp of parsed.starterProjects) {
      ctx.progress.info(`  ${what}: starter project ${sp.name}`);
      zips.push(await offlineStarterZip(sp, join(work, 'zips'), ctx.scratch, ctx.created, what));
    }
  }
  const artifact = await versionArtifact(ctx, sv.dir, devfilePath, zips, work);
  return {
    artifact,
    record: {
      type: 'stack',
      name: stack.name,
      version,
      default: sv.isDefault,
      path: sv.layoutPath,
      artifact: artifactRef('stack', stack.name, version),
      registry,
      images: parsed.images,
      starterProjects: zips.map((z) => ({ name: z.name, zip: z.fileName, origin: z.origin })),
    },
    extra: { schemaVersion: parsed.schemaVersion, metadata: parsed.metadata, notes: parsed.notes },
  };
}

async function collectSample(ctx: CollectContext, registry: string, s: SampleSource): Promise<CollectedVersion> {
  const version = s.version ?? 'latest';
  const layoutPath = s.version ? `samples/${s.name}/${s.version}` : `samples/${s.name}`;
  const what = `sample ${s.name}${s.version ? ` ${s.version}` : ''}`;
  const work = await mkdtemp(join(ctx.scratch, `sample-${s.name}-`));
  const clone = join(work, 'clone');
  const url = s.git.remotes.origin ?? Object.values(s.git.remotes)[0]!;
  ctx.progress.info(`  ${what}: cloning ${url}`);
  await cloneAt(url, s.git.revision, clone, what);
  const devfileName = (await isFile(join(clone, DEVFILE_NAME))) ? DEVFILE_NAME : (await isFile(join(clone, '.devfile.yaml'))) ? '.devfile.yaml' : undefined;
  if (!devfileName) throw new DevfileError(`${what} (${url})`, 'has no devfile.yaml or .devfile.yaml at the top of the repository');
  const shown = `${layoutPath}/${DEVFILE_NAME} (${url})`;
  const parsed = await parseDevfile(await readFile(join(clone, devfileName), 'utf8'), clone, shown);
  const zipDir = join(work, 'zips');
  await mkdir(zipDir, { recursive: true });
  const zipPath = join(zipDir, offlineZipName(s.name));
  const entries = await zipDirectory(clone, zipPath, ctx.created);
  const zip: OfflineZip = { name: s.name, fileName: offlineZipName(s.name), path: zipPath, entries, origin: `git ${url}${s.git.revision ? ` at ${s.git.revision}` : ''}` };
  const artifact = await addArtifact(ctx.store, [
    { title: DEVFILE_NAME, path: join(clone, devfileName) },
    { title: zip.fileName, path: zip.path },
  ]);
  return {
    artifact,
    record: {
      type: 'sample',
      name: s.name,
      version,
      default: s.isDefault,
      path: layoutPath,
      artifact: artifactRef('sample', s.name, version),
      registry,
      // A sample's Dockerfiles and manifests stay in its zip (the user's project); only its devfile is rewritten.
      images: parsed.images.filter((i) => i.file === DEVFILE_NAME),
      starterProjects: [{ name: zip.name, zip: zip.fileName, origin: zip.origin }],
    },
    extra: { schemaVersion: parsed.schemaVersion, metadata: parsed.metadata, notes: parsed.notes, git: s.git },
  };
}

/** Everything the devfile section asks for, in `ctx.store`. */
export async function collectDevfile(section: DevfileSection, ctx: CollectContext): Promise<Collected> {
  const wanted = wantedStacks(section.stacks);
  const versions: CollectedVersion[] = [];
  const stackYamls: { name: string; text: string; meta: Record<string, unknown> }[] = [];
  const samplesMeta = new Map<string, Record<string, unknown>>();
  const seen = new Map<string, string>();
  for (const reg of section.registries) {
    const label = 'url' in reg ? reg.url : reg.path;
    const folder =
      'url' in reg
        ? await readRegistryUrl(reg.url, await mkdtemp(join(ctx.scratch, 'registry-')), ctx.storeFor, (name) => !wanted || wanted.byName.has(name))
        : await readRegistryFolder(resolvePath(ctx.configDir, reg.path));
    // Stack versions (and samples) are read, cloned and zipped in parallel; kept in registry order.
    const jobs: { stack: StackSource; sv: StackVersionSource }[] = [];
    for (const stack of folder.stacks) {
      if (wanted && !wanted.byName.has(stack.name)) continue;
      for (const sv of stack.versions) {
        if (sv.version && !versionWanted(wanted, stack.name, sv.version)) {
          wanted?.available.set(stack.name, [...(wanted.available.get(stack.name) ?? []), sv.version]);
          continue;
        }
        jobs.push({ stack, sv });
      }
    }
    const collected = await mapLimit(jobs, ctx.concurrency, ({ stack, sv }) => collectStackVersion(ctx, label, stack, sv, section.starterProjects !== false, wanted));
    const withVersions = new Set<string>();
    collected.forEach((v, i) => {
      if (!v) return;
      const key = `${v.record.name}@${v.record.version}`;
      const prior = seen.get(key);
      if (prior) {
        ctx.progress.warn(`devfile stack ${key} is in ${prior} and ${label}; keeping the one from ${prior}`);
        return;
      }
      seen.set(key, label);
      versions.push(v);
      const stack = jobs[i]!.stack;
      if (stack.stackYaml && !withVersions.has(stack.name)) stackYamls.push({ name: stack.name, text: stack.stackYaml, meta: stack.meta });
      withVersions.add(stack.name);
    });
    if (section.samples) {
      versions.push(...(await mapLimit(folder.samples, ctx.concurrency, (s) => collectSample(ctx, label, s))));
      for (const s of folder.samples) samplesMeta.set(s.name, s.entry);
    }
  }
  if (wanted) {
    for (const [name, set] of wanted.byName) {
      const where = section.registries.map((r) => ('path' in r ? r.path : r.url)).join(', ');
      const have = wanted.available.get(name);
      if (!have) throw new UsageError(`devfile.stacks: no stack ${JSON.stringify(name)} in ${where}`);
      for (const v of set) {
        if (v !== '*' && !wanted.found.has(`${name}@${v}`)) throw new UsageError(`devfile.stacks: stack ${name} has no version ${v} in ${where} (it has ${have.join(', ')})`);
      }
    }
  }
  if (versions.length === 0) throw new UsageError(`devfile: the registries ${section.registries.map((r) => ('path' in r ? r.path : r.url)).join(', ')} hold no stacks`);

  const index = await indexArtifact(ctx, versions, stackYamls, samplesMeta);
  const notes = versions.flatMap((v) => v.extra.notes);
  return { versions, index, notes };
}

/** index.json for the versions carried, as the registry's index generator writes it. */
function indexFor(versions: CollectedVersion[], stackMeta: Map<string, Record<string, unknown>>, samplesMeta: Map<string, Record<string, unknown>>): unknown[] {
  const entries = new Map<string, IndexEntryInput>();
  for (const { record, extra, artifact } of versions) {
    const resources = artifact.layers.map((l) => l.annotations![TITLE]!);
    const key = `${record.type}:${record.name}`;
    let e = entries.get(key);
    if (!e) {
      e = { name: record.name, type: record.type, meta: (record.type === 'stack' ? stackMeta.get(record.name) : samplesMeta.get(record.name)) ?? {}, versions: [] };
      entries.set(key, e);
    }
    e.versions.push({
      version: record.version,
      isDefault: record.default,
      schemaVersion: extra.schemaVersion,
      metadata: extra.metadata,
      self: record.artifact,
      resources,
      starterProjects: record.type === 'stack' ? record.starterProjects.map((s) => s.name) : [],
      ...(extra.git ? { git: extra.git } : {}),
    });
  }
  return buildIndex([...entries.values()]);
}

async function indexArtifact(
  ctx: CollectContext,
  versions: CollectedVersion[],
  stackYamls: { name: string; text: string; meta: Record<string, unknown> }[],
  samplesMeta: Map<string, Record<string, unknown>>,
): Promise<BuiltArtifact> {
  const stackMeta = new Map(stackYamls.map((s) => [s.name, s.meta]));
  const index = indexFor(versions, stackMeta, samplesMeta);
  const files: ArtifactFile[] = [{ title: 'index.json', data: Buffer.from(`${JSON.stringify(index, null, 2)}\n`) }];
  for (const s of stackYamls) files.push({ title: `stacks/${s.name}/stack.yaml`, data: Buffer.from(s.text) });
  return addArtifact(ctx.store, files);
}
