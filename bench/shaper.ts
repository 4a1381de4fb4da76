/**
 * A shaping TCP proxy on loopback, for the bench's WAN scenario: every byte
 * is delayed by half the round trip in each direction (a new connection also
 * waits one round trip, its handshake), each connection is held to a
 * per-connection rate (as CDNs and registries cap each connection), and all
 * connections together share the link's rate. Pacing clocks, per direction.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface ShaperOptions {
  /** host:port to forward to (loopback). */
  target: string;
  rttMs: number;
  /** Bytes per second per connection and direction. */
  perConnection: number;
  /** Bytes per second of the whole link, per direction. */
  link: number;
  /** Record request and status lines for `trace()` (costs CPU: off for timed runs). */
  trace?: boolean;
}

/** One event of the request trace (times in ms since `mark()`). */
export interface TraceEvent {
  t: number;
  conn: number;
  /** `open`, a request line as the client sent it, or a response's status line as the client got it. */
  what: string;
}

export interface RunningShaper {
  host: string;
  /** Bytes carried server -> client. */
  bytesDown(): number;
  /** Bytes carried server -> client per 100 ms since `mark()`, for a profile of a run. */
  timeline(): number[];
  mark(): void;
  connections(): number;
  /** Connections opened, request lines sent and status lines received since `mark()`, in order. */
  trace(): TraceEvent[];
  stop(): Promise<void>;
}

const REQUEST_LINE = /(?:^|\r\n)((?:GET|HEAD|POST|PUT|PATCH|DELETE) \S+) HTTP\/1\.[01]\r\n/g;
const STATUS_LINE = /(?:^|\r\n)HTTP\/1\.[01] (\d{3})[^\r]*\r\n/g;

/** The request or status lines in a piece of a stream (a trace, not a parser: a line split between pieces is missed). */
function lines(buf: Buffer, re: RegExp): string[] {
  const text = buf.toString('latin1', 0, Math.min(buf.length, 64 * 1024));
  return [...text.matchAll(re)].map((m) => m[1]!);
}

/**
 * A pacing clock: bytes are let through at `rate`; a late timer may catch up
 * by at most `burstMs`, so the average rate holds whatever the timer jitter.
 */
class Pacer {
  private t = 0;

  constructor(
    private readonly rate: number,
    private readonly burstMs = 5,
  ) {}

  /** Milliseconds to wait before sending more. */
  delay(now: number): number {
    return Math.max(0, this.t - now);
  }

  consume(n: number, now: number): void {
    this.t = Math.max(this.t, now - this.burstMs) + (n / this.rate) * 1000;
  }
}

const HIGH_WATER = 1 << 20;
const SLICE = 32 * 1024;

/** One direction of one connection. */
class Pipe {
  private readonly queue: { buf: Buffer | null; due: number }[] = [];
  private queued = 0;
  private timer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  private readonly own: Pacer;

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly delayMs: number,
    perConnection: number,
    private readonly link: Pacer,
    private readonly count: (n: number, piece: Buffer) => void,
    private notBefore: number,
    onReceived?: (buf: Buffer) => void,
  ) {
    this.own = new Pacer(perConnection);
    src.on('data', (buf: Buffer) => {
      onReceived?.(buf);
      this.queue.push({ buf, due: Math.max(performance.now() + delayMs, this.notBefore) });
      this.queued += buf.length;
      if (this.queued > HIGH_WATER) src.pause();
      this.schedule(0);
    });
    src.on('end', () => {
      this.queue.push({ buf: null, due: performance.now() + delayMs });
      this.schedule(0);
    });
    dst.on('drain', () => {
      this.waitingDrain = false;
      this.schedule(0);
    });
  }

  private schedule(ms: number): void {
    if (this.timer || this.waitingDrain) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
    }, ms);
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const now = performance.now();
      if (head.due > now) return this.schedule(head.due - now);
      if (head.buf === null) {
        this.queue.shift();
        this.dst.end();
        return;
      }
      const wait = Math.max(this.own.delay(now), this.link.delay(now));
      if (wait > 0) return this.schedule(wait);
      const n = Math.min(head.buf.length, SLICE);
      this.own.consume(n, now);
      this.link.consume(n, now);
      const piece = head.buf.subarray(0, n);
      if (n === head.buf.length) this.queue.shift();
      else head.buf = head.buf.subarray(n);
      this.queued -= n;
      this.count(n, piece);
      if (this.queued < HIGH_WATER / 2 && this.src.isPaused()) this.src.resume();
      if (!this.dst.write(piece)) {
        this.waitingDrain = true;
        return;
      }
    }
  }
}

export async function startShaper(opts: ShaperOptions): Promise<RunningShaper> {
  const [host, port] = opts.target.split(':') as [string, string];
  const up = new Pacer(opts.link);
  const down = new Pacer(opts.link);
  const oneWay = opts.rttMs / 2;
  let carried = 0;
  let conns = 0;
  let t0 = performance.now();
  let buckets: number[] = [];
  let events: TraceEvent[] = [];
  const note = (conn: number, what: string): void => {
    events.push({ t: performance.now() - t0, conn, what });
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const id = ++conns;
    if (opts.trace) note(id, 'open');
    const server = net.connect({ host, port: Number(port) });
    sockets.add(client);
    sockets.add(server);
    const handshakeDone = performance.now() + opts.rttMs;
    new Pipe(client, server, oneWay, opts.perConnection, up, () => undefined, handshakeDone, (buf) => {
      if (opts.trace) for (const l of lines(buf, REQUEST_LINE)) note(id, l);
    });
    new Pipe(server, client, oneWay, opts.perConnection, down, (n, piece) => {
      if (opts.trace) for (const l of lines(piece, STATUS_LINE)) note(id, `-> ${l}`);
      carried += n;
      const b = Math.floor((performance.now() - t0) / 100);
      while (buckets.length <= b) buckets.push(0);
      buckets[b]! += n;
    }, handshakeDone);
    const close = (): void => {
      client.destroy();
      server.destroy();
      sockets.delete(client);
      sockets.delete(server);
    };
    client.on('error', close);
    server.on('error', close);
    // A client gone has nothing more to receive; a server that closed may still have bytes in flight to the client.
    client.on('close', close);
    server.on('close', () => sockets.delete(server));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    bytesDown: () => carried,
    timeline: () => [...buckets],
    mark: () => {
      t0 = performance.now();
      buckets = [];
      events = [];
    },
    trace: () => [...events],
    connections: () => conns,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
