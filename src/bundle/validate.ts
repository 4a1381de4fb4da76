/**
 * Validation of a bundle manifest against spec/bundle-manifest.schema.json.
 * The schema is read at run time (from dist/src/bundle/ it is ../../../spec/) and
 * compiled once, or precompiled by the build. A manifest of a newer 1.x minor is
 * checked against the opened schema (openSchema): known fields strictly, unknown
 * ones let through.
 */
import type { ValidateFunction } from 'ajv';
import { createRequire } from 'node:module';
import { BundleError } from '../util/errors.js';
import { FORMAT_VERSION, type BundleManifest } from './manifest.js';
import { createAjv, describeAjvErrors, formatPath, loadSchemaFile, pointerToPath, problemText, type SchemaProblem } from './schema-problems.js';
import { generatedFile, specFile } from '../util/package-root.js';

export const MANIFEST_SCHEMA_URL = specFile('bundle-manifest.schema.json');

/** How many problems a message lists before "... and N more". */
const MAX_PROBLEMS = 5;

/** The minor version of the format this tool writes and knows every field of. */
const KNOWN_MINOR = Number(FORMAT_VERSION.split('.')[1]);

/**
 * The schema a 1.x reader applies to a manifest of a newer minor: every field it
 * knows is checked as strictly as ever, but objects accept fields it does not know
 * (`additionalProperties: false` dropped) and enums marked `x-extensible` accept
 * any non-empty string. spec/airgap-format.md §7.1 states the rule.
 */
export function openSchema(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(openSchema);
  if (!node || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    if (k === 'additionalProperties' && v === false) continue;
    out[k] = k === 'properties' || k === 'definitions' ? Object.fromEntries(Object.entries(v as object).map(([n, s]) => [n, openSchema(s)])) : openSchema(v);
  }
  if (out['x-extensible'] === true && Array.isArray(out.enum)) {
    delete out.enum;
    out.type = 'string';
    out.minLength = 1;
  }
  if (typeof out.$id === 'string') out.$id = out.$id.replace(/\.schema\.json$/, '.open.schema.json');
  return out;
}

/** Generated validators (src/build.ts): the schema as written, and opened for newer minors. */
export const VALIDATOR_FILES = { strict: 'manifest-validator.cjs', open: 'manifest-validator-open.cjs' } as const;

const compiled: Partial<Record<keyof typeof VALIDATOR_FILES, ValidateFunction>> = {};

/** The validator precompiled at build time (src/build.ts), else compiled now. */
function validator(which: keyof typeof VALIDATOR_FILES): ValidateFunction {
  let v = compiled[which];
  if (!v) {
    try {
      const mod = createRequire(import.meta.url)(generatedFile(VALIDATOR_FILES[which])) as ValidateFunction | { default: ValidateFunction };
      v = typeof mod === 'function' ? mod : mod.default;
    } catch {
      const schema = loadSchemaFile(MANIFEST_SCHEMA_URL);
      v = createAjv().compile((which === 'open' ? openSchema(schema) : schema) as Record<string, unknown>);
    }
    compiled[which] = v;
  }
  return v;
}

/** The minor of a `1.<minor>` format version; undefined for anything else. */
function formatMinor(obj: unknown): number | undefined {
  const v = obj && typeof obj === 'object' ? (obj as Record<string, unknown>).formatVersion : undefined;
  const m = typeof v === 'string' ? /^1\.(\d+)$/.exec(v) : null;
  return m ? Number(m[1]) : undefined;
}

/** Whether the manifest is of a minor newer than this tool's: then fields and values it does not know are allowed. */
export function isNewerMinor(obj: unknown): boolean {
  const minor = formatMinor(obj);
  return minor !== undefined && minor > KNOWN_MINOR;
}

/**
 * Fields and extensible values (such as an image's `origin`) that this version
 * does not know, with their paths: what a newer minor added. Empty for a manifest
 * this version knows fully.
 */
export function unknownFields(obj: unknown): string[] {
  const strict = validator('strict');
  if (strict(obj)) return [];
  const out: string[] = [];
  for (const e of strict.errors ?? []) {
    const where = formatPath(pointerToPath(e.instancePath, obj));
    if (e.keyword === 'additionalProperties') {
      const key = JSON.stringify(String((e.params as { additionalProperty: string }).additionalProperty));
      out.push(where ? `${where}.${key}` : key);
    } else if (e.keyword === 'enum' && (e.parentSchema as Record<string, unknown> | undefined)?.['x-extensible'] === true) {
      out.push(`${where} = ${JSON.stringify(e.data)}`);
    }
  }
  return [...new Set(out)];
}

/** Checks the schema cannot express. */
function semanticProblems(m: BundleManifest): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  const firstAt = new Map<string, number>();
  m.members.forEach((mem, i) => {
    const prev = firstAt.get(mem.path);
    if (prev !== undefined) {
      out.push({ path: ['members', i, 'path'], message: `${JSON.stringify(mem.path)} is listed twice (also members[${prev}])` });
    } else {
      firstAt.set(mem.path, i);
    }
  });
  return out;
}

/** `title: problem` for one problem; otherwise `title:` and one indented line per problem. */
export function formatProblems(title: string, problems: readonly SchemaProblem[]): string {
  if (problems.length === 1) return `${title}: ${problemText(problems[0]!)}`;
  const lines = problems.slice(0, MAX_PROBLEMS).map((p) => `  ${problemText(p)}`);
  if (problems.length > MAX_PROBLEMS) lines.push(`  ... and ${problems.length - MAX_PROBLEMS} more`);
  return `${title}:\n${lines.join('\n')}`;
}

/**
 * Return `obj` typed as a BundleManifest, or throw BundleError (exit 1) listing the
 * first few problems with their paths (`members[3].digest: ...`).
 */
export function validateManifest(obj: unknown): BundleManifest {
  const validate = validator(isNewerMinor(obj) ? 'open' : 'strict');
  if (!validate(obj)) {
    const problems = describeAjvErrors(validate.errors ?? [], obj);
    throw new BundleError(formatProblems('invalid bundle manifest', problems));
  }
  const manifest = obj as BundleManifest;
  const extra = semanticProblems(manifest);
  if (extra.length) throw new BundleError(formatProblems('invalid bundle manifest', extra));
  return manifest;
}
