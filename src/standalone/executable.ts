/**
 * The standalone executable as content: which file it is, its digest, and the
 * manifest record of a copy carried inside a bundle (`create --include-tool`,
 * `extract-tool`).
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { isStandalone, packageRoot } from '../util/package-root.js';

/** Media type of the executable's member in a bundle. */
export const TOOL_EXECUTABLE_MEDIA_TYPE = 'application/vnd.airgap.bundle.tool.executable';
/** What the executable runs on (pkg.config.json `platform`). */
export const TOOL_PLATFORM = `${process.platform}-${process.arch}`;

export interface ToolExecutable {
  digest: string;
  size: number;
  platform: string;
}

/** sha256 and size of a file, read as a stream. */
export async function hashFile(file: string): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${h.digest('hex')}`, size };
}

/**
 * The executable `--include-tool` carries when given no path: this process when it
 * is the standalone executable, else the one `npm run package` built beside the
 * package (dist/standalone/bundle); undefined when there is none.
 */
export function defaultExecutable(): string | undefined {
  if (isStandalone()) return process.execPath;
  try {
    const built = join(packageRoot(), 'dist', 'standalone', 'bundle');
    return existsSync(built) ? built : undefined;
  } catch {
    return undefined;
  }
}
