/** One clock for the whole service layer, so tests can fix time. */
let fixed: number | null = null;

export function now(): number {
  return fixed ?? Date.now();
}

export function nowIso(): string {
  return new Date(now()).toISOString();
}

/** Tests only: pin the clock (null to release). */
export function setClock(ms: number | null): void {
  fixed = ms;
}
