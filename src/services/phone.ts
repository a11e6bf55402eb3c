import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js';

/**
 * Phone numbers in any formatting, made comparable. International numbers (+33 1 42 68 53 00) are
 * parsed with libphonenumber; numbers written without a country code are read in the default
 * region (CRM_DEFAULT_REGION, default US) and, failing that, kept as their digits.
 */
const region = (process.env.CRM_DEFAULT_REGION ?? 'US').toUpperCase() as CountryCode;

function parse(v: string) {
  try {
    const p = parsePhoneNumberFromString(v, region);
    return p && p.isValid() ? p : undefined;
  } catch {
    return undefined;
  }
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
    forms.add(p.number.replace(/\D/g, ''));
    forms.add(p.nationalNumber);
    forms.add(p.formatNational().replace(/\D/g, ''));
  } else if (d.length > 10) forms.add(d.slice(-10));
  if (d.length >= 7) forms.add(d.slice(-7));
  return [...forms];
}
