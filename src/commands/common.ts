import { InvalidArgumentError } from 'commander';
import { Progress } from '../util/progress.js';

export interface OutputOptions {
  quiet?: boolean;
  json?: boolean;
  /** Folders holding more volumes of a bundle written in volumes (--volumes-dir). */
  volumesDir?: string[];
}

export function progressFor(opts: OutputOptions): Promise<Progress> {
  return Progress.detect(opts);
}

/** skopeo-style booleans: `--dest-tls-verify=false`. */
export function parseBool(value: string | undefined): boolean {
  if (value === undefined) return true;
  const v = value.toLowerCase();
  if (['true', '1', 'yes'].includes(v)) return true;
  if (['false', '0', 'no'].includes(v)) return false;
  throw new InvalidArgumentError('expected true or false');
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new InvalidArgumentError('expected a whole number from 1 to 256');
  return n;
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Write the one JSON document a --json run prints on stdout. */
export function printJson(doc: unknown): void {
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}
