import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The installed package's root (where package.json, spec/ and dist/ are),
 * found by walking up from this module: the same answer whether the code runs
 * from dist/src/ (tsc output) or dist/bundle/ (the single-file build).
 */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'spec'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the airgap-bundle package root (package.json beside spec/)');
    dir = up;
  }
}

export const PACKAGE_ROOT = findRoot();

/** A file shipped in spec/. */
export function specFile(name: string): URL {
  return new URL(`file://${join(PACKAGE_ROOT, 'spec', name)}`);
}

/** Where the build writes generated code (dist/generated/). */
export function generatedFile(name: string): string {
  return join(PACKAGE_ROOT, 'dist', 'generated', name);
}
