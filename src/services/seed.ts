import { Faker, en } from '@faker-js/faker';
import { sql, type Kysely } from 'kysely';
import { newId } from './ids.js';
import type { Db } from '../db/database.js';
import type { Ctx } from './context.js';
import { getSchema, type ObjectDef } from './schema.js';
import { CONTACT_STATUSES, INDUSTRIES, OPPORTUNITY_STATUSES, SOURCES } from './system-objects.js';
import { createUser, listUsers } from './users.js';
import { now } from './clock.js';

export interface SeedOptions {
  contacts: number;
  companies: number;
  opportunities: number;
  /** PRNG seed: the same seed on an empty workspace gives the same data. */
  seed?: number;
  /** Rows per transaction. */
  batchSize?: number;
  onProgress?: (p: { object: string; done: number; total: number }) => void;
}

export interface SeedResult {
  companies: number;
  contacts: number;
  opportunities: number;
  users: number;
  seconds: number;
}

/** Small fast PRNG (mulberry32): faker builds the vocabulary once, this picks from it per row. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(arr: readonly T[]): T => arr[Math.floor(next() * arr.length)]!,
    chance: (p: number) => next() < p,
    weighted: <T>(items: readonly [T, number][]): T => {
      let r = next() * items.reduce((s, [, w]) => s + w, 0);
      for (const [v, w] of items) if ((r -= w) < 0) return v;
      return items[items.length - 1]![0];
    },
  };
}

function vocabulary(seed: number) {
  const f = new Faker({ locale: [en] });
  f.seed(seed);
  const uniq = (n: number, gen: () => string) => [...new Set(Array.from({ length: n }, gen))];
  return {
    firstNames: uniq(600, () => f.person.firstName()),
    lastNames: uniq(900, () => f.person.lastName()),
    jobTitles: uniq(120, () => f.person.jobTitle()),
    companyWords: uniq(700, () => f.company.name().replace(/[,.]/g, '').split(/\s|-/)[0]!),
    suffixes: ['Inc', 'LLC', 'Group', 'Labs', 'Systems', 'Partners', 'Holdings', 'Technologies', 'Solutions', 'Co'],
    cities: uniq(200, () => f.location.city()),
    countries: ['United States', 'United Kingdom', 'Germany', 'France', 'Canada', 'Netherlands', 'Spain', 'Sweden', 'Australia', 'Japan', 'Brazil', 'India'],
    deals: uniq(80, () => `${f.commerce.productAdjective()} ${f.commerce.product()}`),
    dealKinds: ['Renewal', 'Expansion', 'New business', 'Pilot', 'Upsell', 'Migration', 'Enterprise plan', 'Annual contract'],
    nextSteps: ['Send proposal', 'Book demo', 'Legal review', 'Call champion', 'Security questionnaire', 'Pricing call', 'Follow up by email'],
    descriptions: uniq(60, () => f.company.catchPhrase()),
  };
}

const STAGE_PROBABILITY: Record<string, number> = { open: 10, qualified: 25, proposal: 50, negotiation: 75, closed_won: 100, closed_lost: 0 };
const DAY = 86_400_000;

type AnyDb = Kysely<any>;

async function insertBatches(
  db: Db,
  obj: ObjectDef,
  total: number,
  batchSize: number,
  make: (i: number) => Record<string, unknown>,
  onProgress?: SeedOptions['onProgress'],
): Promise<string[]> {
  const ids: string[] = [];
  const k = db.kysely as unknown as AnyDb;
  // A large load into a small table is faster with its secondary indexes built once at the end
  // (one sort) than maintained row by row (random B-tree inserts). Unique indexes stay: they check.
  const existing = Number(((await k.selectFrom(obj.table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()) as { n: number }).n);
  const rebuild = total >= 50_000 && total > existing ? await db.adapter.secondaryIndexes(k, obj.table) : [];
  for (const ix of rebuild) await sql`DROP INDEX ${sql.ref(ix.name)}`.execute(k);
  // Rows per INSERT statement, kept under SQLite's bound-parameter limit.
  const cols = Object.keys(make(0)).length;
  const perStatement = Math.max(1, Math.min(500, Math.floor(30000 / cols)));
  for (let done = 0; done < total; ) {
    const n = Math.min(batchSize, total - done);
    await k.transaction().execute(async (trx) => {
      for (let off = 0; off < n; off += perStatement) {
        const rows = [];
        for (let j = off; j < Math.min(n, off + perStatement); j++) {
          const r = make(done + j);
          ids.push(r.id as string);
          rows.push(r);
        }
        await trx.insertInto(obj.table).values(rows).execute();
      }
    });
    done += n;
    onProgress?.({ object: obj.name, done, total });
  }
  for (const ix of rebuild) await sql.raw(ix.create).execute(k);
  return ids;
}

/**
 * Deterministic, realistic demo data: companies, their contacts, and opportunities spread over the
 * pipeline with owners and links. Bulk-inserted in transactions; fast enough for millions of rows.
 */
export async function seedWorkspace(ctx: Ctx, opts: SeedOptions): Promise<SeedResult> {
  const t0 = performance.now();
  const seed = opts.seed ?? 42;
  const rnd = prng(seed);
  const voc = vocabulary(seed);
  const batchSize = opts.batchSize ?? 20_000;
  const schema = await getSchema(ctx);
  const companiesObj = schema.objects.get('companies')!;
  const contactsObj = schema.objects.get('contacts')!;
  const oppsObj = schema.objects.get('opportunities')!;

  let users = await listUsers(ctx);
  if (users.length < 4) {
    const f = new Faker({ locale: [en] });
    f.seed(seed + 1);
    for (let i = 0; i < 6; i++) {
      const first = f.person.firstName();
      const last = f.person.lastName();
      await createUser(ctx.db, ctx.actor.workspaceId, {
        email: `${first}.${last}.${i}@sales.example.com`.toLowerCase().replace(/[^a-z0-9.@]/g, ''),
        name: `${first} ${last}`,
        role: 'member',
      });
    }
    users = await listUsers(ctx);
  }
  const owners = users.map((u) => u.id);
  const base = now();
  const stamp = (daysBack: number) => new Date(base - rnd.next() * daysBack * DAY).toISOString();
  /** Record i of n was created at a time rising with i over the last daysBack days, as records arrive in a real CRM. */
  const arrival = (i: number, n: number, daysBack: number) =>
    new Date(base - daysBack * DAY * (1 - (i + rnd.next()) / Math.max(n, 1))).toISOString();
  const creator = ctx.actor.userId;
  // Unique per run, so a second seed into the same workspace does not collide on email.
  const runTag = (base % 1_000_000).toString(36);

  const companyIds = await insertBatches(
    ctx.db,
    companiesObj,
    opts.companies,
    batchSize,
    (i) => {
      const word = rnd.pick(voc.companyWords);
      const name = `${word} ${rnd.pick(voc.suffixes)}${i >= voc.companyWords.length ? ` ${i}` : ''}`;
      const domain = `${word.toLowerCase().replace(/[^a-z0-9]/g, '')}${i}.example.com`;
      const created = arrival(i, opts.companies, 900);
      return {
        id: newId(),
        created_at: created,
        updated_at: created,
        created_by: creator,
        name,
        domain,
        website: `https://www.${domain}`,
        industry: rnd.pick(INDUSTRIES),
        employees: rnd.weighted([[rnd.int(1, 50), 4], [rnd.int(51, 500), 3], [rnd.int(501, 5000), 2], [rnd.int(5001, 100000), 1]]),
        annual_revenue: rnd.int(10_000, 500_000_000) * 100,
        phone: `+1 ${rnd.int(200, 989)}-${rnd.int(200, 999)}-${String(rnd.int(0, 9999)).padStart(4, '0')}`,
        city: rnd.pick(voc.cities),
        country: rnd.pick(voc.countries),
        owner: rnd.pick(owners),
        description: rnd.chance(0.5) ? rnd.pick(voc.descriptions) : null,
      };
    },
    opts.onProgress,
  );
  let companyPool = companyIds;
  if (companyPool.length === 0)
    companyPool = ((await (ctx.db.kysely as unknown as AnyDb).selectFrom(companiesObj.table).select('id').limit(100_000).execute()) as { id: string }[]).map((r) => r.id);

  const contactCompany: (string | null)[] = [];
  const contactIds = await insertBatches(
    ctx.db,
    contactsObj,
    opts.contacts,
    batchSize,
    (i) => {
      const first = rnd.pick(voc.firstNames);
      const last = rnd.pick(voc.lastNames);
      const company = companyPool.length && rnd.chance(0.9) ? rnd.pick(companyPool) : null;
      contactCompany[i] = company;
      const created = arrival(i, opts.contacts, 730);
      const tags = (['vip', 'newsletter', 'partner', 'investor', 'event'] as const).filter(() => rnd.chance(0.12));
      return {
        id: newId(),
        created_at: created,
        updated_at: created,
        created_by: creator,
        first_name: first,
        last_name: last,
        email: `${first}.${last}.${runTag}${i}@${rnd.pick(['example.com', 'example.org', 'example.net', 'mail.example.com'])}`.toLowerCase().replace(/[^a-z0-9.@]/g, ''),
        phone: rnd.chance(0.8) ? `+1 ${rnd.int(200, 989)} ${rnd.int(200, 999)} ${String(rnd.int(0, 9999)).padStart(4, '0')}` : null,
        job_title: rnd.pick(voc.jobTitles),
        status: rnd.weighted([[CONTACT_STATUSES[0]!, 40], [CONTACT_STATUSES[1]!, 25], [CONTACT_STATUSES[2]!, 30], [CONTACT_STATUSES[3]!, 5]]),
        source: rnd.pick(SOURCES),
        company,
        owner: rnd.pick(owners),
        city: rnd.pick(voc.cities),
        country: rnd.pick(voc.countries),
        linkedin_url: rnd.chance(0.4) ? `https://www.linkedin.com/in/${first}-${last}-${i}`.toLowerCase().replace(/[^a-z0-9:/.-]/g, '') : null,
        tags: tags.length ? JSON.stringify(tags) : null,
        do_not_contact: rnd.chance(0.03) ? 1 : 0,
        last_contacted_at: rnd.chance(0.7) ? stamp(120) : null,
      };
    },
    opts.onProgress,
  );

  await insertBatches(
    ctx.db,
    oppsObj,
    opts.opportunities,
    batchSize,
    (i) => {
      const status = rnd.weighted(OPPORTUNITY_STATUSES.map((s, k) => [s, [25, 20, 15, 10, 18, 12][k]!] as [string, number]));
      const ci = contactIds.length ? rnd.int(0, contactIds.length - 1) : -1;
      const contact = ci >= 0 && rnd.chance(0.85) ? contactIds[ci]! : null;
      const company = contact ? (contactCompany[ci] ?? null) : companyPool.length ? rnd.pick(companyPool) : null;
      const created = arrival(i, opts.opportunities, 730);
      const closed = status.startsWith('closed');
      const close = new Date(base + (closed ? -rnd.int(0, 540) : rnd.int(-30, 240)) * DAY).toISOString().slice(0, 10);
      const cents = Math.round(Math.exp(7 + rnd.next() * 5.5)) * 100 + rnd.int(0, 99);
      return {
        id: newId(),
        created_at: created,
        updated_at: created,
        created_by: creator,
        name: `${rnd.pick(voc.dealKinds)}: ${rnd.pick(voc.deals)}`,
        amount: cents,
        status,
        close_date: close,
        probability: STAGE_PROBABILITY[status]!,
        company,
        contact,
        owner: rnd.pick(owners),
        source: rnd.pick(SOURCES),
        priority: rnd.weighted([['low', 3], ['medium', 5], ['high', 2]] as [string, number][]),
        next_step: closed ? null : rnd.pick(voc.nextSteps),
        lost_reason: status === 'closed_lost' ? rnd.pick(['Price', 'Timing', 'Competitor', 'No budget', 'No decision']) : null,
      };
    },
    opts.onProgress,
  );

  return {
    companies: companyIds.length,
    contacts: contactIds.length,
    opportunities: opts.opportunities,
    users: users.length,
    seconds: (performance.now() - t0) / 1000,
  };
}
