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
import { digestHex } from '../util/digest.js';
import type { Progress } from '../util/progress.js';
import { MANIFEST_MEMBER, SIGNATURE_MEMBER, type BundleManifest } from './manifest.js';
import { validateManifest } from './validate.js';

export type ProblemKind = 'signature' | 'manifest' | 'missing' | 'corrupt' | 'unlisted' | 'incomplete' | 'archive';

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
  const second = split === undefined ? undefined : hashInWorker({ file: reader.path, from: split, to: reader.frames.length }, onBytes);
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
function workerFile(): URL {
  const beside = new URL('./hash-worker.js', import.meta.url);
  return existsSync(beside) ? beside : new URL('../hash-worker.js', import.meta.url);
}

function hashInWorker(job: HashJob, onBytes: (n: number) => void): Promise<{ members: HashedMember[]; error?: string }> {
  return new Promise((resolve) => {
    const worker = new Worker(workerFile(), { workerData: job });
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

export async function verifyBundle(reader: ArchiveReader, trusted: TrustedKey[] | undefined, progress?: Progress): Promise<VerifyReport> {
  const { status, problems } = checkSignature(reader, trusted);
  let manifest: BundleManifest;
  try {
    manifest = validateManifest(JSON.parse(reader.manifestBytes.toString('utf8')));
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
  for (const member of physical) {
    if (member.path === MANIFEST_MEMBER || member.path === SIGNATURE_MEMBER) continue;
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

  // Every image's graph: each manifest and blob it needs is a listed, intact member.
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
  }
  return { ok: problems.length === 0, signature: status, images: manifest.images.length, members: manifest.members.length, bytes: totalBytes, problems };
}
