/**
 * Who signed a bundle: the DSSE envelope over the manifest, checked against
 * the trusted keys. Shared by verify and push.
 */
import type { ArchiveReader } from '../archive/reader.js';
import { verifyEnvelope } from '../sign/dsse.js';
import type { TrustedKey } from '../sign/keys.js';
import { MANIFEST_MEMBER, MANIFEST_PAYLOAD_TYPE, SIGNATURE_MEMBER } from './manifest.js';
import type { VerifyProblem } from './verify.js';

export interface SignatureStatus {
  checked: boolean;
  trusted: boolean;
  /** keyids of trusted keys whose signature is valid. */
  signedBy: string[];
  /** keyids present in the envelope. */
  keyids: string[];
}

export function checkSignature(reader: ArchiveReader, trusted: TrustedKey[] | undefined): { status: SignatureStatus; problems: VerifyProblem[] } {
  const keyids = reader.envelope.signatures.map((s) => s.keyid);
  const status: SignatureStatus = { checked: !!trusted, trusted: false, signedBy: [], keyids };
  const problems: VerifyProblem[] = [];
  if (!trusted) return { status, problems };
  if (reader.envelope.payloadType !== MANIFEST_PAYLOAD_TYPE) {
    problems.push({ kind: 'signature', message: `signature envelope has payload type ${reader.envelope.payloadType}, expected ${MANIFEST_PAYLOAD_TYPE}` });
    return { status, problems };
  }
  const result = verifyEnvelope(reader.envelope, trusted);
  status.signedBy = result.trustedSigners.map((k) => k.keyid);
  if (!result.payload.equals(reader.manifestBytes)) {
    problems.push({ kind: 'signature', member: MANIFEST_MEMBER, message: `${MANIFEST_MEMBER} is not the manifest that was signed (edited after signing)` });
  } else if (status.signedBy.length === 0) {
    const why =
      keyids.length === 0
        ? 'the bundle is not signed'
        : result.invalid.length > 0
          ? `the signature by key ${result.invalid.join(', ')} does not match the manifest (tampered)`
          : `signed by key ${keyids.join(', ')}, which is not among the trusted keys`;
    problems.push({ kind: 'signature', member: SIGNATURE_MEMBER, message: why });
  } else {
    status.trusted = true;
  }
  return { status, problems };
}

