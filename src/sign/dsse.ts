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

/**
 * The envelope's bytes as this format writes them: `JSON.stringify(env, null, 2)` and a
 * newline (spec/airgap-format.md). The payload (the manifest again, in base64) is copied
 * once, straight into the result, never into a second string: it grows with the bundle.
 * The payload must be standard base64 (it needs no JSON escaping).
 */
export function serializeEnvelope(env: DsseEnvelope): Buffer {
  if (!isCanonicalBase64(env.payload)) throw new UsageError('DSSE payload is not standard padded base64');
  const { head, tail } = envelopeSkeleton(env);
  const h = Buffer.byteLength(head);
  const out = Buffer.allocUnsafe(h + env.payload.length + Buffer.byteLength(tail));
  out.write(head, 0, 'utf8');
  out.write(env.payload, h, 'latin1');
  out.write(tail, h + env.payload.length, 'utf8');
  return out;
}

/**
 * Whether `bytes` are exactly serializeEnvelope(env), compared piece by piece (no copy
 * of the payload is made). False for a payload that is not standard padded base64.
 */
export function isSerializedEnvelope(env: DsseEnvelope, bytes: Buffer): boolean {
  if (!isCanonicalBase64(env.payload)) return false;
  const { head, tail } = envelopeSkeleton(env);
  const h = Buffer.from(head);
  const t = Buffer.from(tail);
  const payload = env.payload;
  if (bytes.length !== h.length + payload.length + t.length) return false;
  if (!bytes.subarray(0, h.length).equals(h) || !bytes.subarray(bytes.length - t.length).equals(t)) return false;
  for (let i = 0; i < payload.length; i += COMPARE_STEP) {
    const part = payload.slice(i, i + COMPARE_STEP);
    if (!bytes.subarray(h.length + i, h.length + i + part.length).equals(Buffer.from(part, 'latin1'))) return false;
  }
  return true;
}

/** Whether `payload` is the standard padded base64 of `bytes`, compared a slice at a time (no whole copy of either). */
export function isPayloadOf(payload: string, bytes: Buffer): boolean {
  if (payload.length !== 4 * Math.ceil(bytes.length / 3)) return false;
  for (let i = 0; i < bytes.length; i += COMPARE_STEP) {
    const encoded = bytes.toString('base64', i, Math.min(bytes.length, i + COMPARE_STEP));
    const at = (i / 3) * 4;
    if (payload.slice(at, at + encoded.length) !== encoded) return false;
  }
  return true;
}

/** Bytes compared per step by the functions above: a multiple of 3 (whole base64 quanta) and of 4. */
const COMPARE_STEP = 3 * 4 * 16 * 1024;

/** Standard padded base64 that decoding and encoding again gives back unchanged (no stray bits, padding or characters). */
export function isCanonicalBase64(s: unknown): s is string {
  if (typeof s !== 'string' || s.length % 4 !== 0 || !STANDARD_BASE64_RE.test(s)) return false;
  // Only the last quantum can hold unused bits.
  const last = s.slice(-4);
  return Buffer.from(last, 'base64').toString('base64') === last;
}

const STANDARD_BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** `JSON.stringify(env, null, 2)` and a newline, split where the payload goes: `head` ends with the payload's opening quote. */
function envelopeSkeleton(env: DsseEnvelope): { head: string; tail: string } {
  const skeleton = `${JSON.stringify({ ...env, payload: '' }, null, 2)}\n`;
  // A top-level key is the only one indented by two spaces; newlines inside strings are escaped.
  const marker = '\n  "payload": "';
  const at = skeleton.indexOf(marker);
  if (at < 0) throw new UsageError('DSSE envelope without a payload');
  return { head: skeleton.slice(0, at + marker.length), tail: skeleton.slice(at + marker.length) };
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
