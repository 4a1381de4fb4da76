import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/types.js';

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
  /** Resolve a tag or digest in a repository to its manifest descriptor. */
  resolve(repo: string, reference: string): Promise<Descriptor>;
  /** Fetch a manifest's exact bytes (bounded size). */
  fetchManifest(repo: string, desc: Descriptor): Promise<ManifestBytes>;
  hasBlob(repo: string, desc: Descriptor): Promise<boolean>;
  /** Raw, unverified bytes of a blob. */
  openBlob(repo: string, desc: Descriptor): Promise<Readable>;
  /** Registries only: every repository listed by `/v2/_catalog`, following its pages. */
  listRepositories?(pageSize?: number): Promise<string[]>;
  /** Registries only: every tag of a repository, following its pages. */
  listTags?(repo: string, pageSize?: number): Promise<string[]>;
}

export type PutResult = 'written' | 'exists' | 'mounted';

export interface PutBlobOptions {
  /** Repositories of the same store that already hold the blob (cross-repository mount). */
  mountFrom?: string[];
}

export interface WritableContentStore extends ContentStore {
  /**
   * Store a blob. `open` yields its bytes as a stream that errors (before its
   * end) if they fail their digest; a store must not commit a blob whose
   * stream errored. `open` may be called again when the store retries.
   */
  putBlob(repo: string, desc: Descriptor, open: () => Promise<Readable>, opts?: PutBlobOptions): Promise<PutResult>;
  /** Store a manifest's exact bytes (already verified) and point `tags` at it. */
  putManifest(repo: string, desc: Descriptor, bytes: Buffer, tags: string[]): Promise<PutResult>;
}
