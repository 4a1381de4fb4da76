import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where the tool's own files come from. Run by Node.js, they sit in the installed
 * package (package.json, spec/, dist/), found by walking up from this module: the
 * same answer from dist/src/ (tsc output) or dist/bundle/ (the single-file build).
 * Run as the standalone executable (`npm run package`, pkg.config.json), they are
 * assets embedded in the executable, read with node:sea.
 */

type SeaModule = { isSea(): boolean; getAsset(key: string, encoding?: string): string | ArrayBuffer };

let seaModule: SeaModule | null | undefined;

/** node:sea when this process is the standalone executable, else null. */
export function seaAssets(): SeaModule | null {
  if (seaModule === undefined) {
    try {
      const sea = process.getBuiltinModule('node:sea') as SeaModule | undefined;
      if (!sea) throw new Error('no node:sea');
      seaModule = sea.isSea() ? sea : null;
    } catch {
      seaModule = null; // Node.js without single-executable support
    }
  }
  return seaModule;
}

/** True when running as the standalone executable. */
export function isStandalone(): boolean {
  return seaAssets() !== null;
}

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'spec'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the airgap-bundle package root (package.json beside spec/)');
    dir = up;
  }
}

let root: string | undefined;

/** The installed package's root; not defined for the standalone executable. */
export function packageRoot(): string {
  root ??= findRoot();
  return root;
}

/**
 * A file the tool ships, by its path in the package (`package.json`,
 * `spec/bundle-config.schema.json`): the embedded asset in the standalone
 * executable, else the file in the package.
 */
export function readShipped(relPath: string): string {
  const sea = seaAssets();
  if (sea) {
    try {
      return sea.getAsset(relPath, 'utf8') as string;
    } catch (err) {
      throw new Error(`the executable carries no ${relPath} (was it built by npm run package?)`, { cause: err });
    }
  }
  return readFileSync(join(packageRoot(), relPath), 'utf8');
}

/** A file shipped in spec/, as its path in the package. */
export function specFile(name: string): string {
  return `spec/${name}`;
}

/** Where the build writes generated code (dist/generated/). */
export function generatedFile(name: string): string {
  return join(packageRoot(), 'dist', 'generated', name);
}
