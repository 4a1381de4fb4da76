import type { Descriptor, Platform } from './types.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from './media-types.js';
import { BundleError } from '../util/errors.js';
import { isSha256Digest } from '../util/digest.js';

/** What a manifest or index points at, read from its exact bytes. */
export interface ParsedManifest {
  mediaType: string;
  /** For an index: its manifests. */
  manifests: Descriptor[];
  /** For an image manifest: config (when present) then layers, then subject. */
  blobs: Descriptor[];
  isIndex: boolean;
}

interface RawManifest {
  mediaType?: string;
  schemaVersion?: number;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
  subject?: Descriptor;
}

function checkDescriptor(d: Descriptor | undefined, what: string): Descriptor {
  if (!d || typeof d !== 'object' || typeof d.digest !== 'string' || typeof d.size !== 'number' || typeof d.mediaType !== 'string') {
    throw new BundleError(`${what}: malformed descriptor`);
  }
  if (!isSha256Digest(d.digest)) throw new BundleError(`${what}: unsupported digest ${d.digest} (only sha256)`);
  return d;
}

/**
 * Parse a manifest's bytes. `declared` is the media type the registry (or the
 * parent descriptor) announced; the body's own mediaType wins when present.
 */
export function parseManifest(bytes: Buffer, declared: string | undefined, what: string): ParsedManifest {
  let raw: RawManifest;
  try {
    raw = JSON.parse(bytes.toString('utf8')) as RawManifest;
  } catch {
    throw new BundleError(`${what}: manifest is not valid JSON`);
  }
  if (raw.schemaVersion === 1) throw new BundleError(`${what}: Docker schema 1 manifests are not supported`);
  let mediaType = raw.mediaType ?? declared;
  if (!mediaType || !isManifestMediaType(mediaType)) {
    // OCI allows omitting mediaType: infer it from the shape.
    mediaType = raw.manifests ? MediaType.OciIndex : MediaType.OciManifest;
  }
  if (isIndexMediaType(mediaType)) {
    const manifests = (raw.manifests ?? []).map((d, i) => checkDescriptor(d, `${what} manifests[${i}]`));
    return { mediaType, manifests, blobs: [], isIndex: true };
  }
  const blobs: Descriptor[] = [];
  if (raw.config) blobs.push(checkDescriptor(raw.config, `${what} config`));
  (raw.layers ?? []).forEach((d, i) => {
    if (d.urls && d.urls.length > 0) return; // foreign layers are fetched from their URLs by the runtime
    blobs.push(checkDescriptor(d, `${what} layers[${i}]`));
  });
  return { mediaType, manifests: [], blobs, isIndex: false };
}

export function platformMatches(p: Platform | undefined, wanted: string): boolean {
  if (!p) return false;
  const [os, arch, variant] = wanted.split('/');
  if (p.os !== os || p.architecture !== arch) return false;
  return variant === undefined || p.variant === variant;
}

/**
 * The manifests of an index that `platforms` keep, or undefined when the index
 * is kept whole (no platforms named, not an index, or every entry picked).
 * Empty when no entry matches.
 */
export function keptPlatformManifests(parsed: ParsedManifest, platforms: string[] | undefined): Descriptor[] | undefined {
  if (!parsed.isIndex || !platforms || platforms.length === 0) return undefined;
  const wanted = parsed.manifests.filter((m) => platforms.some((p) => platformMatches(m.platform, p)));
  return wanted.length === parsed.manifests.length ? undefined : wanted;
}
