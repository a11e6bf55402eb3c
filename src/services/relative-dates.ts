import { offsetMinutes } from './time-buckets.js';

/**
 * Relative dates in filters ('today', 'last_month', 'last_7_days') as a local-day range
 * [start, end) in a workspace's time zone. Weeks start on Monday (ISO).
 */
export const RELATIVE_DATE_WORDS = [
  'today',
  'yesterday',
  'tomorrow',
  'this_week',
  'last_week',
  'next_week',
  'this_month',
  'last_month',
  'next_month',
  'this_quarter',
  'last_quarter',
  'next_quarter',
  'this_year',
  'last_year',
  'next_year',
  'last_N_days',
  'next_N_days',
] as const;

/** At most ~100 years either way: beyond that a bare date says it better. */
const MAX_DAYS = 36_600;
const DAY = 86_400_000;

export interface LocalRange {
  /** First local day, YYYY-MM-DD. */
  start: string;
  /** The local day after the last one, YYYY-MM-DD (exclusive). */
  end: string;
}

/** 'Last 7 days', 'last-7-days' and 'LAST_7_DAYS' all read as 'last_7_days'. */
function normalize(word: string): string {
  return word
    .trim()
    .toLowerCase()
    .replace(/[\s-]+/g, '_');
}

/** True when the text names a relative period, whatever its N; invalid N (0, huge) still counts, so the caller can explain. */
export function looksRelative(v: unknown): v is string {
  if (typeof v !== 'string') return false;
  const w = normalize(v);
  return (RELATIVE_DATE_WORDS as readonly string[]).includes(w) || /^(last|next)_\d+_days?$/.test(w);
}

const dayFormatters = new Map<string, Intl.DateTimeFormat>();

/** The local calendar date (YYYY-MM-DD) of an instant in a zone. */
export function localDate(tz: string, t: number): string {
  let f = dayFormatters.get(tz);
  if (!f) dayFormatters.set(tz, (f = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' })));
  const p = Object.fromEntries(f.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  // Years before 1000 come unpadded ('1'); stored dates are YYYY-MM-DD (years 0001-9999, see field-types.ts).
  return `${p.year!.padStart(4, '0')}-${p.month}-${p.day}`;
}

const ymd = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const utcOf = (d: string) => Date.parse(`${d}T00:00:00Z`);
const addDays = (d: string, n: number) => ymd(utcOf(d) + n * DAY);

function addMonths(d: string, n: number): string {
  const y = Number(d.slice(0, 4));
  const m = Number(d.slice(5, 7)) - 1 + n;
  return ymd(Date.UTC(y, m, 1));
}

/**
 * The first instant of a local day, as stored (UTC ISO). Each offset around the day is tried and the
 * earliest instant that falls on that day wins: where a zone skips midnight (America/Santiago), the
 * day begins at 01:00, and a single offset guess would land on the evening before.
 */
export function localMidnight(tz: string, day: string): string {
  const base = utcOf(day);
  const offsets = new Set([offsetMinutes(tz, base - DAY), offsetMinutes(tz, base), offsetMinutes(tz, base + DAY)]);
  let best: number | null = null;
  for (const off of offsets) {
    const t = base - off * 60_000;
    if (localDate(tz, t) === day && (best === null || t < best)) best = t;
  }
  return new Date(best ?? base - offsetMinutes(tz, base) * 60_000).toISOString();
}

/** The local-day range of a relative word at instant `now` in `tz`, or an error message. */
export function relativeRange(word: string, now: number, tz: string): LocalRange | string {
  const w = normalize(word);
  const today = localDate(tz, now);
  const n = /^(last|next)_(\d+)_days?$/.exec(w);
  if (n) {
    const days = Number(n[2]);
    if (!Number.isInteger(days) || days < 1 || days > MAX_DAYS) return `'${word}': N in ${n[1]}_N_days must be a whole number from 1 to ${MAX_DAYS}`;
    // Today is included either way: last_7_days = the 6 days before and today; next_7_days = today and the 6 after.
    return n[1] === 'last' ? { start: addDays(today, 1 - days), end: addDays(today, 1) } : { start: today, end: addDays(today, days) };
  }
  const shift = (kind: string, step: (d: string, k: number) => string, start: string): LocalRange | undefined => {
    if (w === `this_${kind}`) return { start, end: step(start, 1) };
    if (w === `last_${kind}`) return { start: step(start, -1), end: start };
    if (w === `next_${kind}`) return { start: step(start, 1), end: step(start, 2) };
    return undefined;
  };
  switch (w) {
    case 'today':
      return { start: today, end: addDays(today, 1) };
    case 'yesterday':
      return { start: addDays(today, -1), end: today };
    case 'tomorrow':
      return { start: addDays(today, 1), end: addDays(today, 2) };
  }
  const dow = (new Date(utcOf(today)).getUTCDay() + 6) % 7; // Monday = 0
  const month = `${today.slice(0, 7)}-01`;
  const q = Math.floor((Number(today.slice(5, 7)) - 1) / 3) * 3 + 1;
  const quarter = `${today.slice(0, 4)}-${String(q).padStart(2, '0')}-01`;
  const year = `${today.slice(0, 4)}-01-01`;
  const r =
    shift('week', (d, k) => addDays(d, 7 * k), addDays(today, -dow)) ??
    shift('month', addMonths, month) ??
    shift('quarter', (d, k) => addMonths(d, 3 * k), quarter) ??
    shift('year', (d, k) => addMonths(d, 12 * k), year);
  return r ?? `'${word}' is not a relative date. Relative dates: ${RELATIVE_DATE_WORDS.join(', ')} (N a whole number, e.g. last_7_days)`;
}
