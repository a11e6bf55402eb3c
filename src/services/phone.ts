import { type ParsedPhone, parsePhone } from './phone-parse.js';

/**
 * Phone numbers in any formatting, made comparable. International numbers (+33 1 42 68 53 00) are
 * parsed with libphonenumber; numbers written without a country code are read in the default
 * region (CRM_DEFAULT_REGION, default US) and, failing that, kept as their digits.
 */

/**
 * Parsing (and validating) a number costs 10 to 30 µs, and one write parses the same number
 * several times (validation, match keys, search forms), and an import batch holds up to 5,000
 * rows: the results of the last 10,000 to 20,000 numbers are kept, in two generations. A file
 * import parses its numbers on another thread ahead of the writes and hands the results over
 * (primePhones).
 */
let recent = new Map<string, ParsedPhone | null>();
let older = new Map<string, ParsedPhone | null>();
let primed = new Map<string, ParsedPhone | null>();
const GENERATION = 10_000;

function parse(v: string): ParsedPhone | undefined {
  let hit = primed.get(v);
  if (hit === undefined) hit = recent.get(v);
  if (hit === undefined) hit = older.get(v);
  if (hit === undefined) {
    hit = parsePhone(v);
    if (recent.size >= GENERATION) {
      older = recent;
      recent = new Map();
    }
    recent.set(v, hit);
  }
  return hit ?? undefined;
}

/** Results of parsePhone computed elsewhere (the import reader thread), for the batch about to be written; replaces the previous ones. */
export function primePhones(entries: Iterable<[string, ParsedPhone | null]>): void {
  primed = new Map(entries);
}

/**
 * The one comparable form: the national significant number (no country code, no trunk 0), so
 * "+44 20 7946 0000" and "020 7946 0000", or "+1 (415) 555-0123" and "415.555.0123", are equal
 * even when only one of them says its country. Numbers that do not parse: their digits without
 * leading zeros, at most the last ten.
 */
export function phoneKey(v: string): string | null {
  const d = v.replace(/\D/g, '');
  if (d.length < 7) return null;
  const p = parse(v);
  if (p) return p.nationalNumber;
  const n = d.replace(/^0+/, '');
  return n.length > 10 ? n.slice(-10) : n;
}

/**
 * The forms a search can match by prefix: E.164 digits (14155550123), the national number as
 * dialled at home (4155550123, 0142685300), the significant number without trunk prefix
 * (142685300), the raw digits and the local part (last seven digits).
 */
export function phoneSearchForms(v: string): string[] {
  const d = v.replace(/\D/g, '');
  if (d.length < 5) return [];
  const forms = new Set([d, d.replace(/^0+/, '')]);
  const p = parse(v);
  if (p) {
    forms.add(p.e164);
    forms.add(p.nationalNumber);
    forms.add(p.nationalDigits);
  } else if (d.length > 10) forms.add(d.slice(-10));
  if (d.length >= 7) forms.add(d.slice(-7));
  return [...forms];
}
