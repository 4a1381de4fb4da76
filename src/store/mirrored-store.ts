/**
 * Pulls through mirrors, per containers-registries.conf(5): a content store
 * for one registry as the image names it, which for every (repository,
 * reference) tries the locations the configuration gives (mirrors in order,
 * then the rewritten primary location) and falls through to the next on any
 * failure. Callers keep using the original repository name, so the bundle
 * records every image under the name the config or devfile uses.
 *
 * API:
 *   pullStoreFactory(opts: RegistryOptions, conf: RegistriesConf | undefined,
 *                    hooks?: { onFallback?(message: string): void }): (registry: string) => ContentStore
 *     One store per registry name; a registry no entry can apply to gets a
 *     plain RegistryStore. Endpoint connections are shared between them.
 *   new MirroredStore(registry, conf, endpointStore, hooks?)   (the store itself)
 *
 * - Which mirrors a request may use follows the pull it belongs to: a tag
 *   pull never uses a by-digest-only mirror, not even for the blobs of the
 *   image it resolved (the store remembers, for every digest a manifest it
 *   served names, whether the image was pulled by tag or by digest).
 * - Children are tried first at the location that served their manifest, as
 *   podman keeps one source per image.
 * - A location that failed to connect is skipped from then on (so a mirror
 *   that is down costs its retries once, not once per blob).
 * - `insecure = true` turns TLS verification off (and allows plain HTTP) for
 *   that location only; credentials are looked up for the host contacted.
 * - A blocked image fails at once, naming the file and the prefix.
 * - When every location fails, one error names the original reference and
 *   each location tried with why it failed.
 */
import type { Readable } from 'node:stream';
import { parseManifest } from '../oci/manifest.js';
import type { Descriptor } from '../oci/types.js';
import { RegistryNetworkError } from '../registry/errors.js';
import type { RegistryOptions } from '../registry/options.js';
import { matchesRegistry, pullPlan, type Endpoint, type RegistriesConf } from '../registry/registries-conf.js';
import { BundleError, errorMessage, NotFoundError } from '../util/errors.js';
import { createRegistryStore, type RegistryStore } from './registry-store.js';
import type { ByteRange, ContentStore, ManifestBytes, RangeResult, ResolveOptions } from './store.js';

export type EndpointStoreFactory = (registry: string, insecure: boolean) => ContentStore;

export interface MirrorHooks {
  /** Told once per location that could not be reached, when the next is tried instead. */
  onFallback?(message: string): void;
}

interface Origin {
  byDigest: boolean;
  /** Key of the endpoint that served the manifest naming this digest. */
  servedBy?: string;
}

const NETWORK_CODES = /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|UND_ERR_CONNECT_TIMEOUT|UND_ERR_SOCKET)/;

function isConnectionFailure(err: unknown): boolean {
  if (err instanceof RegistryNetworkError) return true;
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && NETWORK_CODES.test(code);
}

function endpointKey(ep: Endpoint): string {
  return `${ep.registry}|${ep.insecure}`;
}

function endpointName(ep: Endpoint): string {
  return `${ep.mirror ? 'mirror ' : ''}${ep.registry}/${ep.repository}${ep.insecure ? ' (insecure)' : ''}`;
}

export class MirroredStore implements ContentStore {
  readonly description: string;
  private readonly origins = new Map<string, Origin>();
  private readonly down = new Set<string>();

  constructor(
    readonly registry: string,
    private readonly conf: RegistriesConf,
    private readonly endpointStore: EndpointStoreFactory,
    private readonly hooks: MirrorHooks = {},
  ) {
    this.description = `registry ${registry} (through ${conf.file})`;
  }

  /** The locations to try for a request, the one that served the parent first. */
  private candidates(repo: string, reference: string, origin: Origin): { endpoints: Endpoint[]; file: string } {
    const plan = pullPlan(this.conf, this.registry, repo, origin.byDigest);
    if (plan.blocked) {
      throw new BundleError(`${this.original(repo, reference)} is blocked by ${plan.blocked.file} ([[registry]] prefix "${plan.blocked.prefix}", blocked = true)`);
    }
    const eps = [...plan.endpoints];
    if (origin.servedBy) {
      const at = eps.findIndex((e) => endpointKey(e) === origin.servedBy);
      if (at > 0) eps.unshift(...eps.splice(at, 1));
    }
    return { endpoints: eps, file: plan.entry?.file ?? this.conf.file };
  }

  private original(repo: string, reference: string): string {
    return `${this.registry}/${repo}${reference.includes(':') ? '@' : ':'}${reference}`;
  }

  private originOf(repo: string, digest: string): Origin {
    return this.origins.get(`${repo}@${digest}`) ?? { byDigest: true };
  }

  private remember(repo: string, digest: string, origin: Origin): void {
    const key = `${repo}@${digest}`;
    const had = this.origins.get(key);
    // Pulled by digest anywhere: by-digest mirrors may serve it.
    if (had?.byDigest && !origin.byDigest) return;
    this.origins.set(key, origin);
  }

  /** Try each location in turn (those that could not be reached before only when nothing else is left); the first success wins. */
  private async attempt<T>(repo: string, reference: string, origin: Origin, op: (store: ContentStore, ep: Endpoint) => Promise<T>): Promise<{ value: T; ep: Endpoint }> {
    const { endpoints: eps, file } = this.candidates(repo, reference, origin);
    const up = eps.filter((e) => !this.down.has(endpointKey(e)));
    const toTry = up.length > 0 ? up : eps;
    const failures: { ep: Endpoint; err: unknown }[] = eps.filter((e) => !toTry.includes(e)).map((ep) => ({ ep, err: new Error('unreachable') }));
    for (const [i, ep] of toTry.entries()) {
      try {
        return { value: await op(this.endpointStore(ep.registry, ep.insecure), ep), ep };
      } catch (err) {
        failures.push({ ep, err });
        const key = endpointKey(ep);
        if (isConnectionFailure(err) && !this.down.has(key)) {
          this.down.add(key);
          if (i < toTry.length - 1) this.hooks.onFallback?.(`${endpointName(ep)} is unreachable (${errorMessage(err)}); trying the next location`);
        }
      }
    }
    const only = failures.length === 1 ? failures[0]! : undefined;
    if (only && !only.ep.mirror && only.ep.registry === this.registry && only.ep.repository === repo) throw only.err;
    const last = failures[failures.length - 1]!.err;
    const tried = failures.map((f) => `${endpointName(f.ep)}: ${errorMessage(f.err)}`).join('; ');
    const orig = this.original(repo, reference);
    // Absent everywhere reads as "not found", as a plain registry store says it (cosign look-ups rely on it).
    const notFound = failures.every((f) => isConnectionFailure(f.err) || (f.err instanceof Error && / not found$/.test(f.err.message)) || errorMessage(f.err) === 'unreachable');
    if (notFound && failures.some((f) => !isConnectionFailure(f.err) && errorMessage(f.err) !== 'unreachable')) {
      throw new NotFoundError(`${orig} (per ${file}; tried ${tried}) not found`);
    }
    throw new BundleError(`${orig} (per ${file}) failed at every location: ${tried}`, last instanceof BundleError ? last.exitCode : 1);
  }

  async resolve(repo: string, reference: string, opts?: ResolveOptions): Promise<Descriptor> {
    const byDigest = reference.includes(':');
    const { value, ep } = await this.attempt(repo, reference, { byDigest }, (s, e) => s.resolve(e.repository, reference, opts));
    this.remember(repo, value.digest, { byDigest, servedBy: endpointKey(ep) });
    return value;
  }

  async fetchManifest(repo: string, desc: Descriptor): Promise<ManifestBytes> {
    const origin = this.originOf(repo, desc.digest);
    const { value, ep } = await this.attempt(repo, desc.digest, origin, (s, e) => s.fetchManifest(e.repository, desc));
    try {
      const parsed = parseManifest(value.bytes, value.mediaType, `manifest ${desc.digest}`);
      for (const child of [...parsed.manifests, ...parsed.blobs]) this.remember(repo, child.digest, { byDigest: origin.byDigest, servedBy: endpointKey(ep) });
    } catch {
      // The copy engine reports a malformed manifest; nothing to remember here.
    }
    return value;
  }

  async hasBlob(repo: string, desc: Descriptor): Promise<boolean> {
    const origin = this.originOf(repo, desc.digest);
    for (const ep of this.candidates(repo, desc.digest, origin).endpoints) {
      if (await this.endpointStore(ep.registry, ep.insecure).hasBlob(ep.repository, desc).catch(() => false)) return true;
    }
    return false;
  }

  async openBlob(repo: string, desc: Descriptor): Promise<Readable> {
    const origin = this.originOf(repo, desc.digest);
    return (await this.attempt(repo, desc.digest, origin, (s, e) => s.openBlob(e.repository, desc))).value;
  }

  /** A part of a blob, from the first location that serves it (one that cannot serve parts sends the whole blob). */
  async openBlobRange(repo: string, desc: Descriptor, range: ByteRange): Promise<RangeResult> {
    const origin = this.originOf(repo, desc.digest);
    return (
      await this.attempt(repo, desc.digest, origin, async (s, e) =>
        s.openBlobRange ? s.openBlobRange(e.repository, desc, range) : { stream: await s.openBlob(e.repository, desc), whole: true },
      )
    ).value;
  }
}

/**
 * The store factory `create` uses for every pull: through the registries
 * configuration when one applies to the registry, else a plain RegistryStore.
 */
export function pullStoreFactory(opts: RegistryOptions, conf: RegistriesConf | undefined, hooks: MirrorHooks = {}): (registry: string) => ContentStore {
  const endpoints = new Map<string, RegistryStore>();
  const endpointStore = (registry: string, insecure: boolean): RegistryStore => {
    const key = `${registry}|${insecure}`;
    let s = endpoints.get(key);
    if (!s) {
      s = createRegistryStore(registry, insecure ? { ...opts, tlsVerify: false } : opts);
      endpoints.set(key, s);
    }
    return s;
  };
  const stores = new Map<string, ContentStore>();
  return (registry: string): ContentStore => {
    let s = stores.get(registry);
    if (!s) {
      s = conf && matchesRegistry(conf, registry) ? new MirroredStore(registry, conf, endpointStore, hooks) : endpointStore(registry, false);
      stores.set(registry, s);
    }
    return s;
  };
}
