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
