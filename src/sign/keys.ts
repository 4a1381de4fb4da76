/**
 * Ed25519 signing keys: generation, key ids, loading private and trusted public keys.
 *
 * Files are PEM: the private key as PKCS#8 (`<prefix>.key`, mode 0600), the public
 * key as SPKI (`<prefix>.pub`). A key id is the sha256 (hex) of the DER
 * SubjectPublicKeyInfo, so it is the same whichever file or format the key came from.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject } from 'node:crypto';
import { mkdir, open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, UsageError } from '../util/errors.js';

export interface TrustedKey {
  /** sha256 hex of the DER SubjectPublicKeyInfo. */
  keyid: string;
  /** The Ed25519 public key. */
  key: KeyObject;
  /** File the key was read from (for messages). */
  source: string;
}

export interface GeneratedKeyPair {
  privatePath: string;
  publicPath: string;
  keyid: string;
}

const PRIVATE_PEM_RE = /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----/;
const TRUSTED_KEY_EXTENSIONS = ['.pub', '.pem'];

/** sha256 hex of the DER SubjectPublicKeyInfo (a private key is reduced to its public half). */
export function keyId(publicKey: KeyObject): string {
  const pub = publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey;
  const der = pub.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex');
}

function codeOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

/** Write a new file with `mode`, refusing to replace an existing one. */
async function writeNewFile(file: string, data: string, mode: number): Promise<void> {
  let fh;
  try {
    fh = await open(file, 'wx', mode);
  } catch (err) {
    if (codeOf(err) === 'EEXIST') {
      throw new UsageError(`refusing to overwrite existing file ${file}`, 'choose another prefix or move the old key away');
    }
    throw new UsageError(`cannot create ${file}: ${errorMessage(err)}`);
  }
  try {
    // The umask may have removed bits, never added them; chmod makes the mode exact.
    await fh.chmod(mode);
    await fh.writeFile(data, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * Generate an Ed25519 key pair: `<prefix>.key` (PKCS#8 PEM, mode 0600) and
 * `<prefix>.pub` (SPKI PEM). Refuses (UsageError) if either file exists.
 */
export async function generateKeyPair(outPrefix: string): Promise<GeneratedKeyPair> {
  if (!outPrefix) throw new UsageError('empty key file prefix');
  const privatePath = `${outPrefix}.key`;
  const publicPath = `${outPrefix}.pub`;
  for (const f of [privatePath, publicPath]) {
    if (await exists(f)) {
      throw new UsageError(`refusing to overwrite existing file ${f}`, 'choose another prefix or move the old key away');
    }
  }
  await mkdir(path.dirname(path.resolve(privatePath)), { recursive: true });
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }) as string;
  await writeNewFile(privatePath, privatePem, 0o600);
  try {
    await writeNewFile(publicPath, publicPem, 0o644);
  } catch (err) {
    // Never leave half a pair behind.
    await unlink(privatePath).catch(() => undefined);
    throw err;
  }
  return { privatePath, publicPath, keyid: keyId(publicKey) };
}

async function readKeyFile(file: string, what: string): Promise<string> {
  try {
    const st = await stat(file);
    if (!st.isFile()) throw new UsageError(`${what} ${file} is not a regular file`);
    if (st.size > 1024 * 1024) throw new UsageError(`${what} ${file} is too large to be a key file`);
    return await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    if (codeOf(err) === 'ENOENT') throw new UsageError(`${what} ${file} does not exist`);
    throw new UsageError(`cannot read ${what} ${file}: ${errorMessage(err)}`);
  }
}

function requireEd25519(key: KeyObject, file: string): void {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new UsageError(
      `${file} holds a ${key.asymmetricKeyType ?? 'unknown'} key; only Ed25519 keys are supported`,
      'generate one with `bundle keygen`',
    );
  }
}

/**
 * A warning when a private key file can be read by others than its owner (keygen writes
 * 0600): anyone who can read it can sign bundles the secure zone will trust.
 */
export async function privateKeyPermissionWarning(file: string): Promise<string | undefined> {
  const st = await stat(file).catch(() => undefined);
  if (!st || (st.mode & 0o077) === 0) return undefined;
  return `private key ${file} can be read by others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): anyone who can read it can sign bundles; chmod 600 ${file}`;
}

/** Load an Ed25519 private key from a PEM file (PKCS#8; unencrypted). */
export async function loadPrivateKey(file: string): Promise<KeyObject> {
  const text = await readKeyFile(file, 'private key file');
  if (!PRIVATE_PEM_RE.test(text)) {
    if (/-----BEGIN (PUBLIC KEY|CERTIFICATE)-----/.test(text)) {
      throw new UsageError(`${file} holds a public key; signing needs the private key (the .key file)`);
    }
    throw new UsageError(`${file} is not a PEM private key`);
  }
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(text)) {
    throw new UsageError(`${file} is an encrypted private key; only unencrypted PKCS#8 keys are supported`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: 'pem' });
  } catch (err) {
    throw new UsageError(`${file} is not a valid private key: ${errorMessage(err)}`);
  }
  requireEd25519(key, file);
  return key;
}

/** Parse one public key file. */
async function loadPublicKeyFile(file: string): Promise<TrustedKey> {
  const text = await readKeyFile(file, 'public key file');
  if (PRIVATE_PEM_RE.test(text)) {
    throw new UsageError(
      `${file} holds a private key; give the public key (.pub) to verify with`,
      'the private key must stay with the signer; never copy it to the verifying side',
    );
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: text, format: 'pem' });
  } catch (err) {
    throw new UsageError(`${file} is not a PEM public key: ${errorMessage(err)}`);
  }
  requireEd25519(key, file);
  return { keyid: keyId(key), key, source: file };
}

/**
 * Load trusted public keys. Each path is a PEM public key file or a directory whose
 * `*.pub` and `*.pem` files (not recursive) are all loaded. Keys found twice are kept once.
 */
export async function loadTrustedKeys(paths: string[]): Promise<TrustedKey[]> {
  const out: TrustedKey[] = [];
  const seen = new Set<string>();
  const add = (k: TrustedKey): void => {
    if (seen.has(k.keyid)) return;
    seen.add(k.keyid);
    out.push(k);
  };
  for (const p of paths) {
    let st;
    try {
      st = await stat(p);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') throw new UsageError(`trusted key ${p} does not exist`);
      throw new UsageError(`cannot read trusted key ${p}: ${errorMessage(err)}`);
    }
    if (st.isDirectory()) {
      let names: string[];
      try {
        names = await readdir(p);
      } catch (err) {
        throw new UsageError(`cannot list trusted key directory ${p}: ${errorMessage(err)}`);
      }
      const files = names.filter((n) => TRUSTED_KEY_EXTENSIONS.includes(path.extname(n).toLowerCase())).sort();
      let found = 0;
      for (const n of files) {
        const f = path.join(p, n);
        const fst = await stat(f).catch(() => undefined);
        if (!fst?.isFile()) continue;
        add(await loadPublicKeyFile(f));
        found++;
      }
      if (found === 0) throw new UsageError(`trusted key directory ${p} holds no *.pub or *.pem files`);
    } else {
      add(await loadPublicKeyFile(p));
    }
  }
  return out;
}
