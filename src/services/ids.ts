import { randomFillSync } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';

// uuid's default source asks the OS for 16 random bytes per id, which costs microseconds each;
// draw them from a pooled buffer refilled 64 KiB at a time instead (same CSPRNG).
const POOL = 65536;
const pool = new Uint8Array(POOL);
let offset = POOL;

function rng(): Uint8Array {
  if (offset + 16 > POOL) {
    randomFillSync(pool);
    offset = 0;
  }
  const out = pool.slice(offset, offset + 16);
  offset += 16;
  return out;
}

/** Record ids: UUIDv7, time-ordered so new rows append to the id index. */
export function newId(): string {
  return uuidv7({ rng });
}
