/**
 * The user's bundle config (YAML or JSON), checked against spec/bundle-config.schema.json.
 *
 * ```yaml
 * apiVersion: airgap.bundle/v1alpha1
 * kind: BundleConfig
 * images:
 *   - quay.io/ns/app:1.2
 *   - name: docker.io/library/alpine:3.20
 *     platforms: [linux/amd64]
 * ociLayouts:
 *   - path: ./some-oci-layout
 *     refs: [v1]
 * ```
 *
 * JSON files are read by the same YAML parser (JSON is YAML 1.2), so they get line
 * numbers too. A bad config is refused with a UsageError whose lines look like
 * `bundle.yaml:7: images[1].platforms[0]: "linux" is not a platform; expected ...`.
 *
 * Duplicates are not errors: images that name the same reference once normalised
 * (`alpine` and `docker.io/library/alpine:latest`) are kept once, their platforms
 * merged (no platform list on either means every platform); OCI layouts with the same
 * resolved path are merged the same way (no refs means every image). Each merge adds
 * a line to `warnings`.
 */
import type { ValidateFunction } from 'ajv';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import {
  createAjv,
  describeAjvErrors,
  formatPath,
  loadSchemaFile,
  type PathSegment,
  type SchemaProblem,
} from '../bundle/schema-problems.js';
import { formatReference, parseReference } from '../oci/reference.js';
import { errorMessage, UsageError } from '../util/errors.js';
import { generatedFile, specFile } from '../util/package-root.js';

export const CONFIG_API_VERSION = 'airgap.bundle/v1alpha1';
export const CONFIG_KIND = 'BundleConfig';
export const CONFIG_SCHEMA_URL = specFile('bundle-config.schema.json');

/** How many problems a refusal lists. */
const MAX_PROBLEMS = 5;

export interface ConfigImage {
  /** Fully qualified, normalised reference (`docker.io/library/alpine:3.20`). */
  ref: string;
  /** `os/arch[/variant]`; absent means every platform of an index. */
  platforms?: string[];
}

export interface ConfigOciLayout {
  /** Absolute path, resolved relative to the config file's directory. */
  path: string;
  /** Ref names to take from index.json; absent means every image. */
  refs?: string[];
}

export interface ConfigRelease {
  image: string;
  signatureStore?: string;
  platforms?: string[];
}

export interface ConfigOperatorPackage {
  name: string;
  channels?: string[];
  minVersion?: string;
  maxVersion?: string;
}

export interface ConfigOperatorCatalog {
  catalog: string;
  packages?: ConfigOperatorPackage[];
  full?: boolean;
  platforms?: string[];
}

export interface ConfigRepositorySet {
  registry: string;
  include?: string[];
  exclude?: string[];
  tags?: string;
  pageSize?: number;
}

export interface ConfigImageStreamFile {
  /** Absolute path, resolved relative to the config file's directory. */
  path: string;
}

export interface LoadedConfig {
  /** Absolute path of the config file. */
  path: string;
  images: ConfigImage[];
  ociLayouts: ConfigOciLayout[];
  releases: ConfigRelease[];
  operators: ConfigOperatorCatalog[];
  repositories: ConfigRepositorySet[];
  imageStreams: ConfigImageStreamFile[];
  /**
   * Every other top-level section (a source kind's, e.g. `devfile`), as validated by
   * the schema; each kind reads its own (src/sources/).
   */
  sections: Record<string, unknown>;
  /** Non-fatal remarks (merged duplicates), each one line with file and line number. */
  warnings: string[];
}

/** The OpenShift sections, read here with their references normalised and files found. */
const OPENSHIFT_SECTIONS = ['releases', 'operators', 'repositories', 'imageStreams'] as const;

/** The config as the schema describes it. */
interface RawConfig {
  apiVersion: string;
  kind: string;
  ociLayouts?: { path: string; refs?: string[] }[];
  releases?: ConfigRelease[];
  operators?: ConfigOperatorCatalog[];
  repositories?: ConfigRepositorySet[];
  imageStreams?: { path: string }[];
}

/** The config schema's validator, generated at build time (src/build.ts): compiling it with ajv at every create cost about 0.1 s. */
export const CONFIG_VALIDATOR_FILE = 'config-validator.cjs';

let compiled: ValidateFunction | undefined;

/** The validator precompiled at build time, else compiled now. */
function validator(): ValidateFunction {
  if (!compiled) {
    try {
      const mod = createRequire(import.meta.url)(generatedFile(CONFIG_VALIDATOR_FILE)) as ValidateFunction | { default: ValidateFunction };
      compiled = typeof mod === 'function' ? mod : mod.default;
    } catch {
      compiled = createAjv().compile(loadSchemaFile(CONFIG_SCHEMA_URL));
    }
  }
  return compiled;
}

interface Located {
  line?: number;
  text: string;
}

/** Locates paths of the parsed document in the source text. */
class Locator {
  constructor(
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  private lineOf(node: Node | null | undefined): number | undefined {
    const start = node?.range?.[0];
    return start === undefined ? undefined : this.lines.linePos(start).line;
  }

  /** Line of the value at `p` (or of the nearest ancestor that exists); of the key `key` when given. */
  line(p: readonly PathSegment[], key?: string): number | undefined {
    let node: unknown = this.doc.contents;
    let best = this.lineOf(node as Node | null);
    const walk = [...p, ...(key !== undefined ? [key] : [])];
    for (let i = 0; i < walk.length; i++) {
      const seg = walk[i]!;
      if (isAlias(node)) node = node.resolve(this.doc);
      if (isMap(node)) {
        const pair = node.items.find((it) => (isScalar(it.key) ? String(it.key.value) : it.key) === String(seg));
        if (!pair) return best;
        if (key !== undefined && i === walk.length - 1) return this.lineOf(pair.key as Node) ?? best;
        node = pair.value;
        // `key:` with no value has no value node: point at the key.
        best = this.lineOf(node as Node | null) ?? this.lineOf(pair.key as Node) ?? best;
      } else if (isSeq(node) && typeof seg === 'number') {
        node = node.items[seg];
        best = this.lineOf(node as Node | null) ?? best;
      } else {
        return best;
      }
    }
    return best;
  }
}

function codeOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

function located(file: string, l: Located): string {
  return `${file}${l.line !== undefined ? `:${l.line}` : ''}: ${l.text}`;
}

function refuse(file: string, problems: Located[], hint?: string): never {
  const sorted = problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => (a.p.line ?? Infinity) - (b.p.line ?? Infinity) || a.i - b.i)
    .map((x) => x.p);
  const lines = sorted.slice(0, MAX_PROBLEMS).map((p) => located(file, p));
  if (sorted.length > MAX_PROBLEMS) lines.push(`${file}: ... and ${sorted.length - MAX_PROBLEMS} more problems`);
  throw new UsageError(lines.join('\n'), hint);
}

function problemLocated(loc: Locator, p: SchemaProblem): Located {
  const where = formatPath(p.path);
  return { line: loc.line(p.path, p.key), text: where ? `${where}: ${p.message}` : p.message };
}

async function readConfigFile(file: string): Promise<string> {
  try {
    const st = await stat(file);
    if (st.isDirectory()) throw new UsageError(`config file ${file} is a directory`);
    return await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    if (codeOf(err) === 'ENOENT') throw new UsageError(`config file ${file} does not exist`);
    throw new UsageError(`cannot read config file ${file}: ${errorMessage(err)}`);
  }
}

function mergeLists(a: string[] | undefined, b: string[] | undefined): string[] | undefined {
  if (a === undefined || b === undefined) return undefined;
  return [...new Set([...a, ...b])];
}

/** Fold a duplicate entry's list into the kept one; a list absent on either side means "all". */
function mergeInto<K extends string>(kept: { [k in K]?: string[] }, key: K, more: string[] | undefined): void {
  const merged = mergeLists(kept[key], more);
  if (merged) kept[key] = merged;
  else delete kept[key];
}

function unique(list: string[] | undefined): string[] | undefined {
  return list === undefined ? undefined : [...new Set(list)];
}

/**
 * Read, parse and check a config file. Throws UsageError (exit 2) naming the file,
 * the line and the path of each problem (up to five).
 */
export async function loadConfig(file: string): Promise<LoadedConfig> {
  const text = await readConfigFile(file);
  return parseConfig(text, file, path.dirname(path.resolve(file)));
}

/**
 * Check config text. `file` is the name used in messages (and made absolute for
 * `LoadedConfig.path`); relative OCI layout paths are resolved against `baseDir`.
 */
export async function parseConfig(text: string, file: string, baseDir: string): Promise<LoadedConfig> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    refuse(
      file,
      doc.errors.map((e) => ({
        line: lineCounter.linePos(e.pos[0]).line,
        text: `${/\.json$/i.test(file) ? 'JSON' : 'YAML'} syntax error: ${e.message.split('\n')[0]}`,
      })),
    );
  }
  const loc = new Locator(doc, lineCounter);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    refuse(file, [{ text: `cannot read the config: ${errorMessage(err)}` }]);
  }
  if (value === null || value === undefined) {
    refuse(file, [
      { text: `the config is empty; expected apiVersion: ${CONFIG_API_VERSION}, kind: ${CONFIG_KIND} and images or ociLayouts to bundle` },
    ]);
  }

  const validate = validator();
  const schemaOk = validate(value);
  const schemaProblems = schemaOk ? [] : describeAjvErrors(validate.errors ?? [], value).map((p) => problemLocated(loc, p));
  const problems: Located[] = [];
  const warnings: string[] = [];

  // Images: parse every reference, normalise, merge duplicates. Done even when the
  // schema failed (skipping entries of the wrong shape) so that every problem shows at once.
  const images: ConfigImage[] = [];
  const imageAt = new Map<string, { index: number; entry: number }>();
  const rawImages = (value as { images?: unknown }).images;
  (Array.isArray(rawImages) ? (rawImages as unknown[]) : []).forEach((entry, i) => {
    const obj = typeof entry === 'object' && entry !== null && !Array.isArray(entry) ? (entry as Record<string, unknown>) : undefined;
    const name = typeof entry === 'string' ? entry : obj?.name;
    if (typeof name !== 'string' || name === '') return; // the schema reports it
    const where: PathSegment[] = typeof entry === 'string' ? ['images', i] : ['images', i, 'name'];
    let ref: string;
    try {
      ref = formatReference(parseReference(name));
    } catch (err) {
      problems.push({ line: loc.line(where), text: `${formatPath(where)}: ${errorMessage(err)}` });
      return;
    }
    if (!schemaOk) return;
    const platforms = unique(obj?.platforms as string[] | undefined);
    const prior = imageAt.get(ref);
    if (prior) {
      mergeInto(images[prior.index]!, 'platforms', platforms);
      warnings.push(
        located(file, {
          line: loc.line(where),
          text: `${formatPath(where)}: ${JSON.stringify(name)} is the same image as images[${prior.entry}] (${ref}); bundling it once`,
        }),
      );
      return;
    }
    imageAt.set(ref, { index: images.length, entry: i });
    images.push(platforms ? { ref, platforms } : { ref });
  });

  if (!schemaOk) {
    const kind = (value as { kind?: unknown }).kind;
    refuse(
      file,
      [...schemaProblems, ...problems],
      kind === 'ImageSetConfiguration' ? 'this looks like an oc-mirror ImageSetConfiguration; bundle reads its own BundleConfig format' : undefined,
    );
  }
  const raw = value as RawConfig;

  // OCI layouts: resolve against the config's directory, check they exist, merge duplicates.
  const ociLayouts: ConfigOciLayout[] = [];
  const layoutAt = new Map<string, { index: number; entry: number }>();
  for (const [i, entry] of (raw.ociLayouts ?? []).entries()) {
    const where: PathSegment[] = ['ociLayouts', i, 'path'];
    const resolved = path.resolve(baseDir, entry.path);
    const shown = entry.path === resolved ? JSON.stringify(entry.path) : `${JSON.stringify(entry.path)} (${resolved})`;
    const st = await stat(resolved).catch(() => undefined);
    let bad: string | undefined;
    if (!st) bad = `${shown} does not exist`;
    else if (!st.isDirectory()) bad = `${shown} is not a directory; expected an OCI image layout directory`;
    else if (!(await stat(path.join(resolved, 'index.json')).catch(() => undefined))?.isFile()) {
      bad = `${shown} is not an OCI image layout (it has no index.json)`;
    }
    if (bad) {
      problems.push({ line: loc.line(where), text: `${formatPath(where)}: ${bad}` });
      continue;
    }
    const refs = unique(entry.refs);
    const prior = layoutAt.get(resolved);
    if (prior) {
      mergeInto(ociLayouts[prior.index]!, 'refs', refs);
      warnings.push(
        located(file, {
          line: loc.line(where),
          text: `${formatPath(where)}: ${JSON.stringify(entry.path)} is the same layout as ociLayouts[${prior.entry}]; reading it once`,
        }),
      );
      continue;
    }
    layoutAt.set(resolved, { index: ociLayouts.length, entry: i });
    ociLayouts.push(refs ? { path: resolved, refs } : { path: resolved });
  }

  const openshift = await openShiftSections(raw, baseDir, loc, problems);
  if (problems.length > 0) refuse(file, problems);
  const sections: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(raw)) {
    if (!['apiVersion', 'kind', 'images', 'ociLayouts', ...OPENSHIFT_SECTIONS].includes(key) && v !== undefined && v !== null) sections[key] = v;
  }
  const count = images.length + ociLayouts.length + Object.keys(sections).length + OPENSHIFT_SECTIONS.reduce((n, k) => n + openshift[k].length, 0);
  if (count === 0) {
    refuse(file, [{ text: 'nothing to bundle: the config lists no images, ociLayouts, releases, operators, repositories or imageStreams' }]);
  }
  return { path: path.resolve(file), images, ociLayouts, ...openshift, sections, warnings };
}

/** The OpenShift sections: references and regular expressions checked, ImageStream files found. */
async function openShiftSections(
  raw: RawConfig,
  baseDir: string,
  loc: Locator,
  problems: Located[],
): Promise<Pick<LoadedConfig, 'releases' | 'operators' | 'repositories' | 'imageStreams'>> {
  const problem = (where: PathSegment[], text: string): void => {
    problems.push({ line: loc.line(where), text: `${formatPath(where)}: ${text}` });
  };
  const normalised = (ref: string, where: PathSegment[]): string => {
    try {
      return formatReference(parseReference(ref));
    } catch (err) {
      problem(where, errorMessage(err));
      return ref;
    }
  };
  const releases = (raw.releases ?? []).map((r, i) => ({ ...r, image: normalised(r.image, ['releases', i, 'image']) }));
  const operators = (raw.operators ?? []).map((o, i) => {
    const names = new Set<string>();
    (o.packages ?? []).forEach((p, j) => {
      if (names.has(p.name)) problem(['operators', i, 'packages', j, 'name'], `package ${p.name} is listed twice`);
      names.add(p.name);
    });
    return { ...o, catalog: normalised(o.catalog, ['operators', i, 'catalog']) };
  });
  const repositories = (raw.repositories ?? []).map((r, i) => {
    if (r.tags !== undefined) {
      try {
        new RegExp(r.tags);
      } catch (err) {
        problem(['repositories', i, 'tags'], `not a regular expression: ${errorMessage(err)}`);
      }
    }
    return r;
  });
  const imageStreams: ConfigImageStreamFile[] = [];
  for (const [i, entry] of (raw.imageStreams ?? []).entries()) {
    const resolved = path.resolve(baseDir, entry.path);
    const st = await stat(resolved).catch(() => undefined);
    if (!st?.isFile()) problem(['imageStreams', i, 'path'], `${JSON.stringify(entry.path)} ${st ? 'is not a file' : 'does not exist'}`);
    else imageStreams.push({ path: resolved });
  }
  return { releases, operators, repositories, imageStreams };
}
