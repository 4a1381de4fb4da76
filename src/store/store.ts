import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/types.js';
import type { Limiter } from '../copy/limit.js';

/**
 * A place content lives: a remote registry, an OCI layout directory, a .airgap
 * file being written or one being read. Stores that have no repositories
 * (archives, layouts) ignore the `repo` argument.
 *
 * Stores never trust bytes: readers return raw streams, and the copy engine
 * hashes every byte against the descriptor before a writer commits it.
 */
export interface ManifestBytes {
  /** The exact bytes, never re-serialised. */
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface ContentStore {
  /** Human-readable name for messages; never contains credentials. */
  readonly description: string;
  /**
   * Resolve a tag or digest in a repository to its manifest descriptor. `fetch`:
   * the caller fetches the manifest next; a store that can reads it in the same
   * request and serves that fetch from memory (one round trip instead of two).
   */
  resolve(repo: string, reference: string, opts?: ResolveOptions): Promise<Descriptor>;
  /** Fetch a manifest's exact bytes (bounded size). */
  fetchManifest(repo: string, desc: Descriptor): Promise<ManifestBytes>;
  hasBlob(repo: string, desc: Descriptor): Promise<boolean>;
  /** Raw, unverified bytes of a blob. */
  openBlob(repo: string, desc: Descriptor): Promise<Readable>;
  /**
   * Raw, unverified bytes [start, end) of a blob, for stores that can serve
   * parts. `whole` is true when the store sent the whole blob instead (a
   * registry that ignores `Range`).
   */
  openBlobRange?(repo: string, desc: Descriptor, range: ByteRange): Promise<RangeResult>;
  /** Registries only: every repository listed by `/v2/_catalog`, following its pages. */
  listRepositories?(pageSize?: number): Promise<string[]>;
  /** Registries only: every tag of a repository, following its pages. */
  listTags?(repo: string, pageSize?: number): Promise<string[]>;
}

export interface ResolveOptions {
  /** The manifest will be fetched next (an image to copy, not an existence check). */
  fetch?: boolean;
}

/** Bytes [start, end) of a blob. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface RangeResult {
  stream: Readable;
  whole: boolean;
}

export type PutResult = 'written' | 'exists' | 'mounted';

export interface PutBlobOptions {
  /** Repositories of the same store that already hold the blob (cross-repository mount). */
  mountFrom?: string[];
  /**
   * Repositories of the same store that may hold the blob (an earlier, interrupted run may
   * have put it there): asked (HEAD) before uploading, and mounted from when they have it,
   * so a blob already sent whole is not sent again.
   */
  mayHoldIn?: string[];
  /**
   * Unverified parts of the blob, when the source can serve them. A store that
   * uses them hashes every byte in order against the digest itself.
   */
  openRange?: (range: ByteRange) => Promise<RangeResult>;
  /** Transfer slots, for stores that schedule their own requests (see `schedulesTransfers`). */
  slots?: Limiter;
  /** Bytes received, for progress (stores that use `openRange`). */
  onBytes?: (n: number) => void;
  /** The source has served ranges before (a part answered 206): no need to try one alone first. */
  rangesServed?: boolean;
}

export interface WritableContentStore extends ContentStore {
  /**
   * True when the store runs each of its requests under `PutBlobOptions.slots`
   * itself (one blob may then use several at once); otherwise the copy engine
   * holds one slot per blob.
   */
  readonly schedulesTransfers?: boolean;
  /**
   * Store a blob. `open` yields its bytes as a stream that errors (before its
   * end) if they fail their digest; a store must not commit a blob whose
   * stream errored. `open` may be called again when the store retries.
   */
  putBlob(repo: string, desc: Descriptor, open: () => Promise<Readable>, opts?: PutBlobOptions): Promise<PutResult>;
  /** Store a manifest's exact bytes (already verified) and point `tags` at it. */
  putManifest(repo: string, desc: Descriptor, bytes: Buffer, tags: string[]): Promise<PutResult>;
}
