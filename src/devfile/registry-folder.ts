/**
 * A devfile registry checkout in the devfile/registry layout:
 *   stacks/<name>/devfile.yaml                      one version
 *   stacks/<name>/stack.yaml + <version>/devfile.yaml   several versions
 *   extraDevfileEntries.yaml                         samples (git repositories)
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BundleError, UsageError } from '../util/errors.js';
import { DevfileError, parseYamlDoc } from './devfile-images.js';

export interface StackVersionSource {
  stack: string;
  /** From stack.yaml, or the devfile's metadata.version for a single-version stack (read later). */
  version?: string;
  isDefault: boolean;
  /** Folder holding devfile.yaml and the files it names. */
  dir: string;
  /** Where it lives in the registry: `stacks/go/2.6.0` or `stacks/nodejs`. */
  layoutPath: string;
}

export interface StackSource {
  name: string;
  /** stack.yaml's text for a multi-version stack. */
  stackYaml?: string;
  meta: Record<string, unknown>;
  versions: StackVersionSource[];
}

export interface SampleSource {
  name: string;
  version?: string;
  isDefault: boolean;
  git: { remotes: Record<string, string>; revision?: string };
  /** The entry of extraDevfileEntries.yaml (its index fields). */
  entry: Record<string, unknown>;
}

export interface RegistryFolder {
  root: string;
  stacks: StackSource[];
  samples: SampleSource[];
}

const NAME = /^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$/i;
const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]*$/;

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

function asRecord(v: unknown): Record<string, unknown> | undefined {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

async function readStack(root: string, name: string): Promise<StackSource | undefined> {
  const dir = join(root, 'stacks', name);
  const stackFile = join(dir, 'stack.yaml');
  if (await isFile(stackFile)) {
    const shown = `stacks/${name}/stack.yaml`;
    const text = await readFile(stackFile, 'utf8');
    const meta = asRecord(parseYamlDoc(text, shown).toJS());
    const versions = meta?.versions;
    if (!meta || !Array.isArray(versions) || versions.length === 0) throw new DevfileError(shown, `stack ${name}: expected versions: [{version, default}]`);
    const out: StackVersionSource[] = versions.map((v, i) => {
      const r = asRecord(v);
      const version = r?.version === undefined ? undefined : String(r.version);
      if (!version || !VERSION.test(version)) throw new DevfileError(shown, `stack ${name}: versions[${i}].version ${JSON.stringify(r?.version)} is not a version`);
      return { stack: name, version, isDefault: r?.default === true, dir: join(dir, version), layoutPath: `stacks/${name}/${version}` };
    });
    if (!out.some((v) => v.isDefault)) out[0]!.isDefault = true;
    return { name, stackYaml: text, meta, versions: out };
  }
  if (await isFile(join(dir, 'devfile.yaml'))) {
    return { name, meta: {}, versions: [{ stack: name, isDefault: true, dir, layoutPath: `stacks/${name}` }] };
  }
  return undefined;
}

function parseSamples(text: string): SampleSource[] {
  const shown = 'extraDevfileEntries.yaml';
  const doc = asRecord(parseYamlDoc(text, shown).toJS());
  const samples = doc?.samples ?? [];
  if (!Array.isArray(samples)) throw new DevfileError(shown, 'samples: expected a list');
  const out: SampleSource[] = [];
  samples.forEach((s, i) => {
    const r = asRecord(s);
    const name = r?.name;
    if (!r || typeof name !== 'string' || !NAME.test(name)) throw new DevfileError(shown, `samples[${i}].name: expected a name`);
    const gitOf = (g: unknown, where: string) => {
      const git = asRecord(g);
      const remotes = asRecord(git?.remotes);
      if (!remotes || Object.keys(remotes).length === 0) throw new DevfileError(shown, `${where}.git.remotes: expected at least one remote (sample ${name})`);
      return {
        remotes: Object.fromEntries(Object.entries(remotes).map(([k, v]) => [k, String(v)])),
        ...(git?.revision !== undefined ? { revision: String(git.revision) } : {}),
      };
    };
    if (Array.isArray(r.versions) && r.versions.length > 0) {
      r.versions.forEach((v, j) => {
        const vr = asRecord(v);
        const version = vr?.version === undefined ? undefined : String(vr.version);
        if (!version || !VERSION.test(version)) throw new DevfileError(shown, `samples[${i}].versions[${j}].version: expected a version (sample ${name})`);
        out.push({ name, version, isDefault: vr?.default === true, git: gitOf(vr?.git, `samples[${i}].versions[${j}]`), entry: r });
      });
    } else {
      out.push({ name, isDefault: true, git: gitOf(r.git, `samples[${i}]`), entry: r });
    }
  });
  return out;
}

/** Read the registry's stacks and samples (not yet their devfiles). */
export async function readRegistryFolder(root: string): Promise<RegistryFolder> {
  const st = await stat(root).catch(() => undefined);
  if (!st?.isDirectory()) throw new UsageError(`devfile registry ${root} is not a folder`);
  let names: string[];
  try {
    names = (await readdir(join(root, 'stacks'), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  } catch {
    throw new UsageError(`devfile registry ${root} has no stacks/ folder (expected the devfile/registry layout)`);
  }
  const stacks: StackSource[] = [];
  for (const name of names) {
    if (!NAME.test(name)) throw new BundleError(`devfile registry ${root}: stacks/${name} is not a valid stack name`);
    const s = await readStack(root, name);
    if (s) stacks.push(s);
  }
  const extra = join(root, 'extraDevfileEntries.yaml');
  const samples = (await isFile(extra)) ? parseSamples(await readFile(extra, 'utf8')) : [];
  return { root, stacks, samples };
}
