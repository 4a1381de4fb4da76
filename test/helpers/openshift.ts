/**
 * Test fixtures for the OpenShift sources: release payload images (a layer with
 * `release-manifests/image-references` and `release-metadata`) and their
 * components, seeded into a real registry with skopeo; a release signature store
 * served over HTTP on loopback; a large payload layer written as a stream.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { rename } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { LayoutBuilder, type Blob } from './images.js';

const run = promisify(execFile);

/** `skopeo copy` keeping the manifest's bytes (so its digest is the one the layout computed). */
export async function skopeoCopyExact(layoutDir: string, ref: string, dest: string): Promise<void> {
  await run('skopeo', ['copy', '--quiet', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${layoutDir}:${ref}`, `docker://${dest}`]);
}

/** Run `fn` over `items`, `n` at a time. */
export async function inBatches<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += n) await Promise.all(items.slice(i, i + n).map(fn));
}

export interface ReleaseComponentFixture {
  name: string;
  /** `host/openshift-release-dev/ocp-v4.0-art-dev@sha256:...` */
  ref: string;
  digest: string;
}

export function imageReferences(version: string, components: { name: string; ref: string }[]): string {
  return JSON.stringify(
    {
      kind: 'ImageStream',
      apiVersion: 'image.openshift.io/v1',
      metadata: { name: version, creationTimestamp: null },
      spec: {
        lookupPolicy: { local: false },
        tags: [
          ...components.map((c) => ({ name: c.name, annotations: { 'io.openshift.build.source-location': 'https://github.com/openshift/x' }, from: { kind: 'DockerImage', name: c.ref } })),
          // Not a DockerImage: skipped by readers.
          { name: 'not-an-image', from: { kind: 'ImageStreamTag', name: 'other:latest' } },
        ],
      },
    },
    null,
    2,
  );
}

export function releaseMetadata(version: string): string {
  return JSON.stringify({ kind: 'cincinnati-metadata-v0', version, previous: ['4.14.9'], next: [], metadata: { 'url': 'https://example.invalid/errata' } });
}

/**
 * Component images (each with a layer of its own) pushed to
 * `<registry>/openshift-release-dev/ocp-v4.0-art-dev`, named `component-00`...,
 * referred to as `<nameAs>/openshift-release-dev/ocp-v4.0-art-dev@sha256:...`.
 */
export async function seedComponents(layoutDir: string, registry: string, count: number, prefix = 'component', nameAs = registry): Promise<ReleaseComponentFixture[]> {
  const b = await new LayoutBuilder(layoutDir).init();
  const out: ReleaseComponentFixture[] = [];
  for (let i = 0; i < count; i++) {
    const name = `${prefix}-${String(i).padStart(2, '0')}`;
    const img = await b.image([await b.layer({ [`usr/bin/${name}`]: `#!/bin/sh\necho ${name}\n` })], undefined, name);
    b.tag(name, img);
    out.push({ name, digest: img.digest, ref: `${nameAs}/openshift-release-dev/ocp-v4.0-art-dev@${img.digest}` });
  }
  await b.save();
  await inBatches(out, 4, (c) => skopeoCopyExact(layoutDir, c.name, `${registry}/openshift-release-dev/ocp-v4.0-art-dev:${c.name}`));
  return out;
}

/**
 * A release payload image in `layoutDir`: a base layer, then the release layer
 * (optionally with `bigBytes` of incompressible data before the two files, written
 * as a stream), architecture amd64.
 */
export async function buildPayload(
  layoutDir: string,
  opts: { version: string; components: { name: string; ref: string }[]; bigBytes?: number; tag?: string },
): Promise<Blob> {
  const b = await new LayoutBuilder(layoutDir).init();
  const base = await b.layer({ 'etc/os-release': 'ID=rhcos\n' });
  const files = {
    'release-manifests/image-references': imageReferences(opts.version, opts.components),
    'release-manifests/release-metadata': releaseMetadata(opts.version),
    'release-manifests/0000_00_cluster-version-operator_01.yaml': 'kind: Namespace\n',
  };
  const layer = opts.bigBytes ? await streamedLayer(layoutDir, opts.bigBytes, files) : await b.layer(files);
  const payload = await b.image([base, layer], { os: 'linux', architecture: 'amd64' }, `release ${opts.version}`);
  b.tag(opts.tag ?? `${opts.version}-x86_64`, payload);
  await b.save();
  return payload;
}

/** Pseudo-random bytes from AES-CTR over zeros: fast, incompressible, never all in memory. */
function randomStream(size: number): Readable {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 1));
  const zeros = Buffer.alloc(1 << 20);
  let left = size;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, zeros.length);
      left -= n;
      this.push(cipher.update(zeros.subarray(0, n)));
    },
  });
}

/** A gzip tar layer written straight to the layout's blobs: `opt/big.bin` of `bigBytes`, then `files`. */
async function streamedLayer(layoutDir: string, bigBytes: number, files: Record<string, string>): Promise<Blob> {
  const pack = tar.pack();
  const hash = createHash('sha256');
  let size = 0;
  const tmp = join(layoutDir, 'blobs', 'sha256', 'layer.partial');
  const writing = pipeline(
    pack,
    createGzip({ level: 1 }),
    new Transform({
      transform(chunk: Buffer, _e, cb) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    }),
    createWriteStream(tmp),
  );
  await new Promise<void>((resolve, reject) => {
    const entry = pack.entry({ name: 'opt/big.bin', size: bigBytes, mode: 0o644, mtime: new Date(0) }, (err) => (err ? reject(err) : resolve()));
    pipeline(randomStream(bigBytes), entry).catch(reject);
  });
  for (const [name, body] of Object.entries(files)) pack.entry({ name, mode: 0o644, mtime: new Date(0) }, body);
  pack.finalize();
  await writing;
  const hex = hash.digest('hex');
  await rename(tmp, join(layoutDir, 'blobs', 'sha256', hex));
  return { digest: `sha256:${hex}`, size, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' };
}

export interface SignatureStore {
  url: string;
  /** Paths asked for. */
  requests: string[];
  close(): Promise<void>;
}

/** A release signature store on loopback: `/sha256=<hex>/signature-<n>` for each digest given, 404 for the rest. */
export async function startSignatureStore(signatures: Record<string, Buffer[]>): Promise<SignatureStore> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    const m = /^\/sha256=([a-f0-9]{64})\/signature-(\d+)$/.exec(req.url ?? '');
    const sig = m ? signatures[`sha256:${m[1]}`]?.[Number(m[2]) - 1] : undefined;
    if (!sig) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': sig.length }).end(sig);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A registries.conf sending `quay.io/openshift-release-dev` to a loopback registry. */
export function releaseRegistriesConf(host: string): string {
  return `[[registry]]\nprefix = "quay.io/openshift-release-dev"\nlocation = "${host}/openshift-release-dev"\ninsecure = true\n`;
}
