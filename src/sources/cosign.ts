/**
 * Cosign's companions of an image: its signatures, attestations and SBOMs,
 * stored in the image's repository under the tags `sha256-<hex>.sig`, `.att`
 * and `.sbom`. skopeo sync leaves them behind; bundle carries them, so that
 * `cosign verify` works against the mirror in the secure zone.
 *
 * A companion belongs to one digest. An image filtered to some platforms of an
 * index no longer carries that index (a registry refuses an index whose
 * manifests are missing), so the index's own companions cannot travel; the
 * companions of each kept platform manifest do (`cosign sign --recursive`
 * makes them, and platform manifests keep their bytes).
 */
import { keptPlatformManifests, parseManifest } from '../oci/manifest.js';
import { platformString, type Descriptor } from '../oci/types.js';
import { digestHex, verifyBuffer } from '../util/digest.js';
import { BundleError } from '../util/errors.js';
import type { SourceImage } from './images.js';

export const COSIGN_SUFFIXES = ['sig', 'att', 'sbom'] as const;

export function cosignTag(digest: string, suffix: (typeof COSIGN_SUFFIXES)[number]): string {
  return `sha256-${digestHex(digest)}.${suffix}`;
}

export interface CosignFindings {
  /** Companions to copy with the image. */
  images: SourceImage[];
  /** Companions that exist but cannot travel, said once per image. */
  warnings: string[];
}

/** The cosign artifacts that exist next to a registry image, as images to copy with it. */
export async function cosignArtifacts(img: SourceImage): Promise<CosignFindings> {
  if (img.origin !== 'registry') return { images: [], warnings: [] };
  const kept = await keptManifests(img);
  if (!kept) return { images: (await companionsOf(img, img.root.desc.digest)).map((c) => companionImage(img, c)), warnings: [] };
  const [dropped, ...perPlatform] = await Promise.all([companionsOf(img, img.root.desc.digest), ...kept.map((m) => companionsOf(img, m.digest))]);
  const warnings: string[] = [];
  if (dropped!.length > 0) {
    const platforms = kept.map((m) => platformString(m.platform)).join(', ');
    warnings.push(
      `${img.source}: its index's cosign ${dropped!.map((c) => c.tag).join(', ')} cannot travel: only ${platforms} of the index is bundled, not the index they sign ` +
        `(the companions of each kept platform manifest, made by cosign sign --recursive, are carried)`,
    );
  }
  return { images: perPlatform.flat().map((c) => companionImage(img, c)), warnings };
}

/** The platform manifests a platform filter keeps of the image's index; undefined when the image is kept whole. */
async function keptManifests(img: SourceImage): Promise<Descriptor[] | undefined> {
  const { root } = img;
  if (!root.platforms?.length) return undefined;
  const top = await img.store.fetchManifest(root.srcRepo, root.desc);
  verifyBuffer(top.bytes, root.desc.digest, root.desc.size, `manifest ${root.desc.digest} of ${root.label}`);
  return keptPlatformManifests(parseManifest(top.bytes, root.desc.mediaType, root.label), root.platforms);
}

async function companionsOf(img: SourceImage, digest: string): Promise<{ tag: string; desc: Descriptor }[]> {
  const found = await Promise.all(
    COSIGN_SUFFIXES.map(async (suffix) => {
      const tag = cosignTag(digest, suffix);
      try {
        return { tag, desc: await img.store.resolve(img.root.srcRepo, tag) };
      } catch (err) {
        // Absent is the common case; any other failure is the registry's to report.
        if (err instanceof BundleError && / not found$/.test(err.message)) return undefined;
        throw err;
      }
    }),
  );
  return found.filter((f): f is NonNullable<typeof f> => f !== undefined);
}

function companionImage(img: SourceImage, { tag, desc }: { tag: string; desc: Descriptor }): SourceImage {
  const repo = img.root.dstRepo;
  const source = `${repo}:${tag}`;
  return {
    store: img.store,
    source,
    refName: source,
    origin: 'registry',
    tags: [tag],
    root: { srcRepo: img.root.srcRepo, dstRepo: repo, desc, tags: [tag], label: source },
  };
}
