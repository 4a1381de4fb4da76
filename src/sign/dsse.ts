/**
 * DSSE (Dead Simple Signing Envelope) signing and verification with Ed25519.
 * The signature covers PAE(payloadType, payload):
 *   "DSSEv1" SP len(type) SP type SP len(body) SP body
 * with lengths as ASCII decimal byte counts.
 */
import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { UsageError } from '../util/errors.js';
import type { DsseEnvelope, DsseSignature } from './dsse-types.js';
import { keyId, type TrustedKey } from './keys.js';

export interface VerifyResult {
  /** The decoded payload. Only trust it when `trustedSigners` is not empty. */
  payload: Buffer;
  /** Trusted keys whose signature verified (each at most once). */
  trustedSigners: TrustedKey[];
  /** Key ids of signatures made by keys not in the trusted set (not verified). */
  untrustedKeyids: string[];
  /** Key ids of trusted keys whose signature did NOT verify (tampering or corruption). */
  invalid: string[];
}

/** DSSE pre-authentication encoding. */
export function pae(payloadType: string, payload: Buffer): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([
    Buffer.from(`DSSEv1 ${type.length} `, 'ascii'),
    type,
    Buffer.from(` ${payload.length} `, 'ascii'),
    payload,
  ]);
}

/** Sign `payload` with an Ed25519 private key; the envelope carries one signature. */
export function signEnvelope(payload: Buffer, payloadType: string, key: KeyObject): DsseEnvelope {
  if (key.type !== 'private') throw new UsageError('signing needs a private key');
  if (key.asymmetricKeyType !== 'ed25519') throw new UsageError(`signing key is ${key.asymmetricKeyType ?? 'unknown'}; only Ed25519 is supported`);
  if (!payloadType) throw new UsageError('empty DSSE payload type');
  const sig = sign(null, pae(payloadType, payload), key);
  return {
    payloadType,
    payload: payload.toString('base64'),
    signatures: [{ keyid: keyId(createPublicKey(key)), sig: sig.toString('base64') }],
  };
}

// Standard or URL-safe alphabet, padding optional (both are allowed by DSSE).
const BASE64_RE = /^[A-Za-z0-9+/_-]*={0,2}$/;

function isBase64(s: string): boolean {
  return BASE64_RE.test(s) && s.replace(/=+$/, '').length % 4 !== 1;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Throws UsageError unless `env` has the shape of a DSSE envelope. */
export function assertEnvelope(env: unknown): asserts env is DsseEnvelope {
  const bad = (why: string): never => {
    throw new UsageError(`invalid signature envelope: ${why}`);
  };
  if (!isObject(env)) bad('not a JSON object');
  const e = env as Record<string, unknown>;
  if (typeof e.payloadType !== 'string' || e.payloadType === '') bad('payloadType must be a non-empty string');
  if (typeof e.payload !== 'string') bad('payload must be a base64 string');
  if (!isBase64(e.payload as string)) bad('payload is not valid base64');
  if (!Array.isArray(e.signatures)) bad('signatures must be a list');
  // An empty list is well formed: an unsigned bundle carries one. It verifies nothing.
  (e.signatures as unknown[]).forEach((s, i) => {
    if (!isObject(s)) bad(`signatures[${i}] is not an object`);
    const so = s as Record<string, unknown>;
    if (so.keyid !== undefined && typeof so.keyid !== 'string') bad(`signatures[${i}].keyid must be a string`);
    if (typeof so.sig !== 'string') bad(`signatures[${i}].sig must be a base64 string`);
  });
}

function verifyOne(payloadType: string, payload: Buffer, s: DsseSignature, key: KeyObject): boolean {
  if (!isBase64(s.sig)) return false;
  const sig = Buffer.from(s.sig, 'base64');
  if (sig.length !== 64) return false;
  try {
    return verify(null, pae(payloadType, payload), key, sig);
  } catch {
    return false;
  }
}

/**
 * Check every signature of `env` against the trusted keys. Never throws because a
 * signature is bad: the result says which verified, which came from unknown keys and
 * which failed. Throws UsageError only when `env` is not a DSSE envelope at all.
 *
 * A signature without a keyid is tried against every trusted key; if none verifies
 * it is reported in `untrustedKeyids` as the empty string.
 */
export function verifyEnvelope(env: DsseEnvelope, trusted: TrustedKey[]): VerifyResult {
  assertEnvelope(env);
  const payload = Buffer.from(env.payload, 'base64');
  const trustedSigners: TrustedKey[] = [];
  const untrustedKeyids: string[] = [];
  const invalid: string[] = [];
  const addOnce = (list: string[], id: string): void => {
    if (!list.includes(id)) list.push(id);
  };
  for (const s of env.signatures) {
    const keyid = s.keyid ?? '';
    const candidates = keyid ? trusted.filter((t) => t.keyid === keyid) : trusted;
    const good = candidates.find((t) => verifyOne(env.payloadType, payload, s, t.key));
    if (good) {
      if (!trustedSigners.some((t) => t.keyid === good.keyid)) trustedSigners.push(good);
    } else if (keyid && candidates.length > 0) {
      addOnce(invalid, keyid);
    } else {
      addOnce(untrustedKeyids, keyid);
    }
  }
  return { payload, trustedSigners, untrustedKeyids, invalid };
}
