/**
 * Who signed a bundle: the DSSE envelope over the manifest, checked against
 * the trusted keys. Shared by verify, push, serve and extract.
 */
import type { ArchiveReader } from '../archive/reader.js';
import { isCanonicalBase64, isSerializedEnvelope, verifyEnvelope } from '../sign/dsse.js';
import type { DsseEnvelope } from '../sign/dsse-types.js';
import { loadTrustedKeys, type TrustedKey } from '../sign/keys.js';
import { BundleError, errorMessage, UsageError } from '../util/errors.js';
import { MANIFEST_MEMBER, MANIFEST_PAYLOAD_TYPE, SIGNATURE_MEMBER, type BundleManifest } from './manifest.js';
import { validateManifest } from './validate.js';
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
  // Parsed once here and dropped after: its payload is the whole manifest again, in base64.
  const envelope = reader.envelope;
  const keyids = envelope.signatures.map((s) => s.keyid);
  const status: SignatureStatus = { checked: !!trusted, trusted: false, signedBy: [], keyids };
  const problems: VerifyProblem[] = [];
  const canonical = envelopeFormProblem(reader.envelopeBytes, envelope);
  if (canonical) problems.push({ kind: 'signature', member: SIGNATURE_MEMBER, message: canonical });
  if (!trusted) return { status, problems };
  if (envelope.payloadType !== MANIFEST_PAYLOAD_TYPE) {
    problems.push({ kind: 'signature', message: `signature envelope has payload type ${envelope.payloadType}, expected ${MANIFEST_PAYLOAD_TYPE}` });
    return { status, problems };
  }
  let result: ReturnType<typeof verifyEnvelope>;
  try {
    result = verifyEnvelope(envelope, trusted);
  } catch (err) {
    problems.push({ kind: 'signature', member: SIGNATURE_MEMBER, message: `${SIGNATURE_MEMBER}: ${errorMessage(err)}` });
    return { status, problems };
  }
  status.signedBy = result.trustedSigners.map((k) => k.keyid);
  if (!result.payload.equals(reader.manifestBytes)) {
    problems.push({
      kind: 'signature',
      member: MANIFEST_MEMBER,
      message: `${MANIFEST_MEMBER} is not the manifest that was signed: it differs from the payload of ${SIGNATURE_MEMBER} (one of them was edited after signing)`,
    });
  } else if (status.signedBy.length === 0) {
    const why =
      keyids.length === 0
        ? 'the bundle is not signed'
        : result.invalid.length > 0
          ? `the signature by key ${result.invalid.join(', ')} does not match the manifest (tampered)`
          : `signed by key ${keyids.join(', ')}, which is not among the trusted keys`;
    problems.push({ kind: 'signature', member: SIGNATURE_MEMBER, message: `${SIGNATURE_MEMBER}: ${why}` });
  } else {
    status.trusted = true;
  }
  return { status, problems };
}


/** `--key` / `--insecure-skip-signature`, as push, serve and extract take them. */
export interface TrustOptions {
  key?: string[];
  insecureSkipSignature?: boolean;
}

/**
 * The trusted keys a command that acts on a bundle's content needs: `--key`, or
 * nothing at all with `--insecure-skip-signature` (undefined). Anything else is
 * a usage error naming `verb` (push, serve, extract).
 */
export async function requireTrust(opts: TrustOptions, verb: string): Promise<TrustedKey[] | undefined> {
  if (!opts.key?.length && !opts.insecureSkipSignature) {
    throw new UsageError(
      `${verb} needs --key PUB (a trusted public key or a directory of them) to check who signed the bundle; --insecure-skip-signature ${verb}s without that check`,
    );
  }
  return opts.key?.length ? loadTrustedKeys(opts.key) : undefined;
}

/**
 * The bundle's manifest once its signature is proven (by `trusted`; none: not
 * checked), it passes the schema, and the archive's framing holds exactly the
 * members it lists; refuses (exit 1) an unsigned, untrusted, tampered or
 * re-framed bundle, naming `verb` (push, serve, extract).
 */
export async function trustedManifest(reader: ArchiveReader, trusted: TrustedKey[] | undefined, verb: string): Promise<BundleManifest> {
  const sig = checkSignature(reader, trusted);
  if (sig.problems.length > 0) {
    throw new BundleError(`refusing to ${verb} ${reader.path}: ${sig.problems.map((p) => p.message).join('; ')}`, 1);
  }
  // The reader parsed these very bytes when it opened the file: validated as they are, not parsed again.
  const manifest = validateManifest(reader.manifest);
  const layout = await reader.layoutProblems();
  if (layout.length > 0) {
    throw new BundleError(
      `refusing to ${verb} ${reader.path}: ${layout.slice(0, 3).join('; ')}${layout.length > 3 ? ` and ${layout.length - 3} more` : ''} (bundle verify names everything wrong)`,
      1,
    );
  }
  return manifest;
}

/**
 * The envelope is written in one exact form (pretty-printed JSON, standard padded base64), so a
 * changed byte that JSON or base64 would forgive (whitespace, a base64 character's unused bits)
 * is still found. Undefined when the bytes are in that form. `parsed`: the envelope as already
 * parsed from `bytes`. Compared piece by piece: no second copy of the payload is made.
 */
export function envelopeFormProblem(bytes: Buffer, parsed?: unknown): string | undefined {
  const problem = `${SIGNATURE_MEMBER} is not in the form this format writes (changed bytes)`;
  let env: unknown = parsed;
  if (env === undefined) {
    try {
      env = JSON.parse(bytes.toString('utf8'));
    } catch {
      return problem;
    }
  }
  if (!env || typeof env !== 'object' || Array.isArray(env)) return problem;
  const e = env as { payload?: unknown; signatures?: unknown };
  if (!isCanonicalBase64(e.payload) || !Array.isArray(e.signatures) || !e.signatures.every((s) => isCanonicalBase64((s as { sig?: unknown } | null)?.sig))) return problem;
  return isSerializedEnvelope(env as DsseEnvelope, bytes) ? undefined : problem;
}
