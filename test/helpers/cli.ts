import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root (tests run from dist/test/...). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BIN = `${ROOT}bin/bundle.js`;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  onSpawn?: (child: import('node:child_process').ChildProcess) => void;
}

/** Run the real CLI in a child process, as a user would. */
export function runBundle(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runProgram(process.execPath, [BIN, ...args], { ...opts, env: { ...process.env, CI: 'true', ...opts.env } });
}

/** Run a program with exactly the environment given; collect its output. */
export function runProgram(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: opts.cwd ?? ROOT, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    opts.onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** No stack trace reached the user. */
export function assertNoStack(r: RunResult): void {
  if (/\n\s+at .+:\d+:\d+\)?/.test(r.stderr + r.stdout)) {
    throw new Error(`a stack trace leaked:\n${r.stderr}`);
  }
}

/** GNU time, for the peak RSS of a run (Debian package `time`). */
export const GNU_TIME = '/usr/bin/time';

/** Run the CLI under GNU time: the result and its peak RSS in MiB. */
export async function runBundleRss(args: string[], opts: RunOptions = {}): Promise<RunResult & { rssMiB: number; seconds: number }> {
  const { mkdtemp, readFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(`${tmpdir()}/bundle-rss-`);
  try {
    const out = `${dir}/rss`;
    const r = await runProgram(GNU_TIME, ['-f', '%M %e', '-o', out, process.execPath, BIN, ...args], { ...opts, env: { ...process.env, CI: 'true', ...opts.env } });
    const [kib, seconds] = (await readFile(out, 'utf8')).trim().split('\n').pop()!.split(' ').map(Number) as [number, number];
    return { ...r, rssMiB: kib / 1024, seconds };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
