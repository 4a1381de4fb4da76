/**
 * The bench's WAN scenario (issue 9): the source registry behind a shaping TCP
 * proxy on loopback (round trip, per-connection rate, link rate), and, side by
 * side, medians of: `bundle create` through it; the skopeo way through it
 * (`skopeo sync` to a directory, then `tar | zstd -T0`); and the link floor:
 * unique blob bytes / link rate, with parallel `curl` of every unique blob
 * through the same proxy as a witness.
 *
 * Knobs: BENCH_WAN_SCALE (GiB of unique blobs, default 0.25), BENCH_WAN_RTT_MS (50),
 * BENCH_WAN_CONN_MBPS (16, MB/s per connection), BENCH_WAN_LINK_MBPS (100, MB/s of the link),
 * BENCH_WAN_CURLS (16 parallel curls), BENCH_WAN_CREATE_ARGS (extra create flags),
 * BENCH_WAN_TRACE=1 (print every request of the last bundle create up to its first
 * layer request, with times, as the proxy saw them; costs the proxy CPU).
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureDataset, IMAGE_REFS, type Dataset } from './dataset.js';
import { median, pipelineArgv, q, run, runSeq, show, type RunOutcome } from './proc.js';
import { startShaper, type TraceEvent } from './shaper.js';
import type { RunningRegistry } from '../test/helpers/registry.js';
import { MANIFEST_MEDIA_TYPES } from '../src/oci/media-types.js';
import { hashFile } from '../src/standalone/executable.js';

export const WAN = {
  scale: Number(process.env['BENCH_WAN_SCALE'] ?? '0.25'),
  rttMs: Number(process.env['BENCH_WAN_RTT_MS'] ?? '50'),
  connMBps: Number(process.env['BENCH_WAN_CONN_MBPS'] ?? '16'),
  linkMBps: Number(process.env['BENCH_WAN_LINK_MBPS'] ?? '100'),
  curls: Number(process.env['BENCH_WAN_CURLS'] ?? '16'),
  createArgs: (process.env['BENCH_WAN_CREATE_ARGS'] ?? '').split(' ').filter(Boolean),
  trace: process.env['BENCH_WAN_TRACE'] === '1',
};

export interface WanRow {
  what: string;
  bundle: string;
  base: string;
  ratio: number | null;
  paired?: number;
  target: string;
  pass: boolean | null;
}

export interface WanResult {
  rows: WanRow[];
  lines: string[];
}

interface BlobRef {
  repo: string;
  digest: string;
  size: number;
  manifest: boolean;
}

/** Every unique blob of the data set (manifests included) with a repository that has it. */
async function uniqueBlobs(layoutDir: string): Promise<BlobRef[]> {
  const read = async (digest: string): Promise<Record<string, unknown>> =>
    JSON.parse(await readFile(path.join(layoutDir, 'blobs', 'sha256', digest.slice(7)), 'utf8')) as Record<string, unknown>;
  const index = JSON.parse(await readFile(path.join(layoutDir, 'index.json'), 'utf8')) as { manifests: { digest: string; size: number; annotations?: Record<string, string> }[] };
  const out = new Map<string, BlobRef>();
  const walk = async (repo: string, digest: string, size: number): Promise<void> => {
    out.set(digest, { repo, digest, size, manifest: true });
    const m = await read(digest);
    for (const d of (m['manifests'] as { digest: string; size: number }[] | undefined) ?? []) await walk(repo, d.digest, d.size);
    const blobs = [m['config'], ...((m['layers'] as unknown[] | undefined) ?? [])].filter(Boolean) as { digest: string; size: number }[];
    for (const b of blobs) if (!out.has(b.digest)) out.set(b.digest, { repo, digest: b.digest, size: b.size, manifest: false });
  };
  for (const e of index.manifests) {
    const ref = e.annotations?.['org.opencontainers.image.ref.name'];
    const img = IMAGE_REFS.find((i) => i.ref === ref);
    if (img) await walk(img.repo, e.digest, e.size);
  }
  return [...out.values()];
}

/** Time before the first blob bytes, time the link ran at >= 90 % of its rate, and the rest. */
function linkProfile(buckets: number[], totalMs: number, rate: number): string {
  const perBucket = rate / 10;
  const first = buckets.findIndex((b) => b > perBucket * 0.05);
  const last = buckets.length - 1 - [...buckets].reverse().findIndex((b) => b > perBucket * 0.05);
  const full = buckets.filter((b) => b >= perBucket * 0.9).length;
  const busy = buckets.slice(first, last + 1);
  const mean = busy.reduce((n, b) => n + b, 0) / Math.max(1, busy.length) / perBucket;
  return (
    `${((first * 100) / 1000).toFixed(1)} s before blob bytes flowed (start-up, resolving, manifests), ` +
    `${((busy.length * 100) / 1000).toFixed(1)} s of transfer at ${(mean * 100).toFixed(0)} % of the link on average ` +
    `(${((full * 100) / 1000).toFixed(1)} s at >= 90 %), ${Math.max(0, totalMs / 1000 - ((last + 1) * 100) / 1000).toFixed(1)} s after the last byte (manifest, signature, fsync, exit)`
  );
}

/** The trace up to and with the first blob requests (the round trips before the link fills). */
function requestChain(events: TraceEvent[]): string[] {
  const firstBlob = events.findIndex((e) => /^GET \S+\/blobs\//.test(e.what));
  const until = firstBlob < 0 ? events.length : firstBlob + 1;
  return events.slice(0, until).map((e) => `${e.t.toFixed(0).padStart(6)} c${String(e.conn).padEnd(3)} ${e.what}`);
}

const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(', ');

async function sha256File(file: string): Promise<string> {
  return (await hashFile(file)).digest.slice('sha256:'.length);
}

export async function runWanScenario(opts: {
  cache: string;
  work: string;
  runs: number;
  bin: string;
  log: (s: string) => void;
  startSource: (ds: Dataset, scale: number) => Promise<{ reg: RunningRegistry }>;
}): Promise<WanResult> {
  const { log, runs, bin } = opts;
  const MB = (b: number): string => (b / 1e6).toFixed(1);
  const sec = (ms: number): string => (ms / 1000).toFixed(2);
  const ds = await ensureDataset(opts.cache, WAN.scale, log);
  const { reg } = await opts.startSource(ds, WAN.scale);
  const shaper = await startShaper({ target: reg.host, rttMs: WAN.rttMs, perConnection: WAN.connMBps * 1e6, link: WAN.linkMBps * 1e6, trace: WAN.trace });
  const work = path.join(opts.work, 'wan');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    const blobs = await uniqueBlobs(ds.layoutDir);
    const cfg = path.join(work, 'bundle.yaml');
    await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n${IMAGE_REFS.map((i) => `  - ${shaper.host}/${i.repo}:${i.tag}\n`).join('')}`);
    const airgap = path.join(work, 'wan.airgap');
    const skDir = path.join(work, 'skopeo-dir');
    const skArchive = path.join(work, 'skopeo.tar.zst');
    const env = { ...process.env, SOURCE_DATE_EPOCH: '1767225600' };
    const cmd = {
      create: ['node', bin, 'create', '-c', cfg, '-o', airgap, '--force', '--json', '--quiet', ...WAN.createArgs],
      skopeoSyncs: IMAGE_REFS.map((i) => ['skopeo', 'sync', '--all', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', `${shaper.host}/${i.repo}:${i.tag}`, skDir]),
      skopeoPack: pipelineArgv(`tar -C ${q(skDir)} -cf - . | zstd -T0 -q -f -o ${q(skArchive)}`),
      // Manifests by digest from /manifests/ (with an Accept for every manifest type), the rest from /blobs/.
      curl: [
        'curl', '-sS', '--fail', '--parallel', '--parallel-max', String(WAN.curls), '-H', `Accept: ${MANIFEST_ACCEPT}`,
        ...blobs.flatMap((b) => ['-o', '/dev/null', `http://${shaper.host}/v2/${b.repo}/${b.manifest ? 'manifests' : 'blobs'}/${b.digest}`]),
      ],
    };
    const s = { create: [] as RunOutcome[], skopeo: [] as RunOutcome[], curl: [] as RunOutcome[] };
    const hashes: string[] = [];
    /** Where the time of the last bundle create went, from the link's point of view. */
    let createProfile = '';
    /** Its requests up to the first layer's, when traced. */
    let createTrace: string[] = [];
    const contenders = {
      async create(): Promise<void> {
        await rm(airgap, { force: true });
        shaper.mark();
        const r = await run(cmd.create, { env });
        createProfile = linkProfile(shaper.timeline(), r.ms, WAN.linkMBps * 1e6);
        if (WAN.trace) createTrace = requestChain(shaper.trace());
        s.create.push(r);
        hashes.push(await sha256File(airgap));
        log(`  WAN bundle create     ${sec(r.ms).padStart(7)} s  ${MB(r.rssKiB * 1024).padStart(7)} MB RSS  -> ${MB((await stat(airgap)).size)} MB`);
      },
      async skopeo(): Promise<void> {
        await rm(skDir, { recursive: true, force: true });
        await rm(skArchive, { force: true });
        await mkdir(skDir, { recursive: true });
        const r = await runSeq([...cmd.skopeoSyncs, cmd.skopeoPack]);
        s.skopeo.push(r);
        await rm(skDir, { recursive: true, force: true });
        log(`  WAN skopeo sync+tar   ${sec(r.ms).padStart(7)} s  ${MB(r.rssKiB * 1024).padStart(7)} MB RSS`);
      },
      async curl(): Promise<void> {
        const before = shaper.bytesDown();
        const r = await run(cmd.curl);
        s.curl.push(r);
        log(`  WAN ${WAN.curls} parallel curls ${sec(r.ms).padStart(7)} s  (${MB(shaper.bytesDown() - before)} MB through the proxy)`);
      },
    };
    for (let rep = 0; rep < runs; rep++) {
      log(`WAN repetition ${rep + 1}/${runs}`);
      const order = rep % 2 === 0 ? [contenders.create, contenders.skopeo, contenders.curl] : [contenders.curl, contenders.skopeo, contenders.create];
      for (const c of order) await c();
    }
    const m = (xs: RunOutcome[]): number => median(xs.map((x) => x.ms));
    const floorMs = (ds.uniqueBlobBytes / (WAN.linkMBps * 1e6)) * 1000;
    const rss = Math.max(...s.create.map((x) => x.rssKiB)) * 1024;
    const identical = hashes.every((h) => h === hashes[0]);
    const rows: WanRow[] = [
      {
        what: `WAN create: bundle create / link floor (unique bytes / link rate)`,
        bundle: `${sec(m(s.create))} s`,
        base: `${sec(floorMs)} s`,
        ratio: m(s.create) / floorMs,
        target: '<= 1.3',
        pass: m(s.create) / floorMs <= 1.3,
      },
      {
        what: 'WAN create: bundle create / skopeo sync + tar | zstd -T0',
        bundle: `${sec(m(s.create))} s`,
        base: `${sec(m(s.skopeo))} s`,
        ratio: m(s.create) / m(s.skopeo),
        paired: median(s.create.map((x, i) => x.ms / s.skopeo[i]!.ms)),
        target: '<= 0.2',
        pass: m(s.create) / m(s.skopeo) <= 0.2,
      },
      { what: `WAN witness: bundle create / ${WAN.curls} parallel curls of every unique blob`, bundle: `${sec(m(s.create))} s`, base: `${sec(m(s.curl))} s`, ratio: m(s.create) / m(s.curl), target: '(info)', pass: null },
      { what: `WAN: bundle bytes of ${runs} runs, same inputs and SOURCE_DATE_EPOCH`, bundle: identical ? 'identical' : 'DIFFERENT', base: '', ratio: null, target: 'identical', pass: identical },
      { what: 'peak RSS: WAN bundle create (16 downloads in flight)', bundle: `${MB(rss)} MB`, base: '', ratio: null, target: '<= 200 MB', pass: rss <= 200e6 },
    ];
    const all = (xs: RunOutcome[]): string => xs.map((x) => sec(x.ms)).join(', ');
    const lines = [
      `WAN scenario: the source registry behind bench/shaper.ts on loopback: ${WAN.rttMs} ms round trip, ${WAN.connMBps} MB/s per connection, ${WAN.linkMBps} MB/s link; ` +
        `BENCH_WAN_SCALE=${WAN.scale}: ${ds.blobCount} unique blobs, ${MB(ds.uniqueBlobBytes)} MB (largest layer ${MB(ds.biggestLayer)} MB); link floor ${sec(floorMs)} s.`,
      '',
      `- WAN bundle create: ${all(s.create)}; skopeo: ${all(s.skopeo)}; ${WAN.curls} parallel curls: ${all(s.curl)}`,
      `- where the last WAN bundle create spent its time, seen at the link (100 ms buckets of bytes the proxy delivered): ${createProfile}`,
      ...(createTrace.length ? ['', 'Its requests up to the first layer (ms since it started, connection, request or answer):', '', '```', ...createTrace, '```'] : []),
      '',
      '```sh',
      `# WAN (PROXY = the shaping proxy in front of the source registry; SOURCE_DATE_EPOCH=${env.SOURCE_DATE_EPOCH})`,
      show(cmd.create),
      ...cmd.skopeoSyncs.map(show),
      show(cmd.skopeoPack),
      `curl -sS --fail --parallel --parallel-max ${WAN.curls} -H 'Accept: <manifest types>' -o /dev/null http://PROXY/v2/REPO/{blobs,manifests}/DIGEST ...   # every unique blob and manifest, ${blobs.length} URLs`,
      '```',
    ].map((l) => l.split(shaper.host).join('PROXY'));
    return { rows, lines };
  } finally {
    await shaper.stop();
    await reg.stop();
    await rm(work, { recursive: true, force: true });
  }
}
