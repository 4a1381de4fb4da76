/**
 * The registry of source kinds. `create` asks each kind for its section of the
 * config and plans it; `push` hands each kind with a record in the manifest
 * (`manifest.sources[kind]`) its part of the delivery. A new kind is one entry in
 * each list here, one property in spec/bundle-config.schema.json and one in the
 * manifest schema's `sources`.
 */
import { devfileKind, devfilePushPart } from './devfile.js';
import { imageStreamsPushPart, operatorsPushPart, releasesPushPart, repositoriesPushPart } from '../push/openshift.js';
import { operatorsKind } from './catalog.js';
import { imagesKind } from './images.js';
import { imageStreamsKind } from './imagestreams.js';
import { releasesKind } from './release.js';
import { repositoriesKind } from './repositories.js';
import type { PushPart, SourceKind } from './source.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const SOURCE_KINDS: readonly SourceKind<any>[] = [
  imagesKind,
  devfileKind,
  releasesKind,
  operatorsKind,
  repositoriesKind,
  imageStreamsKind,
];

export const PUSH_PARTS: readonly PushPart[] = [
  devfilePushPart,
  releasesPushPart,
  operatorsPushPart,
  repositoriesPushPart,
  imageStreamsPushPart,
];
