// When to try reconnecting the terminal: 1 s, doubling, for a bounded number of tries.

/** Exponential backoff with a bounded number of tries. */
export class Backoff {
  private tries = 0;

  constructor(
    readonly initialMs: number = 1000,
    readonly maxTries: number = 6,
    readonly maxDelayMs: number = 30_000,
  ) {}

  /** The delay before the next try, or null when every try is used up. */
  next(): number | null {
    if (this.tries >= this.maxTries) return null;
    const delay = Math.min(this.initialMs * 2 ** this.tries, this.maxDelayMs);
    this.tries += 1;
    return delay;
  }

  /** How many tries [`next`] has handed out since the last reset. */
  get attempt(): number {
    return this.tries;
  }

  /** Starts over (after a connection that worked). */
  reset(): void {
    this.tries = 0;
  }
}
