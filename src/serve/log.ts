/**
 * The server's log: one line per request, plus a few events (listening,
 * shutting down, a blob that failed its digest). Plain text for people,
 * `--log-format json` for log collectors: one JSON object per line.
 */
export type LogFormat = 'text' | 'json';

export interface RequestRecord {
  remote: string;
  method: string;
  path: string;
  status: number;
  /** Body bytes sent. */
  bytes: number;
  ms: number;
  /** Why the request failed, when it did (a digest mismatch, a client that went away). */
  error?: string;
}

export class ServeLog {
  constructor(
    readonly format: LogFormat,
    private readonly out: NodeJS.WritableStream = process.stdout,
  ) {}

  request(r: RequestRecord): void {
    const time = new Date().toISOString();
    if (this.format === 'json') {
      this.line(JSON.stringify({ time, level: r.error ? 'error' : 'info', msg: 'request', ...r }));
    } else {
      this.line(`${time} ${r.remote} "${r.method} ${r.path}" ${r.status} ${r.bytes} ${r.ms}ms${r.error ? ` error: ${r.error}` : ''}`);
    }
  }

  event(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
    const time = new Date().toISOString();
    if (this.format === 'json') this.line(JSON.stringify({ time, level, msg, ...fields }));
    else this.line(`${time} ${level === 'info' ? '' : `${level.toUpperCase()} `}${msg}`);
  }

  private line(s: string): void {
    this.out.write(`${s}\n`);
  }
}
