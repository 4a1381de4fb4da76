/**
 * The devfile registry API of `bundle serve`, for a bundle with a devfile section:
 * what the devfile registry's index server (devfile/registry-support) answers,
 * from the offline registry folder push would deliver (src/devfile/deliver.ts),
 * with every image reference rewritten to where this server serves the image
 * (`--advertise`, default the listening address):
 *   /index, /index/{stack,sample,all}     the index without versions (the index server's v1 form)
 *   /v2index, /v2index/{stack,sample,all} the index with versions
 *   /devfiles/<name>[/<version>]          a devfile (version: a version, `default` or `latest`)
 *   /devfiles/<name>[/<version>]/starter-projects/<project>   its starter project's zip
 *   /health
 * On the OCI side, each stack version's artifact at devfile-catalog/<stack>:<version>
 * is the rewritten one, as push delivers it. The folder is written once at
 * start-up into a scratch directory (devfiles and starter zips are small),
 * removed at shutdown.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ArchiveReader } from '../archive/reader.js';
import type { BundleImage } from '../bundle/manifest.js';
import { addArtifact } from '../devfile/artifact.js';
import { writeRegistryFolder } from '../devfile/deliver.js';
import { compareVersions } from '../devfile/index-json.js';
import type { DevfileRecord, DevfileStackRecord } from '../devfile/record.js';
import { destinationRepository, digestTag, type PushTarget } from '../push/destination.js';
import type { Descriptor } from '../oci/types.js';
import { OverlayStore } from '../store/overlay-store.js';
import { Progress } from '../util/progress.js';
import type { BlobSource } from './blobs.js';
import type { Outcome } from './distribution.js';
import type { RepositoryView } from './repositories.js';

interface IndexVersion {
  version: string;
  default?: boolean;
  tags?: string[];
  architectures?: string[];
  links?: unknown;
  resources?: unknown;
  starterProjects?: unknown;
  git?: unknown;
  [k: string]: unknown;
}

interface IndexEntry {
  name: string;
  type: 'stack' | 'sample';
  architectures?: string[];
  versions?: IndexVersion[];
  [k: string]: unknown;
}

/** The index server sends its JSON and devfiles with Go's sniffed type for text. */
const TEXT = 'text/plain; charset=utf-8';

export class DevfileRegistry {
  private constructor(
    private readonly root: string,
    private readonly record: DevfileRecord,
    private readonly index: IndexEntry[],
    readonly failures: string[],
  ) {}

  /** Rewrite the carried registry for the images as `view` serves them at `advertised`. */
  static async build(reader: ArchiveReader, images: BundleImage[], record: DevfileRecord, view: RepositoryView, blobs: BlobSource, target: PushTarget): Promise<DevfileRegistry> {
    const root = await mkdtemp(join(tmpdir(), 'bundle-serve-devfile-'));
    const work = await mkdtemp(join(tmpdir(), 'bundle-serve-devfile-work-'));
    try {
      const served = new Map(view.images.map((i) => [i.image.refName, i]));
      const artifacts = new OverlayStore(reader, 'rewritten devfile artifacts');
      const written = await writeRegistryFolder(
        record,
        {
          reader,
          images: new Map(images.map((i) => [i.refName, i])),
          target,
          progress: new Progress('quiet'),
          destinationOf(image) {
            const s = served.get(image.refName);
            const repository = s?.repository ?? destinationRepository(target, image.source.replace(/[@:][^/]*$/, ''));
            const tags = s?.tags ?? (image.tags.length ? image.tags : [digestTag(image.digest)]);
            return { repository, tags, reference: `${target.registry}/${repository}:${tags[0]}` };
          },
        },
        root,
        work,
        // Each stack version's artifact, rewritten, replaces the carried one at devfile-catalog/<stack>:<version>
        // (the OCI side odo and the registry library pull from), as push delivers it.
        async (rec, _report, files) => {
          if (rec.type !== 'stack') return;
          const built = await addArtifact(artifacts, files);
          const config = (JSON.parse(built.bytes.toString('utf8')) as { config: Descriptor }).config;
          for (const d of [config, ...built.layers]) blobs.addExtra(d, artifacts);
          view.replace(destinationRepository(target, `devfile-catalog/${rec.name}`), rec.version, built.desc, config.mediaType, [config, ...built.layers].map((d) => d.digest), artifacts);
        },
      );
      const index = JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as IndexEntry[];
      return new DevfileRegistry(root, record, index, written.failures.map((f) => `${f.source}: ${f.error}`));
    } catch (err) {
      await rm(root, { recursive: true, force: true });
      throw err;
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  async close(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }

  /** Stacks and samples served (for the start-up line). */
  get size(): number {
    return this.index.length;
  }

  /** Answer the paths of the devfile registry API; undefined for any other. */
  route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<Outcome> | undefined {
    if (req.method !== 'GET' && req.method !== 'HEAD') return undefined;
    const p = url.pathname;
    const head = req.method === 'HEAD';
    if (p === '/health') return Promise.resolve(send(res, head, 200, 'application/json; charset=utf-8', JSON.stringify({ message: 'the server is up and running' })));
    let m: RegExpExecArray | null;
    if (p === '/' || (m = /^\/(v2)?index(?:\/([^/]+))?$/.exec(p))) {
      const v2 = p !== '/' && m![1] === 'v2';
      const type = p === '/' ? 'stack' : (m![2] ?? 'stack');
      return Promise.resolve(this.indexResponse(res, head, type, v2, url.searchParams.getAll('arch')));
    }
    if ((m = /^\/devfiles\/([^/]+)(?:\/([^/]+))?\/starter-projects\/([^/]+)$/.exec(p))) {
      return this.starterProject(res, head, decodeURIComponent(m[1]!), decodeURIComponent(m[2] ?? 'default'), decodeURIComponent(m[3]!));
    }
    if ((m = /^\/devfiles\/([^/]+)(?:\/([^/]+))?$/.exec(p))) return this.devfile(res, head, decodeURIComponent(m[1]!), decodeURIComponent(m[2] ?? 'default'));
    return undefined;
  }

  private indexResponse(res: ServerResponse, head: boolean, type: string, v2: boolean, archs: string[]): Outcome {
    if (type !== 'stack' && type !== 'sample' && type !== 'all') return status(res, head, 404, `the devfile with ${type} type doesn't exist`);
    let entries = this.index.filter((e) => type === 'all' || e.type === type);
    if (!v2) entries = entries.map(v1Entry).filter((x): x is IndexEntry => x !== undefined);
    if (archs.length) entries = entries.filter((e) => !e.architectures?.length || archs.every((a) => e.architectures!.includes(a)));
    const body = JSON.stringify(entries, null, 2);
    res.setHeader('Access-Control-Allow-Origin', '*');
    return send(res, head, 200, TEXT, body);
  }

  /** The stack or sample version a request names: a version, `default` or `latest`. */
  private find(name: string, version: string): DevfileStackRecord | string {
    const entry = this.index.find((e) => e.name === name);
    if (!entry) return `the devfile of ${name} didn't exist`;
    const versions = this.record.stacks.filter((s) => s.name === name && s.type === entry.type);
    const listed = new Set((entry.versions ?? []).map((v) => v.version));
    const candidates = listed.size ? versions.filter((v) => listed.has(v.version)) : versions;
    let found: DevfileStackRecord | undefined;
    if (version === 'default') found = candidates.find((v) => v.default) ?? (candidates.length === 1 ? candidates[0] : undefined);
    else if (version === 'latest') found = [...candidates].sort((a, b) => compareVersions(a.version, b.version)).pop();
    else found = candidates.find((v) => v.version === version);
    return found ?? `version: ${version} not found in stack ${name}`;
  }

  private async devfile(res: ServerResponse, head: boolean, name: string, version: string): Promise<Outcome> {
    const rec = this.find(name, version);
    if (typeof rec === 'string') return status(res, head, 404, rec);
    const bytes = await readFile(join(this.root, rec.path, 'devfile.yaml'));
    return send(res, head, 200, TEXT, bytes);
  }

  private async starterProject(res: ServerResponse, head: boolean, name: string, version: string, project: string): Promise<Outcome> {
    const rec = this.find(name, version);
    if (typeof rec === 'string') return status(res, head, 404, rec);
    const sp = rec.starterProjects.find((s) => s.name === project);
    if (!sp) return status(res, head, 404, `the starter project named ${project} does not exist in the ${name} devfile`);
    const bytes = await readFile(join(this.root, rec.path, sp.zip));
    res.setHeader('Content-Disposition', `attachment; filename="${project}.zip"`);
    // The index server answers a starter project with 202 Accepted; clients expect it.
    return send(res, head, 202, 'application/zip', bytes);
  }
}

/**
 * The index server's v1 form: no versions; the default version's fields on the
 * entry. Like the index server, it drops an entry with versions but no default.
 */
function v1Entry(e: IndexEntry): IndexEntry | undefined {
  const { versions, ...rest } = e;
  const out: IndexEntry = { ...rest };
  const def = versions?.find((v) => v.default);
  if (!versions?.length && e.type === 'sample') return out;
  if (!def) return undefined;
  if (def.tags?.length) out.tags = def.tags;
  if (def.architectures?.length) out.architectures = def.architectures;
  if (e.type === 'sample') {
    if (def.git !== undefined) out.git = def.git;
  } else {
    for (const k of ['links', 'resources', 'starterProjects'] as const) if (def[k] !== undefined) out[k] = def[k];
    out.version = def.version;
  }
  return out;
}

function send(res: ServerResponse, head: boolean, code: number, type: string, body: string | Buffer): Outcome {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(code, { 'Content-Type': type, 'Content-Length': bytes.length });
  res.end(head ? undefined : bytes);
  return { status: code, bytes: head ? 0 : bytes.length };
}

function status(res: ServerResponse, head: boolean, code: number, message: string): Outcome {
  return send(res, head, code, 'application/json; charset=utf-8', JSON.stringify({ status: message }));
}
