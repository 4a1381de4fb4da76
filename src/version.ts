import { readShipped } from './util/package-root.js';

function readVersion(): string {
  try {
    const pkg = JSON.parse(readShipped('package.json')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export const TOOL_NAME = 'airgap-bundle';
export const TOOL_VERSION = readVersion();
