import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * Places for legacy SSE sessions: at most `perToken` for one token and `total` in all. In this
 * process's memory by default; in Redis when given, so the caps hold across every server process
 * behind a load balancer. A place in Redis is a member of two sorted sets (the token's, everyone's)
 * scored by when it lapses: the process holding the session renews it while the session lives, so a
 * process that dies without releasing its places gives them back within `leaseMs`.
 */
export type SseTake = { ok: true; release: () => void } | { ok: false; over: 'token' | 'total'; count: number };

export interface SseSlots {
  take(token: string): Promise<SseTake>;
}

/** A place taken: `free` runs once, however often the session's end is reported. */
function granted(free: () => void): SseTake {
  let released = false;
  return {
    ok: true,
    release() {
      if (released) return;
      released = true;
      free();
    },
  };
}

export function localSseSlots(perToken: number, total: number): SseSlots {
  const byToken = new Map<string, number>();
  let open = 0;
  return {
    async take(token) {
      const mine = byToken.get(token) ?? 0;
      if (mine >= perToken) return { ok: false, over: 'token', count: mine };
      if (open >= total) return { ok: false, over: 'total', count: open };
      // Taken before any await, so concurrent opens cannot all pass the check.
      byToken.set(token, mine + 1);
      open++;
      return granted(() => {
        open--;
        const n = (byToken.get(token) ?? 1) - 1;
        if (n > 0) byToken.set(token, n);
        else byToken.delete(token);
      });
    },
  };
}

/** Check and take in one step, so two processes cannot both take the last place. */
const TAKE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local mine = redis.call('ZCARD', KEYS[1])
if mine >= tonumber(ARGV[4]) then return {0, mine} end
local all = redis.call('ZCARD', KEYS[2])
if all >= tonumber(ARGV[5]) then return {1, all} end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return {2, 0}`;

export function redisSseSlots(redis: Redis, perToken: number, total: number, opts: { leaseMs?: number; onError?: (e: unknown) => void } = {}): SseSlots {
  const leaseMs = opts.leaseMs ?? 90_000;
  // Redis unreachable: this process's own count still caps it.
  const local = localSseSlots(perToken, total);
  const all = 'crm-sse:all';
  return {
    async take(token) {
      // The token itself never leaves the process: its hash names its set.
      const mine = `crm-sse:t:${createHash('sha256').update(token).digest('hex').slice(0, 32)}`;
      const id = randomUUID();
      let r: [number, number];
      try {
        r = (await redis.eval(TAKE, 2, mine, all, Date.now(), Date.now() + leaseMs, id, perToken, total, leaseMs * 2)) as [number, number];
      } catch (e) {
        opts.onError?.(e);
        return local.take(token);
      }
      if (r[0] === 0) return { ok: false, over: 'token', count: r[1] };
      if (r[0] === 1) return { ok: false, over: 'total', count: r[1] };
      const renew = setInterval(() => {
        const until = Date.now() + leaseMs;
        redis.zadd(mine, 'XX', until, id).catch(() => {});
        redis.zadd(all, 'XX', until, id).catch(() => {});
      }, leaseMs / 3);
      renew.unref();
      return granted(() => {
        clearInterval(renew);
        redis.zrem(mine, id).catch(() => {});
        redis.zrem(all, id).catch(() => {});
      });
    },
  };
}
