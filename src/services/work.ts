import { checkBudget, currentBudget } from './budget.js';
import type { Ctx } from './context.js';
import { CrmError } from './errors.js';

/**
 * A long call's line to whoever started it: cancellation in, progress out. The MCP surface fills
 * it from the request (notifications/cancelled, the progressToken); REST and the CLI leave it out
 * and, outside the heavy lane, the checkpoints cost nothing.
 */
export interface Work {
  signal?: AbortSignal | undefined;
  /** Called at most every PROGRESS_EVERY_MS, and when a checkpoint reports done >= total. */
  progress?: ((done: number, total: number | undefined, message: string) => void) | undefined;
}

const PROGRESS_EVERY_MS = 250;
/**
 * How long a service may run without letting the event loop in (to read a cancellation, and so
 * that light requests beside a heavy read keep their latency).
 */
const YIELD_EVERY_MS = 25;

interface WorkState {
  lastYield: number;
  lastProgress: number;
}
/** Per Work (MCP), or per heavy read's budget when no Work is set (REST, CLI). */
const state = new WeakMap<object, WorkState>();

export function cancelledError(): CrmError {
  return new CrmError('CANCELLED', 'The call was cancelled by the client; everything it had not committed was rolled back');
}

/**
 * Call between chunks of a long job, inside its transaction: lets the event loop run (so the
 * cancellation notice can arrive; better-sqlite3 blocks it otherwise), throws CANCELLED once the
 * caller gave up (the transaction then rolls back), and reports progress.
 */
export async function checkpoint(ctx: Ctx, done: number, total: number | undefined, message: string): Promise<void> {
  // Inside the heavy lane (a duplicate scan): its time limit too, on every surface.
  checkBudget();
  const w = ctx.work;
  // A heavy read on the main thread (a duplicate scan) yields on REST and the CLI too: without it a
  // member's scan of 200,000 contacts held the event loop 10 s (/me blocked as long) and ran past
  // its time limit, whose timer could not fire.
  const key: object | undefined = w ?? currentBudget();
  if (!key) return;
  let s = state.get(key);
  if (!s) state.set(key, (s = { lastYield: 0, lastProgress: 0 }));
  const t = Date.now();
  if (t - s.lastYield >= YIELD_EVERY_MS) {
    // Two turns: the first runs in the check phase, the second only after a poll phase has read pending I/O.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    s.lastYield = Date.now();
    checkBudget();
  }
  if (!w) return;
  if (w.signal?.aborted) throw cancelledError();
  if (w.progress && (t - s.lastProgress >= PROGRESS_EVERY_MS || (total !== undefined && done >= total))) {
    s.lastProgress = t;
    w.progress(done, total, message);
  }
}

/** Throw CANCELLED if the caller gave up; for the start of a job and between its phases. */
export function throwIfCancelled(ctx: Ctx): void {
  if (ctx.work?.signal?.aborted) throw cancelledError();
}

/** Rows of long work between two turns of the event loop (nextTurn): a few milliseconds of it, tens on a loaded machine. */
export const TURN_ROWS = 100;

/**
 * A turn of the event loop (after its pending I/O): long JavaScript work that runs beside a
 * transaction waiting on the database (an import preparing its next batch) takes turns with it,
 * so the transaction's next statement is sent as soon as its previous one has answered.
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
