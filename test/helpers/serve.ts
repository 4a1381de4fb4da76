/**
 * Runs the real `bundle serve` in a child process on a free loopback port and
 * waits until it says where it listens.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { runBundle, type RunResult } from './cli.js';

export interface RunningServe {
  /** `127.0.0.1:PORT` */
  host: string;
  child: ChildProcess;
  /** Everything the server printed on stdout so far. */
  output(): string;
  /** Peak resident memory of the server process so far (VmHWM), in bytes. */
  peakRss(): number;
  /** SIGTERM, then the exit code and output. */
  stop(): Promise<RunResult>;
  /** The run's result once the process ends by itself. */
  result: Promise<RunResult>;
}

export async function startServe(args: string[]): Promise<RunningServe> {
  let child: ChildProcess | undefined;
  let out = '';
  const result = runBundle(['serve', '--listen', '127.0.0.1:0', ...args], {
    onSpawn: (c) => {
      child = c;
      c.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    },
  });
  const host = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bundle serve did not start:\n${out}`)), 20_000);
    const look = (): void => {
      const m = /at https?:\/\/(127\.0\.0\.1:\d+)\/v2\/|"address":"(127\.0\.0\.1:\d+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1] ?? m[2]!);
      }
    };
    child!.stdout!.on('data', look);
    void result.then((r) => {
      clearTimeout(timer);
      reject(new Error(`bundle serve exited with ${r.code}: ${r.stderr}${r.stdout}`));
    });
    look();
  });
  const c = child!;
  return {
    host,
    child: c,
    output: () => out,
    peakRss: () => {
      const status = readFileSync(`/proc/${c.pid}/status`, 'utf8');
      const m = /VmHWM:\s+(\d+) kB/.exec(status);
      if (!m) throw new Error('no VmHWM in /proc status');
      return Number(m[1]) * 1024;
    },
    result,
    async stop() {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
      return result;
    },
  };
}
