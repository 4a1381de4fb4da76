/**
 * Verification of a .airgap file without unpacking it: the signature over the
 * manifest, every member's size and digest in one sequential read, nothing
 * unlisted, and every image's graph complete.
 */
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { ArchiveReader, HashedMember } from '../archive/reader.js';
import type { HashJob, HashWorkerMessage } from './hash-worker.js';
import { parseManifest } from '../oci/manifest.js';
import type { TrustedKey } from '../sign/keys.js';
import { checkSignature, type SignatureStatus } from './trust.js';
import { errorMessage } from '../util/errors.js';
import { digestHex, sha256Digest } from '../util/digest.js';
import type { Progress } from '../util/progress.js';
import { seaAssets } from '../util/package-root.js';
import { MANIFEST_MEMBER, SIGNATURE_MEMBER, type BundleManifest } from './manifest.js';
import { validateManifest } from './validate.js';

export type ProblemKind = 'signature' | 'manifest' | 'missing' | 'corrupt' | 'unlisted' | 'incomplete' | 'archive' | 'base';

export interface VerifyProblem {
  kind: ProblemKind;
  message: string;
  member?: string;
  /** Images that depend on the member. */
  images?: string[];
}

export interface VerifyReport {
  ok: boolean;
  signature: SignatureStatus;
  images: number;
  members: number;
  bytes: number;
  problems: VerifyProblem[];
  /** An update bundle's base, and whether the pair was checked (`--base`). */
  base?: { name: string; digest: string; created: string; blobsLeftOut: number; checked: boolean };
}

/** Below this much data one thread is quicker than starting a second. */
const PARALLEL_MIN_BYTES = 64 << 20;

/**
 * Every physical member with its digest, in archive order. A large bundle is
 * hashed in two halves at once, one in a worker thread (both cores busy).
 */
async function hashAllMembers(reader: ArchiveReader, totalBytes: number, progress?: Progress): Promise<{ members: HashedMember[]; error?: string }> {
  const onBytes = (n: number) => progress?.bytes(n);
  const split = totalBytes >= PARALLEL_MIN_BYTES ? reader.splitFrame() : undefined;
  const second = split === undefined ? undefined : hashInWorker({ files: reader.input.paths, from: split, to: reader.frames.length }, onBytes);
  const members: HashedMember[] = [];
  let error: string | undefined;
  try {
    for await (const m of reader.hashMembers({ to: split }, onBytes)) members.push(m);
  } catch (err) {
    error = errorMessage(err);
  }
  if (second) {
    const rest = await second;
    members.push(...rest.members);
    error ??= rest.error;
  }
  return { members, error };
}

/** hash-worker.js beside this module (tsc output) or above it (the bundle keeps shared code in chunks/). */
/** Asset name of the hashing thread's code in the standalone executable (pkg.config.json). */
export const HASH_WORKER_ASSET = 'hash-worker.cjs';

function workerFile(): URL {
  const beside = new URL('./hash-worker.js', import.meta.url);
  return existsSync(beside) ? beside : new URL('../hash-worker.js', import.meta.url);
}

/** The hashing thread: its file, or in the standalone executable its embedded code. */
function startWorker(job: HashJob): Worker {
  const sea = seaAssets();
  if (sea) return new Worker(sea.getAsset(HASH_WORKER_ASSET, 'utf8') as string, { eval: true, workerData: job });
  return new Worker(workerFile(), { workerData: job });
}

function hashInWorker(job: HashJob, onBytes: (n: number) => void): Promise<{ members: HashedMember[]; error?: string }> {
  return new Promise((resolve) => {
    const worker = startWorker(job);
    let settled = false;
    worker.on('message', (msg: HashWorkerMessage) => {
      if (msg.kind === 'bytes') onBytes(msg.n);
      else {
        settled = true;
        resolve({ members: msg.members, error: msg.error });
      }
    });
    worker.on('error', (err) => {
      if (!settled) resolve({ members: [], error: errorMessage(err) });
      settled = true;
    });
    worker.on('exit', (code) => {
      if (!settled) resolve({ members: [], error: `hashing thread exited with code ${code}` });
      settled = true;
    });
  });
}

/**
 * Verify a bundle. For an update bundle, blobs its manifest says it leaves out are not
 * missing; with `baseReader` (verify --base) the base is verified too, and must be the
 * bundle the update names and carry every blob the update leaves out.
 */
export async function verifyBundle(reader: ArchiveReader, trusted: TrustedKey[] | undefined, progress?: Progress, baseReader?: ArchiveReader): Promise<VerifyReport> {
  const { status, problems } = checkSignature(reader, trusted);
  let manifest: BundleManifest;
  try {
    // The reader parsed these very bytes when it opened the file: validated as they are, not parsed again.
    manifest = validateManifest(reader.manifest);
  } catch (err) {
    problems.push({ kind: 'manifest', member: MANIFEST_MEMBER, message: errorMessage(err) });
    return { ok: false, signature: status, images: 0, members: 0, bytes: 0, problems };
  }
  const listed = new Map(manifest.members.map((m) => [m.path, m]));
  const good = new Set<string>();
  const seen = new Set<string>();
  const totalBytes = manifest.members.reduce((n, m) => n + m.size, 0);
  // Every member's data is read, the manifest and its signature envelope too.
  progress?.phase('checking every member', manifest.members.length, totalBytes + reader.manifestBytes.length + reader.envelopeBytes.length);

  const { members: physical, error } = await hashAllMembers(reader, totalBytes, progress);
  if (error) problems.push({ kind: 'archive', message: `the archive could not be read to its end: ${error}` });
  // Only the two control members in their fixed frames are exempt from the listing; any other copy is unlisted.
  const frames = reader.frames;
  const controlAt = new Map([
    [MANIFEST_MEMBER, frames[frames.length - 4]!.decompressedOffset],
    [SIGNATURE_MEMBER, frames[frames.length - 2]!.decompressedOffset],
  ]);
  for (const member of physical) {
    // Every byte of a header and its padding is fixed by the format: any other value is tampering.
    if (!member.canonicalHeader && member.type === 'file') {
      problems.push({ kind: 'corrupt', member: member.path, message: `${member.path}: its tar header (before tar offset ${member.offset}) is not the one this format writes (mode, owner, time or other fields changed)` });
    }
    if (!member.zeroPadding) {
      problems.push({ kind: 'corrupt', member: member.path, message: `${member.path}: the tar padding after its data holds bytes other than zero` });
    }
    const fixed = controlAt.get(member.path);
    if (fixed === member.offset) continue;
    if (fixed !== undefined) {
      problems.push({
        kind: 'unlisted',
        member: member.path,
        message: `an extra copy of ${member.path} at tar offset ${member.offset}: only the one in the archive's last frames counts, and the manifest lists no other`,
      });
      continue;
    }
    if (member.type !== 'file') {
      problems.push({ kind: 'unlisted', member: member.path, message: `${member.path} is a ${member.type} entry; a bundle holds only files` });
      continue;
    }
    const entry = listed.get(member.path);
    if (!entry) {
      problems.push({ kind: 'unlisted', member: member.path, message: `${member.path} is in the archive but not in the manifest` });
      continue;
    }
    if (seen.has(member.path)) {
      problems.push({ kind: 'unlisted', member: member.path, message: `${member.path} appears more than once in the archive` });
      continue;
    }
    seen.add(member.path);
    progress?.item();
    if (member.size !== entry.size || member.digest !== entry.digest) {
      problems.push({
        kind: 'corrupt',
        member: member.path,
        message: `${member.path}: expected ${entry.digest} (${entry.size} bytes), found ${member.digest} (${member.size} bytes)`,
      });
    } else if (member.offset !== entry.offset) {
      problems.push({ kind: 'corrupt', member: member.path, message: `${member.path} is at offset ${member.offset}, the manifest says ${entry.offset}` });
    } else {
      good.add(member.path);
    }
  }
  progress?.finishPhase(problems.length === 0);
  for (const m of manifest.members) {
    if (!seen.has(m.path)) problems.push({ kind: 'missing', member: m.path, message: `${m.path} is listed in the manifest but not in the archive` });
  }
  // Content all present and accounted for: the frames must follow the framing rules too, as push checks
  // them (so that whatever push refuses, verify has named first).
  if (!problems.some((p) => p.kind !== 'signature' && p.kind !== 'manifest')) {
    for (const message of await reader.layoutProblems()) problems.push({ kind: 'archive', message });
  }

  const leftOut = new Set((manifest.base?.blobs ?? []).map((b) => b.digest));
  const base = manifest.base ? { name: manifest.base.name, digest: manifest.base.digest, created: manifest.base.created, blobsLeftOut: leftOut.size, checked: false } : undefined;
  if (baseReader) {
    if (!manifest.base) problems.push({ kind: 'base', message: '--base was given, but this bundle is not an update (it carries everything itself)' });
    else {
      problems.push(...(await checkBase(manifest, baseReader, trusted, progress)));
      base!.checked = true;
    }
  }

  // Every image's graph: each manifest and blob it needs is a listed, intact member (or left out for the base).
  const dependents = new Map<string, Set<string>>();
  const depend = (path: string, image: string) => {
    let s = dependents.get(path);
    if (!s) dependents.set(path, (s = new Set()));
    s.add(image);
  };
  for (const image of manifest.images) {
    const stack = [{ digest: image.digest, mediaType: image.mediaType, manifest: true }];
    const visited = new Set<string>();
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (visited.has(node.digest)) continue;
      visited.add(node.digest);
      const path = `blobs/sha256/${digestHex(node.digest)}`;
      depend(path, image.source);
      if (!listed.has(path)) {
        if (leftOut.has(node.digest)) continue; // the base carried it
        problems.push({ kind: 'incomplete', member: path, message: `${image.source} needs ${node.digest}, which the bundle does not carry` });
        continue;
      }
      if (!node.manifest || !good.has(path)) continue;
      try {
        const bytes = await reader.readMember(path);
        const parsed = parseManifest(bytes, node.mediaType, `${image.source} ${node.digest}`);
        for (const c of parsed.manifests) stack.push({ digest: c.digest, mediaType: c.mediaType, manifest: true });
        for (const b of parsed.blobs) stack.push({ digest: b.digest, mediaType: b.mediaType, manifest: false });
      } catch (err) {
        problems.push({ kind: 'incomplete', member: path, message: `${image.source}: ${errorMessage(err)}` });
      }
    }
  }
  for (const p of problems) {
    if (p.member && dependents.has(p.member)) p.images = [...dependents.get(p.member)!].sort();
    // A bundle in volumes: say which volume to fetch again.
    const volumes = p.member ? reader.volumesOf(p.member) : [];
    if (volumes.length && p.kind !== 'unlisted') p.message += ` [in ${volumes.join(', ')}]`;
  }
  return { ok: problems.length === 0, signature: status, images: manifest.images.length, members: manifest.members.length, bytes: totalBytes, problems, ...(base ? { base } : {}) };
}

/** The pair: the base is the bundle the update names, verifies itself, and carries every blob the update leaves out. */
async function checkBase(update: BundleManifest, baseReader: ArchiveReader, trusted: TrustedKey[] | undefined, progress?: Progress): Promise<VerifyProblem[]> {
  const named = update.base!;
  const actual = sha256Digest(baseReader.manifestBytes);
  if (actual !== named.digest) {
    return [{ kind: 'base', message: `${baseReader.path} is not the base this update was made from: its manifest is ${actual}, the update names ${named.name} (${named.digest}, created ${named.created})` }];
  }
  const report = await verifyBundle(baseReader, trusted, progress);
  const problems: VerifyProblem[] = report.problems.map((p) => ({ ...p, message: `base ${named.name}: ${p.message}` }));
  if (trusted && !report.signature.trusted && !report.problems.some((p) => p.kind === 'signature')) {
    problems.push({ kind: 'base', message: `base ${named.name}: not signed by a trusted key` });
  }
  const baseManifest = validateManifest(baseReader.manifest);
  const carried = new Map(baseManifest.members.map((m) => [m.digest, m]));
  const ownBase = new Set((baseManifest.base?.blobs ?? []).map((b) => b.digest));
  for (const b of named.blobs) {
    const m = carried.get(b.digest);
    if (m ? m.size !== b.size : !ownBase.has(b.digest)) {
      problems.push({ kind: 'base', member: `blobs/sha256/${digestHex(b.digest)}`, message: `the update leaves out ${b.digest}, but base ${named.name} does not carry it` });
    }
  }
  return problems;
}
