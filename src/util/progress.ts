import type { Ora, Options as OraOptions } from 'ora';

/** ora is loaded only for a terminal: it costs a tenth of a second at start-up. */
let ora: ((o: OraOptions) => Ora) | undefined;

export type OutputMode = 'tty' | 'plain' | 'quiet' | 'json';

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/**
 * Progress of a long job: phase, items and bytes done, rate. On a terminal an
 * ora spinner line; otherwise a plain line on stderr every few seconds; nothing
 * with --quiet or --json (machines read the final JSON on stdout instead).
 */
export class Progress {
  private spinner: Ora | undefined;
  private phaseName = '';
  private itemsTotal = 0;
  private itemsDone = 0;
  private bytesTotal = 0;
  private bytesDone = 0;
  private phaseStart = Date.now();
  private lastPlain = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly mode: OutputMode,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {}

  static async detect(opts: { quiet?: boolean; json?: boolean }): Promise<Progress> {
    if (opts.json) return new Progress('json');
    if (opts.quiet) return new Progress('quiet');
    if (process.stderr.isTTY && !process.env.CI) {
      ora ??= (await import('ora')).default;
      return new Progress('tty');
    }
    return new Progress('plain');
  }

  phase(name: string, itemsTotal = 0, bytesTotal = 0): void {
    this.finishPhase();
    this.phaseName = name;
    this.itemsTotal = itemsTotal;
    this.itemsDone = 0;
    this.bytesTotal = bytesTotal;
    this.bytesDone = 0;
    this.phaseStart = Date.now();
    if (this.mode === 'tty' && ora) {
      this.spinner = ora({ text: this.line(), stream: this.out }).start();
      this.timer = setInterval(() => {
        if (this.spinner) this.spinner.text = this.line();
      }, 200);
      this.timer.unref();
    } else if (this.mode === 'plain') {
      this.out.write(`${name}...\n`);
      this.lastPlain = Date.now();
    }
  }

  /** More items and bytes to do in this phase than it began with (work found as it goes). */
  more(items: number, bytes: number): void {
    this.itemsTotal += items;
    this.bytesTotal += bytes;
  }

  bytes(n: number): void {
    this.bytesDone += n;
    this.maybePlain();
  }

  item(): void {
    this.itemsDone++;
    this.maybePlain();
  }

  /** A line for the user, kept apart from the spinner. */
  info(msg: string): void {
    if (this.mode === 'quiet' || this.mode === 'json') return;
    if (this.spinner) {
      this.spinner.clear();
      this.out.write(`${msg}\n`);
      this.spinner.render();
    } else {
      this.out.write(`${msg}\n`);
    }
  }

  /** Warnings are shown even with --quiet (not with --json: they go into its output). */
  warn(msg: string): void {
    if (this.mode === 'json') return;
    if (this.spinner) {
      this.spinner.clear();
      this.out.write(`warning: ${msg}\n`);
      this.spinner.render();
    } else {
      this.out.write(`warning: ${msg}\n`);
    }
  }

  finishPhase(ok = true): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (!this.phaseName) return;
    const summary = `${this.phaseName}: ${this.summary()}`;
    if (this.spinner) {
      if (ok) this.spinner.succeed(summary);
      else this.spinner.fail(summary);
      this.spinner = undefined;
    } else if (this.mode === 'plain') {
      this.out.write(`${ok ? 'done' : 'failed'}: ${summary}\n`);
    }
    this.phaseName = '';
  }

  private summary(): string {
    const secs = Math.max((Date.now() - this.phaseStart) / 1000, 0.001);
    const parts: string[] = [];
    if (this.itemsTotal > 0 || this.itemsDone > 0) parts.push(`${this.itemsDone}/${this.itemsTotal} items`);
    if (this.bytesTotal > 0 || this.bytesDone > 0) {
      parts.push(`${humanBytes(this.bytesDone)}${this.bytesTotal ? ` of ${humanBytes(this.bytesTotal)}` : ''}`);
      parts.push(`${humanBytes(this.bytesDone / secs)}/s`);
    }
    parts.push(`${secs.toFixed(1)} s`);
    return parts.join(', ');
  }

  private line(): string {
    return `${this.phaseName}: ${this.summary()}`;
  }

  private maybePlain(): void {
    if (this.mode !== 'plain') return;
    const now = Date.now();
    if (now - this.lastPlain >= 5000) {
      this.lastPlain = now;
      this.out.write(`  ${this.line()}\n`);
    }
  }
}
