import { validationError } from './errors.js';

export const INTERVALS = ['day', 'week', 'month', 'quarter', 'year'] as const;
export type Interval = (typeof INTERVALS)[number];

export const isInterval = (x: unknown): x is Interval => (INTERVALS as readonly unknown[]).includes(x);

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset', year: 'numeric' });
    formatters.set(tz, f);
  }
  return f;
}

export function checkTimeZone(tz: string): void {
  try {
    formatter(tz);
  } catch {
    throw validationError(`Unknown time zone '${tz}'; use an IANA name such as Europe/Paris or America/New_York`);
  }
}

/** Offset of tz from UTC at instant t, in minutes. */
export function offsetMinutes(tz: string, t: number): number {
  const part =
    formatter(tz)
      .formatToParts(new Date(t))
      .find((p) => p.type === 'timeZoneName')?.value ?? 'GMT';
  const m = /GMT([+-])(\d{2}):?(\d{2})?/.exec(part);
  if (!m) return 0;
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3] ?? 0));
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
  /** SQLite date modifier shifting UTC to the zone's local time in the segment, e.g. '+120 minutes'. */
  modifier: string;
}

export function offsetSegments(tz: string, lo: string, hi: string): ZoneSegment[] {
  const start = Date.parse(lo) - 24 * HOUR;
  const end = Date.parse(hi) + 24 * HOUR;
  const segs: ZoneSegment[] = [];
  let cur = offsetMinutes(tz, start);
  for (let t = start; t < end; t += 6 * HOUR) {
    const next = Math.min(t + 6 * HOUR, end);
    const off = offsetMinutes(tz, next);
    if (off === cur) continue;
    let a = t;
    let b = next;
    // To the millisecond: where a zone changes at local midnight (America/Santiago), a boundary
    // even a few seconds late would put the records just after the change on the wrong day.
    while (b - a > 1) {
      const mid = Math.floor((a + b) / 2);
      if (offsetMinutes(tz, mid) === cur) a = mid;
      else b = mid;
    }
    segs.push({ until: new Date(b).toISOString(), modifier: `${cur >= 0 ? '+' : ''}${cur} minutes` });
    cur = off;
    if (segs.length > 1000) throw validationError('The time span is too long for time-zone bucketing; narrow the filter');
  }
  segs.push({ until: null, modifier: `${cur >= 0 ? '+' : ''}${cur} minutes` });
  return segs;
}
