/**
 * Validation of a bundle manifest against spec/bundle-manifest.schema.json.
 * The schema is read at run time (from dist/src/bundle/ it is ../../../spec/) and
 * compiled once.
 */
import type { ValidateFunction } from 'ajv';
import { createRequire } from 'node:module';
import { BundleError } from '../util/errors.js';
import type { BundleManifest } from './manifest.js';
import { createAjv, describeAjvErrors, loadSchemaFile, problemText, type SchemaProblem } from './schema-problems.js';
import { generatedFile, specFile } from '../util/package-root.js';

export const MANIFEST_SCHEMA_URL = specFile('bundle-manifest.schema.json');

/** How many problems a message lists before "... and N more". */
const MAX_PROBLEMS = 5;

let compiled: ValidateFunction | undefined;

/** The validator precompiled at build time (compile-schemas.ts), else compiled now. */
function validator(): ValidateFunction {
  if (!compiled) {
    try {
      const mod = createRequire(import.meta.url)(generatedFile('manifest-validator.cjs')) as ValidateFunction | { default: ValidateFunction };
      compiled = typeof mod === 'function' ? mod : mod.default;
    } catch {
      compiled = createAjv().compile(loadSchemaFile(MANIFEST_SCHEMA_URL));
    }
  }
  return compiled;
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
  const validate = validator();
  if (!validate(obj)) {
    const problems = describeAjvErrors(validate.errors ?? [], obj);
    throw new BundleError(formatProblems('invalid bundle manifest', problems));
  }
  const manifest = obj as BundleManifest;
  const extra = semanticProblems(manifest);
  if (extra.length) throw new BundleError(formatProblems('invalid bundle manifest', extra));
  return manifest;
}
