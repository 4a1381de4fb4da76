/**
 * Push side of the devfile kind. With the stack images already pushed, for every
 * stack version: rewrite its devfile (and the manifests and Dockerfiles it names)
 * for the target, then deliver the registry in three forms:
 *  1. each stack version as an OCI artifact at `<to>/devfile-catalog/<stack>:<version>`
 *     (the rewritten devfile, so a new digest);
 *  2. the `devfile-index` image at `<to>/devfile-index:<tag>`: the carried base image
 *     plus one layer with /registry/index.json, /registry/stacks, /registry/samples
 *     (src/oci/image-builder.ts);
 *  3. with --devfile-out DIR, the offline registry folder itself. Nothing is written
 *     outside DIR (or, without it, outside a scratch folder).
 */
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { BundleImage } from '../bundle/manifest.js';
import { CopyEngine } from '../copy/engine.js';
import { buildImage, type LayerFile } from '../oci/image-builder.js';
import { parseManifest } from '../oci/manifest.js';
import type { Descriptor } from '../oci/types.js';
import { destinationRepository } from '../push/destination.js';
import type { PushContext, ResolveFailure } from '../sources/source.js';
import { OverlayStore } from '../store/overlay-store.js';
import type { ContentStore } from '../store/store.js';
import { verified, verifyBuffer } from '../util/digest.js';
import { BundleError, UsageError, errorMessage } from '../util/errors.js';
import { addArtifact, ARCHIVE_NAME, DEVFILE_NAME, readArchiveTar, TITLE, writeArchiveTar, type ArtifactFile } from './artifact.js';
import type { DevfileRecord, DevfileStackRecord } from './record.js';
import { devfileVariables, rewriteDevfile, rewriteDockerfile, rewriteManifestText, targetReference } from './rewrite.js';

const MAX_TEXT = 8 << 20;

export interface DevfileStackReport {
  type: 'stack' | 'sample';
  name: string;
  version: string;
  /** The rewritten devfile, as a path of the registry folder. */
  devfile: string;
  /** Where the stack version's artifact was pushed (stacks only). */
  artifact?: string;
  /** Its new digest (the devfile changed, so the digest did). */
  digest?: string;
  images: { file: string; from: string; to: string }[];
  /** Images left as they were (skipped at create). */
  notCarried: { file: string; image: string }[];
  starterProjects: string[];
}

export interface DevfileReport {
  stacks: DevfileStackReport[];
  indexImage?: { reference: string; digest: string; base: string };
  folder?: string;
}

async function readSmallBlob(store: ContentStore, desc: Descriptor, what: string): Promise<Buffer> {
  if (desc.size > MAX_TEXT) throw new BundleError(`${what} is ${desc.size} bytes; a devfile registry file to rewrite may be at most ${MAX_TEXT}`);
  const chunks: Buffer[] = [];
  for await (const c of verified(await store.openBlob('', desc), desc.digest, desc.size, what)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function fetchArtifact(reader: ContentStore, image: BundleImage): Promise<Descriptor[]> {
  const desc = { digest: image.digest, mediaType: image.mediaType, size: image.size };
  const m = await reader.fetchManifest('', desc);
  verifyBuffer(m.bytes, desc.digest, desc.size, image.refName);
  const raw = JSON.parse(m.bytes.toString('utf8')) as { layers?: Descriptor[] };
  parseManifest(m.bytes, image.mediaType, image.refName); // shape check
  return raw.layers ?? [];
}

/** A layer title that is a plain file name (or, in the index artifact, a path under stacks/). */
function safeTitle(title: string | undefined, allowPath = false): string {
  if (!title || title.startsWith('/') || title.includes('\\') || title.split('/').some((s) => s === '..' || s === '' || s === '.') || (!allowPath && title.includes('/'))) {
    throw new BundleError(`artifact layer title ${JSON.stringify(title)} is not a safe file name`);
  }
  return title;
}

function safeLayoutPath(p: string): string {
  if (!/^(stacks|samples)\/[A-Za-z0-9][A-Za-z0-9._-]*(\/[0-9A-Za-z][0-9A-Za-z.+-]*)?$/.test(p)) throw new BundleError(`devfile record path ${JSON.stringify(p)} is not a registry folder path`);
  return p;
}

/** Every file under `dir`, as layer files under `prefix`. */
async function layerFiles(dir: string, prefix: string): Promise<LayerFile[]> {
  const out: LayerFile[] = [];
  const walk = async (rel: string) => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) out.push({ path: `${prefix}/${r}`, fromFile: join(dir, r) });
    }
  };
  await walk('');
  return out;
}

async function rewriteVersion(
  rec: DevfileStackRecord,
  ctx: PushContext,
  outRoot: string,
  work: string,
): Promise<{ report: DevfileStackReport; files: ArtifactFile[] }> {
  const image = ctx.images.get(rec.artifact);
  if (!image) throw new BundleError(`${rec.artifact} is listed in the devfile record but not in the bundle`);
  const layers = await fetchArtifact(ctx.reader, image);
  const vDir = join(outRoot, safeLayoutPath(rec.path));
  await mkdir(vDir, { recursive: true });
  const mapping = new Map<string, string>();
  const notCarried: { file: string; image: string }[] = [];
  for (const use of rec.images) {
    const carried = use.refName ? ctx.images.get(use.refName) : undefined;
    if (!carried) {
      notCarried.push({ file: use.file, image: use.written });
      continue;
    }
    const dest = ctx.destinationOf(carried);
    mapping.set(use.written, targetReference(use.written, `${ctx.target.registry}/${dest.repository}`));
  }
  const changes: { file: string; from: string; to: string }[] = [];
  const zips = new Map(rec.starterProjects.map((s) => [s.name, s.zip]));
  const otherFiles = new Set(rec.images.filter((i) => i.file !== DEVFILE_NAME).map((i) => i.file));
  let vars: Record<string, string> = {};
  const files: ArtifactFile[] = [];
  // devfile.yaml first: its variables apply to the manifests it names.
  const ordered = [...layers].sort((a, b) => Number(b.annotations?.[TITLE] === DEVFILE_NAME) - Number(a.annotations?.[TITLE] === DEVFILE_NAME));
  const byTitle = new Map<string, ArtifactFile>();
  for (const layer of ordered) {
    const title = safeTitle(layer.annotations?.[TITLE]);
    const out = join(vDir, title);
    const what = `${rec.path}/${title}`;
    if (title === DEVFILE_NAME) {
      const text = (await readSmallBlob(ctx.reader, layer, what)).toString('utf8');
      vars = devfileVariables(text);
      const rewritten = rewriteDevfile(text, mapping, zips, (from, to) => changes.push({ file: DEVFILE_NAME, from, to }), what);
      await writeFile(out, rewritten);
    } else if (title === ARCHIVE_NAME && otherFiles.size > 0) {
      // Unpack, rewrite the files that name images, pack again.
      const unpacked = await mkdtemp(join(work, 'archive-'));
      const names: string[] = [];
      await readArchiveTar(await ctx.reader.openBlob('', layer).then((s) => verified(s, layer.digest, layer.size, what)), async (name, mode, body) => {
        const full = join(unpacked, name);
        if (relative(unpacked, full).startsWith('..')) throw new BundleError(`${what}: entry ${name} leaves the stack folder`);
        await mkdir(join(full, '..'), { recursive: true });
        if (otherFiles.has(name)) {
          const chunks: Buffer[] = [];
          for await (const c of body) chunks.push(c);
          const text = Buffer.concat(chunks).toString('utf8');
          const note = (from: string, to: string) => changes.push({ file: name, from, to });
          const isDockerfile = /(^|\/)[^/]*dockerfile[^/]*$/i.test(name) || /^\s*FROM\s/im.test(text);
          const rewritten = isDockerfile ? rewriteDockerfile(text, mapping, note) : rewriteManifestText(text, mapping, vars, note);
          await writeFile(full, rewritten, { mode: mode & 0o777 });
        } else {
          await pipeline(body, createWriteStream(full, { mode: mode & 0o777 }));
        }
        names.push(name);
      });
      await writeArchiveTar(unpacked, names, out, new Date(0));
    } else {
      await pipeline(verified(await ctx.reader.openBlob('', layer), layer.digest, layer.size, what), createWriteStream(out));
    }
    byTitle.set(title, { title, path: out, mediaType: layer.mediaType });
  }
  // Layers in their original order.
  for (const layer of layers) files.push(byTitle.get(layer.annotations![TITLE]!)!);
  return {
    files,
    report: {
      type: rec.type,
      name: rec.name,
      version: rec.version,
      devfile: `${rec.path}/${DEVFILE_NAME}`,
      images: changes,
      notCarried,
      starterProjects: rec.starterProjects.map((s) => s.zip),
    },
  };
}

/** --devfile-out must name a new or empty folder (checked before push sends anything, and again before writing). */
export async function checkDevfileOut(dir: string | undefined): Promise<void> {
  if (!dir) return;
  const st = await stat(dir).catch(() => undefined);
  if (st && !st.isDirectory()) throw new UsageError(`--devfile-out ${dir} is not a folder`);
  if (st && (await readdir(dir)).length > 0) throw new UsageError(`--devfile-out ${dir} is not empty; name a new or empty folder`);
}

async function emptyOrNew(dir: string): Promise<void> {
  await checkDevfileOut(dir);
  await mkdir(dir, { recursive: true });
}

export async function deliverDevfile(record: DevfileRecord, ctx: PushContext): Promise<{ report: DevfileReport; files: string[]; failures: ResolveFailure[] }> {
  const folderOpt = ctx.options.devfileOut as string | undefined;
  const indexTag = (ctx.options.devfileIndexTag as string | undefined) ?? 'latest';
  const outRoot = folderOpt ? resolve(folderOpt) : await mkdtemp(join(tmpdir(), 'bundle-devfile-'));
  if (folderOpt) await emptyOrNew(outRoot);
  const work = await mkdtemp(join(tmpdir(), 'bundle-devfile-work-'));
  const failures: ResolveFailure[] = [];
  const report: DevfileReport = { stacks: [] };
  try {
    ctx.progress.phase('devfile registry: rewriting stacks', record.stacks.length);
    const resources = new Map<string, string[]>();
    for (const rec of record.stacks) {
      try {
        const { report: r, files } = await rewriteVersion(rec, ctx, outRoot, work);
        resources.set(`${rec.type}:${rec.name}:${rec.version}`, files.map((f) => f.title));
        if (rec.type === 'stack') {
          const store = new OverlayStore(ctx.reader, 'rewritten devfile artifacts');
          const built = await addArtifact(store, files);
          const repo = destinationRepository(ctx.target, `devfile-catalog/${rec.name}`);
          await new CopyEngine(store, ctx.dst, { concurrency: ctx.concurrency }).copyImage({ srcRepo: '', dstRepo: repo, desc: built.desc, tags: [rec.version], label: rec.artifact });
          r.artifact = `${ctx.target.registry}/${repo}:${rec.version}`;
          r.digest = built.desc.digest;
        }
        report.stacks.push(r);
      } catch (err) {
        failures.push({ source: `devfile ${rec.type} ${rec.name} ${rec.version}`, error: errorMessage(err) });
        ctx.progress.warn(`devfile ${rec.type} ${rec.name} ${rec.version}: ${errorMessage(err)}`);
      }
      ctx.progress.item();
    }
    ctx.progress.finishPhase(failures.length === 0);

    // index.json (resources matching what was delivered) and stack.yaml files.
    const indexImage = ctx.images.get(record.index);
    if (!indexImage) throw new BundleError(`the devfile index artifact ${record.index} is not in the bundle`);
    for (const layer of await fetchArtifact(ctx.reader, indexImage)) {
      const title = safeTitle(layer.annotations?.[TITLE], true);
      const bytes = await readSmallBlob(ctx.reader, layer, `${record.index} ${title}`);
      if (title === 'index.json') {
        await writeFile(join(outRoot, 'index.json'), `${JSON.stringify(regenerateIndex(bytes, resources), null, 2)}\n`);
      } else if (/^stacks\/[A-Za-z0-9][A-Za-z0-9._-]*\/stack\.yaml$/.test(title)) {
        await mkdir(join(outRoot, title, '..'), { recursive: true });
        await writeFile(join(outRoot, title), bytes);
      }
    }

    if (record.indexBase) {
      const base = ctx.images.get(record.indexBase);
      if (!base) throw new BundleError(`the devfile index base ${record.indexBase} is not in the bundle`);
      ctx.progress.phase('devfile registry: building the devfile-index image');
      const repo = destinationRepository(ctx.target, 'devfile-index');
      try {
        const built = await buildImage(
          {
            base: { store: ctx.reader, repo: '', desc: { digest: base.digest, mediaType: base.mediaType, size: base.size }, label: base.source },
            layer: { files: await layerFiles(outRoot, 'registry') },
            config: { env: { DEVFILE_STACKS: '/registry/stacks', DEVFILE_SAMPLES: '/registry/samples', DEVFILE_INDEX: '/registry/index.json' } },
            createdBy: 'bundle push: offline devfile registry content under /registry',
            tmpDir: work,
          },
          // The base's layers are mounted from where push put the base image (an update bundle may not carry them).
          { dst: ctx.dst, repo, tags: [indexTag], label: `devfile-index:${indexTag}`, baseHeldIn: [ctx.destinationOf(base).repository] },
        );
        report.indexImage = { reference: `${ctx.target.registry}/${repo}:${indexTag}`, digest: built.manifest.digest, base: base.source };
        ctx.progress.finishPhase();
      } catch (err) {
        ctx.progress.finishPhase(false);
        failures.push({ source: 'devfile-index image', error: errorMessage(err) });
      }
    }
    if (folderOpt) report.folder = outRoot;
    return { report, files: [], failures };
  } finally {
    await rm(work, { recursive: true, force: true });
    if (!folderOpt) await rm(outRoot, { recursive: true, force: true });
  }
}

/** The carried index.json with each version's resources set to the files delivered. */
function regenerateIndex(bytes: Buffer, resources: ReadonlyMap<string, string[]>): unknown {
  const index = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>[];
  if (!Array.isArray(index)) throw new BundleError('the carried index.json is not a list');
  return index.map((e) => {
    const type = e.type === 'sample' ? 'sample' : 'stack';
    const versions = Array.isArray(e.versions) ? (e.versions as Record<string, unknown>[]) : [];
    const kept = versions.filter((v) => resources.has(`${type}:${String(e.name)}:${String(v.version)}`));
    const out: Record<string, unknown> = { ...e, versions: kept.map((v) => (type === 'stack' ? { ...v, resources: resources.get(`${type}:${String(e.name)}:${String(v.version)}`) } : v)) };
    if (type === 'stack') {
      const top = resources.get(`stack:${String(e.name)}:${String(e.version)}`);
      if (top) out.resources = top;
    }
    return out;
  }).filter((e) => (e.versions as unknown[]).length > 0);
}

export function printDevfileReport(report: unknown, out: NodeJS.WritableStream): void {
  const r = report as DevfileReport | undefined;
  if (!r) return;
  for (const s of r.stacks) {
    out.write(`devfile ${s.type} ${s.name} ${s.version}${s.artifact ? ` -> ${s.artifact} (new digest ${s.digest})` : ''}\n`);
    for (const c of s.images) out.write(`  ${s.devfile.replace(/devfile\.yaml$/, '')}${c.file}: ${c.from} -> ${c.to}\n`);
    for (const n of s.notCarried) out.write(`  ${s.devfile.replace(/devfile\.yaml$/, '')}${n.file}: ${n.image} NOT CARRIED (skipped at create), left as it was\n`);
    for (const z of s.starterProjects) out.write(`  starter project -> ${z}\n`);
  }
  if (r.indexImage) out.write(`devfile-index image ${r.indexImage.reference} (${r.indexImage.digest}, on ${r.indexImage.base})\n`);
  if (r.folder) out.write(`offline devfile registry folder: ${r.folder}\n`);
}
