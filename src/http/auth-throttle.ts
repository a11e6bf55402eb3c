/** Addresses tracked at most; past it, expired windows are swept and then the oldest dropped. */
const MAX_TRACKED = 10_000;
const WINDOW_MS = 60_000;

/**
 * Failed authentications per client address, in a fixed one-minute window: past the limit the
 * address is refused (429) before its token is even looked up, so guessing tokens costs a minute
 * per handful of tries. Only failures count: a busy client with a good token is never slowed.
 * (@fastify/rate-limit counts every request, not failures.) Per process, in memory: behind a
 * load balancer each process counts the failures it sees.
 */
export class AuthThrottle {
  private readonly windows = new Map<string, { failures: number; resetAt: number }>();

  constructor(
    readonly maxPerMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds until this address may try again; 0 when it may now. */
  blockedFor(address: string): number {
    const w = this.windows.get(address);
    const t = this.now();
    if (!w || w.resetAt <= t || w.failures < this.maxPerMinute) return 0;
    return Math.max(1, Math.ceil((w.resetAt - t) / 1000));
  }

  fail(address: string): void {
    const t = this.now();
    let w = this.windows.get(address);
    if (!w || w.resetAt <= t) {
      if (w) this.windows.delete(address);
      if (this.windows.size >= MAX_TRACKED) this.sweep(t);
      w = { failures: 0, resetAt: t + WINDOW_MS };
      this.windows.set(address, w);
    }
    w.failures++;
  }

  private sweep(t: number) {
    for (const [k, w] of this.windows) if (w.resetAt <= t) this.windows.delete(k);
    // Insertion order is window-start order: the oldest go first.
    for (const k of this.windows.keys()) {
      if (this.windows.size < MAX_TRACKED) break;
      this.windows.delete(k);
    }
  }
}
