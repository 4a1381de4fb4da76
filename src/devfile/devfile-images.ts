/**
 * Every image a devfile needs (schema 2.x), after `{{variable}}` substitution:
 * - `components[].container.image`;
 * - images of `kubernetes`/`openshift` components, `inlined` or in a manifest file
 *   named by a relative `uri` (any `image:` of a container in a pod spec);
 * - base images of the Dockerfile an `image` component's `dockerfile.uri` names
 *   (see dockerfile.ts).
 * An image a devfile builds itself (an `image` component's `imageName`) is not one
 * to pull, wherever it appears.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, join, normalize, relative } from 'node:path';
import { parseAllDocuments, parseDocument, type Document } from 'yaml';
import { formatReference, parseReference } from '../oci/reference.js';
import { BundleError, errorMessage } from '../util/errors.js';
import { dockerfileBaseImages } from './dockerfile.js';

export interface FoundImage {
  /** The reference as the devfile uses it (variables substituted). */
  written: string;
  /** Fully qualified (`docker.io/library/node:18`). */
  source: string;
  component: string;
  /** Path of the file that names it, relative to the stack folder (`devfile.yaml`, `docker/Dockerfile`). */
  file: string;
  /** Where in the file: `components[0].container.image` or `line 3`. */
  where: string;
}

export interface StarterProject {
  name: string;
  subDir?: string;
  git?: { remotes: Record<string, string>; checkoutFrom?: { remote?: string; revision?: string } };
  zip?: { location: string };
}

export interface ParsedDevfile {
  doc: Record<string, unknown>;
  metadata: Record<string, unknown>;
  schemaVersion: string;
  images: FoundImage[];
  starterProjects: StarterProject[];
  /** Files of the stack folder that name images (to be rewritten at push). */
  imageFiles: string[];
  /** Things not followed (a uri that is a URL), one line each. */
  notes: string[];
}

/** A devfile problem: names the file (and line) for the message. */
export class DevfileError extends BundleError {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`, 2);
  }
}

const VAR_RE = /\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}/g;

/** `{{name}}` replaced by its value; an undefined one is left as it is (as the devfile library does). */
export function substitute(s: string, vars: Readonly<Record<string, string>>): string {
  return s.replace(VAR_RE, (m, name: string) => vars[name] ?? m);
}

export function parseYamlDoc(text: string, file: string): Document {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    throw new DevfileError(file, `not valid YAML (line ${e.linePos?.[0]?.line ?? '?'}): ${e.message.split('\n')[0]}`);
  }
  return doc;
}

function asRecord(v: unknown): Record<string, unknown> | undefined {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

/** Normalise a reference; a clear error naming the file and place when it is not one. */
export function normaliseImage(written: string, file: string, where: string): string {
  try {
    return formatReference(parseReference(written));
  } catch (err) {
    throw new DevfileError(file, `${where}: ${JSON.stringify(written)} is not an image reference (${errorMessage(err)})`);
  }
}

/** Images of containers in Kubernetes/OpenShift objects: `image` of anything under containers/initContainers/ephemeralContainers. */
export function manifestImages(objects: unknown[]): { image: string; path: string }[] {
  const out: { image: string; path: string }[] = [];
  const walk = (v: unknown, path: string) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${path}[${i}]`));
    else if (v && typeof v === 'object') {
      for (const [k, child] of Object.entries(v as Record<string, unknown>)) {
        if ((k === 'containers' || k === 'initContainers' || k === 'ephemeralContainers') && Array.isArray(child)) {
          child.forEach((c, i) => {
            const img = asRecord(c)?.image;
            if (typeof img === 'string' && img.trim()) out.push({ image: img.trim(), path: `${path}.${k}[${i}].image` });
          });
        }
        walk(child, path ? `${path}.${k}` : k);
      }
    }
  };
  walk(objects, '');
  return out;
}

function parseManifests(text: string, file: string): unknown[] {
  const docs = parseAllDocuments(text, { prettyErrors: false });
  if (!Array.isArray(docs)) return [];
  const out: unknown[] = [];
  for (const d of docs) {
    if (d.errors.length) throw new DevfileError(file, `not valid YAML: ${d.errors[0]!.message.split('\n')[0]}`);
    out.push(d.toJS());
  }
  return out;
}

/** A relative uri inside the stack folder, or undefined for a URL; refuses one that leaves the folder. */
export function stackRelative(uri: string, file: string, where: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) return undefined;
  const rel = normalize(uri).replace(/\\/g, '/');
  if (isAbsolute(rel) || rel === '..' || rel.startsWith('../')) throw new DevfileError(file, `${where}: ${JSON.stringify(uri)} leaves the stack folder`);
  return rel;
}

/**
 * Parse a devfile and find its images. `dir` is the folder holding it (relative uris
 * resolve there); `shown` is the path used in messages (`stacks/go/2.6.0/devfile.yaml`).
 */
export async function parseDevfile(text: string, dir: string, shown: string): Promise<ParsedDevfile> {
  const doc = asRecord(parseYamlDoc(text, shown).toJS());
  if (!doc) throw new DevfileError(shown, 'is not a YAML mapping (a devfile has schemaVersion, metadata, components, ...)');
  const schemaVersion = doc.schemaVersion;
  // 2.x today; later majors keep the same component shapes (devfile/registry has a 3.0.0 stack).
  const major = typeof schemaVersion === 'string' ? /^(\d+)\.\d+\.\d+/.exec(schemaVersion)?.[1] : undefined;
  if (!major || Number(major) < 2) {
    throw new DevfileError(shown, `schemaVersion ${JSON.stringify(schemaVersion)}: expected a devfile schema version 2.0.0 or later, such as 2.2.0`);
  }
  const vars: Record<string, string> = {};
  for (const [k, v] of Object.entries(asRecord(doc.variables) ?? {})) vars[k] = String(v);
  const components = doc.components === undefined ? [] : doc.components;
  if (!Array.isArray(components)) throw new DevfileError(shown, 'components: expected a list');

  const images: FoundImage[] = [];
  const notes: string[] = [];
  if (doc.parent !== undefined) notes.push(`${shown}: has a parent devfile; the parent's images are not followed (carry the parent stack too)`);
  const built = new Set<string>();
  const imageFiles = new Set<string>();
  const dockerfiles: { uri: string; component: string; where: string }[] = [];
  const manifests: { text: string; file: string; component: string; where: string }[] = [];
  const add = (written: string, component: string, file: string, where: string) => {
    images.push({ written, source: '', component, file, where });
  };

  for (const [i, raw] of components.entries()) {
    const c = asRecord(raw);
    const where = `components[${i}]`;
    if (!c) throw new DevfileError(shown, `${where}: expected a mapping`);
    const name = typeof c.name === 'string' ? c.name : `#${i}`;
    const container = asRecord(c.container);
    if (container) {
      if (typeof container.image !== 'string' || !container.image.trim()) throw new DevfileError(shown, `${where}.container.image: missing (component ${name})`);
      add(substitute(container.image.trim(), vars), name, 'devfile.yaml', `${where}.container.image`);
    }
    const image = asRecord(c.image);
    if (image) {
      if (typeof image.imageName === 'string') built.add(substitute(image.imageName, vars));
      const df = asRecord(image.dockerfile);
      if (df && typeof df.uri === 'string') dockerfiles.push({ uri: substitute(df.uri, vars), component: name, where: `${where}.image.dockerfile.uri` });
      else if (df && (df.git || df.devfileRegistry)) notes.push(`${shown}: ${where} (component ${name}) builds from a Dockerfile in a git repository or another registry; its base images are not followed`);
    }
    for (const kind of ['kubernetes', 'openshift'] as const) {
      const k = asRecord(c[kind]);
      if (!k) continue;
      if (typeof k.inlined === 'string') {
        manifests.push({ text: substitute(k.inlined, vars), file: 'devfile.yaml', component: name, where: `${where}.${kind}.inlined` });
      } else if (typeof k.uri === 'string') {
        const uri = substitute(k.uri, vars);
        const rel = stackRelative(uri, shown, `${where}.${kind}.uri`);
        if (!rel) {
          notes.push(`${shown}: ${where}.${kind}.uri is a URL (${uri}); its images are not followed`);
          continue;
        }
        const text = await readStackFile(dir, rel, shown, `${where}.${kind}.uri`);
        if (text === undefined) {
          notes.push(`${shown}: ${where}.${kind}.uri ${rel} is not in the stack folder (it belongs to the user's project); its images are not followed`);
          continue;
        }
        manifests.push({ text: substitute(text, vars), file: rel, component: name, where: `${where}.${kind}.uri` });
      }
    }
  }
  for (const m of manifests) {
    for (const found of manifestImages(parseManifests(m.text, m.file === 'devfile.yaml' ? `${shown} (${m.where})` : m.file))) {
      add(found.image, m.component, m.file, m.file === 'devfile.yaml' ? `${m.where}: ${found.path}` : found.path);
      if (m.file !== 'devfile.yaml') imageFiles.add(m.file);
    }
  }
  for (const d of dockerfiles) {
    const rel = stackRelative(d.uri, shown, d.where);
    if (!rel) {
      notes.push(`${shown}: ${d.where} is a URL (${d.uri}); its base images are not followed`);
      continue;
    }
    const text = await readStackFile(dir, rel, shown, d.where);
    if (text === undefined) {
      notes.push(`${shown}: ${d.where} ${rel} is not in the stack folder (it belongs to the user's project); its base images are not followed`);
      continue;
    }
    const bases = dockerfileBaseImages(text).filter((b) => {
      // A base named by an ARG without a default is chosen at build time: nothing to carry.
      if (b.image.includes('$') || b.image.startsWith(':') || b.image.startsWith('@')) {
        notes.push(`${shown}: ${rel} line ${b.line}: base image ${JSON.stringify(b.image)} depends on a build argument without a default; not carried`);
        return false;
      }
      return true;
    });
    for (const b of bases) add(b.image, d.component, rel, `line ${b.line}`);
    if (bases.length) imageFiles.add(rel);
  }
  // What the devfile builds itself is not pulled.
  const kept = images.filter((img) => !built.has(img.written));
  for (const img of kept) {
    if (img.written.includes('{{')) throw new DevfileError(img.file === 'devfile.yaml' ? shown : img.file, `${img.where}: unresolved variable in ${JSON.stringify(img.written)}`);
    img.source = normaliseImage(img.written, img.file === 'devfile.yaml' ? shown : `${img.file} (of ${shown})`, `${img.where} (component ${img.component})`);
  }
  const starterProjects = parseStarterProjects(doc.starterProjects, shown);
  return { doc, metadata: asRecord(doc.metadata) ?? {}, schemaVersion: schemaVersion as string, images: kept, starterProjects, imageFiles: [...imageFiles].sort(), notes };
}

/** A file of the stack folder; undefined when the folder does not have it. */
async function readStackFile(dir: string, rel: string, shown: string, where: string): Promise<string | undefined> {
  const full = join(dir, rel);
  if (relative(dir, full).startsWith('..')) throw new DevfileError(shown, `${where}: ${rel} leaves the stack folder`);
  return readFile(full, 'utf8').catch(() => undefined);
}

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function parseStarterProjects(raw: unknown, shown: string): StarterProject[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new DevfileError(shown, 'starterProjects: expected a list');
  return raw.map((r, i) => {
    const sp = asRecord(r);
    const where = `starterProjects[${i}]`;
    if (!sp || typeof sp.name !== 'string' || !SAFE_NAME.test(sp.name)) throw new DevfileError(shown, `${where}.name: expected a name of letters, digits, . _ -`);
    const out: StarterProject = { name: sp.name };
    if (typeof sp.subDir === 'string' && sp.subDir.trim()) out.subDir = sp.subDir.trim();
    const git = asRecord(sp.git);
    const zip = asRecord(sp.zip);
    if (git) {
      const remotes = asRecord(git.remotes);
      if (!remotes || Object.keys(remotes).length === 0) throw new DevfileError(shown, `${where}.git.remotes: expected at least one remote`);
      const co = asRecord(git.checkoutFrom);
      out.git = {
        remotes: Object.fromEntries(Object.entries(remotes).map(([k, v]) => [k, String(v)])),
        ...(co ? { checkoutFrom: { remote: co.remote === undefined ? undefined : String(co.remote), revision: co.revision === undefined ? undefined : String(co.revision) } } : {}),
      };
    } else if (zip && typeof zip.location === 'string') {
      out.zip = { location: zip.location };
    } else {
      throw new DevfileError(shown, `${where} (${sp.name}): expected git or zip`);
    }
    return out;
  });
}
