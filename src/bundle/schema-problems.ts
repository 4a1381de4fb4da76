/**
 * Turning ajv errors into one-line, human-readable problems with paths such as
 * `images[3].platforms[0]`. Shared by the bundle manifest and config validators.
 *
 * Schemas may annotate a subschema with two non-standard keywords:
 *   `x-what`     a noun phrase for what the value should be ("a platform"), used when a
 *                pattern fails: `"linux" is not a platform; expected <x-expected>`;
 *   `x-expected` what is expected, used for pattern and type errors;
 *   `x-extensible` on an enum: a later minor version of the format may add values
 *                (see openSchema in validate.ts).
 */
import type { Ajv, ErrorObject, Options } from 'ajv';
import { createRequire } from 'node:module';
import { readShipped } from '../util/package-root.js';

export type PathSegment = string | number;

export interface SchemaProblem {
  /** Location of the offending value (for an unknown key: of the object holding it). */
  path: PathSegment[];
  /** For an unknown key: the key itself (so a caller can point at its line). */
  key?: string;
  /** The message, without the location prefix. */
  message: string;
}

/** Create an ajv instance that knows our annotation keywords (draft-07, the ajv default). */
export function createAjv(opts: Options = {}): Ajv {
  // Loaded on first use: commands that only check a manifest run precompiled code.
  const { Ajv: AjvClass } = createRequire(import.meta.url)('ajv') as typeof import('ajv');
  const ajv = new AjvClass({ allErrors: true, verbose: true, strict: true, ...opts });
  ajv.addKeyword('x-what');
  ajv.addKeyword('x-expected');
  ajv.addKeyword('x-extensible');
  return ajv;
}

/** Read and parse a JSON schema file that ships in spec/ (`spec/<name>`, see specFile). */
export function loadSchemaFile(relPath: string): Record<string, unknown> {
  let text: string;
  try {
    text = readShipped(relPath);
  } catch (err) {
    throw new Error(`cannot read schema ${relPath}: ${(err as Error).message}`, { cause: err });
  }
  return JSON.parse(text) as Record<string, unknown>;
}

const IDENT_RE = /^[A-Za-z_$][A-Za-z0-9_$-]*$/;

/** `images[3].platforms[0]`; `""` for the top level. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (IDENT_RE.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** Split an ajv instancePath (JSON pointer) into segments; array indexes become numbers. */
export function pointerToPath(pointer: string, data: unknown): PathSegment[] {
  if (!pointer) return [];
  const out: PathSegment[] = [];
  let cur: unknown = data;
  for (const raw of pointer.slice(1).split('/')) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur) && /^\d+$/.test(seg)) {
      const i = Number(seg);
      out.push(i);
      cur = cur[i];
    } else {
      out.push(seg);
      cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[seg] : undefined;
    }
  }
  return out;
}

/** "a string", "a list", "a mapping", "null", "a number"... */
export function kindOf(v: unknown): string {
  if (v === null || v === undefined) return 'nothing (null)';
  if (Array.isArray(v)) return 'a list';
  switch (typeof v) {
    case 'string':
      return `a string (${JSON.stringify(v)})`;
    case 'number':
      return `a number (${v})`;
    case 'boolean':
      return `${v}`;
    case 'object':
      return 'a mapping';
    default:
      return typeof v;
  }
}

function typeNoun(t: unknown): string {
  const one = (x: string): string =>
    ({ object: 'a mapping', array: 'a list', string: 'a string', integer: 'a whole number', number: 'a number', boolean: 'true or false', null: 'null' })[
      x
    ] ?? x;
  return Array.isArray(t) ? t.map((x) => one(String(x))).join(' or ') : one(String(t));
}

function levenshtein(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

/** The closest of `candidates` to `word`, if it is close enough to be a likely typo. */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}

function annotation(schema: unknown, name: string): string | undefined {
  if (schema && typeof schema === 'object' && name in schema) {
    const v = (schema as Record<string, unknown>)[name];
    return typeof v === 'string' ? v : undefined;
  }
  return undefined;
}

function quote(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : kindOf(v);
}

/** One problem per meaningful ajv error (wrapper errors such as `if` are dropped; duplicates merged). */
export function describeAjvErrors(errors: readonly ErrorObject[], data: unknown): SchemaProblem[] {
  const out: SchemaProblem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    const path = pointerToPath(e.instancePath, data);
    const what = annotation(e.parentSchema, 'x-what');
    const expected = annotation(e.parentSchema, 'x-expected');
    const params = e.params as Record<string, unknown>;
    let key: string | undefined;
    let message: string;
    switch (e.keyword) {
      case 'if':
      case 'anyOf':
      case 'oneOf':
        continue; // the branch's own errors say more
      case 'additionalProperties': {
        key = String(params.additionalProperty);
        const props = Object.keys(((e.parentSchema as Record<string, unknown> | undefined)?.properties as object | undefined) ?? {});
        const hint = didYouMean(key, props);
        message =
          `unknown key ${JSON.stringify(key)}${path.length === 0 ? ' at the top level' : ''}` +
          (props.length ? ` (expected ${props.join(', ')}${hint ? `; did you mean "${hint}"?` : ''})` : '');
        break;
      }
      case 'required':
        message = `missing required key ${JSON.stringify(String(params.missingProperty))}`;
        break;
      case 'type':
        message = `expected ${expected ?? typeNoun(params.type)}, got ${kindOf(e.data)}`;
        break;
      case 'const':
        message = `expected ${JSON.stringify(params.allowedValue)}, got ${quote(e.data)}`;
        break;
      case 'enum':
        message = `expected one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}, got ${quote(e.data)}`;
        break;
      case 'pattern':
      case 'not':
        message = what
          ? `${quote(e.data)} is not ${what}${expected ? `; expected ${expected}` : ''}`
          : e.keyword === 'pattern'
            ? `${quote(e.data)} does not match ${String(params.pattern)}`
            : `${quote(e.data)} is not allowed here`;
        break;
      case 'minLength':
        message = Number(params.limit) === 1 ? 'must not be empty' : `must be at least ${String(params.limit)} characters long`;
        break;
      case 'minItems':
        message = `must list at least ${String(params.limit)} ${Number(params.limit) === 1 ? 'entry' : 'entries'}${expected ? ` (${expected})` : ''}`;
        break;
      case 'minimum':
        message = `must be ${String(params.comparison)} ${String(params.limit)}, got ${quote(e.data)}`;
        break;
      case 'uniqueItems':
        message = `entries [${String(params.j)}] and [${String(params.i)}] are the same`;
        break;
      default:
        message = e.message ?? `fails ${e.keyword}`;
    }
    const id = `${formatPath(path)}\u0000${key ?? ''}\u0000${message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push({ path, key, message });
  }
  return out;
}

/** `path: message`, or just the message at the top level. */
export function problemText(p: SchemaProblem): string {
  const where = formatPath(p.path);
  return where ? `${where}: ${p.message}` : p.message;
}
