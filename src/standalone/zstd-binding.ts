/**
 * The zstd native addon for the standalone executable. Node.js loads addons only
 * from files, so the copy embedded in the executable (asset `zstd-napi.node`, see
 * pkg.config.json) is written once to a private cache folder, named by its sha256,
 * and loaded from there; a file already there is loaded only if its bytes hash to
 * the embedded copy's digest. The package build (`npm run package`) maps
 * `zstd-napi/binding.js` to this module.
 */
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { seaAssets } from '../util/package-root.js';

export const ADDON_ASSET = 'zstd-napi.node';

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** A folder only this user can write (refuses one that others could plant files in). */
function privateDir(): string {
  const uid = process.getuid?.() ?? 0;
  const dir = join(process.env['XDG_CACHE_HOME'] ?? tmpdir(), `airgap-bundle-${uid}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) {
    throw new Error(`${dir} is not a private folder of this user; cannot load the zstd addon from it`);
  }
  return dir;
}

function load(): unknown {
  const sea = seaAssets();
  if (!sea) throw new Error('the embedded zstd addon exists only in the standalone executable');
  const bytes = Buffer.from(sea.getAsset(ADDON_ASSET) as ArrayBuffer);
  const digest = sha256(bytes);
  const file = join(privateDir(), `zstd-napi-${digest.slice(0, 32)}.node`);
  let current = false;
  try {
    current = sha256(readFileSync(file)) === digest;
  } catch {
    // not there yet
  }
  if (!current) {
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, bytes, { mode: 0o700 });
    renameSync(tmp, file);
  }
  const mod = { exports: {} as unknown };
  process.dlopen(mod, file);
  return mod.exports;
}

const binding = load();
export default binding;
