import { UsageError } from '../util/errors.js';
import { digestHex } from '../util/digest.js';

/** A parsed `--to HOST[:PORT][/PREFIX]`. */
export interface PushTarget {
  registry: string;
  prefix: string;
  /** `--keep-registry-host`: the source host becomes the first path component under the prefix. */
  keepRegistryHost?: boolean;
}

export function parseTarget(to: string, keepRegistryHost = false): PushTarget {
  const s = to.replace(/^docker:\/\//, '').replace(/\/+$/, '');
  const slash = s.indexOf('/');
  const registry = slash < 0 ? s : s.slice(0, slash);
  const prefix = slash < 0 ? '' : s.slice(slash + 1);
  if (!/^[a-zA-Z0-9.-]+(:\d+)?$|^\[[0-9a-fA-F:]+\](:\d+)?$/.test(registry)) {
    throw new UsageError(`--to ${to}: expected HOST[:PORT][/PREFIX], e.g. registry.corp:5000/mirror`);
  }
  if (prefix && !/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(prefix)) {
    throw new UsageError(`--to ${to}: "${prefix}" is not a valid repository prefix (lowercase letters, digits, . _ - and /)`);
  }
  return { registry, prefix, keepRegistryHost };
}

/**
 * A registry host as a repository path component: lowercase, and a port joined
 * with `-` (`registry.corp:5000` -> `registry.corp-5000`), since `:` may not
 * appear in a repository path.
 */
export function hostPathComponent(host: string): string {
  return host
    .toLowerCase()
    .replace(/[^a-z0-9.]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
}

/**
 * Where a source repository lands: the repository path kept under the prefix,
 * the source host dropped (`quay.io/ns/app` -> `ns/app`) or, with
 * keepRegistryHost, kept as the first component (`quay.io/ns/app`).
 */
export function destinationRepository(target: PushTarget, sourceRepository: string): string {
  const slash = sourceRepository.indexOf('/');
  const first = slash < 0 ? '' : sourceRepository.slice(0, slash);
  const hasHost = !!first && (first.includes('.') || first.includes(':') || first === 'localhost');
  let path = hasHost ? sourceRepository.slice(slash + 1) : sourceRepository;
  if (hasHost && target.keepRegistryHost) path = `${hostPathComponent(first)}/${path}`;
  return target.prefix ? `${target.prefix}/${path}` : path;
}

/** Images pinned only by digest get a tag so the registry keeps them. */
export function digestTag(digest: string): string {
  return `sha256-${digestHex(digest)}`;
}
