/**
 * Cosign's companions of an image: its signatures, attestations and SBOMs,
 * stored in the image's repository under the tags `sha256-<hex>.sig`, `.att`
 * and `.sbom`. skopeo sync leaves them behind; bundle carries them, so that
 * `cosign verify` works against the mirror in the secure zone.
 */
import { digestHex } from '../util/digest.js';
import { BundleError } from '../util/errors.js';
import type { SourceImage } from './images.js';

export const COSIGN_SUFFIXES = ['sig', 'att', 'sbom'] as const;

export function cosignTag(digest: string, suffix: (typeof COSIGN_SUFFIXES)[number]): string {
  return `sha256-${digestHex(digest)}.${suffix}`;
}

/** The cosign artifacts that exist next to a registry image, as images to copy with it. */
export async function cosignArtifacts(img: SourceImage): Promise<SourceImage[]> {
  if (img.origin !== 'registry') return [];
  const found = await Promise.all(
    COSIGN_SUFFIXES.map(async (suffix) => {
      const tag = cosignTag(img.root.desc.digest, suffix);
      try {
        return { tag, desc: await img.store.resolve(img.root.srcRepo, tag) };
      } catch (err) {
        // Absent is the common case; any other failure is the registry's to report.
        if (err instanceof BundleError && / not found$/.test(err.message)) return undefined;
        throw err;
      }
    }),
  );
  const repo = img.root.dstRepo;
  return found
    .filter((f): f is NonNullable<typeof f> => f !== undefined)
    .map(({ tag, desc }) => {
      const source = `${repo}:${tag}`;
      return {
        store: img.store,
        source,
        refName: source,
        origin: 'registry' as const,
        tags: [tag],
        root: { srcRepo: img.root.srcRepo, dstRepo: repo, desc, tags: [tag], label: source },
      };
    });
}
