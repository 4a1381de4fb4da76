/**
 * A worker thread that hashes one range of a bundle's frames, so verify uses
 * both cores: it opens the file itself and sends back each member's digest.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ArchiveReader, type HashedMember } from '../archive/reader.js';
import { errorMessage } from '../util/errors.js';

export interface HashJob {
  /** The bundle's file, or its volumes in order. */
  files: readonly string[];
  from: number;
  to: number;
}

export type HashWorkerMessage =
  | { kind: 'bytes'; n: number }
  | { kind: 'done'; members: HashedMember[]; error?: string };

const PROGRESS_EVERY = 32 << 20;

async function run(job: HashJob): Promise<void> {
  const members: HashedMember[] = [];
  let pending = 0;
  let error: string | undefined;
  const reader = await ArchiveReader.openFiles(job.files);
  try {
    const onBytes = (n: number) => {
      pending += n;
      if (pending >= PROGRESS_EVERY) {
        parentPort!.postMessage({ kind: 'bytes', n: pending } satisfies HashWorkerMessage);
        pending = 0;
      }
    };
    for await (const m of reader.hashMembers({ from: job.from, to: job.to }, onBytes)) members.push(m);
  } catch (err) {
    error = errorMessage(err);
  } finally {
    await reader.close();
  }
  if (pending) parentPort!.postMessage({ kind: 'bytes', n: pending } satisfies HashWorkerMessage);
  parentPort!.postMessage({ kind: 'done', members, error } satisfies HashWorkerMessage);
}

run(workerData as HashJob).catch((err: unknown) => {
  parentPort!.postMessage({ kind: 'done', members: [], error: errorMessage(err) } satisfies HashWorkerMessage);
});
