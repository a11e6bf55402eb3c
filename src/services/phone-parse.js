// Phone parsing shared by the service (src/services/phone.ts) and the import reader thread
// (src/import-reader.js), which parses a file's phone numbers ahead of the writes. Plain JavaScript
// so the same file loads from src/ (tests, tsx) and dist/.
import { parsePhoneNumberFromString } from 'libphonenumber-js';

/** Numbers written without a country code are read in this region (CRM_DEFAULT_REGION, default US). */
export const defaultRegion = (process.env.CRM_DEFAULT_REGION ?? 'US').toUpperCase();

/** What a stored phone value can hold: digits, spaces, + ( ) - . / and an extension. */
const PHONE_RE = /^\+?[0-9 ().\-/]+(\s*(x|ext\.?)\s*[0-9]+)?$/i;

/**
 * @typedef {object} ParsedPhone
 * @property {string} e164 E.164 digits, without the +
 * @property {string} nationalNumber the national significant number (no country code, no trunk 0)
 * @property {string} nationalDigits the national form as dialled at home, digits only (0142685300)
 */

/**
 * libphonenumber's reading of a number when it is a valid one, else null (about 10 to 30 µs).
 * `region`: the import reader thread passes the main thread's, so both read numbers alike.
 * @param {string} v
 * @param {string} [region]
 * @returns {ParsedPhone | null}
 */
export function parsePhone(v, region = defaultRegion) {
  try {
    const p = parsePhoneNumberFromString(v, /** @type {import('libphonenumber-js').CountryCode} */ (region));
    if (p?.isValid()) return { e164: p.number.replace(/\D/g, ''), nationalNumber: p.nationalNumber, nationalDigits: p.formatNational().replace(/\D/g, '') };
  } catch {
    // not a phone number: compared by its digits
  }
  return null;
}

/**
 * Whether a value is shaped like a phone number: what a PHONE field accepts (the pattern, 5 to 20
 * digits), and so what the import reader thread parses ahead.
 * @param {unknown} v
 */
export function phoneShaped(v) {
  if (typeof v !== 'string' || v.length < 5 || !PHONE_RE.test(v)) return false;
  let digits = 0;
  for (let i = 0; i < v.length; i++) if (v.charCodeAt(i) >= 48 && v.charCodeAt(i) <= 57) digits++;
  return digits >= 5 && digits <= 20;
}
