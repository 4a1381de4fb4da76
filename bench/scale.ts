/**
 * The bench's scale scenario (issue 11): many small images (test/helpers/images.ts
 * buildManyImages: a shared base layer and a small layer of their own each) through
 * `bundle create`, `verify` and `push` into a Docker Distribution registry on loopback, at
 * 500, 1,000 and 2,000 images.
 *
 * The machine is shared, so wall time says little: the figures that count are CPU seconds
 * (user + system, GNU time) of the tool, and for push the registry's own CPU seconds (from
 * /proc) and the requests it answered per image (counted by the test proxy on one extra,
 * untimed push per size). Time grows linearly when the time per image stays flat: the table
 * gives, per step, CPU per image at the largest size over CPU per image at the smallest, and
 * the target is at most 1.25. A linear tool scores about 1 or below (fixed start-up costs
 * weigh less as the count grows); a cost growing with the square of the count scores up to 4
 * for 4x the images; 1.25 leaves room for the noise of CPU time on a busy 2-core machine and
 * still catches a quadratic term worth a tenth of the per-image cost at the smallest size.
 *
 * Knobs: BENCH_SCALE_IMAGES (comma-separated counts, default 500,1000,2000).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { buildManyImages } from '../test/helpers/images.js';
import { startProxy } from '../test/helpers/proxy.js';
import { startRegistry } from '../test/helpers/registry.js';
import { median, processCpuSeconds, run } from './proc.js';

export const SCALE_COUNTS = (process.env['BENCH_SCALE_IMAGES'] ?? '500,1000,2000').split(',').map(Number);
/** Largest allowed ratio of CPU per image, largest count over smallest (see above). */
export const LINEARITY_TARGET = 1.25;

type Step = 'create' | 'verify' | 'push';

export interface ScaleRow {
  images: number;
  step: Step;
  /** Medians over the runs. */
  seconds: number;
  cpuS: number;
  /** The registry's CPU seconds during the push (median); undefined for other steps. */
  registryCpuS?: number;
  /** Requests the registry answered per image (push, counted at the proxy). */
  requestsPerImage?: number;
  rssMiB: number;
  /** Highest 1-minute load average seen at the end of the step's runs. */
  load: number;
}

export async function runScaleScenario(o: { work: string; bin: string; runs: number; log: (s: string) => void }): Promise<{ rows: ScaleRow[]; lines: string[] }> {
  const rows: ScaleRow[] = [];
  const reg = await startRegistry();
  const proxy = await startProxy(reg.host);
  try {
    const dir = path.join(o.work, 'scale');
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await run(['node', o.bin, 'keygen', '--out', path.join(dir, 'site')]);
    for (const n of SCALE_COUNTS) {
      o.log(`scale: generating ${n} images`);
      const layout = path.join(dir, `layout-${n}`);
      await buildManyImages(layout, n);
      const cfg = path.join(dir, `bundle-${n}.yaml`);
      await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nociLayouts:\n  - path: ${layout}\n`);
      const file = path.join(dir, `scale-${n}.airgap`);
      const pushArgv = (to: string): string[] => ['node', o.bin, 'push', file, '--to', to, '--key', path.join(dir, 'site.pub'), '--quiet', '--out-dir', path.join(dir, 'out')];
      const times: Record<Step, number[]> = { create: [], verify: [], push: [] };
      const cpu: Record<Step, number[]> = { create: [], verify: [], push: [] };
      const registryCpu: number[] = [];
      const rss: Record<Step, number> = { create: 0, verify: 0, push: 0 };
      const load: Record<Step, number> = { create: 0, verify: 0, push: 0 };
      for (let r = 0; r < o.runs; r++) {
        const steps: [Step, string[]][] = [
          ['create', ['node', o.bin, 'create', '-c', cfg, '-o', file, '--sign-key', path.join(dir, 'site.key'), '--force', '--quiet']],
          ['verify', ['node', o.bin, 'verify', file, '--key', path.join(dir, 'site.pub'), '--quiet']],
          ['push', pushArgv(`${reg.host}/run${r}-${n}`)],
        ];
        for (const [step, argv] of steps) {
          const before = processCpuSeconds(reg.pid);
          const res = await run(argv);
          if (step === 'push') registryCpu.push(processCpuSeconds(reg.pid) - before);
          times[step].push(res.ms);
          cpu[step].push(res.cpuS);
          rss[step] = Math.max(rss[step], res.rssKiB / 1024);
          load[step] = Math.max(load[step], loadavg()[0]!);
          o.log(`scale: ${n} images, ${step}: ${(res.ms / 1000).toFixed(2)} s, CPU ${res.cpuS.toFixed(2)} s, ${(res.rssKiB / 1024).toFixed(0)} MiB, load ${loadavg()[0]!.toFixed(2)}`);
        }
      }
      // One more push, untimed, through the counting proxy: requests per image.
      proxy.reset();
      await run(pushArgv(`${proxy.host}/counted-${n}`));
      const requestsPerImage = proxy.requests.length / n;
      o.log(`scale: ${n} images, push: ${proxy.requests.length} requests (${requestsPerImage.toFixed(2)} per image)`);
      for (const step of ['create', 'verify', 'push'] as const) {
        rows.push({
          images: n,
          step,
          seconds: median(times[step]) / 1000,
          cpuS: median(cpu[step]),
          ...(step === 'push' ? { registryCpuS: median(registryCpu), requestsPerImage } : {}),
          rssMiB: rss[step],
          load: load[step],
        });
      }
      await rm(layout, { recursive: true, force: true });
      await rm(file, { force: true });
    }
  } finally {
    await proxy.stop();
    await reg.stop();
  }
  return { rows, lines: scaleTable(rows) };
}

/** The table and the linearity figures, as markdown lines. */
export function scaleTable(rows: ScaleRow[]): string[] {
  const ms = (s: number, n: number): string => ((s * 1000) / n).toFixed(2);
  const lines = [
    '| images | step | CPU s (tool) | CPU ms per image | registry CPU s | requests per image | wall s | wall ms per image | load (1 min, highest) | peak RSS |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.images} | ${r.step} | ${r.cpuS.toFixed(2)} | ${ms(r.cpuS, r.images)} | ${r.registryCpuS !== undefined ? r.registryCpuS.toFixed(2) : ''} | ${r.requestsPerImage !== undefined ? r.requestsPerImage.toFixed(2) : ''} | ${r.seconds.toFixed(2)} | ${ms(r.seconds, r.images)} | ${r.load.toFixed(1)} | ${r.rssMiB.toFixed(0)} MiB |`,
    );
  }
  const counts = [...new Set(rows.map((r) => r.images))];
  const first = counts[0]!;
  const last = counts[counts.length - 1]!;
  if (first === last) return lines;
  lines.push('', `Linearity, ${last / first}x the images (${first} -> ${last}): CPU per image at ${last} over CPU per image at ${first}, target <= ${LINEARITY_TARGET}:`, '');
  for (const step of ['create', 'verify', 'push'] as const) {
    const a = rows.find((r) => r.images === first && r.step === step)!;
    const b = rows.find((r) => r.images === last && r.step === step)!;
    const per = (x: number, n: number): number => x / n;
    const ratio = per(b.cpuS, last) / per(a.cpuS, first);
    let line = `- ${step}: CPU per image ${ms(a.cpuS, first)} -> ${ms(b.cpuS, last)} ms, ratio ${ratio.toFixed(2)} (${ratio <= LINEARITY_TARGET ? 'linear' : 'NOT linear'})`;
    if (step === 'push') {
      const reg = per(b.registryCpuS!, last) / per(a.registryCpuS!, first);
      line += `; registry CPU per image ratio ${reg.toFixed(2)}; requests per image ${a.requestsPerImage!.toFixed(2)} -> ${b.requestsPerImage!.toFixed(2)}`;
    }
    line += `; wall per image ratio ${(per(b.seconds, last) / per(a.seconds, first)).toFixed(2)} (load ${a.load.toFixed(1)} and ${b.load.toFixed(1)})`;
    line += `; peak RSS ${a.rssMiB.toFixed(0)} -> ${b.rssMiB.toFixed(0)} MiB, ${(((b.rssMiB - a.rssMiB) * 1000) / (last - first)).toFixed(1)} MiB more per 1,000 images`;
    lines.push(line);
  }
  return lines;
}
