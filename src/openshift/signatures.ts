/**
 * OpenShift release signatures: fetched from a signature store
 * (`<store>/sha256=<hex>/signature-<n>`, n from 1 until a 404), carried as one
 * OCI artifact per signed digest, and turned into the ConfigMap the cluster
 * version operator reads (`openshift-config-managed`, label
 * `release.openshift.io/verification-signatures`, `binaryData` keys
 * `sha256-<hex>-<n>`).
 */
import { MediaType } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import type { MemoryStore } from '../store/memory-store.js';
import { digestHex } from '../util/digest.js';
import { BundleError, errorMessage } from '../util/errors.js';

export const DEFAULT_SIGNATURE_STORE = 'https://mirror.openshift.com/pub/openshift-v4/signatures/openshift/release';
export const SIGNATURES_ARTIFACT_TYPE = 'application/vnd.airgap.openshift.release-signatures.v1';
export const SIGNATURE_MEDIA_TYPE = 'application/pgp-signature';
export const EMPTY_CONFIG_MEDIA_TYPE = 'application/vnd.oci.empty.v1+json';
export const ANNOTATION_TITLE = 'org.opencontainers.image.title';
export const ANNOTATION_SIGNED_DIGEST = 'io.openshift.release.digest';
/** Signatures larger than this are refused (real ones are under 1 KiB). */
const MAX_SIGNATURE_BYTES = 1 << 20;
/** A release with more signatures than this is refused (a store that never answers 404). */
const MAX_SIGNATURES = 64;

/** The tag under which a release digest's signatures travel, beside the release. */
export function signaturesTag(digest: string): string {
  return `sha256-${digestHex(digest)}.release-signatures`;
}

/** Every signature of `digest` in the store, in order. */
export async function fetchSignatures(store: string, digest: string): Promise<Buffer[]> {
  const base = store.replace(/\/+$/, '');
  const out: Buffer[] = [];
  for (let n = 1; n <= MAX_SIGNATURES; n++) {
    const url = `${base}/sha256=${digestHex(digest)}/signature-${n}`;
    let res: Response;
    try {
      res = await fetch(url, { redirect: 'follow' });
    } catch (err) {
      throw new BundleError(`cannot reach the signature store: GET ${url}: ${errorMessage((err as { cause?: unknown }).cause ?? err)}`);
    }
    if (res.status === 404 || res.status === 403) {
      // mirror.openshift.com answers 403 for a missing object.
      await res.body?.cancel();
      return out;
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new BundleError(`signature store: GET ${url} answered HTTP ${res.status}`);
    }
    const bytes = Buffer.from(await res.arrayBuffer());
    if (bytes.length === 0 || bytes.length > MAX_SIGNATURE_BYTES) throw new BundleError(`signature store: ${url} is ${bytes.length} bytes; not a signature`);
    out.push(bytes);
  }
  throw new BundleError(`signature store: more than ${MAX_SIGNATURES} signatures for ${digest}`);
}

/** Build the artifact holding `signatures` of `digest` into `store`; returns its manifest's descriptor. */
export function buildSignaturesArtifact(store: MemoryStore, digest: string, signatures: Buffer[], release: string): Descriptor {
  const config = store.add(Buffer.from('{}'), EMPTY_CONFIG_MEDIA_TYPE);
  const layers = signatures.map((sig, i) => ({ ...store.add(sig, SIGNATURE_MEDIA_TYPE), annotations: { [ANNOTATION_TITLE]: `signature-${i + 1}` } }));
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: SIGNATURES_ARTIFACT_TYPE,
    config,
    layers,
    annotations: { [ANNOTATION_SIGNED_DIGEST]: digest, 'io.openshift.release': release },
  };
  return store.add(Buffer.from(JSON.stringify(manifest, null, 2)), MediaType.OciManifest);
}

/** The signature layers of an artifact manifest, in order; checks its shape. */
export function signatureLayers(manifestBytes: Buffer, what: string): { digest: string; layers: Descriptor[] } {
  let m: { artifactType?: string; layers?: Descriptor[]; annotations?: Record<string, string> };
  try {
    m = JSON.parse(manifestBytes.toString('utf8')) as typeof m;
  } catch {
    throw new BundleError(`${what}: not JSON`);
  }
  const digest = m.annotations?.[ANNOTATION_SIGNED_DIGEST];
  if (m.artifactType !== SIGNATURES_ARTIFACT_TYPE || !digest || !Array.isArray(m.layers)) throw new BundleError(`${what}: not a release signatures artifact`);
  return { digest, layers: m.layers };
}

/** The ConfigMap for one signed release digest. */
export function signatureConfigMap(digest: string, signatures: Buffer[]): Record<string, unknown> {
  const hex = digestHex(digest);
  const binaryData: Record<string, string> = {};
  signatures.forEach((s, i) => {
    binaryData[`sha256-${hex}-${i + 1}`] = s.toString('base64');
  });
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: `sha256-${hex}`,
      namespace: 'openshift-config-managed',
      labels: { 'release.openshift.io/verification-signatures': '' },
    },
    binaryData,
  };
}
