/**
 * Push side: devfiles and the files they name, rewritten so that every image
 * reference names the image pushed to the target, and every starter project is
 * `zip: {location: <name>-offline.zip}`. YAML is edited through the `yaml`
 * library's Document API, so comments and formatting survive; the original of
 * each changed value is kept as a comment.
 */
import { isMap, isPair, isScalar, isSeq, parseAllDocuments, parseDocument, stringify, visit, type Document, type Scalar, type YAMLMap } from 'yaml';
import { parseReference } from '../oci/reference.js';
import { BundleError } from '../util/errors.js';
import { expandArgs } from './dockerfile.js';

/** written reference (variables substituted) -> the reference at the target. */
export type ImageMapping = ReadonlyMap<string, string>;

/** `host/repo` + the written reference's tag and/or digest. */
export function targetReference(written: string, targetRepository: string): string {
  const r = parseReference(written);
  return `${targetRepository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

const VAR_RE = /\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}/g;
function substitute(s: string, vars: Readonly<Record<string, string>>): string {
  return s.replace(VAR_RE, (m, name: string) => vars[name] ?? m);
}

function variablesOf(doc: Document): Record<string, string> {
  const v = doc.get('variables');
  const out: Record<string, string> = {};
  if (isMap(v)) for (const p of v.items) if (isScalar(p.key)) out[String(p.key.value)] = isScalar(p.value) ? String(p.value.value) : '';
  return out;
}

/** Replace container images in Kubernetes/OpenShift YAML text (several documents). */
export function rewriteManifestText(text: string, mapping: ImageMapping, vars: Readonly<Record<string, string>>, changed: (from: string, to: string) => void): string {
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) return text;
  let any = false;
  for (const doc of docs) {
    visit(doc, {
      Pair(_key, pair, path) {
        if (!isScalar(pair.key) || pair.key.value !== 'image' || !isScalar(pair.value) || typeof pair.value.value !== 'string') return;
        const inContainers = path.some((n) => isPair(n) && isScalar(n.key) && ['containers', 'initContainers', 'ephemeralContainers'].includes(String(n.key.value)));
        if (!inContainers) return;
        const written = substitute(pair.value.value.trim(), vars);
        const to = mapping.get(written);
        if (!to) return;
        const orig = pair.value.value;
        pair.value.value = to;
        pair.value.comment = ` was: ${orig}`;
        changed(written, to);
        any = true;
      },
    });
  }
  return any ? docs.map((d) => d.toString()).join('') : text;
}

/** Replace base images in FROM lines (and COPY --from=) of a Dockerfile. */
export function rewriteDockerfile(text: string, mapping: ImageMapping, changed: (from: string, to: string) => void): string {
  const args = new Map<string, string>();
  let seenFrom = false;
  return text
    .split('\n')
    .map((line) => {
      const arg = /^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=("?)([^"\s]*)\2\s*$/i.exec(line);
      if (arg && !seenFrom) args.set(arg[1]!, expandArgs(arg[3]!, args));
      const from = /^(\s*FROM\s+(?:--\S+\s+)*)(\S+)(.*)$/i.exec(line);
      if (from) {
        seenFrom = true;
        const written = expandArgs(from[2]!, args);
        const to = mapping.get(written);
        if (to) {
          changed(written, to);
          return `${from[1]}${to}${from[3]}`;
        }
        return line;
      }
      return line.replace(/--from=(\S+)/g, (m, ref: string) => {
        const to = mapping.get(expandArgs(ref, args));
        if (!to) return m;
        changed(ref, to);
        return `--from=${to}`;
      });
    })
    .join('\n');
}

/** Comment lines showing a node as it was: `original: {git: ...}`. */
function asComment(label: string, node: unknown): string {
  const text = stringify(node).trimEnd();
  return ` ${label}:\n${text.split('\n').map((l) => `   ${l}`).join('\n')}`;
}

/**
 * Rewrite a devfile: container images and inlined Kubernetes/OpenShift images through
 * `mapping`; starter projects named in `zips` (name -> zip file name) to
 * `zip: {location: <zip>}` with the original kept as a comment.
 */
export function rewriteDevfile(
  text: string,
  mapping: ImageMapping,
  zips: ReadonlyMap<string, string>,
  changed: (from: string, to: string) => void,
  what: string,
): string {
  const doc = parseDocument(text);
  if (doc.errors.length) throw new BundleError(`${what}: not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
  const vars = variablesOf(doc);
  const components = doc.get('components');
  if (isSeq(components)) {
    for (const c of components.items) {
      if (!isMap(c)) continue;
      const container = c.get('container', true);
      if (isMap(container)) {
        const img = container.get('image', true);
        if (isScalar(img) && typeof img.value === 'string') {
          const written = substitute(img.value.trim(), vars);
          const to = mapping.get(written);
          if (to) {
            (img as Scalar).comment = ` was: ${img.value}`;
            img.value = to;
            changed(written, to);
          }
        }
      }
      for (const kind of ['kubernetes', 'openshift']) {
        const k = c.get(kind, true);
        if (!isMap(k)) continue;
        const inlined = k.get('inlined', true);
        if (isScalar(inlined) && typeof inlined.value === 'string') {
          inlined.value = rewriteManifestText(inlined.value, mapping, vars, changed);
        }
      }
    }
  }
  const starters = doc.get('starterProjects');
  if (isSeq(starters)) {
    for (const sp of starters.items) {
      if (!isMap(sp)) continue;
      const name = sp.get('name');
      const zip = typeof name === 'string' ? zips.get(name) : undefined;
      if (!zip) continue;
      const m = sp as YAMLMap;
      const original: Record<string, unknown> = {};
      for (const key of ['git', 'zip', 'subDir']) {
        if (m.has(key)) {
          original[key] = (m.get(key, true) as { toJSON?: () => unknown })?.toJSON?.() ?? m.get(key);
          m.delete(key);
        }
      }
      m.set('zip', doc.createNode({ location: zip }));
      m.commentBefore = asComment('original (made offline by bundle)', original);
    }
  }
  return doc.toString();
}

/** The `variables:` of a devfile's text. */
export function devfileVariables(text: string): Record<string, string> {
  return variablesOf(parseDocument(text));
}
