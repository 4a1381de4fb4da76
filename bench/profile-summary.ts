/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`) by self time: top functions and top
 * source files. Usage: node dist/bench/profile-summary.js FILE.cpuprofile [TOP]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileRow {
  name: string;
  ms: number;
  pct: number;
}

export interface ProfileSummary {
  totalMs: number;
  functions: ProfileRow[];
  files: ProfileRow[];
}

function shortUrl(url: string): string {
  if (!url) return '';
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) return u.slice(nm + 'node_modules/'.length);
  const d = u.indexOf('/dist/');
  if (d >= 0) return u.slice(d + 1);
  return u;
}

export function summarizeProfile(file: string, top = 15): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  // timeDeltas[i+1] is the time the sample i was on the stack.
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i + 1] ?? 0;
    selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
  }
  const totalUs = p.endTime - p.startTime;
  const fn = new Map<string, number>();
  const files = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const cf = byId.get(id)!.callFrame;
    const url = shortUrl(cf.url);
    const key = `${cf.functionName || '(anonymous)'}${url ? ` ${url}:${cf.lineNumber + 1}` : ''}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const fkey = url ? url.replace(/:\d+$/, '') : cf.functionName;
    files.set(fkey, (files.get(fkey) ?? 0) + us);
  }
  const rows = (m: Map<string, number>): ProfileRow[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, pct: (100 * us) / totalUs }));
  return { totalMs: totalUs / 1000, functions: rows(fn), files: rows(files) };
}

export function formatProfile(title: string, s: ProfileSummary): string {
  const lines = [`### ${title} (profile spans ${(s.totalMs / 1000).toFixed(1)} s of the main thread)`, '', '| self ms | % | function |', '|---:|---:|---|'];
  for (const r of s.functions) lines.push(`| ${r.ms.toFixed(0)} | ${r.pct.toFixed(1)} | \`${r.name}\` |`);
  lines.push('', '| self ms | % | file |', '|---:|---:|---|');
  for (const r of s.files.slice(0, 8)) lines.push(`| ${r.ms.toFixed(0)} | ${r.pct.toFixed(1)} | \`${r.name}\` |`);
  return `${lines.join('\n')}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const f = process.argv[2];
  if (!f) {
    process.stderr.write('usage: node dist/bench/profile-summary.js FILE.cpuprofile [TOP]\n');
    process.exit(2);
  }
  process.stdout.write(formatProfile(f, summarizeProfile(f, Number(process.argv[3] ?? 15))));
}
