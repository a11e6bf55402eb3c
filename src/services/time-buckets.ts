import { offsetMinutes, zoneFormatter } from '../db/zone-offset.js';
import { validationError } from './errors.js';

export { offsetMinutes };

export const INTERVALS = ['day', 'week', 'month', 'quarter', 'year'] as const;
export type Interval = (typeof INTERVALS)[number];

export const isInterval = (x: unknown): x is Interval => (INTERVALS as readonly unknown[]).includes(x);

/**
 * Node also accepts the SystemV/* names, which left the time zone database long ago: ICU keeps
 * rules of its own for them and PostgreSQL reads them as POSIX rules, and the two clocks disagree
 * near every change (SystemV/EST5EDT at 2026-03-08 07:01Z: 02:01 in Node, 03:01 in PostgreSQL), so
 * a bucket would depend on the database. The database's own zones and aliases (US/Pacific-New,
 * EST5EDT) are kept.
 */
const isSystemV = (canonical: string) => /^systemv\//i.test(canonical);

export function checkTimeZone(tz: string): void {
  let canonical: string;
  try {
    canonical = zoneFormatter(tz).resolvedOptions().timeZone;
  } catch {
    throw validationError(`Unknown time zone '${tz}'; use an IANA name such as Europe/Paris or America/New_York`);
  }
  if (isSystemV(canonical))
    throw validationError(`Time zone '${tz}' is not a zone of the IANA time zone database (SystemV names were removed from it); use a zone such as America/New_York, America/Chicago or Etc/GMT+5`);
}

const HOUR = 3_600_000;

/**
 * The zone's offsets between lo and hi (ISO instants) as segments [{until, modifier}], found by
 * sampling every 6 hours and bisecting each change to the millisecond. SQLite has no time zone database,
 * so each segment becomes one branch of a CASE that shifts UTC to local time.
 */
export interface ZoneSegment {
  /** The segment ends before this instant (ISO); null: the last one. */
  until: string | null;
  /**
   * SQLite date modifier shifting UTC to the zone's local time in the segment, e.g. '+120 minutes';
   * null: each instant shifted by the zone's offset there, read row by row (crm_zone_shifted).
   */
  modifier: string | null;
}

/** At most this many offset changes in one CASE (each a branch that rows walk in turn). */
const MAX_SEGMENTS = 1000;
/**
 * Before this year every zone keeps its first offset (local mean time: the time zone database's
 * first change anywhere is Great Britain's, in 1847), so no year before it is sampled.
 */
const FIRST_CHANGE_YEAR = 1840;
/**
 * Years sampled up to this one at most. A zone that changes neither in it nor in the year before
 * follows no rule any more (a rule changes the offset every year): the rest of time is one offset.
 * A zone still changing then (a summer-time rule, projected for ever) has the instants after it
 * shifted row by row, few in any real data, instead of sampling up to year 9999.
 */
const SETTLED_YEAR = 2100;

const yearStart = (y: number) => {
  const d = new Date(0);
  d.setUTCFullYear(y, 0, 1);
  return d.getTime();
};

/**
 * A zone's offset changes in one UTC year, each with the offset it starts: sampled every 6 hours,
 * each change bisected to the millisecond (where a zone changes at local midnight, America/Santiago,
 * a boundary even a few seconds late would put the records just after it on the wrong day). Kept per
 * zone and year: about 1,460 samples (1-2 ms) a year the first time, none after; a histogram over
 * 50 years of data used to sample them all on every request.
 */
const yearChanges = new Map<string, { at: number; offset: number }[]>();
function changesIn(tz: string, year: number): { at: number; offset: number }[] {
  const key = `${tz} ${year}`;
  let found = yearChanges.get(key);
  if (found) return found;
  found = [];
  const end = yearStart(year + 1);
  let t = yearStart(year);
  let cur = offsetMinutes(tz, t);
  while (t < end) {
    const next = Math.min(t + 6 * HOUR, end);
    const off = offsetMinutes(tz, next);
    if (off !== cur) {
      let a = t;
      let b = next;
      while (b - a > 1) {
        const mid = Math.floor((a + b) / 2);
        if (offsetMinutes(tz, mid) === cur) a = mid;
        else b = mid;
      }
      found.push({ at: b, offset: off });
      cur = off;
    }
    t = next;
  }
  if (yearChanges.size >= 20_000) yearChanges.clear();
  yearChanges.set(key, found);
  return found;
}

const modifierOf = (offset: number) => `${offset >= 0 ? '+' : ''}${offset} minutes`;

export function offsetSegments(tz: string, lo: string, hi: string): ZoneSegment[] {
  const start = Date.parse(lo) - 24 * HOUR;
  const end = Date.parse(hi) + 24 * HOUR;
  const segs: ZoneSegment[] = [];
  let cur = offsetMinutes(tz, start);
  // The rest of the span, from `at` on, shifted row by row.
  const rowByRow = (at: number) => {
    segs.push({ until: new Date(at).toISOString(), modifier: modifierOf(cur) }, { until: null, modifier: null });
    return segs;
  };
  const first = Math.max(new Date(start).getUTCFullYear(), FIRST_CHANGE_YEAR);
  const last = new Date(end).getUTCFullYear();
  for (let y = first; y <= last; y++) {
    if (y > SETTLED_YEAR) {
      if (changesIn(tz, SETTLED_YEAR).length === 0 && changesIn(tz, SETTLED_YEAR - 1).length === 0) break;
      return rowByRow(Math.max(yearStart(y), start));
    }
    for (const c of changesIn(tz, y)) {
      if (c.at <= start || c.at > end) continue;
      // Each segment is a branch of a CASE that every row walks: past MAX_SEGMENTS, row by row.
      if (segs.length >= MAX_SEGMENTS) return rowByRow(c.at);
      segs.push({ until: new Date(c.at).toISOString(), modifier: modifierOf(cur) });
      cur = c.offset;
    }
  }
  segs.push({ until: null, modifier: modifierOf(cur) });
  return segs;
}

/** One run of instants [from, to) whose local calendar bucket is `bucket`. */
export interface BucketRange {
  bucket: string;
  from: string;
  to: string;
}

/**
 * The most ranges bucketRanges answers: each becomes a branch of a UNION ALL (SQLite takes at most
 * 500 terms in a compound SELECT), and past a few hundred the statement costs more to prepare than
 * a pass over the rows.
 */
export const MAX_BUCKET_RANGES = 400;

const dayStart = (y: number, m: number, d: number) => {
  const x = new Date(0);
  x.setUTCFullYear(y, m, d);
  return x.getTime();
};

/** The start of the calendar bucket of a local wall time (ms, read as UTC fields), and of the next bucket. */
function localBucket(local: number, interval: Interval): { start: number; next: number } {
  const d = new Date(local);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  const day = d.getUTCDate();
  switch (interval) {
    case 'day':
      return { start: dayStart(y, m, day), next: dayStart(y, m, day + 1) };
    case 'week': {
      // ISO weeks start on Monday (as the dialects' bucket expressions do).
      const monday = day - ((d.getUTCDay() + 6) % 7);
      return { start: dayStart(y, m, monday), next: dayStart(y, m, monday + 7) };
    }
    case 'month':
      return { start: dayStart(y, m, 1), next: dayStart(y, m + 1, 1) };
    case 'quarter':
      return { start: dayStart(y, m - (m % 3), 1), next: dayStart(y, m - (m % 3) + 3, 1) };
    case 'year':
      return { start: dayStart(y, 0, 1), next: dayStart(y + 1, 0, 1) };
  }
}

/**
 * The instants from lo to hi (ISO) cut into runs that each lie in one local calendar bucket of the
 * zone: cut at every bucket start (a local midnight, found under the offset in force there) and at
 * every offset change, adjacent runs of the same bucket merged. A histogram can then count each run
 * as a range of the stored text (an index range: no function per row) and name it by its bucket,
 * exactly as bucketing each instant would: half-hour and 45-minute offsets, a change at local
 * midnight (America/Santiago's 00:00 that never happens) and a fall-back across midnight (the
 * bucket comes back: two runs of the same bucket, summed by the caller) included. The runs reach 2
 * days past each end (rows written since the span was read, at the time of writing); a value
 * further out is in no run: the caller reads the span again after counting, and buckets row by row
 * if it no longer fits (see aggregate.ts). Null when it would take more than MAX_BUCKET_RANGES runs, or the span reaches past the
 * years sampled in a zone that still changes (see SETTLED_YEAR): the caller buckets row by row.
 */
export function bucketRanges(tz: string, interval: Interval, lo: string, hi: string): BucketRange[] | null {
  const start = Date.parse(lo) - 48 * HOUR;
  // Within year 9999: beyond it ISO text gains a sign ('+010000-') and stops sorting as time does.
  const end = Math.min(Date.parse(hi) + 48 * HOUR, yearStart(10_000));
  const changes: { at: number; offset: number }[] = [];
  const last = new Date(end).getUTCFullYear();
  for (let y = Math.max(new Date(start).getUTCFullYear(), FIRST_CHANGE_YEAR); y <= last; y++) {
    if (y > SETTLED_YEAR) {
      if (changesIn(tz, SETTLED_YEAR).length === 0 && changesIn(tz, SETTLED_YEAR - 1).length === 0) break;
      return null;
    }
    for (const c of changesIn(tz, y)) if (c.at > start && c.at < end) changes.push(c);
  }
  const runs: { bucket: number; from: number; to: number }[] = [];
  let offset = offsetMinutes(tz, start) * 60_000;
  let ci = 0;
  for (let t = start; t < end; ) {
    const change = changes[ci]?.at ?? Number.POSITIVE_INFINITY;
    const b = localBucket(t + offset, interval);
    const to = Math.min(b.next - offset, change, end);
    const prev = runs[runs.length - 1];
    if (prev && prev.bucket === b.start && prev.to === t) prev.to = to;
    else if (runs.push({ bucket: b.start, from: t, to }) > MAX_BUCKET_RANGES) return null;
    t = to;
    if (t === change) offset = changes[ci++]!.offset * 60_000;
  }
  return runs.map((r) => ({
    bucket: new Date(r.bucket).toISOString().slice(0, 10),
    from: new Date(r.from).toISOString(),
    to: new Date(r.to).toISOString(),
  }));
}
