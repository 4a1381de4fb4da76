/** Spawning, timing (performance.now) and peak-RSS measurement (GNU time %M) of the bench's commands. */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const GNU_TIME = '/usr/bin/time';

export interface RunOutcome {
  ms: number;
  /** Peak RSS in KiB of the process (and of any child it waited for). */
  rssKiB: number;
  /** User + system CPU seconds of the process and the children it waited for. */
  cpuS: number;
  code: number;
  stdout: string;
  stderr: string;
}

const rssDir = mkdtempSync(path.join(os.tmpdir(), 'bundle-bench-rss-'));
process.on('exit', () => rmSync(rssDir, { recursive: true, force: true }));
let rssSeq = 0;

/** Shell-quote for display and for `bash -c` pipelines. */
export function q(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function show(argv: string[]): string {
  return argv.map(q).join(' ');
}

/** Run argv under GNU time; resolve with wall time measured here and peak RSS. Throws on non-zero exit unless allowFail. */
export function run(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; allowFail?: boolean } = {}): Promise<RunOutcome> {
  const rssFile = path.join(rssDir, `${++rssSeq}.txt`);
  // Every measured command starts on a quiet disk: the previous one's dirty pages are
  // written out first (not timed), so its write-back does not land on whoever runs next.
  spawnSync('sync');
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(GNU_TIME, ['-f', '%M %U %S', '-o', rssFile, ...argv], {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout = (stdout + c.toString()).slice(-1_000_000);
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr = (stderr + c.toString()).slice(-100_000);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      let rssKiB = 0;
      let cpuS = 0;
      try {
        const lines = readFileSync(rssFile, 'utf8').trim().split('\n');
        const [m, u, sy] = lines[lines.length - 1]!.split(' ').map(Number);
        rssKiB = m || 0;
        cpuS = (u || 0) + (sy || 0);
        rmSync(rssFile, { force: true });
      } catch {
        // time wrote nothing (killed)
      }
      const out: RunOutcome = { ms, rssKiB, cpuS, code: code ?? -1, stdout, stderr };
      if (out.code !== 0 && !opts.allowFail) {
        reject(new Error(`command failed (exit ${out.code}): ${show(argv)}\n${stderr.slice(-4000)}${stdout.slice(-2000)}`));
      } else resolve(out);
    });
  });
}

/** A shell pipeline, run by bash with pipefail (for tar | zstd). */
export function pipelineArgv(script: string): string[] {
  return ['bash', '-o', 'pipefail', '-c', script];
}

/** Several commands run one after another, counted as one: total time, max RSS. */
export async function runSeq(cmds: string[][], opts: { cwd?: string } = {}): Promise<RunOutcome> {
  const total: RunOutcome = { ms: 0, rssKiB: 0, cpuS: 0, code: 0, stdout: '', stderr: '' };
  for (const c of cmds) {
    const r = await run(c, opts);
    total.ms += r.ms;
    total.rssKiB = Math.max(total.rssKiB, r.rssKiB);
    total.cpuS += r.cpuS;
    total.stdout += r.stdout;
  }
  return total;
}

export function have(cmd: string): boolean {
  return spawnSync('bash', ['-c', `command -v ${q(cmd)}`], { stdio: 'ignore' }).status === 0;
}

/** Install missing tools with apt-get (as root), or explain what to install. */
export function ensureTools(log: (s: string) => void): void {
  const needs: [string, string][] = [
    [GNU_TIME, 'time'],
    ['skopeo', 'skopeo'],
    ['zstd', 'zstd'],
    ['openssl', 'openssl'],
    ['tar', 'tar'],
    ['/usr/bin/docker-registry', 'docker-registry'],
  ];
  const missing = needs.filter(([c]) => !have(c)).map(([, pkg]) => pkg);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) throw new Error(`missing tools; run as root or: sudo apt-get install -y ${missing.join(' ')}`);
  log(`installing ${missing.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
    r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
  }
  if (r.status !== 0) throw new Error(`apt-get install ${missing.join(' ')} failed`);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** User + system CPU seconds a running process has used so far (Linux /proc); NaN when unknown. */
export function processCpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the command name), in clock ticks.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}
