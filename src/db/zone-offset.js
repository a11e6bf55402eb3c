// A time zone's offset from UTC at an instant, by the runtime's time zone database (Intl). Plain
// JavaScript: the services use it to bucket dates, and SQLite's connections (the main one and the
// read workers', see ./sqlite/driver.js) for the instants a bucket's CASE of offsets does not cover.

/** @type {Map<string, Intl.DateTimeFormat>} */
const formatters = new Map();

/**
 * The zone's formatter (it throws a RangeError for a zone the runtime does not know).
 * @param {string} tz
 * @returns {Intl.DateTimeFormat}
 */
export function zoneFormatter(tz) {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset', year: 'numeric' });
    formatters.set(tz, f);
  }
  return f;
}

/**
 * Offset of tz from UTC at instant t (ms), in minutes.
 * @param {string} tz
 * @param {number} t
 * @returns {number}
 */
export function offsetMinutes(tz, t) {
  // format, not formatToParts: 1.7 against 4.2 µs, and a bucket's offsets take thousands of these.
  // The text ends with the offset: '2026, GMT-05:00' ('GMT' alone at UTC).
  const m = /GMT([+-])(\d{2}):?(\d{2})?/.exec(zoneFormatter(tz).format(t));
  if (!m) return 0;
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3] ?? 0));
}

/**
 * The local wall time of a UTC ISO instant in tz, written as an ISO instant (the instant shifted by
 * the zone's offset there): what SQLite's date functions bucket. Null for null or unreadable text.
 * @param {unknown} iso
 * @param {string} tz
 * @returns {string | null}
 */
export function zoneShifted(iso, tz) {
  if (typeof iso !== 'string') return null;
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return null;
  return new Date(t + offsetMinutes(tz, t) * 60_000).toISOString();
}
