/**
 * A stack version as the devfile registry's OCI side serves it
 * (`devfile-catalog/<stack>:<version>`): an OCI image manifest whose config has the
 * media type `application/vnd.devfileio.devfile.config.v2+json` (body `{}`) and one
 * layer per file, annotated `org.opencontainers.image.title: <file name>`:
 * `devfile.yaml` (application/vnd.devfileio.devfile.layer.v1), `archive.tar` (the
 * other stack files, a gzip tar, application/x-tar), the offline starter projects
 * `<name>-offline.zip` (application/zip), logos (image/svg+xml, image/png).
 *
 * Artifacts are served by an OverlayStore (new blobs streamed from files or memory),
 * so the one copy engine copies them into the archive or a registry.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { MediaType } from '../oci/media-types.js';
import type { Descriptor } from '../oci/types.js';
import { OverlayStore } from '../store/overlay-store.js';
import type { ContentStore, ManifestBytes } from '../store/store.js';
import { sha256Digest } from '../util/digest.js';
import { BundleError } from '../util/errors.js';

export const DevfileMediaType = {
  Config: 'application/vnd.devfileio.devfile.config.v2+json',
  Devfile: 'application/vnd.devfileio.devfile.layer.v1',
  Archive: 'application/x-tar',
  Zip: 'application/zip',
  Svg: 'image/svg+xml',
  Png: 'image/png',
  Vsx: 'application/vnd.devfileio.vsx.layer.v1.tar',
  /** Files of the registry itself (index.json, stack.yaml) in the index artifact. */
  Json: 'application/json',
  Yaml: 'application/yaml',
} as const;

export const TITLE = 'org.opencontainers.image.title';
export const ARCHIVE_NAME = 'archive.tar';
export const DEVFILE_NAME = 'devfile.yaml';

export function mediaTypeForTitle(title: string): string {
  if (title === DEVFILE_NAME || title === '.devfile.yaml') return DevfileMediaType.Devfile;
  if (title === ARCHIVE_NAME) return DevfileMediaType.Archive;
  if (title.endsWith('.zip')) return DevfileMediaType.Zip;
  if (title === 'logo.svg') return DevfileMediaType.Svg;
  if (title === 'logo.png') return DevfileMediaType.Png;
  if (title === 'vsx') return DevfileMediaType.Vsx;
  if (title.endsWith('.json')) return DevfileMediaType.Json;
  if (title.endsWith('.yaml') || title.endsWith('.yml')) return DevfileMediaType.Yaml;
  return MediaType.OctetStream;
}

/** Files that travel as their own layers (the rest of a stack folder goes into archive.tar). */
export function isOwnLayer(title: string): boolean {
  return title === DEVFILE_NAME || title.endsWith('-offline.zip') || title === 'logo.svg' || title === 'logo.png' || title === 'vsx';
}

export type ArtifactFile = { title: string; mediaType?: string } & ({ path: string } | { data: Buffer });

/** A store with nothing in it: the base of artifacts built from scratch. */
class EmptyStore implements ContentStore {
  readonly description = 'built artifacts';
  resolve(_repo: string, reference: string): Promise<Descriptor> {
    return Promise.reject(new BundleError(`no ${reference} among the built artifacts`));
  }
  fetchManifest(_repo: string, desc: Descriptor): Promise<ManifestBytes> {
    return Promise.reject(new BundleError(`no manifest ${desc.digest} among the built artifacts`));
  }
  hasBlob(): Promise<boolean> {
    return Promise.resolve(false);
  }
  openBlob(_repo: string, desc: Descriptor): Promise<Readable> {
    return Promise.reject(new BundleError(`no blob ${desc.digest} among the built artifacts`));
  }
}

async function hashFile(path: string): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${h.digest('hex')}`, size };
}

export interface BuiltArtifact {
  desc: Descriptor;
  bytes: Buffer;
  layers: Descriptor[];
}

/**
 * Add an artifact of `files` to `store` (an OverlayStore: new ones use
 * `artifactStore()`); layers keep the order given. Files on disk are hashed by
 * streaming and read again when copied.
 */
export async function addArtifact(store: OverlayStore, files: ArtifactFile[], annotations?: Record<string, string>): Promise<BuiltArtifact> {
  const config = Buffer.from('{}');
  const configDesc: Descriptor = { mediaType: DevfileMediaType.Config, digest: sha256Digest(config), size: config.length };
  store.addBlob(configDesc, () => Promise.resolve(Readable.from([config])));
  const layers: Descriptor[] = [];
  for (const f of files) {
    const mediaType = f.mediaType ?? mediaTypeForTitle(f.title);
    let d: Descriptor;
    if ('path' in f) {
      const h = await hashFile(f.path);
      d = { mediaType, digest: h.digest, size: h.size, annotations: { [TITLE]: f.title } };
      const p = f.path;
      store.addBlob(d, () => Promise.resolve(createReadStream(p)));
    } else {
      d = { mediaType, digest: sha256Digest(f.data), size: f.data.length, annotations: { [TITLE]: f.title } };
      const data = f.data;
      store.addBlob(d, () => Promise.resolve(Readable.from([data])));
    }
    layers.push(d);
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: configDesc,
    layers,
    ...(annotations ? { annotations } : {}),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const desc: Descriptor = { mediaType: MediaType.OciManifest, digest: sha256Digest(bytes), size: bytes.length };
  store.addManifest(desc, bytes);
  return { desc, bytes, layers };
}

export function artifactStore(description = 'devfile artifacts'): OverlayStore {
  return new OverlayStore(new EmptyStore(), description);
}

/** Every file under `dir` (relative paths, sorted), skipping `.git` and what `skipTop` names at the top. */
export async function listStackFiles(dir: string, skipTop: (name: string) => boolean, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  const entries = (await readdir(join(dir, prefix), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.name === '.git' || (!prefix && skipTop(e.name))) continue;
    if (e.isDirectory()) out.push(...(await listStackFiles(dir, skipTop, rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out;
}

/**
 * Write `archive.tar` (a gzip tar, as the registry's build makes it) of the given
 * files; `content(rel)` may replace a file's bytes (a rewritten manifest), else the
 * file is streamed from `dir`. Entries sorted, one mtime, uid/gid 0.
 */
export async function writeArchiveTar(dir: string, files: string[], out: string, mtime: Date, content?: (rel: string) => Buffer | undefined): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, createGzip({ level: 6 }), createWriteStream(out));
  try {
    for (const rel of [...files].sort()) {
      const replaced = content?.(rel);
      if (replaced) {
        await new Promise<void>((resolve, reject) => pack.entry({ name: rel, size: replaced.length, mtime, mode: 0o644, uid: 0, gid: 0 }, replaced, (err) => (err ? reject(err) : resolve())));
        continue;
      }
      const full = join(dir, rel);
      const st = await stat(full);
      const entry = pack.entry({ name: rel, size: st.size, mtime, mode: st.mode & 0o111 ? 0o755 : 0o644, uid: 0, gid: 0 });
      await pipeline(createReadStream(full), entry);
    }
  } finally {
    pack.finalize();
  }
  await done;
}

/** Read a gzip `archive.tar` stream entry by entry; `onEntry` consumes each file's stream. */
export async function readArchiveTar(stream: Readable, onEntry: (name: string, mode: number, body: AsyncIterable<Buffer>) => Promise<void>): Promise<void> {
  const { createGunzip } = await import('node:zlib');
  const extract = tar.extract();
  const gunzip = createGunzip();
  stream.on('error', (e) => gunzip.destroy(e));
  stream.pipe(gunzip).pipe(extract);
  for await (const entry of extract) {
    const h = entry.header;
    if (h.type === 'file' || h.type === 'contiguous-file') {
      const name = h.name.replace(/^\.\//, '');
      if (!name || climbsOut(name)) throw new BundleError(`archive.tar entry ${JSON.stringify(h.name)} leaves the stack folder`);
      await onEntry(name, h.mode ?? 0o644, entry as unknown as AsyncIterable<Buffer>);
    } else {
      // Links are never made (only regular files are unpacked), but one pointing out of the
      // stack folder has no business in a stack: refused, naming it.
      if (h.type === 'symlink' || h.type === 'link') {
        const name = h.name.replace(/^\.\//, '');
        const target = h.linkname ?? '';
        // A symbolic link's target is relative to its own folder; a hard link's to the archive's root.
        const resolved = h.type === 'symlink' && !target.startsWith('/') ? posix.join(posix.dirname(name), target) : target;
        if (!name || climbsOut(name) || !target || climbsOut(resolved)) {
          throw new BundleError(`archive.tar entry ${JSON.stringify(h.name)} is a ${h.type === 'symlink' ? 'symbolic' : 'hard'} link to ${JSON.stringify(target)}, outside the stack folder`);
        }
      }
      entry.resume();
    }
  }
}

/** An absolute path, or one whose `..` steps leave the folder it is relative to. */
function climbsOut(path: string): boolean {
  if (path.startsWith('/')) return true;
  const normal = posix.normalize(path);
  return normal === '..' || normal.startsWith('../') || path.split('/').includes('..');
}
