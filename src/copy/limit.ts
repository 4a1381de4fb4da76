/**
 * A counting semaphore: at most `n` tasks run at once. Waiting tasks start
 * highest `priority` first (first come first served among equals): a copy
 * gives a blob's size, so the largest blobs start first and the last one to
 * finish is not a large one started late (a blob's upload cannot be split).
 */
export class Limiter {
  private active = 0;
  /** Waiting tasks, highest priority first. */
  private readonly waiting: { priority: number; start: () => void }[] = [];

  constructor(private readonly n: number) {
    if (!(n >= 1)) throw new Error('concurrency must be at least 1');
  }

  async run<T>(task: () => Promise<T>, priority = 0): Promise<T> {
    const release = await this.acquire(priority);
    try {
      return await task();
    } finally {
      release();
    }
  }

  /** Take a slot; the returned function gives it back (once). */
  async acquire(priority = 0): Promise<() => void> {
    if (this.active >= this.n) {
      await new Promise<void>((start) => {
        // After the last waiting task of the same or a higher priority.
        let i = this.waiting.length;
        while (i > 0 && this.waiting[i - 1]!.priority < priority) i--;
        this.waiting.splice(i, 0, { priority, start });
      });
    } else {
      this.active++;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next.start();
      else this.active--;
    };
  }
}

/** Run `fn` over `items` with at most `n` at once; rejects with the first error after all settle. */
export async function mapLimit<T, R>(items: readonly T[], n: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const limiter = new Limiter(n);
  const settled = await Promise.allSettled(items.map((item, i) => limiter.run(() => fn(item, i))));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<R>).value);
}

/**
 * A budget of units (bytes of memory, say) shared by tasks of different weights:
 * a task waits until its weight fits, first come first served. A weight larger
 * than the whole budget runs alone.
 */
export class WeightedLimiter {
  private used = 0;
  private readonly waiting: { weight: number; start: () => void }[] = [];

  constructor(readonly capacity: number) {
    if (!(capacity >= 1)) throw new Error('capacity must be at least 1');
  }

  /** Wait for room for `weight`; resolves to the function that gives it back (call it once). */
  async acquire(weight: number): Promise<() => void> {
    const w = Math.min(Math.max(weight, 0), this.capacity);
    if (this.waiting.length > 0 || this.used + w > this.capacity) {
      await new Promise<void>((resolve) => this.waiting.push({ weight: w, start: resolve }));
    } else {
      this.used += w;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= w;
      while (this.waiting.length > 0 && this.used + this.waiting[0]!.weight <= this.capacity) {
        const next = this.waiting.shift()!;
        this.used += next.weight;
        next.start();
      }
    };
  }
}
