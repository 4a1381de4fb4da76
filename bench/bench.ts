/**
 * `npm run bench` (issue 3): bundle vs the skopeo way, side by side, on a realistic
 * image set (>= 1 GiB of unique gzip layers from real files, cached in bench/cache/).
 *
 * Knobs: BENCH_SCALE (GiB of unique blobs, default 1), BENCH_RUNS (repetitions, default 3),
 * The serve scenario fetches every blob from `bundle serve` and from docker-registry with parallel curls.
 * BENCH_PROFILE=1 (also run bundle create/verify/push once under `node --cpu-prof` and
 * summarise the top self-time functions into bench/profile.md), BENCH_KEEP=1 (keep bench/cache/work),
 * BENCH_ONLY=wan or BENCH_ONLY=loopback (one scenario only; results.md is written only by a full run),
 * BENCH_ONLY=scale (many small images: bench/scale.ts; run on its own, it prints its table).
 * The WAN scenario's knobs are in bench/wan.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRegistry, type RunningRegistry } from '../test/helpers/registry.js';
import { MANIFEST_MEDIA_TYPES } from '../src/oci/media-types.js';
import { ensureDataset, IMAGE_REFS, type Dataset } from './dataset.js';
import { formatProfile, summarizeProfile } from './profile-summary.js';
import { ensureTools, median, pipelineArgv, processCpuSeconds, q, run, runSeq, show, type RunOutcome } from './proc.js';
import { runWanScenario, type WanResult } from './wan.js';
import { runScaleScenario } from './scale.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'bundle.js');
const BENCH_DIR = path.join(ROOT, 'bench');
const CACHE = path.join(BENCH_DIR, 'cache');
const WORK = path.join(CACHE, 'work');

const SCALE = Number(process.env['BENCH_SCALE'] ?? '1');
const RUNS = Math.max(1, Math.floor(Number(process.env['BENCH_RUNS'] ?? '3')));
const PROFILE = process.env['BENCH_PROFILE'] === '1';
const KEEP = process.env['BENCH_KEEP'] === '1';
/** Clients fetching at once in the serve scenario. */
const SERVE_PARALLEL = 8;
const ONLY = process.env['BENCH_ONLY'];
if (!(SCALE > 0)) throw new Error('BENCH_SCALE must be a positive number of GiB');

const t0 = performance.now();
const loadAtStart = loadavg()[0]!;
const log = (s: string): void => {
  process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${s}\n`);
};
const rel = (p: string): string => path.relative(ROOT, p) || '.';
const MB = (b: number): string => (b / 1e6).toFixed(1);
const sec = (ms: number): string => (ms / 1000).toFixed(2);

const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(', ');

/** HTTP status of HEAD /v2/<repo>/manifests/<ref> on a loopback registry. */
function headManifest(host: string, repo: string, ref: string): Promise<number> {
  const [hostname, port] = host.split(':') as [string, string];
  return new Promise((resolve) => {
    const req = http.request({ host: hostname, port: Number(port), method: 'HEAD', path: `/v2/${repo}/manifests/${ref}`, headers: { Accept: MANIFEST_ACCEPT }, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

async function assertHasImages(host: string, prefix: string, what: string): Promise<void> {
  for (const img of IMAGE_REFS) {
    const repo = `${prefix}${img.repo}`;
    const status = await headManifest(host, repo, img.tag);
    if (status !== 200) throw new Error(`${what}: ${host}/${repo}:${img.tag} is missing (HTTP ${status})`);
  }
}

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += await dirBytes(p);
    else if (e.isFile()) n += (await stat(p)).size;
  }
  return n;
}

/** Source registry: seeded with skopeo once per data set; its storage is kept (hard links) in the cache. */
async function startSource(ds: Dataset, scale = SCALE): Promise<{ reg: RunningRegistry; seedSeconds: number | null }> {
  const reg = await startRegistry();
  const snapshot = path.join(CACHE, `source-storage-scale-${scale}-${ds.id}`);
  // Snapshots of older data sets at this scale are stale.
  for (const n of await readdir(CACHE)) {
    if (n.startsWith(`source-storage-scale-${scale}-`) && path.join(CACHE, n) !== snapshot) await rm(path.join(CACHE, n), { recursive: true, force: true });
  }
  const storage = path.join(reg.dataDir, 'storage');
  if (existsSync(snapshot)) {
    await mkdir(storage, { recursive: true });
    await run(['cp', '-al', `${snapshot}/.`, `${storage}/`]);
    try {
      await assertHasImages(reg.host, '', 'cached source registry');
      log(`source registry ${reg.host}: reusing seeded storage ${rel(snapshot)}`);
      return { reg, seedSeconds: null };
    } catch {
      await rm(snapshot, { recursive: true, force: true });
      await rm(storage, { recursive: true, force: true });
    }
  }
  log(`source registry ${reg.host}: seeding with skopeo copy --all`);
  const t = performance.now();
  for (const img of IMAGE_REFS) {
    await run(['skopeo', 'copy', '--quiet', '--all', '--dest-tls-verify=false', `oci:${ds.layoutDir}:${img.ref}`, `docker://${reg.host}/${img.repo}:${img.tag}`]);
  }
  const seedSeconds = (performance.now() - t) / 1000;
  await assertHasImages(reg.host, '', 'seeded source registry');
  const tmp = `${snapshot}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  const cp = await run(['cp', '-al', storage, tmp], { allowFail: true });
  if (cp.code !== 0) await run(['cp', '-a', storage, tmp]);
  await rename(tmp, snapshot);
  log(`seeded in ${seedSeconds.toFixed(1)} s`);
  return { reg, seedSeconds };
}

interface BlobRef {
  repo: string;
  digest: string;
  size: number;
}

/** Every layer and config of the bench images (each digest once, in the first repository that has it), read from a registry. */
async function blobList(host: string): Promise<BlobRef[]> {
  const seen = new Map<string, BlobRef>();
  const get = async (repo: string, ref: string): Promise<Record<string, unknown>> => {
    const res = await fetch(`http://${host}/v2/${repo}/manifests/${ref}`, { headers: { Accept: MANIFEST_ACCEPT } });
    if (!res.ok) throw new Error(`${host}/${repo}:${ref}: HTTP ${res.status}`);
    return (await res.json()) as Record<string, unknown>;
  };
  const walk = async (repo: string, ref: string): Promise<void> => {
    const m = await get(repo, ref);
    for (const child of (m.manifests as { digest: string }[] | undefined) ?? []) await walk(repo, child.digest);
    const blobs = [m.config, ...((m.layers as unknown[] | undefined) ?? [])].filter(Boolean) as { digest: string; size: number }[];
    for (const b of blobs) if (!seen.has(b.digest)) seen.set(b.digest, { repo, digest: b.digest, size: b.size });
  };
  for (const img of IMAGE_REFS) await walk(img.repo, img.tag);
  return [...seen.values()];
}

/** `bundle serve` in the background on a free loopback port; resolves once it listens. */
async function startBundleServe(argv: string[]): Promise<{ host: string; child: ChildProcess; peakRss(): number; stop(): Promise<void> }> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const host = await new Promise<string>((resolve, reject) => {
    const onData = (c: Buffer): void => {
      out = (out + c.toString()).slice(-10_000);
      const m = /"address":"(127\.0\.0\.1:\d+)"/.exec(out);
      if (m) {
        child.stdout!.off('data', onData);
        child.stdout!.resume(); // the request log is drained, not kept
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', (code) => reject(new Error(`bundle serve exited (${code}): ${out}`)));
  });
  return {
    host,
    child,
    peakRss: () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

interface Samples {
  bundleCreate: RunOutcome[];
  skopeoCreate: RunOutcome[];
  bundleVerify: RunOutcome[];
  opensslVerify: RunOutcome[];
  bundlePush: RunOutcome[];
  bundleRepush: RunOutcome[];
  skopeoPush: RunOutcome[];
  bundleServe: RunOutcome[];
  registryServe: RunOutcome[];
  /** CPU seconds the registry used during each run: the source for creates, the target for pushes. */
  registryCpu: Record<'bundleCreate' | 'skopeoCreate' | 'bundlePush' | 'skopeoPush', number[]>;
}

/**
 * What bounds create and push on this machine: the client and the registry it talks to share
 * the CPUs, so (client CPU + registry CPU) / CPUs is a floor no client can beat without
 * spending less CPU itself or making the registry spend less.
 */
function cpuFloorLines(s: Samples): string[] {
  const n = cpus().length;
  const med = (xs: number[]): number => median(xs.filter((x) => Number.isFinite(x)));
  const line = (what: string, client: RunOutcome[], reg: number[]): string => {
    const c = median(client.map((x) => x.cpuS));
    const r = med(reg);
    return `${what}: client ${c.toFixed(2)} s + registry ${r.toFixed(2)} s = ${(c + r).toFixed(2)} s of CPU, at least ${((c + r) / n).toFixed(2)} s of wall time on ${n} CPUs (took ${(median(client.map((x) => x.ms)) / 1000).toFixed(2)} s)`;
  };
  return [
    "CPU time of the registry on the other end (median; /proc of the docker-registry process: the source during a create, the empty target during a push), beside the client's, and the wall-time floor the two give on this machine's CPUs:",
    '',
    `- ${line('bundle create', s.bundleCreate, s.registryCpu.bundleCreate)}`,
    `- ${line('skopeo create', s.skopeoCreate, s.registryCpu.skopeoCreate)}`,
    `- ${line('bundle push', s.bundlePush, s.registryCpu.bundlePush)}`,
    `- ${line('skopeo push', s.skopeoPush, s.registryCpu.skopeoPush)}`,
  ];
}

async function main(): Promise<void> {
  ensureTools(log);
  await mkdir(CACHE, { recursive: true });
  if (ONLY === 'scale') {
    await mkdir(WORK, { recursive: true });
    const scale = await runScaleScenario({ work: WORK, bin: BIN, runs: RUNS, log });
    process.stdout.write(`\n${scale.lines.join('\n')}\n`);
    return;
  }
  let wan: WanResult | undefined;
  if (ONLY !== 'loopback') {
    await mkdir(WORK, { recursive: true });
    wan = await runWanScenario({ cache: CACHE, work: WORK, runs: RUNS, bin: BIN, log, startSource });
    if (ONLY === 'wan') {
      process.stdout.write(`\n${formatRows(wan.rows)}\n\n${wan.lines.join('\n')}\n`);
      return;
    }
  }
  const ds = await ensureDataset(CACHE, SCALE, log);
  await rm(WORK, { recursive: true, force: true });
  await mkdir(WORK, { recursive: true });

  const { reg: src, seedSeconds } = await startSource(ds);
  const registries: RunningRegistry[] = [src];
  let serveServer: Awaited<ReturnType<typeof startBundleServe>> | undefined;
  const cleanup = async (): Promise<void> => {
    await serveServer?.stop();
    for (const r of registries) await r.stop().catch(() => undefined);
  };
  try {
    const keyPrefix = path.join(WORK, 'bench');
    await run(['node', BIN, 'keygen', '--out', keyPrefix]);
    const cfg = path.join(WORK, 'bundle.yaml');
    await writeFile(
      cfg,
      `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n${IMAGE_REFS.map((i) => `  - ${src.host}/${i.repo}:${i.tag}\n`).join('')}`,
    );
    const airgap = path.join(WORK, 'bench.airgap');
    const skDir = path.join(WORK, 'skopeo-dir');
    const skArchive = path.join(WORK, 'skopeo.tar.zst');
    const skUnpack = path.join(WORK, 'skopeo-unpack');
    const pushOut = path.join(WORK, 'push-out');

    const cmd = {
      bundleCreate: ['node', BIN, 'create', '-c', cfg, '-o', airgap, '--sign-key', `${keyPrefix}.key`, '--force', '--json'],
      skopeoSyncs: IMAGE_REFS.map((i) => ['skopeo', 'sync', '--all', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', `${src.host}/${i.repo}:${i.tag}`, skDir]),
      skopeoPack: pipelineArgv(`tar -C ${q(skDir)} -cf - . | zstd -T0 -q -f -o ${q(skArchive)}`),
      bundleVerify: ['node', BIN, 'verify', airgap, '--key', `${keyPrefix}.pub`, '--json'],
      openssl: ['openssl', 'dgst', '-sha256', airgap],
      bundlePush: (host: string) => ['node', BIN, 'push', airgap, '--to', `${host}/mirror`, '--key', `${keyPrefix}.pub`, '--json', '--out-dir', pushOut],
      skopeoUnpack: pipelineArgv(`zstd -dc ${q(skArchive)} | tar -C ${q(skUnpack)} -xf -`),
      skopeoPushSync: (host: string) => ['skopeo', 'sync', '--all', '--src', 'dir', '--dest', 'docker', '--dest-tls-verify=false', skUnpack, `${host}/mirror/bench`],
      bundleServe: ['node', BIN, 'serve', airgap, '--key', `${keyPrefix}.pub`, '--listen', '127.0.0.1:0', '--log-format', 'json'],
      // The same blobs from either server: SERVE_PARALLEL curls at once, each size checked.
      fetchBlobs: (list: string) => pipelineArgv(`xargs -P ${SERVE_PARALLEL} -n 1 curl -sf -o /dev/null -w '%{size_download}\\n' < ${q(list)}`),
    };
    let serveBlobs: BlobRef[] = [];
    let servePeakRss = 0;

    const s: Samples = { bundleCreate: [], skopeoCreate: [], bundleVerify: [], opensslVerify: [], bundlePush: [], bundleRepush: [], skopeoPush: [], bundleServe: [], registryServe: [], registryCpu: { bundleCreate: [], skopeoCreate: [], bundlePush: [], skopeoPush: [] } };
    let bundleSize = 0;
    let skopeoSize = 0;
    let bundleContentBytes = 0;
    let skopeoDirBytes = 0;
    let repushStats = '';

    const fetchAll = async (host: string, who: string): Promise<RunOutcome> => {
      if (serveBlobs.length === 0) serveBlobs = await blobList(src.host);
      const list = path.join(WORK, `urls-${host.replace(/\W/g, '_')}.txt`);
      await writeFile(list, serveBlobs.map((b) => `http://${host}/v2/${b.repo}/blobs/${b.digest}\n`).join(''));
      const r = await run(cmd.fetchBlobs(list));
      const got = r.stdout.trim().split('\n').map(Number).reduce((a, b) => a + b, 0);
      const want = serveBlobs.reduce((a, b) => a + b.size, 0);
      if (got !== want) throw new Error(`${who}: fetched ${got} bytes, expected ${want}`);
      log(`  ${`serve: ${who}`.padEnd(20)} ${sec(r.ms).padStart(7)} s  ${MB(want).padStart(7)} MB in ${serveBlobs.length} blobs`);
      return r;
    };

    const contenders = {
      async bundleCreate(): Promise<void> {
        await rm(airgap, { force: true });
        const cpu0 = processCpuSeconds(src.pid);
        const r = await run(cmd.bundleCreate);
        s.registryCpu.bundleCreate.push(processCpuSeconds(src.pid) - cpu0);
        s.bundleCreate.push(r);
        bundleSize = (await stat(airgap)).size;
        bundleContentBytes = (JSON.parse(r.stdout) as { contentBytes: number }).contentBytes;
        log(`  bundle create        ${sec(r.ms).padStart(7)} s  ${MB(r.rssKiB * 1024).padStart(7)} MB RSS  -> ${MB(bundleSize)} MB`);
      },
      async skopeoCreate(): Promise<void> {
        await rm(skDir, { recursive: true, force: true });
        await rm(skArchive, { force: true });
        await mkdir(skDir, { recursive: true });
        const cpu0 = processCpuSeconds(src.pid);
        const r = await runSeq([...cmd.skopeoSyncs, cmd.skopeoPack]);
        s.registryCpu.skopeoCreate.push(processCpuSeconds(src.pid) - cpu0);
        s.skopeoCreate.push(r);
        skopeoSize = (await stat(skArchive)).size;
        skopeoDirBytes = await dirBytes(skDir);
        await rm(skDir, { recursive: true, force: true });
        log(`  skopeo sync+tar|zstd ${sec(r.ms).padStart(7)} s  ${MB(r.rssKiB * 1024).padStart(7)} MB RSS  -> ${MB(skopeoSize)} MB`);
      },
      async bundleVerify(): Promise<void> {
        const r = await run(cmd.bundleVerify);
        s.bundleVerify.push(r);
        log(`  bundle verify        ${sec(r.ms).padStart(7)} s  ${MB(r.rssKiB * 1024).padStart(7)} MB RSS`);
      },
      async opensslVerify(): Promise<void> {
        const r = await run(cmd.openssl);
        s.opensslVerify.push(r);
        log(`  openssl dgst -sha256 ${sec(r.ms).padStart(7)} s  ${MB(r.rssKiB * 1024).padStart(7)} MB RSS`);
      },
      async bundlePush(check: boolean): Promise<void> {
        const target = await startRegistry();
        registries.push(target);
        try {
          const cpu0 = processCpuSeconds(target.pid);
          const r = await run(cmd.bundlePush(target.host));
          s.registryCpu.bundlePush.push(processCpuSeconds(target.pid) - cpu0);
          s.bundlePush.push(r);
          log(`  bundle push (empty)  ${sec(r.ms).padStart(7)} s  ${MB(r.rssKiB * 1024).padStart(7)} MB RSS`);
          if (check) await assertHasImages(target.host, 'mirror/', 'bundle push');
          const r2 = await run(cmd.bundlePush(target.host));
          s.bundleRepush.push(r2);
          const st = (JSON.parse(r2.stdout) as { stats?: Record<string, number> }).stats;
          repushStats = st ? Object.entries(st).map(([k, v]) => `${k}=${v}`).join(' ') : '';
          log(`  bundle re-push       ${sec(r2.ms).padStart(7)} s  ${MB(r2.rssKiB * 1024).padStart(7)} MB RSS  (${repushStats})`);
        } finally {
          await target.stop();
          registries.splice(registries.indexOf(target), 1);
        }
      },
      async skopeoPush(check: boolean): Promise<void> {
        const target = await startRegistry();
        registries.push(target);
        try {
          await rm(skUnpack, { recursive: true, force: true });
          await mkdir(skUnpack, { recursive: true });
          const cpu0 = processCpuSeconds(target.pid);
          const r = await runSeq([cmd.skopeoUnpack, cmd.skopeoPushSync(target.host)]);
          s.registryCpu.skopeoPush.push(processCpuSeconds(target.pid) - cpu0);
          s.skopeoPush.push(r);
          log(`  skopeo unpack+sync   ${sec(r.ms).padStart(7)} s  ${MB(r.rssKiB * 1024).padStart(7)} MB RSS`);
          if (check) await assertHasImages(target.host, 'mirror/', 'skopeo sync');
        } finally {
          await rm(skUnpack, { recursive: true, force: true });
          await target.stop();
          registries.splice(registries.indexOf(target), 1);
        }
      },
      async bundleServe(): Promise<void> {
        serveServer ??= await startBundleServe(cmd.bundleServe);
        s.bundleServe.push(await fetchAll(serveServer.host, 'bundle serve'));
        servePeakRss = serveServer.peakRss();
      },
      async registryServe(): Promise<void> {
        s.registryServe.push(await fetchAll(src.host, 'docker-registry'));
      },
    };

    for (let rep = 0; rep < RUNS; rep++) {
      const first = rep % 2 === 0; // alternate who goes first, so caches treat both alike
      log(`repetition ${rep + 1}/${RUNS} (${first ? 'bundle' : 'skopeo/openssl'} first)`);
      const pair = async (a: () => Promise<void>, b: () => Promise<void>): Promise<void> => {
        if (first) {
          await a();
          await b();
        } else {
          await b();
          await a();
        }
      };
      await pair(contenders.bundleCreate, contenders.skopeoCreate);
      await pair(contenders.bundleVerify, contenders.opensslVerify);
      await pair(() => contenders.bundlePush(rep === 0), () => contenders.skopeoPush(rep === 0));
      await pair(contenders.bundleServe, contenders.registryServe);
    }
    await serveServer?.stop();

    let profileMd = '';
    if (PROFILE) profileMd = await profile(src.host, cmd, registries);

    const m = (xs: RunOutcome[]): number => median(xs.map((x) => x.ms));
    const rss = (xs: RunOutcome[]): number => Math.max(...xs.map((x) => x.rssKiB)) * 1024;
    const ratioRow = (what: string, a: RunOutcome[], b: RunOutcome[], limit: number): Row => {
      const ratio = m(a) / m(b);
      // Each repetition's pair ran back to back: the median of per-repetition ratios resists load drifting over the run.
      const paired = median(a.map((x, i) => x.ms / b[i]!.ms));
      return { what, bundle: `${sec(m(a))} s`, base: `${sec(m(b))} s`, ratio, paired, target: `<= ${limit}`, pass: ratio <= limit };
    };
    const rows: Row[] = [
      ratioRow('create: bundle create / skopeo sync + tar | zstd -T0', s.bundleCreate, s.skopeoCreate, 0.2),
      ratioRow('push into empty registry: bundle push / zstd -dc | tar x + skopeo sync', s.bundlePush, s.skopeoPush, 0.25),
      ratioRow('re-push onto a full registry / first bundle push', s.bundleRepush, s.bundlePush, 0.05),
      ratioRow('verify: bundle verify / openssl dgst -sha256', s.bundleVerify, s.opensslVerify, 1.2),
      {
        what: 'archive size: .airgap bytes / sum of unique blob bytes',
        bundle: `${MB(bundleSize)} MB`,
        base: `${MB(ds.uniqueBlobBytes)} MB`,
        ratio: bundleSize / ds.uniqueBlobBytes,
        target: '<= 1.01',
        pass: bundleSize / ds.uniqueBlobBytes <= 1.01,
      },
      {
        ...ratioRow(`serve: ${SERVE_PARALLEL} parallel curls of every blob, bundle serve / docker-registry`, s.bundleServe, s.registryServe, 0),
        target: '(info)',
        pass: null,
      },
      { what: 'archive size: .airgap bytes / skopeo .tar.zst bytes', bundle: `${MB(bundleSize)} MB`, base: `${MB(skopeoSize)} MB`, ratio: bundleSize / skopeoSize, target: '(info)', pass: null },
    ];
    const rssLimit = 200e6;
    const rssRow = (what: string, xs: RunOutcome[], base: RunOutcome[] | null, limit: boolean): Row => ({
      what,
      bundle: `${MB(rss(xs))} MB`,
      base: base ? `${MB(rss(base))} MB` : '',
      ratio: null,
      target: limit ? '<= 200 MB' : '(info)',
      pass: limit ? rss(xs) <= rssLimit : null,
    });
    rows.push(
      rssRow('peak RSS: bundle create (vs skopeo sync, tar, zstd: max)', s.bundleCreate, s.skopeoCreate, true),
      rssRow('peak RSS: bundle verify (vs openssl)', s.bundleVerify, s.opensslVerify, true),
      rssRow('peak RSS: bundle push (vs zstd, tar, skopeo sync: max)', s.bundlePush, s.skopeoPush, true),
      rssRow('peak RSS: bundle re-push', s.bundleRepush, null, false),
      {
        what: `peak RSS: bundle serve (server process, VmHWM, ${SERVE_PARALLEL} clients)`,
        bundle: `${MB(servePeakRss)} MB`,
        base: '',
        ratio: null,
        target: '<= 200 MB',
        pass: servePeakRss <= rssLimit,
      },
    );

    const all = (xs: RunOutcome[]): string => xs.map((x) => sec(x.ms)).join(', ');
    const cpu = (xs: RunOutcome[]): string => `${median(xs.map((x) => x.cpuS)).toFixed(2)} s`;
    const tp = (bytes: number, ms: number): string => `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;
    const date = new Date().toISOString();
    const md: string[] = [
      '# bundle benchmark results',
      '',
      `- date: ${date}`,
      `- machine: ${cpus().length} CPUs (${cpus()[0]?.model.trim() ?? '?'}), Node ${process.version}, ${process.platform}/${process.arch}`,
      `- data: BENCH_SCALE=${SCALE}: ${IMAGE_REFS.length} images (one a two-platform index), ${ds.blobCount} unique blobs, ` +
        `${MB(ds.uniqueBlobBytes)} MB of unique blobs (largest layer ${MB(ds.biggestLayer)} MB); gzip -1 tar layers of real files from /usr plus incompressible data; ` +
        `bundle content ${MB(bundleContentBytes)} MB; skopeo dir ${MB(skopeoDirBytes)} MB (no cross-image dedup)`,
      `- load average (1 min) at start ${loadAtStart.toFixed(2)}, at end ${loadavg()[0]!.toFixed(2)} (other work on the machine skews absolute times; alternation keeps the ratios fair)`,
      `- repetitions: ${RUNS} (median shown), contenders alternated; registries: Docker Distribution ${'(/usr/bin/docker-registry)'} on loopback, a fresh empty target for every push`,
      `- dataset generated in: ${ds.generatedSeconds === null ? 'cached' : `${ds.generatedSeconds.toFixed(1)} s`}; source seeded in: ${seedSeconds === null ? 'cached' : `${seedSeconds.toFixed(1)} s`}`,
      '',
      formatRows([...(wan?.rows ?? []), ...rows]),
      '',
      'ratio = median(bundle) / median(baseline), which PASS/MISS is judged on; paired ratio = median over repetitions of bundle/baseline measured back to back.',
      '',
      'Throughput (median): ' +
        [
          `bundle create ${tp(ds.uniqueBlobBytes, m(s.bundleCreate))}`,
          `skopeo create ${tp(ds.uniqueBlobBytes, m(s.skopeoCreate))}`,
          `bundle push ${tp(ds.uniqueBlobBytes, m(s.bundlePush))}`,
          `skopeo push ${tp(ds.uniqueBlobBytes, m(s.skopeoPush))}`,
          `bundle verify ${tp(bundleSize, m(s.bundleVerify))}`,
          `openssl ${tp(bundleSize, m(s.opensslVerify))}`,
          `bundle serve ${tp(serveBlobs.reduce((a, b) => a + b.size, 0), m(s.bundleServe))}`,
          `docker-registry serve ${tp(serveBlobs.reduce((a, b) => a + b.size, 0), m(s.registryServe))}`,
        ].join(', '),
      '',
      ...(wan ? [...wan.lines, ''] : []),
      'All runs (seconds):',
      '',
      `- bundle create: ${all(s.bundleCreate)}; skopeo create: ${all(s.skopeoCreate)}`,
      `- bundle push: ${all(s.bundlePush)}; re-push: ${all(s.bundleRepush)} (${repushStats}); skopeo push: ${all(s.skopeoPush)}`,
      `- bundle verify: ${all(s.bundleVerify)}; openssl: ${all(s.opensslVerify)}`,
      `- serve, every blob by ${SERVE_PARALLEL} parallel curls: bundle serve ${all(s.bundleServe)}; docker-registry ${all(s.registryServe)}`,
      '',
      'CPU time, user+sys (median; client processes only, the registries\' own CPU not counted): ' +
        `bundle create ${cpu(s.bundleCreate)}, skopeo create ${cpu(s.skopeoCreate)}; bundle push ${cpu(s.bundlePush)}, re-push ${cpu(s.bundleRepush)}, ` +
        `skopeo push ${cpu(s.skopeoPush)}; bundle verify ${cpu(s.bundleVerify)}, openssl ${cpu(s.opensslVerify)}`,
      '',
      ...cpuFloorLines(s),
      '',
      'Commands (paths under bench/cache/work; SRC and DST are loopback registries on free ports):',
      '',
      '```sh',
      '# create',
      show(cmd.bundleCreate),
      ...cmd.skopeoSyncs.map(show),
      show(cmd.skopeoPack),
      '# verify',
      show(cmd.bundleVerify),
      show(cmd.openssl),
      '# push (fresh empty registry DST each time), then re-push to the same DST',
      show(cmd.bundlePush('DST')),
      show(cmd.skopeoUnpack),
      show(cmd.skopeoPushSync('DST')),
      '# serve: the same blobs (every layer and config) from bundle serve and from the source registry SRC (docker-registry)',
      show(cmd.bundleServe),
      show(cmd.fetchBlobs('urls.txt')),
      '# every command runs under: /usr/bin/time -f "%M %U %S" (peak RSS, CPU), timed with performance.now(), after an untimed `sync`',
      '```',
      '',
    ];
    let text = md.join('\n').split(ROOT).join('').split(src.host).join('SRC');
    if (profileMd) text += `\nProfiles: see bench/profile.md\n`;
    await writeFile(path.join(BENCH_DIR, 'results.md'), text);
    process.stdout.write(`\n${text}`);
    if (profileMd) {
      await writeFile(path.join(BENCH_DIR, 'profile.md'), profileMd.split(ROOT).join(''));
      process.stdout.write(`\n${profileMd.split(ROOT).join('')}`);
    }
    log(`wrote ${rel(path.join(BENCH_DIR, 'results.md'))}; total ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  } finally {
    await cleanup();
    if (!KEEP) await rm(WORK, { recursive: true, force: true });
  }
}

type Row = { what: string; bundle: string; base: string; ratio: number | null; paired?: number; target: string; pass: boolean | null };

/** The results table (markdown). */
function formatRows(rows: Row[]): string {
  const pf = (p: boolean | null): string => (p === null ? '' : p ? 'PASS' : 'MISS');
  return [
    '| measure | bundle | baseline | ratio | paired ratio | target | result |',
    '|---|---:|---:|---:|---:|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.what.replace(/\|/g, '\\|')} | ${r.bundle} | ${r.base} | ${r.ratio === null ? '' : r.ratio.toFixed(3)} | ${r.paired === undefined ? '' : r.paired.toFixed(3)} | ${r.target} | ${pf(r.pass)} |`,
    ),
  ].join('\n');
}

/** One profiled run each of create, verify and push (main thread, `node --cpu-prof`). */
async function profile(srcHost: string, cmd: { bundleCreate: string[]; bundleVerify: string[]; bundlePush: (h: string) => string[] }, registries: RunningRegistry[]): Promise<string> {
  const dir = path.join(CACHE, 'profiles');
  await rm(dir, { recursive: true, force: true });
  const withProf = (argv: string[], name: string): string[] => ['node', '--cpu-prof', '--cpu-prof-dir', path.join(dir, name), ...argv.slice(1)];
  const out: string[] = ['# bundle CPU profiles (self time, main thread)', '', `Generated by BENCH_PROFILE=1 npm run bench, BENCH_SCALE=${SCALE}, ${new Date().toISOString()}.`, ''];
  const one = async (name: string, argv: string[]): Promise<void> => {
    log(`profiling ${name}`);
    const r = await run(withProf(argv, name));
    const files = (await readdir(path.join(dir, name))).filter((f) => f.endsWith('.cpuprofile'));
    out.push(`wall ${sec(r.ms)} s, peak RSS ${MB(r.rssKiB * 1024)} MB`, '');
    out.push(formatProfile(`bundle ${name}`, summarizeProfile(path.join(dir, name, files[0]!), 15)));
  };
  await one('create', cmd.bundleCreate);
  await one('verify', cmd.bundleVerify);
  const target = await startRegistry();
  registries.push(target);
  try {
    await one('push', cmd.bundlePush(target.host));
    await one('re-push', cmd.bundlePush(target.host));
  } finally {
    await target.stop();
    registries.splice(registries.indexOf(target), 1);
  }
  return out.join('\n').split(srcHost).join('SRC');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
