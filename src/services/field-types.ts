import { validationError } from './errors.js';
import { phoneShaped } from './phone-parse.js';

export const FIELD_TYPES = [
  'TEXT', 'EMAIL', 'PHONE', 'URL', 'NUMBER', 'INTEGER', 'FLOAT', 'CURRENCY', 'PERCENTAGE',
  'BOOLEAN', 'DATE', 'DATETIME', 'SELECT', 'MULTI_SELECT', 'RELATION',
] as const;
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
const DATETIME_RE = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?)?$/i;
const DECIMAL_RE = /^(-)?(\d+)(?:\.(\d+))?$/;

const q = (name: string) => `Field '${name}'`;

function isValidDate(y: number, m: number, d: number): boolean {
  const dt = new Date(Date.UTC(y, m - 1, d));
  return dt.getUTCFullYear() === y && dt.getUTCMonth() === m - 1 && dt.getUTCDate() === d;
}

export function parseDate(name: string, v: unknown): string {
  if (typeof v !== 'string') throw validationError(`${q(name)} must be a date in the form YYYY-MM-DD`);
  const m = DATE_RE.exec(v.trim());
  if (!m || !isValidDate(Number(m[1]), Number(m[2]), Number(m[3])))
    throw validationError(`${q(name)} must be a date in the form YYYY-MM-DD, got '${v}'`);
  return v.trim();
}

/** ISO 8601 in, canonical UTC 'YYYY-MM-DDTHH:MM:SS.sssZ' out, so text order is time order. */
export function parseDateTime(name: string, v: unknown): string {
  if (typeof v === 'number' && Number.isFinite(v)) return new Date(v).toISOString();
  if (typeof v !== 'string') throw validationError(`${q(name)} must be an ISO 8601 date-time`);
  const s = v.trim();
  const m = DATETIME_RE.exec(s);
  if (!m || !isValidDate(Number(m[1]), Number(m[2]), Number(m[3])))
    throw validationError(`${q(name)} must be an ISO 8601 date-time such as 2025-01-15T10:30:00Z, got '${v}'`);
  const iso = m[4] === undefined ? `${s}T00:00:00Z` : m[8] === undefined ? `${s.replace(' ', 'T')}Z` : s.replace(' ', 'T');
  const t = Date.parse(iso);
  if (Number.isNaN(t)) throw validationError(`${q(name)} must be an ISO 8601 date-time, got '${v}'`);
  return new Date(t).toISOString();
}

function parseNumber(name: string, v: unknown): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(n)) throw validationError(`${q(name)} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

/** Decimal (number or string) to integer minor units, exactly. */
export function toMinorUnits(name: string, v: unknown, scale: number): number {
  const s = typeof v === 'number' ? String(v) : typeof v === 'string' ? v.trim() : '';
  const m = DECIMAL_RE.exec(s);
  if (!m) throw validationError(`${q(name)} must be a decimal amount such as 1234.56, got ${JSON.stringify(v)}`);
  const frac = m[3] ?? '';
  if (frac.replace(/0+$/, '').length > scale)
    throw validationError(`${q(name)} accepts at most ${scale} decimal places, got ${JSON.stringify(v)}`);
  const units = BigInt(m[2]! + frac.padEnd(scale, '0').slice(0, scale)) * (m[1] ? -1n : 1n);
  if (units > BigInt(Number.MAX_SAFE_INTEGER) || units < -BigInt(Number.MAX_SAFE_INTEGER))
    throw validationError(`${q(name)} is out of range`);
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
      if (!phoneShaped(s))
        throw validationError(`${q(f.name)} must be a phone number (digits, spaces, + ( ) - .), got ${JSON.stringify(v)}`);
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
      const n = parseNumber(f.name, v);
      if (!Number.isSafeInteger(n)) throw validationError(`${q(f.name)} must be an integer, got ${JSON.stringify(v)}`);
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
      return parseDateTime(f.name, v);
    case 'SELECT':
      return checkOption(f, v);
    case 'MULTI_SELECT': {
      const list = typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
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
