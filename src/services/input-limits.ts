import { z } from 'zod';
import { validationError } from './errors.js';

/**
 * Limits checked on every input before anything walks it recursively. JSON.parse builds values
 * nested 100,000 deep without trouble, but zod, the filter compiler and the JSON Schema validators
 * recurse once per level and overflow the stack long before that: so depth is measured here with an
 * explicit stack, and a value too deep is refused with a 400 naming the limit.
 */
export const INPUT_LIMITS = {
  /**
   * Nesting of objects and arrays in a request body or a tool's arguments. The deepest legitimate
   * input is a filter at its own depth limit (two levels per group: the group and its conditions
   * array) inside an aggregate tree: well under 64.
   */
  jsonDepth: 64,
} as const;

/** Levels of arrays and objects in a JSON value (a scalar is 0, `[]` and `{}` are 1), counted without recursion. */
export function jsonDepth(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  let max = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (d > max) max = d;
    const children = Array.isArray(v) ? v : Object.values(v as object);
    for (const c of children) if (typeof c === 'object' && c !== null) stack.push([c, d + 1]);
  }
  return max;
}

/**
 * Why a text cannot be stored, or undefined. A NUL byte truncates the text in C code down the line
 * (SQLite's C API, CSV readers, terminals); a lone UTF-16 surrogate ('\ud800' in JSON) has no UTF-8
 * form, so better-sqlite3 would store U+FFFD in its place and the value would silently change.
 */
export function textProblem(s: string): string | undefined {
  if (s.includes('\u0000')) return 'contains a NUL character (\\u0000)';
  if (!(s as string & { isWellFormed(): boolean }).isWellFormed()) return 'contains a lone UTF-16 surrogate (half of a character, e.g. \\ud800), which has no UTF-8 form';
  return undefined;
}

/** Refuses a text that contains NUL or a lone surrogate; `what` names it in the message ("Field 'email'"). */
export function checkText(what: string, s: string): string {
  const p = textProblem(s);
  if (p) throw validationError(`${what} ${p}; send valid text without it`);
  return s;
}

function pathText(path: readonly (string | number)[]): string {
  let s = '';
  for (const k of path) s += typeof k === 'number' ? `[${k}]` : s ? `.${k}` : k;
  return s;
}

/**
 * One pass over a parsed input (a REST body, a query string, an MCP tool's arguments): refuses it
 * when it nests deeper than INPUT_LIMITS.jsonDepth, or when any text in it, a key or a value,
 * contains NUL or a lone surrogate. Field values are checked again by their field type; this covers
 * every other text (task titles, note bodies, names, options, query parameters) in one place.
 */
export function checkInput(value: unknown, what: string, maxDepth: number = INPUT_LIMITS.jsonDepth, opts: { text?: boolean } = {}): void {
  if (typeof value === 'string') {
    if (opts.text !== false) checkText(what, value);
    return;
  }
  if (typeof value !== 'object' || value === null) return;
  const text = opts.text !== false;
  // Paths are built only for a message: each entry knows its parent and its key there.
  type Entry = { v: object; key: string | number | undefined; parent: Entry | undefined; depth: number };
  const where = (e: Entry, key?: string | number) => {
    const path: (string | number)[] = key === undefined ? [] : [key];
    for (let x: Entry | undefined = e; x && x.key !== undefined; x = x.parent) path.unshift(x.key);
    return path.length ? `${what} at '${pathText(path)}'` : what;
  };
  const bad = (e: Entry, key: string | number, p: string) => validationError(`${where(e, key)} ${p}; send valid text without it`);
  // One pass, depth and text together; the whole depth is counted only for the message of a refusal.
  const stack: Entry[] = [{ v: value, key: undefined, parent: undefined, depth: 1 }];
  while (stack.length) {
    const e = stack.pop()!;
    if (e.depth > maxDepth) {
      const depth = jsonDepth(value);
      throw validationError(`${what}: nesting is ${depth} levels deep; the limit is ${maxDepth}`, { limit: maxDepth, depth });
    }
    if (Array.isArray(e.v)) {
      for (let i = 0; i < e.v.length; i++) {
        const c: unknown = e.v[i];
        if (typeof c === 'string') {
          const p = text ? textProblem(c) : undefined;
          if (p) throw bad(e, i, p);
        } else if (typeof c === 'object' && c !== null) stack.push({ v: c, key: i, parent: e, depth: e.depth + 1 });
      }
      continue;
    }
    const o = e.v as Record<string, unknown>;
    for (const k in o) {
      if (!Object.hasOwn(o, k)) continue;
      if (text) {
        const kp = textProblem(k);
        if (kp) throw validationError(`${where(e)}: a key ${kp}; send valid text without it`);
      }
      const c = o[k];
      if (typeof c === 'string') {
        const p = text ? textProblem(c) : undefined;
        if (p) throw bad(e, k, p);
      } else if (typeof c === 'object' && c !== null) stack.push({ v: c, key: k, parent: e, depth: e.depth + 1 });
    }
  }
}

/**
 * A whole number in a query string (limit=20). z.coerce.number() would read '0x10' as 16 and '' as 0;
 * this takes decimal digits only.
 */
export const queryInteger = z
  .string()
  .trim()
  .regex(/^[+-]?\d+$/, 'expected a whole number in decimal digits')
  .transform(Number)
  .pipe(z.number().int().safe());
