import net from 'node:net';
import { CrmError } from '../services/errors.js';

/** Addresses counted at most while under the limit; past it the oldest count is dropped (O(1)). */
const MAX_COUNTING = 10_000;
const WINDOW_MS = 60_000;

/**
 * The key an address is counted under. An IPv4 address as itself (also when written IPv4-mapped,
 * `::ffff:1.2.3.4`, as a dual-stack socket reports it); an IPv6 address by its /64, the smallest
 * block an ISP hands one host or site, which can use any of its 2^64 addresses.
 */
export function clientKey(address: string): string {
  let a = address.trim().toLowerCase();
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  if (a.startsWith('[') && a.endsWith(']')) a = a.slice(1, -1);
  if (net.isIPv4(a) || !net.isIPv6(a)) return a;
  const groups = expandIPv6(a);
  // ::ffff:a.b.c.d (and its hex form ::ffff:0102:0304) is an IPv4 client.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const [hi, lo] = [groups[6]!, groups[7]!];
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (:: expanded, a trailing dotted IPv4 converted). */
function expandIPv6(a: string): number[] {
  // A trailing dotted IPv4 (::ffff:1.2.3.4) becomes its two hex groups (::ffff:102:304).
  a = a.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, p, q, r, s) => `${((+p << 8) | +q).toString(16)}:${((+r << 8) | +s).toString(16)}`);
  const parse = (s: string) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const [head, rest] = a.split('::') as [string, string | undefined];
  const h = parse(head);
  const r = parse(rest ?? '');
  return rest === undefined ? h : [...h, ...new Array<number>(8 - h.length - r.length).fill(0), ...r];
}

/** A queue of entries in the order they expire: O(1) at both ends (a Map's oldest entry is not, once many were deleted). */
class ExpiryQueue<T extends { expiresAt: number }> {
  private items: T[] = [];
  private head = 0;
  push(item: T) {
    this.items.push(item);
  }
  peek(): T | undefined {
    return this.items[this.head];
  }
  shift(): T | undefined {
    const item = this.items[this.head];
    if (item === undefined) return undefined;
    this.items[this.head++] = undefined as unknown as T;
    // Drop the consumed front now and then, so the array does not grow forever.
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

interface Count {
  key: string;
  failures: number;
  expiresAt: number;
}
interface Block {
  key: string;
  expiresAt: number;
}

/**
 * Failed authentications per client address: past the limit within a one-minute window the address
 * is refused (429) for a minute, before its token is even looked up, so guessing tokens costs a
 * minute per handful of tries. Only failures count: a busy client with a good token is never slowed.
 * (@fastify/rate-limit counts every request, not failures.) Per process, in memory: behind a load
 * balancer each process counts the failures it sees.
 *
 * Blocked addresses live apart from the counts and are never evicted: however many other addresses
 * fail, a blocked one stays blocked for its minute. Their number is bounded by the failures the
 * server can see in a minute divided by the limit. The counts are bounded (MAX_COUNTING): when full,
 * the oldest count goes. Every entry expires one window after it starts, so each kind is kept in a
 * queue in expiry order beside its map: expired entries leave from the front and each call is O(1)
 * amortised, never a scan of the table on the event loop.
 */
export class AuthThrottle {
  /** Addresses under the limit. */
  private readonly counting = new Map<string, Count>();
  private readonly countQueue = new ExpiryQueue<Count>();
  /** Addresses over the limit, refused until expiresAt. */
  private readonly blocked = new Map<string, Block>();
  private readonly blockQueue = new ExpiryQueue<Block>();

  constructor(
    readonly maxPerMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** The answer to an address that failed too often (429 with its wait), or null when it may try. */
  refusal(address: string): CrmError | null {
    const wait = this.blockedFor(address);
    return wait ? new CrmError('RATE_LIMITED', `Too many failed authentications from this address; retry in ${wait} s`, { retryAfterSeconds: wait }) : null;
  }

  /** Seconds until this address may try again; 0 when it may now. */
  blockedFor(address: string): number {
    const t = this.now();
    this.expire(t);
    const b = this.blocked.get(clientKey(address));
    if (!b || b.expiresAt <= t) return 0;
    return Math.max(1, Math.ceil((b.expiresAt - t) / 1000));
  }

  fail(address: string): void {
    const t = this.now();
    this.expire(t);
    const key = clientKey(address);
    const b = this.blocked.get(key);
    if (b && b.expiresAt > t) return;
    let c = this.counting.get(key);
    // Expired but not yet dropped (the clock stepped back, so the queue was not in order): a new window.
    if (c && c.expiresAt <= t) c = undefined;
    if (!c) {
      this.counting.delete(key);
      // Full of live counts: the oldest goes (an address under the limit loses at most its count).
      while (this.counting.size >= MAX_COUNTING) {
        const oldest = this.countQueue.shift()!;
        if (this.counting.get(oldest.key) === oldest) this.counting.delete(oldest.key);
      }
      c = { key, failures: 0, expiresAt: t + WINDOW_MS };
      this.counting.set(key, c);
      this.countQueue.push(c);
    }
    if (++c.failures >= this.maxPerMinute) {
      this.counting.delete(key);
      const block = { key, expiresAt: t + WINDOW_MS };
      this.blocked.set(key, block);
      this.blockQueue.push(block);
    }
  }

  /** Addresses tracked: counting and blocked (for tests and metrics). */
  get size(): { counting: number; blocked: number } {
    return { counting: this.counting.size, blocked: this.blocked.size };
  }

  /** Drop expired entries from the front of both queues (and their maps, unless replaced since). */
  private expire(t: number) {
    for (let c = this.countQueue.peek(); c && c.expiresAt <= t; c = this.countQueue.peek()) {
      this.countQueue.shift();
      if (this.counting.get(c.key) === c) this.counting.delete(c.key);
    }
    for (let b = this.blockQueue.peek(); b && b.expiresAt <= t; b = this.blockQueue.peek()) {
      this.blockQueue.shift();
      if (this.blocked.get(b.key) === b) this.blocked.delete(b.key);
    }
  }
}
