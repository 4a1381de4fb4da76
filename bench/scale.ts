/**
 * The bench's scale scenario (issue 11): many small images (test/helpers/images.ts
 * buildManyImages: a shared base layer and a small layer of their own each) through
 * `bundle create`, `verify` and `push` into a Docker Distribution registry on loopback, at
 * 500, 1,000 and 2,000 images: time and peak RSS of each, and time per image, which stays
 * flat when time grows linearly with the image count.
 *
 * Knobs: BENCH_SCALE_IMAGES (comma-separated counts, default 500,1000,2000).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildManyImages } from '../test/helpers/images.js';
import { startRegistry } from '../test/helpers/registry.js';
import { median, run } from './proc.js';

export const SCALE_COUNTS = (process.env['BENCH_SCALE_IMAGES'] ?? '500,1000,2000').split(',').map(Number);

export interface ScaleRow {
  images: number;
  step: 'create' | 'verify' | 'push';
  seconds: number;
  msPerImage: number;
  rssMiB: number;
}

export async function runScaleScenario(o: { work: string; bin: string; runs: number; log: (s: string) => void }): Promise<{ rows: ScaleRow[]; lines: string[] }> {
  const rows: ScaleRow[] = [];
  const reg = await startRegistry();
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
      const times: Record<ScaleRow['step'], number[]> = { create: [], verify: [], push: [] };
      const rss: Record<ScaleRow['step'], number> = { create: 0, verify: 0, push: 0 };
      for (let r = 0; r < o.runs; r++) {
        const steps: [ScaleRow['step'], string[]][] = [
          ['create', ['node', o.bin, 'create', '-c', cfg, '-o', file, '--sign-key', path.join(dir, 'site.key'), '--force', '--quiet']],
          ['verify', ['node', o.bin, 'verify', file, '--key', path.join(dir, 'site.pub'), '--quiet']],
          ['push', ['node', o.bin, 'push', file, '--to', `${reg.host}/run${r}-${n}`, '--key', path.join(dir, 'site.pub'), '--quiet', '--out-dir', path.join(dir, 'out')]],
        ];
        for (const [step, argv] of steps) {
          const res = await run(argv);
          times[step].push(res.ms);
          rss[step] = Math.max(rss[step], res.rssKiB / 1024);
          o.log(`scale: ${n} images, ${step}: ${(res.ms / 1000).toFixed(2)} s, ${(res.rssKiB / 1024).toFixed(0)} MiB`);
        }
      }
      for (const step of ['create', 'verify', 'push'] as const) {
        const ms = median(times[step]);
        rows.push({ images: n, step, seconds: ms / 1000, msPerImage: ms / n, rssMiB: rss[step] });
      }
      await rm(layout, { recursive: true, force: true });
      await rm(file, { force: true });
    }
  } finally {
    await reg.stop();
  }
  const lines = ['| images | step | seconds (median) | ms per image | peak RSS |', '|---:|---|---:|---:|---:|'];
  for (const r of rows) lines.push(`| ${r.images} | ${r.step} | ${r.seconds.toFixed(2)} | ${r.msPerImage.toFixed(2)} | ${r.rssMiB.toFixed(0)} MiB |`);
  const first = SCALE_COUNTS[0]!;
  const last = SCALE_COUNTS[SCALE_COUNTS.length - 1]!;
  lines.push('');
  for (const step of ['create', 'verify', 'push'] as const) {
    const a = rows.find((r) => r.images === first && r.step === step)!;
    const b = rows.find((r) => r.images === last && r.step === step)!;
    lines.push(`- ${step}: ${last / first}x the images took ${(b.seconds / a.seconds).toFixed(2)}x the time (linear: ${last / first}x); per image ${a.msPerImage.toFixed(2)} -> ${b.msPerImage.toFixed(2)} ms`);
  }
  return { rows, lines };
}
