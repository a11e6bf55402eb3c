import { AsyncLocalStorage } from 'node:async_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { RawBuilder, SqlBool } from 'kysely';
import type { Db } from '../db/database.js';
import { budgetCondition } from '../db/sqlite/read-pool.js';
import type { Ctx } from './context.js';
import { CrmError } from './errors.js';
import { cancelledError } from './work.js';

/**
 * Budgets for heavy reads (aggregates, trees, histograms): a lane of their own with bounded
 * concurrency and a bounded queue, a time limit, and size limits. Light requests (get, list,
 * /health, /me) never enter the lane, so a crowd of heavy reads cannot make them wait.
 *
 * The lane belongs to the database handle, not to a surface: REST, MCP and the CLI share it.
 */

export interface BudgetLimits {
  /** Wall-clock limit of one heavy read, queueing excluded (ms). */
  timeoutMs: number;
  /** Buckets (groups) one answer may hold: a tree's buckets at every level, or a grouped answer's groups. */
  maxCells: number;
  /** Heavy reads running at once. */
  concurrency: number;
  /** Heavy reads waiting for a slot; one more is refused with OVERLOADED (503 + Retry-After). */
  queue: number;
  /** Heavy reads (running and waiting) one user may hold at once; more answer RATE_LIMITED (429). */
  perUser: number;
  /** Rows one export may hold (its `limit`); more: QUERY_TOO_EXPENSIVE (422) before anything is read. */
  exportMaxRows: number;
  /** Bytes of JSON or CSV one export may write; past it the export stops (QUERY_TOO_EXPENSIVE). */
  exportMaxBytes: number;
}

export const DEFAULT_LIMITS = { timeoutMs: 30_000, maxCells: 100_000, queue: 16, exportMaxRows: 10_000, exportMaxBytes: 64 * 1024 * 1024 } as const;

/** Default limits for a database: as many running heavy reads as it has read workers (1 without a pool; PostgreSQL: its heavyConcurrency). */
export function defaultLimits(db: Db): BudgetLimits {
  const concurrency = Math.max(1, db.readPool?.threads ?? db.heavyConcurrency ?? 1);
  return { ...DEFAULT_LIMITS, concurrency, perUser: perUserDefault(concurrency, DEFAULT_LIMITS.queue) };
}

/**
 * One user may hold (running and waiting) as many heavy reads as the queue is long: a dashboard of
 * a dozen widgets from one token still loads, and the lane still has `concurrency` places for the
 * others. Holding many places buys no priority: the lane hands each free slot to the user who has
 * waited longest since their last turn (see HeavyLane.next).
 */
export function perUserDefault(concurrency: number, queue: number): number {
  return Math.max(1, queue > 0 ? queue : concurrency - 1);
}

interface Waiter {
  user: string;
  /** Arrival order, for ties between users. */
  seq: number;
  start: () => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

class HeavyLane {
  running = 0;
  readonly waiting: Waiter[] = [];
  readonly perUser = new Map<string, number>();
  /** Heavy reads each user has running now. */
  private readonly runningBy = new Map<string, number>();
  /** When (a counter) each user last got a slot; a user never served counts as 0. */
  private readonly lastTurn = new Map<string, number>();
  private turns = 0;
  private arrivals = 0;
  /** Heavy reads stopped: past their time limit, or because the caller gave up. */
  readonly stopped = { timedOut: 0, cancelled: 0 };
  /** Recent run times, for a Retry-After that tracks the real load. */
  private avgMs = 1000;

  constructor(
    public limits: BudgetLimits,
    readonly db: Db,
  ) {}

  retryAfterSeconds(): number {
    // The queue drains about `concurrency` reads per average run time.
    const waitMs = ((this.waiting.length + 1) / this.limits.concurrency) * this.avgMs;
    return Math.max(1, Math.min(60, Math.ceil(waitMs / 1000)));
  }

  noteRun(ms: number) {
    this.avgMs = this.avgMs * 0.8 + ms * 0.2;
  }

  async acquire(user: string, signal: AbortSignal | undefined): Promise<void> {
    const held = this.perUser.get(user) ?? 0;
    if (held >= this.limits.perUser)
      throw new CrmError(
        'RATE_LIMITED',
        `You already have ${held} heavy reads (aggregates) running or queued, the most one user may hold (${this.limits.perUser}); wait for them to finish, then retry`,
        { retryAfterSeconds: this.retryAfterSeconds(), limit: 'perUser', max: this.limits.perUser },
      );
    if (this.running < this.limits.concurrency) {
      this.running++;
      this.perUser.set(user, held + 1);
      this.started(user);
      return;
    }
    if (this.waiting.length >= this.limits.queue)
      throw new CrmError('OVERLOADED', `The server is busy with heavy reads (${this.running} running, ${this.waiting.length} queued, the most it takes); retry after ${this.retryAfterSeconds()} s`, {
        retryAfterSeconds: this.retryAfterSeconds(),
        running: this.running,
        queued: this.waiting.length,
      });
    this.perUser.set(user, held + 1);
    await new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        user,
        seq: ++this.arrivals,
        signal,
        start: resolve,
        onAbort: () => {
          const i = this.waiting.indexOf(w);
          if (i >= 0) this.waiting.splice(i, 1);
          this.releaseUser(user);
          reject(cancelledError());
        },
      };
      signal?.addEventListener('abort', w.onAbort, { once: true });
      this.waiting.push(w);
    });
  }

  private releaseUser(user: string) {
    const n = (this.perUser.get(user) ?? 1) - 1;
    if (n > 0) this.perUser.set(user, n);
    else {
      // A user who holds nothing is forgotten (the maps stay as small as the lane's users).
      this.perUser.delete(user);
      this.lastTurn.delete(user);
    }
  }

  private started(user: string) {
    this.runningBy.set(user, (this.runningBy.get(user) ?? 0) + 1);
    this.lastTurn.set(user, ++this.turns);
  }

  /**
   * The waiter to start next, fairly rather than first come, first served (a plain FIFO let one
   * member's 16 queued aggregates make another user's 100 ms one wait 36 s): the user with the
   * fewest reads running, then the one whose last turn is oldest (round-robin between users),
   * then arrival order. So whatever one user has queued, another user's read starts next, and one
   * user keeps at most `concurrency - 1` slots while others wait for theirs.
   */
  private next(): Waiter | undefined {
    let best: Waiter | undefined;
    let bestKey: [number, number, number] | undefined;
    for (const w of this.waiting) {
      const key: [number, number, number] = [this.runningBy.get(w.user) ?? 0, this.lastTurn.get(w.user) ?? 0, w.seq];
      if (!bestKey || key[0] < bestKey[0] || (key[0] === bestKey[0] && (key[1] < bestKey[1] || (key[1] === bestKey[1] && key[2] < bestKey[2])))) {
        best = w;
        bestKey = key;
      }
    }
    if (best) this.waiting.splice(this.waiting.indexOf(best), 1);
    return best;
  }

  release(user: string) {
    this.releaseUser(user);
    const r = (this.runningBy.get(user) ?? 1) - 1;
    if (r > 0) this.runningBy.set(user, r);
    else this.runningBy.delete(user);
    const next = this.next();
    if (next) {
      // The slot passes straight to the next waiter: running stays the same.
      next.signal?.removeEventListener('abort', next.onAbort);
      this.started(next.user);
      next.start();
    } else this.running--;

    if (this.running === 0) collectWhenIdle(this, this.db);
  }
}

/**
 * Heavy reads leave large answers behind as garbage (rows, buckets, their JSON). V8 collects only
 * when JavaScript allocates, so an idle server kept its peak heap (measured: 306 MiB of heap at
 * idle, 48 MiB of it live). Once the lane has been empty a few seconds, one full collection gives
 * that memory back. The collector is reached through V8's own flag (documented in node:v8); where
 * that is not allowed, nothing happens.
 */
const IDLE_GC_MS = 5000;
let gcFn: (() => void) | null | undefined;
const idleTimers = new WeakMap<HeavyLane, ReturnType<typeof setTimeout>>();

function collector(): (() => void) | null {
  if (gcFn !== undefined) return gcFn;
  try {
    if (typeof (globalThis as { gc?: unknown }).gc !== 'function') v8.setFlagsFromString('--expose-gc');
    gcFn = (typeof (globalThis as { gc?: unknown }).gc === 'function' ? (globalThis as unknown as { gc: () => void }).gc : vm.runInNewContext('gc')) as () => void;
  } catch {
    gcFn = null;
  }
  return gcFn;
}

function collectWhenIdle(lane: HeavyLane, db: Db) {
  clearTimeout(idleTimers.get(lane));
  const t = setTimeout(() => {
    if (lane.running !== 0) return;
    collector()?.();
    // The main connection's page cache filled up meanwhile (writes, imports, inline heavy reads).
    db.releaseCache();
  }, IDLE_GC_MS);
  t.unref();
  idleTimers.set(lane, t);
}

const lanes = new WeakMap<Db, HeavyLane>();

/** The database's one lane, whichever workspace's view of it (Db.origin) asks. */
function laneOf(db: Db): HeavyLane {
  let l = lanes.get(db.origin);
  if (!l) lanes.set(db.origin, (l = new HeavyLane(defaultLimits(db.origin), db.origin)));
  return l;
}

/** Set the limits of a database's heavy lane (server start-up from the configuration; tests). */
export function configureBudget(db: Db, limits: Partial<BudgetLimits>): BudgetLimits {
  const lane = laneOf(db);
  const merged = { ...lane.limits, ...limits };
  if (limits.perUser === undefined && (limits.concurrency !== undefined || limits.queue !== undefined)) merged.perUser = perUserDefault(merged.concurrency, merged.queue);
  lane.limits = merged;
  return merged;
}

export function budgetLimits(db: Db): BudgetLimits {
  return laneOf(db).limits;
}

/** Heavy reads running and queued on a database (for tests and the load benchmark). */
export function laneState(db: Db): { running: number; queued: number } {
  const l = laneOf(db);
  return { running: l.running, queued: l.waiting.length };
}

/** Heavy reads stopped so far on a database: past their time limit, or because the caller gave up. */
export function laneStopped(db: Db): { timedOut: number; cancelled: number } {
  return { ...laneOf(db).stopped };
}

interface Budget {
  /** Aborted when the time limit passes or the caller gives up. */
  signal: AbortSignal;
  timedOut: () => boolean;
  /** performance.now() past which the read is out of time (the timer may not have fired yet). */
  deadline: number;
  /** The same instant as epoch ms, for the read workers' clocks. */
  deadlineEpoch: number;
  expire: () => void;
  limits: BudgetLimits;
  /** Buckets produced so far by this heavy read. */
  cells: number;
}

const current = new AsyncLocalStorage<Budget>();

/** The running heavy read's budget, if any (runRead passes its signal to the read pool). */
export function currentBudget(): Budget | undefined {
  return current.getStore();
}

export function tooExpensive(message: string, details: Record<string, unknown>): CrmError {
  return new CrmError('QUERY_TOO_EXPENSIVE', message, details);
}

export function timeoutError(limits: BudgetLimits): CrmError {
  return tooExpensive(`The query ran longer than its time limit of ${limits.timeoutMs / 1000} s and was stopped; narrow it: a filter, fewer nested levels or a smaller size`, {
    limit: 'timeoutMs',
    max: limits.timeoutMs,
  });
}

/** A place in the heavy lane, held until release(): its time limit runs from the moment it is granted. */
export interface HeavySlot {
  /** Aborted when the time limit passes or the caller gives up. */
  signal: AbortSignal;
  limits: BudgetLimits;
  timedOut: () => boolean;
  /** Throws QUERY_TOO_EXPENSIVE past the time limit, CANCELLED once the caller gave up. */
  check: () => void;
  /** Gives the place back (once; later calls do nothing). */
  release: () => void;
  budget: Budget;
}

/**
 * Wait for a place in the lane (or be refused when it is full), then hold it until release().
 * For work whose end is not one call's end, such as an export streamed to a client as it reads.
 */
/**
 * Run `fn` inside a place already held (an export's, between its pages): heavy reads it makes
 * (a list that counts as heavy) share that place instead of queueing for a second one, which a
 * lane of one place would never grant.
 */
export function inSlot<T>(slot: HeavySlot, fn: () => Promise<T>): Promise<T> {
  return current.run(slot.budget, fn);
}

export async function enterLane(ctx: Ctx): Promise<HeavySlot> {
  const lane = laneOf(ctx.db);
  const user = `${ctx.actor.workspaceId}:${ctx.actor.userId}`;
  const callerSignal = ctx.work?.signal;
  if (callerSignal?.aborted) throw cancelledError();
  await lane.acquire(user, callerSignal);
  const limits = lane.limits;
  const started = performance.now();
  const ac = new AbortController();
  let timedOut = false;
  let released = false;
  const expire = () => {
    if (ac.signal.aborted) return;
    timedOut = true;
    ac.abort();
  };
  const timer = setTimeout(expire, limits.timeoutMs);
  const onCallerAbort = () => ac.abort();
  callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
  const budget: Budget = { signal: ac.signal, timedOut: () => timedOut, deadline: started + limits.timeoutMs, deadlineEpoch: Date.now() + limits.timeoutMs, expire, limits, cells: 0 };
  return {
    signal: ac.signal,
    limits,
    timedOut: () => timedOut,
    budget,
    check() {
      if (performance.now() > budget.deadline) expire();
      if (ac.signal.aborted) throw timedOut ? timeoutError(limits) : cancelledError();
    },
    release() {
      if (released) return;
      released = true;
      if (ac.signal.aborted) lane.stopped[timedOut ? 'timedOut' : 'cancelled']++;
      clearTimeout(timer);
      callerSignal?.removeEventListener('abort', onCallerAbort);
      lane.noteRun(performance.now() - started);
      lane.release(user);
    },
  };
}

/**
 * Run a heavy read in the lane: wait for a slot (or be refused when the queue is full), then run
 * `fn` with a time budget whose signal stops its queries on the read pool. Nested heavy calls
 * (the Kasar form calling the grouped one, a task summary's four aggregates) run in the slot
 * they are already in: no second slot, so no deadlock.
 */
export async function heavy<T>(ctx: Ctx, fn: () => Promise<T>): Promise<T> {
  const outer = current.getStore();
  if (outer) {
    if (outer.signal.aborted) throw outer.timedOut() ? timeoutError(outer.limits) : cancelledError();
    return fn();
  }
  const slot = await enterLane(ctx);
  try {
    return await current.run(slot.budget, fn);
  } catch (e) {
    if (slot.signal.aborted && !(e instanceof CrmError && e.code === 'QUERY_TOO_EXPENSIVE')) throw slot.timedOut() ? timeoutError(slot.limits) : cancelledError();
    throw e;
  } finally {
    slot.release();
  }
}

/**
 * The condition a heavy read's WHERE carries so that the read pool can stop it mid-statement (time
 * limit, or the caller gave up); none on the main connection, whose statements cannot be stopped.
 */
export function budgetWhere(ctx: Ctx): RawBuilder<SqlBool> | undefined {
  const b = current.getStore();
  return b && ctx.db.readPool ? budgetCondition(b.deadlineEpoch) : undefined;
}

/** Between the queries of a heavy read (and on the main connection, where a statement cannot be stopped). */
export function checkBudget(): void {
  const b = current.getStore();
  if (!b) return;
  // A synchronous statement on the main connection keeps the timer from firing: compare the clock too.
  if (performance.now() > b.deadline) b.expire();
  if (b.signal.aborted) throw b.timedOut() ? timeoutError(b.limits) : cancelledError();
}

/** Count buckets as they arrive; refuse the answer once it passes maxCells. */
export function spendCells(n: number, what: string): void {
  const b = current.getStore();
  if (!b) return;
  b.cells += n;
  if (b.cells > b.limits.maxCells)
    throw tooExpensive(`The answer would hold more than ${b.limits.maxCells.toLocaleString('en-US')} buckets (${what}); narrow it: fewer nested levels, a smaller size, or a filter`, {
      limit: 'maxCells',
      max: b.limits.maxCells,
      what,
    });
}
