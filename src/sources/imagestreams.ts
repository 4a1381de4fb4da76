/**
 * The `imageStreams` source kind (seed 003, the samples operator): every
 * `spec.tags[].from` of kind `DockerImage` in ImageStream files (YAML or JSON;
 * a `List` of ImageStreams, several documents, or single ones, as
 * `oc get is -n openshift -o yaml` writes them).
 */
import { readFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import type { BundleImage } from '../bundle/manifest.js';
import type { ConfigImageStreamFile } from '../config/config.js';
import type { CreateContext, SourceKind, SourcePlan } from './source.js';
import { finishPlan, NeededImages, resolveNeeded } from '../openshift/needed-images.js';
import { formatReference, parseReference } from '../oci/reference.js';
import { BundleError, errorMessage } from '../util/errors.js';

export interface ImageStreamTags {
  name: string;
  namespace?: string;
  /** tag name -> image reference (normalised). */
  tags: { name: string; image: string }[];
}

/** What the manifest records for each file (`sources.imageStreams[]`). */
export interface ImageStreamFileRecord {
  path: string;
  imageStreams: { name: string; namespace?: string; tags: { name: string; image: string }[]; carried: boolean }[];
}

interface RawImageStream {
  kind?: unknown;
  metadata?: { name?: unknown; namespace?: unknown };
  spec?: { tags?: { name?: unknown; from?: { kind?: unknown; name?: unknown } }[] };
  items?: unknown[];
}

/** The image streams of a file's text, with their DockerImage tags. */
export function parseImageStreams(text: string, file: string): ImageStreamTags[] {
  const out: ImageStreamTags[] = [];
  const docs = parseAllDocuments(text);
  const list = Array.isArray(docs) ? docs : [docs];
  const visit = (obj: RawImageStream | null | undefined, where: string): void => {
    if (!obj || typeof obj !== 'object') return;
    if (obj.kind === 'List' || obj.kind === 'ImageStreamList') {
      (obj.items ?? []).forEach((it, i) => visit(it as RawImageStream, `${where}.items[${i}]`));
      return;
    }
    if (obj.kind !== 'ImageStream') return;
    const name = obj.metadata?.name;
    if (typeof name !== 'string' || !name) throw new BundleError(`${file}: ${where}: an ImageStream without metadata.name`);
    const tags: ImageStreamTags['tags'] = [];
    for (const t of obj.spec?.tags ?? []) {
      if (t?.from?.kind !== 'DockerImage' || typeof t.from.name !== 'string') continue;
      try {
        tags.push({ name: String(t.name ?? ''), image: formatReference(parseReference(t.from.name)) });
      } catch (err) {
        throw new BundleError(`${file}: image stream ${name} tag ${String(t.name)}: ${errorMessage(err)}`);
      }
    }
    out.push({ name, ...(typeof obj.metadata?.namespace === 'string' ? { namespace: obj.metadata.namespace } : {}), tags });
  };
  list.forEach((doc, i) => {
    if (doc.errors.length > 0) throw new BundleError(`${file}: not YAML or JSON: ${doc.errors[0]!.message.split('\n')[0]}`);
    visit(doc.toJS() as RawImageStream, `document ${i + 1}`);
  });
  return out;
}

export async function planImageStreams(files: ConfigImageStreamFile[], ctx: CreateContext): Promise<SourcePlan> {
  const needed = new NeededImages();
  const failures: SourcePlan['failures'] = [];
  const parsed: { path: string; streams: ImageStreamTags[] }[] = [];
  for (const f of files) {
    try {
      const streams = parseImageStreams(await readFile(f.path, 'utf8'), f.path);
      if (streams.length === 0) throw new BundleError(`${f.path} holds no ImageStream`);
      for (const s of streams) for (const t of s.tags) needed.add(t.image, `image stream ${s.name} (tag ${t.name})`);
      parsed.push({ path: f.path, streams });
    } catch (err) {
      failures.push({ source: f.path, error: errorMessage(err) });
    }
  }
  const resolved = await resolveNeeded(needed, ctx, 'imagestream');
  return finishPlan(
    {
      images: resolved.images,
      failures: [...failures, ...resolved.failures],
      skipped: resolved.skipped,
      record: (copied: ReadonlyMap<string, BundleImage>): ImageStreamFileRecord[] =>
        parsed.map(({ path, streams }) => ({
          path,
          imageStreams: streams.map((s) => ({ ...s, carried: s.tags.every((t) => copied.has(t.image)) })),
        })),
    },
    ctx,
  );
}

export const imageStreamsKind: SourceKind<ConfigImageStreamFile[]> = {
  kind: 'imageStreams',
  section: (config) => (config.imageStreams.length > 0 ? config.imageStreams : undefined),
  plan: planImageStreams,
};
