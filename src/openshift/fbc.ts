/**
 * File-based operator catalogs (FBC): the `olm.package`, `olm.channel` and
 * `olm.bundle` entries under `/configs` of a catalog image, read entry by entry
 * as the layer streams by, and the selection of packages, channels and
 * versions a config asks for.
 *
 * A catalog can be hundreds of MB of JSON: JSON files are split into their
 * top-level objects as the bytes pass (JsonObjectSplitter), each parsed alone;
 * only the entries of selected packages are kept, and only as small metadata in
 * memory (their raw text goes to a scratch file, read again to write the
 * filtered catalog).
 */
import semver from 'semver';
import { parseAllDocuments } from 'yaml';
import { BundleError } from '../util/errors.js';

/** Largest single catalog entry (an olm.bundle with its CSV inline can be a few MB). */
export const MAX_ENTRY_BYTES = 64 * 1024 * 1024;
/** Largest YAML file under /configs (YAML is parsed whole; catalogs use JSON for the big ones). */
export const MAX_YAML_FILE_BYTES = 64 * 1024 * 1024;

/**
 * Splits a stream of concatenated JSON values (`{...}{...}` or one per line, as
 * `opm render` writes them) into the text of each top-level object, keeping only
 * the bytes of the object being read.
 */
export class JsonObjectSplitter {
  private depth = 0;
  private inString = false;
  private escaped = false;
  private parts: Buffer[] = [];
  private partBytes = 0;

  constructor(
    private readonly what: string,
    private readonly maxBytes = MAX_ENTRY_BYTES,
  ) {}

  /** Feed bytes; returns the objects completed by them. */
  push(chunk: Buffer): string[] {
    const out: string[] = [];
    let start = this.depth > 0 ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (this.depth === 0) {
        if (c === 0x7b /* { */) {
          this.depth = 1;
          start = i;
          continue;
        }
        if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0x2c /* , between values */) continue;
        if (c === 0x5b /* [ */ || c === 0x5d /* ] */) continue; // a top-level array of entries is read as its elements
        throw new BundleError(`${this.what}: not a stream of JSON objects (byte ${JSON.stringify(String.fromCharCode(c))} between objects)`);
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === 0x5c /* \ */) this.escaped = true;
        else if (c === 0x22 /* " */) this.inString = false;
        continue;
      }
      if (c === 0x22) this.inString = true;
      else if (c === 0x7b || c === 0x5b) this.depth++;
      else if (c === 0x7d || c === 0x5d) {
        this.depth--;
        if (this.depth === 0) {
          this.parts.push(chunk.subarray(start, i + 1));
          out.push(Buffer.concat(this.parts).toString('utf8'));
          this.parts = [];
          this.partBytes = 0;
          start = -1;
        }
      }
    }
    if (this.depth > 0 && start >= 0) {
      const rest = chunk.subarray(start);
      this.partBytes += rest.length;
      if (this.partBytes > this.maxBytes) throw new BundleError(`${this.what}: a catalog entry larger than ${this.maxBytes} bytes`);
      // Copy: the chunk's buffer may be reused by the stream.
      this.parts.push(Buffer.from(rest));
    }
    return out;
  }

  end(): void {
    if (this.depth !== 0) throw new BundleError(`${this.what}: the file ends inside a JSON object`);
  }
}

/** Entries of a YAML file (several documents). */
export function yamlEntries(text: string, what: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new BundleError(`${what}: not YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
    const v = doc.toJS() as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) out.push(v as Record<string, unknown>);
  }
  return out;
}

export interface ChannelEntry {
  name: string;
  replaces?: string;
  skips?: string[];
  skipRange?: string;
}

export interface BundleMeta {
  name: string;
  package: string;
  version?: string;
  image: string;
  relatedImages: string[];
}

/** What the selection needs of one package: everything but the bundles' bulk. */
export interface PackageMeta {
  name: string;
  defaultChannel?: string;
  channels: Map<string, ChannelEntry[]>;
  bundles: Map<string, BundleMeta>;
}

/** The package an entry belongs to, or undefined for entries of no package. */
export function entryPackage(e: Record<string, unknown>): string | undefined {
  if (e['schema'] === 'olm.package') return typeof e['name'] === 'string' ? e['name'] : undefined;
  return typeof e['package'] === 'string' ? e['package'] : undefined;
}

function bundleVersion(e: Record<string, unknown>): string | undefined {
  const props = Array.isArray(e['properties']) ? (e['properties'] as { type?: unknown; value?: { version?: unknown } }[]) : [];
  const p = props.find((x) => x?.type === 'olm.package');
  return typeof p?.value?.version === 'string' ? p.value.version : undefined;
}

/** Record an entry's metadata into `packages`. */
export function addEntry(packages: Map<string, PackageMeta>, e: Record<string, unknown>, what: string): void {
  const pkg = entryPackage(e);
  if (!pkg) return;
  let meta = packages.get(pkg);
  if (!meta) packages.set(pkg, (meta = { name: pkg, channels: new Map(), bundles: new Map() }));
  switch (e['schema']) {
    case 'olm.package':
      if (typeof e['defaultChannel'] === 'string') meta.defaultChannel = e['defaultChannel'];
      break;
    case 'olm.channel': {
      const name = e['name'];
      if (typeof name !== 'string') throw new BundleError(`${what}: an olm.channel of ${pkg} without a name`);
      const entries = (Array.isArray(e['entries']) ? e['entries'] : []) as ChannelEntry[];
      meta.channels.set(
        name,
        entries.filter((x) => typeof x?.name === 'string').map((x) => ({ name: x.name, ...(x.replaces ? { replaces: x.replaces } : {}), ...(x.skips ? { skips: x.skips } : {}), ...(x.skipRange ? { skipRange: x.skipRange } : {}) })),
      );
      break;
    }
    case 'olm.bundle': {
      const name = e['name'];
      const image = e['image'];
      if (typeof name !== 'string' || typeof image !== 'string') throw new BundleError(`${what}: an olm.bundle of ${pkg} without a name or image`);
      const related = (Array.isArray(e['relatedImages']) ? e['relatedImages'] : []) as { image?: unknown }[];
      meta.bundles.set(name, {
        name,
        package: pkg,
        version: bundleVersion(e),
        image,
        relatedImages: [...new Set(related.map((r) => r?.image).filter((x): x is string => typeof x === 'string' && x !== ''))],
      });
      break;
    }
    default:
      break;
  }
}

export interface PackageRequest {
  name: string;
  channels?: string[];
  minVersion?: string;
  maxVersion?: string;
}

export interface SelectedPackage {
  name: string;
  /** The package's defaultChannel, or the first selected channel when it was not selected. */
  defaultChannel: string;
  /** The catalog's own default, when it differs from the one kept. */
  originalDefaultChannel?: string;
  channels: { name: string; entries: ChannelEntry[] }[];
  bundles: BundleMeta[];
}

function coerce(v: string, what: string): string {
  const c = semver.coerce(v, { includePrerelease: true });
  const valid = semver.valid(v.replace(/^v/, '')) ?? c?.version;
  if (!valid) throw new BundleError(`${what}: ${JSON.stringify(v)} is not a version`);
  return valid;
}

/**
 * Select a package's channels and the entries within the version bounds. An
 * entry keeps `replaces` only when what it replaces is kept, and `skips` only
 * for kept bundles (the upgrade graph is followed only within the bounds).
 */
export function selectPackage(meta: PackageMeta, req: PackageRequest, what: string): SelectedPackage {
  const wanted = req.channels ?? (meta.defaultChannel ? [meta.defaultChannel] : []);
  if (wanted.length === 0) throw new BundleError(`${what}: package ${meta.name} has no defaultChannel; name its channels`);
  const missing = wanted.filter((c) => !meta.channels.has(c));
  if (missing.length) throw new BundleError(`${what}: package ${meta.name} has no channel ${missing.join(', ')} (it has ${[...meta.channels.keys()].sort().join(', ') || 'none'})`);
  const min = req.minVersion ? coerce(req.minVersion, `${what}: minVersion of ${meta.name}`) : undefined;
  const max = req.maxVersion ? coerce(req.maxVersion, `${what}: maxVersion of ${meta.name}`) : undefined;
  const within = (name: string): boolean => {
    const b = meta.bundles.get(name);
    if (!b) throw new BundleError(`${what}: channel entry ${name} of package ${meta.name} has no olm.bundle`);
    if (!min && !max) return true;
    if (!b.version || !semver.valid(b.version)) throw new BundleError(`${what}: bundle ${name} of ${meta.name} has no semantic version to compare with minVersion/maxVersion`);
    return (!min || semver.gte(b.version, min)) && (!max || semver.lte(b.version, max));
  };
  const channels = wanted.map((c) => {
    const kept = meta.channels.get(c)!.filter((e) => within(e.name));
    const names = new Set(kept.map((e) => e.name));
    const entries = kept.map((e) => {
      const skips = e.skips?.filter((s) => names.has(s));
      return {
        name: e.name,
        ...(e.replaces && names.has(e.replaces) ? { replaces: e.replaces } : {}),
        ...(skips?.length ? { skips } : {}),
        ...(e.skipRange ? { skipRange: e.skipRange } : {}),
      };
    });
    if (entries.length === 0) throw new BundleError(`${what}: no bundle of ${meta.name} in channel ${c} is within ${[min && `>= ${min}`, max && `<= ${max}`].filter(Boolean).join(' and ')}`);
    return { name: c, entries };
  });
  const bundleNames = new Set(channels.flatMap((c) => c.entries.map((e) => e.name)));
  const defaultChannel = meta.defaultChannel && wanted.includes(meta.defaultChannel) ? meta.defaultChannel : wanted[0]!;
  return {
    name: meta.name,
    defaultChannel,
    ...(defaultChannel !== meta.defaultChannel && meta.defaultChannel ? { originalDefaultChannel: meta.defaultChannel } : {}),
    channels,
    bundles: [...bundleNames].sort().map((n) => meta.bundles.get(n)!),
  };
}

/**
 * Rewrite one entry of a selected package for the filtered catalog, or drop it:
 * the package with its kept default channel, the kept channels with their kept
 * entries, the kept bundles as they are; anything else of the package as it is.
 */
export function filteredEntry(e: Record<string, unknown>, sel: SelectedPackage): Record<string, unknown> | undefined {
  switch (e['schema']) {
    case 'olm.package':
      return { ...e, defaultChannel: sel.defaultChannel };
    case 'olm.channel': {
      const c = sel.channels.find((x) => x.name === e['name']);
      return c ? { ...e, entries: c.entries } : undefined;
    }
    case 'olm.bundle':
      return sel.bundles.some((b) => b.name === e['name']) ? e : undefined;
    default:
      return e;
  }
}
