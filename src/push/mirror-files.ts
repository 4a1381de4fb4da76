/**
 * Files that tell clusters and hosts to pull from the mirror, written after a push:
 *
 *   mapping.txt       `oc image mirror -f` mapping: `SRC=DST`, SRC pinned by digest
 *   idms.yaml         ImageDigestMirrorSet (config.openshift.io/v1)
 *   itms.yaml         ImageTagMirrorSet, only when some image was named by tag
 *   icsp.yaml         legacy ImageContentSourcePolicy (operator.openshift.io/v1alpha1)
 *   registries.conf   containers-registries.conf(5) v2 drop-in for podman/CRI-O hosts
 *
 * and, for an OpenShift release (writeInstallConfigSources):
 *
 *   install-config-digest-sources.yaml   `imageDigestSources` for install-config.yaml (4.14+)
 *   install-config-content-sources.yaml  `imageContentSources`, the older form
 *
 * Every file starts with comment lines saying what it is and how to apply it.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Document } from 'yaml';
import { parseReference, repositoryName } from '../oci/reference.js';
import { isSha256Digest } from '../util/digest.js';
import { BundleError, UsageError } from '../util/errors.js';

export interface MirrorMapping {
  /** The reference as the bundle names it: `quay.io/ns/app:1.2` or `quay.io/ns/app@sha256:...`. */
  source: string;
  /** `quay.io/ns/app`. */
  sourceRepository: string;
  /** Where it was pushed, with its tag: `host:5000/mirror/ns/app:1.2`. */
  destination: string;
  /** `host:5000/mirror/ns/app`. */
  destinationRepository: string;
  /** Digest of the top manifest or index. */
  digest: string;
  /** True when the source named the image by tag. */
  tagged: boolean;
}

export interface MirrorFileOptions {
  /** The destination registry is plain HTTP or has an untrusted certificate. */
  insecure?: boolean;
  /** metadata.name of the cluster objects, and the drop-in's name. Default `airgap-bundle`. */
  name?: string;
}

export const DEFAULT_MIRROR_SET_NAME = 'airgap-bundle';

const FILES = {
  mapping: 'mapping.txt',
  idms: 'idms.yaml',
  itms: 'itms.yaml',
  icsp: 'icsp.yaml',
  registriesConf: 'registries.conf',
  digestSources: 'install-config-digest-sources.yaml',
  contentSources: 'install-config-content-sources.yaml',
} as const;

/** A Kubernetes object name (DNS-1123 subdomain). */
const K8S_NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function looksQualified(repo: string): boolean {
  const first = repo.split('/')[0]!;
  return repo.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
}

/** True when the last path component of `ref` (before any `@digest`) carries a `:tag`. */
function hasExplicitTag(ref: string): boolean {
  const beforeAt = ref.split('@')[0]!;
  return beforeAt.slice(beforeAt.lastIndexOf('/') + 1).includes(':');
}

/**
 * Check one mapping. Returns the repositories as the reference parser spells them and
 * the `oc image mirror` destination: the repository with its tag, or the bare
 * repository (a push by digest) when the destination names no tag.
 */
function checkMapping(m: MirrorMapping): { srcRepo: string; dstRepo: string; dst: string } {
  const what = `${m.source} -> ${m.destination}`;
  const bad = (why: string): never => {
    throw new BundleError(`cannot write mirror files for ${what}: ${why}`);
  };
  if (!isSha256Digest(m.digest)) bad(`${JSON.stringify(m.digest)} is not a sha256 digest`);
  for (const [label, repo] of [
    ['source repository', m.sourceRepository],
    ['destination repository', m.destinationRepository],
  ] as const) {
    if (repo.includes('@') || hasExplicitTag(repo)) bad(`${label} ${repo} must not carry a tag or digest`);
  }
  if (!looksQualified(m.destinationRepository)) bad(`destination repository ${m.destinationRepository} must start with the registry host`);
  try {
    const srcRepo = repositoryName(parseReference(m.sourceRepository));
    const dstRepo = repositoryName(parseReference(m.destinationRepository));
    const s = parseReference(m.source);
    if (repositoryName(s) !== srcRepo) bad(`source is not in repository ${m.sourceRepository}`);
    if (s.digest !== undefined && s.digest !== m.digest) bad(`source is pinned to ${s.digest}, not ${m.digest}`);
    const d = parseReference(m.destination);
    if (repositoryName(d) !== dstRepo) bad(`destination is not in repository ${m.destinationRepository}`);
    if (d.digest !== undefined && d.digest !== m.digest) bad(`destination is pinned to ${d.digest}, not ${m.digest}`);
    return { srcRepo, dstRepo, dst: hasExplicitTag(m.destination) && d.tag ? `${dstRepo}:${d.tag}` : dstRepo };
  } catch (err) {
    if (err instanceof UsageError) bad(err.message); // a reference that does not parse
    throw err;
  }
}

function header(lines: string[]): string {
  return lines.map((l) => (l ? `# ${l}` : '#')).join('\n') + '\n';
}

/** YAML documents (one or several, `---` between them) under comment lines. */
export function yamlFile(comment: string[], ...objs: unknown[]): string {
  return objs
    .map((obj, i) => {
      const doc = new Document(obj);
      if (i === 0) doc.commentBefore = comment.map((l) => ` ${l}`).join('\n');
      return doc.toString({ lineWidth: 0 });
    })
    .join('---\n');
}

/** A TOML basic string. */
export function tomlString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (c < 0x20 || c === 0x7f) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return out + '"';
}

function sortedUnique(xs: Iterable<string>): string[] {
  return [...new Set(xs)].sort();
}

/**
 * Write the mirror files into `outDir` (created if needed) and return the paths written.
 * Writes nothing and returns [] when there are no mappings. `itms.yaml` is written only
 * when at least one image was named by tag. Throws BundleError for a malformed mapping
 * or two different images (digests) pushed to the same destination tag; the same image
 * from two sources is one mapping line, and both sources are mirrored.
 */
export async function writeMirrorFiles(outDir: string, mappings: MirrorMapping[], opts: MirrorFileOptions = {}): Promise<string[]> {
  const name = opts.name ?? DEFAULT_MIRROR_SET_NAME;
  if (!K8S_NAME_RE.test(name) || name.length > 253) {
    throw new UsageError(`mirror set name ${JSON.stringify(name)} is not a valid object name (lowercase letters, digits, - and .)`);
  }
  if (mappings.length === 0) return [];

  const lines = new Map<string, string>(); // DST -> SRC=DST line
  const digestMirrors = new Map<string, Set<string>>(); // source repo -> mirror repos
  const tagMirrors = new Map<string, Set<string>>();
  for (const m of mappings) {
    const { srcRepo, dstRepo, dst } = checkMapping(m);
    const src = `${srcRepo}@${m.digest}`;
    const line = `${src}=${dst}`;
    const prior = lines.get(dst);
    // oc image mirror refuses a destination tag named twice; a bare repository is a push by digest.
    // The same image from two sources (same digest) is one line: either source copies the same bytes.
    if (prior !== undefined && prior !== line && dst !== dstRepo) {
      const priorSrc = prior.split('=')[0]!;
      if (!priorSrc.endsWith(`@${m.digest}`)) throw new BundleError(`two images would be pushed to ${dst}: ${priorSrc} and ${src}`);
    }
    if (prior === undefined || line < prior || dst === dstRepo) lines.set(dst === dstRepo ? line : dst, line);
    if (!digestMirrors.has(srcRepo)) digestMirrors.set(srcRepo, new Set());
    digestMirrors.get(srcRepo)!.add(dstRepo);
    if (m.tagged) {
      if (!tagMirrors.has(srcRepo)) tagMirrors.set(srcRepo, new Set());
      tagMirrors.get(srcRepo)!.add(dstRepo);
    }
  }
  const entries = (map: Map<string, Set<string>>): { source: string; mirrors: string[] }[] =>
    sortedUnique(map.keys()).map((source) => ({ source, mirrors: sortedUnique(map.get(source)!) }));
  const digestEntries = entries(digestMirrors);
  const tagEntries = entries(tagMirrors);

  await mkdir(outDir, { recursive: true });
  const written: string[] = [];
  const write = async (file: string, content: string): Promise<void> => {
    const p = path.join(outDir, file);
    await writeFile(p, content, 'utf8');
    written.push(p);
  };

  await write(
    FILES.mapping,
    header([
      'Image mapping for `oc image mirror`: SRC (pinned by digest) = DST (the mirror, with its tag).',
      `Copy again with: oc image mirror -f ${FILES.mapping}`,
    ]) + sortedUnique(lines.values()).join('\n') + '\n',
  );

  /** One cluster object listing `entries` under `spec.<key>`, with how to apply it. */
  const clusterObject = (file: string, about: string, apiVersion: string, kind: string, key: string, list: typeof digestEntries) =>
    write(file, yamlFile([about, `Apply with: oc apply -f ${file}`], { apiVersion, kind, metadata: { name }, spec: { [key]: list } }));

  await clusterObject(
    FILES.idms,
    'ImageDigestMirrorSet: OpenShift 4.13+ pulls these repositories by digest from the mirror.',
    'config.openshift.io/v1',
    'ImageDigestMirrorSet',
    'imageDigestMirrors',
    digestEntries,
  );
  if (tagEntries.length > 0) {
    await clusterObject(
      FILES.itms,
      'ImageTagMirrorSet: OpenShift 4.13+ pulls these repositories by tag from the mirror.',
      'config.openshift.io/v1',
      'ImageTagMirrorSet',
      'imageTagMirrors',
      tagEntries,
    );
  }
  await clusterObject(
    FILES.icsp,
    'ImageContentSourcePolicy: the legacy (OpenShift 4.12 and older) form of idms.yaml. Apply one or the other.',
    'operator.openshift.io/v1alpha1',
    'ImageContentSourcePolicy',
    'repositoryDigestMirrors',
    digestEntries,
  );

  const toml: string[] = [
    header([
      'containers-registries.conf(5) v2 drop-in: podman, skopeo, buildah and CRI-O pull these repositories from the mirror.',
      `Install with: cp ${FILES.registriesConf} /etc/containers/registries.conf.d/99-${name}.conf`,
    ]),
  ];
  for (const e of digestEntries) {
    toml.push('[[registry]]', `prefix = ${tomlString(e.source)}`, `location = ${tomlString(e.source)}`, '');
    for (const mirror of e.mirrors) {
      toml.push('[[registry.mirror]]', `location = ${tomlString(mirror)}`);
      if (opts.insecure) toml.push('insecure = true');
      toml.push('');
    }
  }
  await write(FILES.registriesConf, toml.join('\n'));
  return written;
}

/**
 * The install-config.yaml snippets for a mirrored release: `imageDigestSources`
 * (4.14+) and `imageContentSources` (older), each `{mirrors, source}` per source
 * repository, as `oc adm release mirror` prints them. Returns the paths written.
 */
export async function writeInstallConfigSources(outDir: string, sources: ReadonlyMap<string, Iterable<string>>): Promise<string[]> {
  const entries = sortedUnique(sources.keys()).map((source) => ({ mirrors: sortedUnique(sources.get(source)!), source }));
  if (entries.length === 0) return [];
  await mkdir(outDir, { recursive: true });
  const files: [string, string][] = [
    [
      FILES.digestSources,
      yamlFile(['For install-config.yaml (OpenShift 4.14+): the installer pulls the release from the mirror.', 'Copy this key into install-config.yaml.'], {
        imageDigestSources: entries,
      }),
    ],
    [
      FILES.contentSources,
      yamlFile(['For install-config.yaml (OpenShift 4.13 and older): the legacy form of install-config-digest-sources.yaml. Use one or the other.'], {
        imageContentSources: entries,
      }),
    ],
  ];
  const written: string[] = [];
  for (const [file, content] of files) {
    const p = path.join(outDir, file);
    await writeFile(p, content, 'utf8');
    written.push(p);
  }
  return written;
}
