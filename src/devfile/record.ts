/**
 * The devfile kind's record in the signed bundle manifest (`sources.devfile`),
 * described strictly in spec/bundle-manifest.schema.json (`devfileRecord`) and in
 * spec/airgap-format.md. It says which stack version needs which images and zips,
 * so that push can rewrite every devfile for the target registry.
 */
export interface DevfileImageUse {
  /** The reference as the file names it (variables substituted). */
  written: string;
  /** Fully qualified. */
  source: string;
  /** The bundle image (refName) that carries it; absent when skipped (--skip-missing). */
  refName?: string;
  component: string;
  /** File of the stack version naming it: `devfile.yaml`, `docker/Dockerfile`, `kubernetes/deploy.yaml`. */
  file: string;
}

export interface DevfileStarterProject {
  name: string;
  /** `<name>-offline.zip`, a layer of the artifact. */
  zip: string;
  /** Where it came from (`git <url> at <revision>, subDir <dir>` / `zip <url>`). */
  origin: string;
}

export interface DevfileStackRecord {
  type: 'stack' | 'sample';
  name: string;
  version: string;
  default: boolean;
  /** Folder in the registry layout: `stacks/go/2.6.0`, `stacks/nodejs`, `samples/nodejs-basic`. */
  path: string;
  /** The bundle image (refName) of the version's artifact: `devfile-catalog/go:2.6.0`. */
  artifact: string;
  /** The registry it was read from (a path or a URL). */
  registry: string;
  images: DevfileImageUse[];
  starterProjects: DevfileStarterProject[];
}

export interface DevfileRecord {
  /** The index artifact (index.json, stack.yaml files). */
  index: string;
  /** The devfile-index base image, when carried. */
  indexBase?: string;
  /** Other images the registry deployment needs. */
  extraImages: string[];
  stacks: DevfileStackRecord[];
}

/** Where a stack version's artifact is called in the bundle. */
export function artifactRef(type: 'stack' | 'sample', name: string, version: string): string {
  return `${type === 'stack' ? 'devfile-catalog' : 'devfile-samples'}/${name}:${version}`;
}

export const INDEX_ARTIFACT = 'devfile-registry/index:latest';
