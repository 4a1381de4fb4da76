/**
 * The HTTP(S) server of `bundle serve`: routes requests, writes one log line
 * per request, and shuts down cleanly (stop accepting, let requests in flight
 * finish for a grace period, then close what is left).
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { errorMessage } from '../util/errors.js';
import type { Outcome } from './distribution.js';
import type { ServeLog } from './log.js';

/** A part of the server's URL space: answers the requests it claims, undefined for the others. */
export type Route = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<Outcome> | undefined;

/** A connection with no traffic either way for this long is closed. */
const IDLE_TIMEOUT_MS = 120_000;

export interface ServerOptions {
  host: string;
  port: number;
  tls?: { cert: Buffer; key: Buffer };
  routes: Route[];
  log: ServeLog;
}

export interface RunningServer {
  /** `host:port` actually bound (`[::1]:port` for IPv6). */
  address: string;
  scheme: 'http' | 'https';
  /** Stop accepting; wait up to `graceMs` for requests in flight, then cut them. */
  close(graceMs?: number): Promise<{ cut: number }>;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const { log } = opts;
  let active = 0;
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const started = process.hrtime.bigint();
    active++;
    const path = printable(req.url ?? '/');
    const remote = req.socket.remoteAddress ?? '-';
    const done = (o: Outcome): void => {
      log.request({
        remote,
        method: printable(req.method ?? '-'),
        path,
        status: o.status,
        bytes: o.bytes,
        ms: Number((process.hrtime.bigint() - started) / 1_000_000n),
        error: o.error,
      });
    };
    res.once('close', () => active--);
    void route(opts.routes, req, res).then(done, (err: unknown) => {
      if (!res.headersSent) {
        const body = Buffer.from(JSON.stringify({ errors: [{ code: 'UNKNOWN', message: errorMessage(err) }] }));
        res.writeHead(500, { 'Content-Type': 'application/json', 'Content-Length': body.length });
        res.end(body);
      } else {
        res.destroy();
      }
      done({ status: 500, bytes: 0, error: errorMessage(err) });
    });
  };
  const server: Server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, handler) : createHttpServer(handler);
  // Keep-alive connections of idle clients must not hold a shutdown up, and a client
  // that stops reading for this long gives its place (and memory) back.
  server.keepAliveTimeout = 5000;
  server.setTimeout(IDLE_TIMEOUT_MS);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const address = addr.family === 'IPv6' ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`;
  return {
    address,
    scheme: opts.tls ? 'https' : 'http',
    async close(graceMs = 10_000) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), graceMs).unref());
      if ((await Promise.race([closed.then(() => 'closed' as const), timer])) === 'timeout') {
        const cut = active;
        server.closeAllConnections();
        await closed;
        return { cut };
      }
      return { cut: 0 };
    },
  };
}

async function route(routes: Route[], req: IncomingMessage, res: ServerResponse): Promise<Outcome> {
  const url = new URL(req.url ?? '/', 'http://bundle.invalid');
  for (const r of routes) {
    const handled = r(req, res, url);
    if (handled) return handled;
  }
  const body = Buffer.from('404 page not found\n');
  res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': body.length });
  res.end(req.method === 'HEAD' ? undefined : body);
  return { status: 404, bytes: req.method === 'HEAD' ? 0 : body.length };
}

/** A request line as it may appear in a log: no control characters, bounded length. */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f"\\]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return clean.length > 2048 ? `${clean.slice(0, 2048)}...` : clean;
}
