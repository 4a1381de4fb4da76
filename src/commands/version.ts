import { FORMAT_VERSION } from '../bundle/manifest.js';
import { hashFile } from '../standalone/executable.js';
import { isStandalone } from '../util/package-root.js';
import { TOOL_NAME, TOOL_VERSION } from '../version.js';
import { printJson, type OutputOptions } from './common.js';

/** `bundle version` and `bundle --version`: what this tool is, what it reads and writes, and which file it runs from. */
export async function versionCommand(opts: OutputOptions): Promise<number> {
  const standalone = isStandalone();
  const major = FORMAT_VERSION.split('.')[0]!;
  const exe = standalone ? { path: process.execPath, ...(await hashFile(process.execPath)) } : undefined;
  const doc = {
    tool: TOOL_NAME,
    version: TOOL_VERSION,
    format: { writes: FORMAT_VERSION, reads: `${major}.x` },
    standalone,
    executable: exe ? { path: exe.path, sha256: exe.digest.slice('sha256:'.length), size: exe.size } : null,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
  if (opts.json) {
    printJson(doc);
    return 0;
  }
  const out = process.stdout;
  out.write(`${TOOL_NAME} ${TOOL_VERSION}\n`);
  out.write(`format: writes ${doc.format.writes}, reads ${doc.format.reads}\n`);
  if (doc.executable) out.write(`executable: ${doc.executable.path}\nsha256: ${doc.executable.sha256}\n`);
  else out.write(`executable: none (run by Node.js ${process.version}; npm run package builds the standalone executable)\n`);
  out.write(`platform: ${doc.platform}, Node.js ${process.version}\n`);
  return 0;
}
