/**
 * Raw-SQL seeding baseline: opportunities rows equivalent to seedWorkspace's (same columns, value
 * kinds and distributions, UUIDv7 ids from the same generator), inserted with one prepared
 * better-sqlite3 INSERT in transactions of 20,000 rows into a sibling copy of the table.
 */
import type Database from 'better-sqlite3';
import { newId } from '../src/services/ids.js';
import { prng } from '../src/services/seed.js';
import { OPP_COLUMNS } from './raw-sql.js';

const DAY = 86_400_000;
const STATUSES: [string, number][] = [
  ['open', 25],
  ['qualified', 20],
  ['proposal', 15],
  ['negotiation', 10],
  ['closed_won', 18],
  ['closed_lost', 12],
];
const PROBABILITY: Record<string, number> = { open: 10, qualified: 25, proposal: 50, negotiation: 75, closed_won: 100, closed_lost: 0 };
const SOURCES = ['website', 'referral', 'event', 'outbound', 'partner', 'import'];
const KINDS = ['Renewal', 'Expansion', 'New business', 'Pilot', 'Upsell', 'Migration', 'Enterprise plan', 'Annual contract'];
const PRODUCTS = ['Ergonomic Chair', 'Rustic Table', 'Sleek Keyboard', 'Licensed Shoes', 'Handcrafted Gloves', 'Refined Towels', 'Modern Bike', 'Smart Pizza'];
const STEPS = ['Send proposal', 'Book demo', 'Legal review', 'Call champion', 'Security questionnaire', 'Pricing call', 'Follow up by email'];
const LOST = ['Price', 'Timing', 'Competitor', 'No budget', 'No decision'];

export interface Pools {
  companies: string[];
  contacts: { id: string; company: string | null }[];
  owners: string[];
  creator: string;
}

/** Row i of n as an array of values in OPP_COLUMNS order. */
export function opportunityRows(n: number, pools: Pools, seed = 7) {
  // The seeder's own generator: same kind of values, drawn the same way.
  const { next, int, pick, weighted } = prng(seed);
  const base = Date.now();
  return (i: number): (string | number | null)[] => {
    const status = weighted(STATUSES);
    const ci = pools.contacts.length ? int(0, pools.contacts.length - 1) : -1;
    const contact = ci >= 0 && next() < 0.85 ? pools.contacts[ci]! : null;
    const company = contact ? contact.company : pools.companies.length ? pick(pools.companies) : null;
    const created = new Date(base - 730 * DAY * (1 - (i + next()) / n)).toISOString();
    const closed = status.startsWith('closed');
    const close = new Date(base + (closed ? -int(0, 540) : int(-30, 240)) * DAY).toISOString().slice(0, 10);
    const cents = Math.round(Math.exp(7 + next() * 5.5)) * 100 + int(0, 99);
    return [
      newId(),
      created,
      created,
      pools.creator,
      `${pick(KINDS)}: ${pick(PRODUCTS)}`,
      cents,
      status,
      close,
      PROBABILITY[status]!,
      company,
      contact?.id ?? null,
      pick(pools.owners),
      pick(SOURCES),
      weighted([
        ['low', 30],
        ['medium', 50],
        ['high', 20],
      ]),
      closed ? null : pick(STEPS),
      status === 'closed_lost' ? pick(LOST) : null,
    ];
  };
}

/** CREATE statements of a table and its indexes from sqlite_master, renamed for a sibling table. */
export function siblingDdl(sqlite: Database.Database, table: string, sibling: string) {
  const rows = sqlite.prepare(`SELECT type, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type DESC`).all(table) as {
    type: string;
    sql: string;
  }[];
  const rename = (s: string) => s.replaceAll(table, sibling);
  return {
    table: rows.filter((r) => r.type === 'table').map((r) => rename(r.sql)),
    indexes: rows.filter((r) => r.type === 'index').map((r) => rename(r.sql)),
  };
}

export interface RawSeedResult {
  rows: number;
  seconds: number;
  /** Of seconds: building the secondary indexes after the load (bulk variant only). */
  indexSeconds: number;
  rowsPerSecond: number;
}

/**
 * Insert n rows into a fresh sibling of `table`. 'maintained': the sibling has every index while rows
 * go in (the straightforward raw loader). 'bulk': secondary indexes are created after the load, the
 * same trick seedWorkspace uses.
 */
export function rawSeed(sqlite: Database.Database, table: string, sibling: string, n: number, pools: Pools, mode: 'maintained' | 'bulk', batch = 20_000): RawSeedResult {
  const ddl = siblingDdl(sqlite, table, sibling);
  sqlite.exec(`DROP TABLE IF EXISTS ${sibling}`);
  for (const s of ddl.table) sqlite.exec(s);
  if (mode === 'maintained') for (const s of ddl.indexes) sqlite.exec(s);
  const gen = opportunityRows(n, pools);
  const ins = sqlite.prepare(`INSERT INTO ${sibling} (${OPP_COLUMNS.join(', ')}) VALUES (${OPP_COLUMNS.map(() => '?').join(', ')})`);
  const load = sqlite.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) ins.run(gen(i));
  });
  const t0 = performance.now();
  for (let from = 0; from < n; from += batch) load(from, Math.min(n, from + batch));
  const t1 = performance.now();
  if (mode === 'bulk') for (const s of ddl.indexes) sqlite.exec(s);
  const t2 = performance.now();
  const seconds = (t2 - t0) / 1000;
  return { rows: n, seconds, indexSeconds: (t2 - t1) / 1000, rowsPerSecond: n / seconds };
}

/** Cost of making the rows alone (no SQLite), to read the seed figures against. */
export function generationOnly(n: number, pools: Pools): { seconds: number; rowsPerSecond: number } {
  const gen = opportunityRows(n, pools);
  let sink = 0;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sink += (gen(i)[0] as string).length;
  const seconds = (performance.now() - t0) / 1000;
  if (sink < 0) console.log(sink);
  return { seconds, rowsPerSecond: n / seconds };
}
