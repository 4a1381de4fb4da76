/**
 * The bundle manifest: the signed list of everything a .airgap file holds.
 * Its JSON Schema is spec/bundle-manifest.schema.json; the format is described
 * in spec/airgap-format.md.
 */
export const MANIFEST_PAYLOAD_TYPE = 'application/vnd.airgap.bundle.manifest.v1+json';
export const FORMAT_VERSION = '1.1';

/** Member paths of the control files at the end of the archive. */
export const MANIFEST_MEMBER = 'airgap/manifest.json';
export const SIGNATURE_MEMBER = 'airgap/manifest.dsse.json';

export interface BundleMember {
  /** Path inside the tar, e.g. `blobs/sha256/<hex>`, `index.json`, `oci-layout`. */
  path: string;
  /** sha256 of the member's (decompressed) bytes. */
  digest: string;
  size: number;
  mediaType: string;
  /** Offset of the member's first data byte in the decompressed stream (the tar). */
  offset: number;
}

export interface BundleImage {
  /** The reference as the config named it, fully qualified (`docker.io/library/alpine:3.20`). */
  source: string;
  /** The `org.opencontainers.image.ref.name` under which index.json lists it. */
  refName: string;
  /** Digest, media type and size of the top manifest or index. */
  digest: string;
  mediaType: string;
  size: number;
  /** `os/arch[/variant]` of every platform carried (one entry for a single-platform image). */
  platforms: string[];
  /** Tags the image was known by at the source. */
  tags: string[];
  /**
   * Where it came from: `registry`, `oci-layout`, or the source kind that asked for
   * it (`devfile`: an image a devfile stack needs, or an artifact built from a stack).
   */
  origin: string;
  /**
   * Set when `platforms` picked some platforms out of an index: the source
   * index's digest. `digest` then names the one platform manifest kept, or an
   * index written by the tool that lists exactly the platforms kept.
   */
  filteredFrom?: string;
}

/** The base of an update bundle (`create --since`): what it is, and every blob the update leaves out. */
export interface BundleBase {
  /** sha256 of the base bundle's manifest bytes (airgap/manifest.json). */
  digest: string;
  /** The base bundle's file name when the update was made. */
  name: string;
  /** The base's `created`. */
  created: string;
  /** Blobs the update does not carry because the base did (manifests and configs are always carried). */
  blobs: { digest: string; size: number; mediaType: string }[];
}

export interface BundleManifest {
  schemaVersion: 1;
  kind: 'AirgapBundleManifest';
  formatVersion: string;
  /** RFC 3339 time of creation. */
  created: string;
  tool: {
    name: string;
    version: string;
    /** The standalone executable carried as a member (`create --include-tool`): `blobs/sha256/<hex>` of this digest. */
    executable?: { digest: string; size: number; platform: string };
  };
  /** Every member of the archive except the manifest and its signature. */
  members: BundleMember[];
  images: BundleImage[];
  /** Set on an update bundle: the base it leaves blobs out of. */
  base?: BundleBase;
  /** Format 1.1: each source kind's record (what push needs to deliver it), by kind. */
  sources?: Record<string, unknown>;
  /** Format 1.1: images left out under `--skip-missing`, reported again by push. */
  skipped?: SkippedImage[];
}

/** An image a source needed that could not be found (create --skip-missing). */
export interface SkippedImage {
  /** The reference that could not be pulled. */
  source: string;
  reason: string;
  /** Who needed it, e.g. `devfile stack nodejs 2.1.1 (component runtime, stacks/nodejs/2.1.1/devfile.yaml)`. */
  neededBy: string[];
}
