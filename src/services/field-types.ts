import { validationError } from './errors.js';
import { checkText } from './input-limits.js';
import { phoneShaped } from './phone-parse.js';

export const FIELD_TYPES = ['TEXT', 'EMAIL', 'PHONE', 'URL', 'NUMBER', 'INTEGER', 'FLOAT', 'CURRENCY', 'PERCENTAGE', 'BOOLEAN', 'DATE', 'DATETIME', 'SELECT', 'MULTI_SELECT', 'RELATION'] as const;
export type FieldType = (typeof FIELD_TYPES)[number];

export const NUMERIC_TYPES: ReadonlySet<FieldType> = new Set(['NUMBER', 'INTEGER', 'FLOAT', 'CURRENCY', 'PERCENTAGE']);

export interface SelectOption {
  value: string;
  label: string;
}

export interface FieldDef {
  id: number;
  name: string;
  label: string;
  type: FieldType;
  /** Physical column; resolved from metadata, never from input. */
  column: string;
  required: boolean;
  unique: boolean;
  system: boolean;
  /** Built-in columns (id, created_at, ...) cannot be written by clients. */
  readOnly: boolean;
  indexed: boolean;
  options?: SelectOption[];
  /** RELATION: the target object name, or 'users'. */
  target?: string;
  /** CURRENCY: digits after the decimal point, stored as integer minor units. */
  scale?: number;
  min?: number;
  max?: number;
  defaultValue?: unknown;
  description?: string;
  position: number;
}

/** Storage class of each type: values live in typed, indexable columns. */
export function storageOf(type: FieldType): 'text' | 'real' | 'integer' {
  switch (type) {
    case 'NUMBER':
    case 'FLOAT':
    case 'PERCENTAGE':
      return 'real';
    case 'INTEGER':
    case 'CURRENCY': // integer minor units: exact sums, no float drift
    case 'BOOLEAN':
      return 'integer';
    default:
      return 'text';
  }
}

const EMAIL_RE = /^[^\s@]+@[^\s@.]+(\.[^\s@.]+)+$/;
const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
// Groups: year, month, day, hour, minute, second, fraction, zone, offset sign, offset hours, offset minutes.
const DATETIME_RE = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|([+-])(\d{2}):?(\d{2}))?)?$/i;
const DECIMAL_RE = /^(-)?(\d+)(?:\.(\d+))?$/;
/**
 * Numbers written as text: decimal notation only. Number() would also read '0x10' (16), '0b1',
 * '0o7', 'Infinity', '' and ' ' (0): none of them is what a person typing a number into a CRM means.
 */
const DECIMAL_TEXT_RE = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$/i;
const INTEGER_TEXT_RE = /^[+-]?\d+$/;

const q = (name: string) => `Field '${name}'`;

/** Years 0001-9999: four digits keep text order equal to time order, and Intl (local days) has no year 0. */
function isValidDate(y: number, m: number, d: number): boolean {
  if (y < 1 || m < 1 || m > 12 || d < 1) return false;
  const dt = new Date(0);
  // setUTCFullYear, not Date.UTC: Date.UTC reads years 0-99 as 1900-1999.
  dt.setUTCFullYear(y, m - 1, d);
  return dt.getUTCFullYear() === y && dt.getUTCMonth() === m - 1 && dt.getUTCDate() === d;
}

export function parseDate(name: string, v: unknown): string {
  if (typeof v !== 'string') throw validationError(`${q(name)} must be a date in the form YYYY-MM-DD`, { field: name, format: 'YYYY-MM-DD' });
  const m = DATE_RE.exec(v.trim());
  if (!m || !isValidDate(Number(m[1]), Number(m[2]), Number(m[3])))
    throw validationError(`${q(name)} must be a calendar date in the form YYYY-MM-DD, got ${JSON.stringify(v)}`, { field: name, format: 'YYYY-MM-DD' });
  return v.trim();
}

/** The instant a strict ISO 8601 text names, in ms, or undefined when any part is out of range (month 13, day 30 in February, hour 25, offset +25:00). */
function strictInstant(s: string): number | undefined {
  const m = DATETIME_RE.exec(s);
  if (!m) return undefined;
  const [y, mo, d, h = 0, mi = 0, sec = 0] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((x) => (x === undefined ? undefined : Number(x))) as number[];
  if (!isValidDate(y!, mo!, d!) || h > 23 || mi > 59 || sec > 59) return undefined;
  const oh = m[10] === undefined ? 0 : Number(m[10]);
  const om = m[11] === undefined ? 0 : Number(m[11]);
  // RFC 3339: offset hours 00-23, minutes 00-59.
  if (oh > 23 || om > 59) return undefined;
  const ms = m[7] === undefined ? 0 : Number(m[7].padEnd(3, '0').slice(0, 3));
  const dt = new Date(0);
  dt.setUTCFullYear(y!, mo! - 1, d!);
  dt.setUTCHours(h, mi, sec, ms);
  return dt.getTime() - (m[9] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000;
}

/** Canonical UTC text, or undefined outside years 0001-9999 (beyond 9999 ISO text stops sorting as time does). */
function canonicalIso(t: number): string | undefined {
  if (!Number.isFinite(t) || Math.abs(t) > 8.64e15) return undefined;
  const iso = new Date(t).toISOString();
  return /^\d{4}-/.test(iso) && !iso.startsWith('0000') ? iso : undefined;
}

/**
 * A DATETIME value as stored: from 0001-01-02 to 9999-12-30 (UTC), a day inside the years 0001-9999,
 * so that its local date in every time zone (at most 15 hours away) has a four-digit year too.
 * 0001-01-01T01:00Z is 0000-12-31 in New York: a year PostgreSQL calls 1 BC and prints as 0001, and
 * SQLite's date functions cannot bucket; 9999-12-31T23:00Z is year 10000 in Tokyo. Filters still take
 * the whole range (9999-12-31T23:59:59Z as the end of time).
 */
const FIRST_STORED = '0001-01-02T00:00:00.000Z';
const LAST_STORED = '9999-12-30T23:59:59.999Z';
function storedDateTime(name: string, v: unknown): string {
  const iso = parseDateTime(name, v);
  if (iso < FIRST_STORED || iso > LAST_STORED)
    throw validationError(`${q(name)} must be between 0001-01-02 and 9999-12-30 (UTC), so that its date in every time zone falls in the years 0001-9999; got ${JSON.stringify(v)}`, {
      field: name,
      format: 'ISO 8601, e.g. 2025-01-15T10:30:00Z',
    });
  return iso;
}

/** ISO 8601 in, canonical UTC 'YYYY-MM-DDTHH:MM:SS.sssZ' out, so text order is time order. */
export function parseDateTime(name: string, v: unknown): string {
  const format = 'ISO 8601, e.g. 2025-01-15T10:30:00Z';
  const iso = typeof v === 'number' ? canonicalIso(v) : typeof v === 'string' ? ((t) => (t === undefined ? undefined : canonicalIso(t)))(strictInstant(v.trim())) : undefined;
  if (iso === undefined)
    throw validationError(
      `${q(name)} must be a valid ISO 8601 date-time such as 2025-01-15T10:30:00Z (month 01-12, a day of that month, hours 00-23, minutes and seconds 00-59), got ${JSON.stringify(v)}`,
      {
        field: name,
        format,
      },
    );
  return iso;
}

/**
 * A number from JSON or from decimal text (sign, digits, decimal point, exponent). `integer`:
 * digits only, and the value must be a safe integer.
 */
export function parseNumberValue(v: unknown, integer = false): number | undefined {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string') {
    const s = v.trim();
    if (!(integer ? INTEGER_TEXT_RE : DECIMAL_TEXT_RE).test(s)) return undefined;
    n = Number(s);
  } else return undefined;
  if (!Number.isFinite(n)) return undefined;
  // Subnormal numbers (below 2.2e-308 in magnitude, not 0): PostgreSQL refuses to store them.
  if (n !== 0 && Math.abs(n) < MIN_NORMAL) return undefined;
  if (integer && !Number.isSafeInteger(n)) return undefined;
  return n;
}

const MIN_NORMAL = 2.2250738585072014e-308;

function parseNumber(name: string, v: unknown): number {
  const n = parseNumberValue(v);
  if (n === undefined)
    throw validationError(`${q(name)} must be a number in decimal notation (e.g. -12.5 or 1.2e3), 0 or from 2.3e-308 to 1.7e308 in magnitude; got ${JSON.stringify(v)}`, { field: name });
  return n;
}

/** Decimal (number or string) to integer minor units, exactly. */
export function toMinorUnits(name: string, v: unknown, scale: number): number {
  const s = typeof v === 'number' ? String(v) : typeof v === 'string' ? v.trim() : '';
  const m = DECIMAL_RE.exec(s);
  if (!m) throw validationError(`${q(name)} must be a decimal amount such as 1234.56, got ${JSON.stringify(v)}`);
  const frac = m[3] ?? '';
  if (frac.replace(/0+$/, '').length > scale) throw validationError(`${q(name)} accepts at most ${scale} decimal places, got ${JSON.stringify(v)}`);
  const units = BigInt(m[2]! + frac.padEnd(scale, '0').slice(0, scale)) * (m[1] ? -1n : 1n);
  if (units > BigInt(Number.MAX_SAFE_INTEGER) || units < -BigInt(Number.MAX_SAFE_INTEGER)) throw validationError(`${q(name)} is out of range`);
  return Number(units);
}

export function fromMinorUnits(units: number, scale: number): number {
  return scale === 0 ? units : units / 10 ** scale;
}

function checkRange(f: FieldDef, n: number): void {
  if (f.min !== undefined && n < f.min) throw validationError(`${q(f.name)} must be at least ${f.min}, got ${n}`);
  if (f.max !== undefined && n > f.max) throw validationError(`${q(f.name)} must be at most ${f.max}, got ${n}`);
}

function optionValues(f: FieldDef): string[] {
  return (f.options ?? []).map((o) => o.value);
}

function checkOption(f: FieldDef, v: unknown): string {
  const allowed = optionValues(f);
  if (typeof v !== 'string' || !allowed.includes(v))
    throw validationError(`${q(f.name)} must be one of: ${allowed.join(', ')}; got ${JSON.stringify(v)}`, {
      field: f.name,
      allowed,
    });
  return v;
}

export function parseBoolean(name: string, v: unknown): boolean {
  if (v === true || v === 'true' || v === 1 || v === '1') return true;
  if (v === false || v === 'false' || v === 0 || v === '0') return false;
  throw validationError(`${q(name)} must be true or false, got ${JSON.stringify(v)}`);
}

/**
 * Validate a client value and convert it to its stored form. null/undefined/'' mean "no value".
 * RELATION existence is checked by the records service (it needs the database).
 */
export function encodeValue(f: FieldDef, v: unknown): string | number | null {
  // Every surface and the importer store values through here: NUL and lone surrogates stop here once.
  if (typeof v === 'string') checkText(q(f.name), v);
  if (v === null || v === undefined || (typeof v === 'string' && v.trim() === '' && f.type !== 'MULTI_SELECT')) return null;
  switch (f.type) {
    case 'TEXT':
      if (typeof v === 'number' || typeof v === 'boolean') return String(v);
      if (typeof v !== 'string') throw validationError(`${q(f.name)} must be a string`);
      if (v.length > 65535) throw validationError(`${q(f.name)} is longer than 65535 characters`);
      return v;
    case 'EMAIL': {
      const s = typeof v === 'string' ? v.trim().toLowerCase() : '';
      if (!EMAIL_RE.test(s) || s.length > 254) throw validationError(`${q(f.name)} must be a valid email address`);
      return s;
    }
    case 'PHONE': {
      const s = typeof v === 'string' ? v.trim() : typeof v === 'number' ? String(v) : '';
      if (!phoneShaped(s)) throw validationError(`${q(f.name)} must be a phone number (digits, spaces, + ( ) - .), got ${JSON.stringify(v)}`);
      return s;
    }
    case 'URL': {
      const s = typeof v === 'string' ? v.trim() : '';
      try {
        const u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `https://${s}`);
        if (!['http:', 'https:'].includes(u.protocol) || !u.hostname.includes('.')) throw new Error('bad');
      } catch {
        throw validationError(`${q(f.name)} must be a valid URL, got ${JSON.stringify(v)}`);
      }
      return s;
    }
    case 'NUMBER':
    case 'FLOAT':
    case 'PERCENTAGE': {
      const n = parseNumber(f.name, v);
      checkRange(f, n);
      return n;
    }
    case 'INTEGER': {
      const n = parseNumberValue(v, true);
      if (n === undefined) throw validationError(`${q(f.name)} must be an integer: a whole number in decimal digits, within ±${Number.MAX_SAFE_INTEGER}; got ${JSON.stringify(v)}`, { field: f.name });
      checkRange(f, n);
      return n;
    }
    case 'CURRENCY': {
      const units = toMinorUnits(f.name, v, f.scale ?? 2);
      checkRange(f, fromMinorUnits(units, f.scale ?? 2));
      return units;
    }
    case 'BOOLEAN':
      return parseBoolean(f.name, v) ? 1 : 0;
    case 'DATE':
      return parseDate(f.name, v);
    case 'DATETIME':
      return storedDateTime(f.name, v);
    case 'SELECT':
      return checkOption(f, v);
    case 'MULTI_SELECT': {
      const list =
        typeof v === 'string'
          ? v
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : v;
      if (!Array.isArray(list)) throw validationError(`${q(f.name)} must be a list of values`);
      const chosen = new Set(list.map((x) => checkOption(f, x)));
      if (chosen.size === 0) return null;
      // Stored in option order so equal sets have equal text.
      return JSON.stringify(optionValues(f).filter((o) => chosen.has(o)));
    }
    case 'RELATION':
      if (typeof v !== 'string' || v.length > 100) throw validationError(`${q(f.name)} must be the id of a ${f.target} record`);
      return v;
  }
}

/** Stored form to API form. */
/** The types whose stored value is not their API value: the cases of decodeValue below (record-rows' compiled decoders read every other type as stored). */
export const DECODED_TYPES: ReadonlySet<string> = new Set(['CURRENCY', 'BOOLEAN', 'MULTI_SELECT']);

export function decodeValue(f: FieldDef, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  switch (f.type) {
    case 'CURRENCY':
      return fromMinorUnits(v as number, f.scale ?? 2);
    case 'BOOLEAN':
      return v === 1 || v === 1n;
    case 'MULTI_SELECT':
      return JSON.parse(v as string) as string[];
    default:
      return v;
  }
}
