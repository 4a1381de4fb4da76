/**
 * undici's Agent without the rest of undici. Its index module also loads fetch,
 * WebSocket, caches, mocks and interceptors: four fifths of its code, none of
 * it used here, and most of the start-up time of a short command. This loads
 * the dispatcher and the request API only, and joins them the way the index
 * does (undici 7.x, pinned by package-lock.json).
 */
import type { Agent as AgentType } from 'undici';
// @ts-expect-error: undici ships no types for its internal modules
import DispatcherModule from 'undici/lib/dispatcher/dispatcher.js';
// @ts-expect-error: as above
import AgentModule from 'undici/lib/dispatcher/agent.js';
// @ts-expect-error: as above
import api from 'undici/lib/api/index.js';

Object.assign((DispatcherModule as { prototype: object }).prototype, api);

export const Agent = AgentModule as typeof AgentType;
export type Agent = AgentType;
