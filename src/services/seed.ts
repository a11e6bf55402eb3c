import type { Faker } from '@faker-js/faker';
import { type Kysely, sql } from 'kysely';
import { bulkInsert } from '../db/bulk-insert.js';
import type { Db } from '../db/database.js';
import { DERIVED_TABLES } from '../db/dialect.js';
import type { Tables } from '../db/tables.js';
import { recordActivity } from './activity.js';
import { now } from './clock.js';
import type { Ctx } from './context.js';
import { rebuildDedupeKeys } from './dedupe-keys.js';
import { newId } from './ids.js';
import { countRows } from './record-tables.js';
import { getSchema, type ObjectDef } from './schema.js';
import { rebuildSearchIndex } from './search.js';
import { CONTACT_STATUSES, INDUSTRIES, OPPORTUNITY_STATUSES, SOURCES } from './system-objects.js';
import { createUser, listUsers } from './users.js';

export interface SeedOptions {
  contacts: number;
  companies: number;
  opportunities: number;
  /** Tasks linked to contacts, companies and opportunities (default 0). */
  tasks?: number;
  /** Email threads with 1-5 messages each, linked to contacts and their companies (default 0). */
  threads?: number;
  /** Write each record's 'created' timeline entry (default true; bulk benchmarks turn it off). */
  activity?: boolean;
  /** Build the full-text index for the new records (default true). */
  searchIndex?: boolean;
  /** Build the duplicate-detection keys for the new records (default true). */
  matchKeys?: boolean;
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
  tasks: number;
  threads: number;
  users: number;
  seconds: number;
}

/** Small fast PRNG (mulberry32): faker builds the vocabulary once, this picks from it per row. */
export function prng(seed: number) {
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

/**
 * A seeded faker. Loaded when a seed runs, not with the program: faker's English locale takes about
 * 0.2 s to load, which every `serve`, `stdio` and CLI start would otherwise pay.
 */
async function seededFaker(seed: number): Promise<Faker> {
  const { en, Faker } = await import('@faker-js/faker');
  const f = new Faker({ locale: [en] });
  f.seed(seed);
  return f;
}

function vocabulary(f: Faker) {
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
  /** When given, each record gets its 'created' timeline entry in the same transaction. */
  activityOf?: Ctx,
): Promise<string[]> {
  const ids: string[] = [];
  const k = db.kysely as unknown as AnyDb;
  // A large load into a small table is faster with its secondary indexes built once at the end
  // (one sort) than maintained row by row (random B-tree inserts). Unique indexes stay: they check.
  const existing = await countRows(k, obj);
  const rebuild = total >= 50_000 && total > existing ? await db.adapter.secondaryIndexes(k, obj.table) : [];
  for (const ix of rebuild) await sql`DROP INDEX ${sql.ref(ix.name)}`.execute(k);
  let columns: string[] | null = null;
  for (let done = 0; done < total; ) {
    const n = Math.min(batchSize, total - done);
    const rows: Record<string, unknown>[] = [];
    for (let j = 0; j < n; j++) rows.push(make(done + j));
    columns ??= Object.keys(rows[0]!);
    const cols = columns;
    await k.transaction().execute(async (trx) => {
      await bulkInsert(trx, obj.table, cols, rows);
      if (activityOf)
        await recordActivity(
          trx as unknown as Kysely<Tables>,
          activityOf,
          rows.map((r) => ({ object: obj.name, recordId: r.id as string, action: 'created', payload: { seeded: true } })),
        );
    });
    for (const r of rows) ids.push(r.id as string);
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
export function seedWorkspace(ctx: Ctx, opts: SeedOptions): Promise<SeedResult> {
  return ctx.db.bulk(() => seedAll(ctx, opts));
}

async function seedAll(ctx: Ctx, opts: SeedOptions): Promise<SeedResult> {
  const t0 = performance.now();
  const seed = opts.seed ?? 42;
  const rnd = prng(seed);
  const voc = vocabulary(await seededFaker(seed));
  const batchSize = opts.batchSize ?? 20_000;
  const schema = await getSchema(ctx);
  const companiesObj = schema.objects.get('companies')!;
  const contactsObj = schema.objects.get('contacts')!;
  const oppsObj = schema.objects.get('opportunities')!;

  let users = await listUsers(ctx);
  if (users.length < 4) {
    const f = await seededFaker(seed + 1);
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
  const arrival = (i: number, n: number, daysBack: number) => new Date(base - daysBack * DAY * (1 - (i + rnd.next()) / Math.max(n, 1))).toISOString();
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
        employees: rnd.weighted([
          [rnd.int(1, 50), 4],
          [rnd.int(51, 500), 3],
          [rnd.int(501, 5000), 2],
          [rnd.int(5001, 100000), 1],
        ]),
        annual_revenue: rnd.int(10_000, 500_000_000) * 100,
        phone: `+1 ${rnd.int(200, 989)}-${rnd.int(200, 999)}-${String(rnd.int(0, 9999)).padStart(4, '0')}`,
        city: rnd.pick(voc.cities),
        country: rnd.pick(voc.countries),
        owner: rnd.pick(owners),
        description: rnd.chance(0.5) ? rnd.pick(voc.descriptions) : null,
      };
    },
    opts.onProgress,
    opts.activity === false ? undefined : ctx,
  );
  let companyPool = companyIds;
  if (companyPool.length === 0) companyPool = ((await (ctx.db.kysely as unknown as AnyDb).selectFrom(companiesObj.table).select('id').limit(100_000).execute()) as { id: string }[]).map((r) => r.id);

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
        status: rnd.weighted([
          [CONTACT_STATUSES[0]!, 40],
          [CONTACT_STATUSES[1]!, 25],
          [CONTACT_STATUSES[2]!, 30],
          [CONTACT_STATUSES[3]!, 5],
        ]),
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
    opts.activity === false ? undefined : ctx,
  );

  const oppStage: string[] = [];
  const oppCreated: string[] = [];
  const oppIds = await insertBatches(
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
      oppStage[i] = status;
      oppCreated[i] = created;
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
        priority: rnd.weighted([
          ['low', 3],
          ['medium', 5],
          ['high', 2],
        ] as [string, number][]),
        next_step: closed ? null : rnd.pick(voc.nextSteps),
        lost_reason: status === 'closed_lost' ? rnd.pick(['Price', 'Timing', 'Competitor', 'No budget', 'No decision']) : null,
      };
    },
    opts.onProgress,
    opts.activity === false ? undefined : ctx,
  );

  // Stage history, so time-in-stage and conversion have something to show: each deal walked the
  // pipeline from its first step to where it is now. Skipped for bulk loads (benchmarks).
  if (oppsObj.pipeline && oppIds.length && oppIds.length <= 100_000) {
    const steps = oppsObj.pipeline.steps;
    const open = steps.filter((st) => !st.won && !st.lost).map((st) => st.key);
    const rows: Record<string, unknown>[] = [];
    for (let i = 0; i < oppIds.length; i++) {
      const stage = oppStage[i]!;
      const path = stage === 'closed_lost' ? [...open.slice(0, rnd.int(1, open.length)), stage] : stage === 'closed_won' ? [...open, stage] : open.slice(0, open.indexOf(stage) + 1);
      let t = Date.parse(oppCreated[i]!);
      const span = Math.max(base - t, 3_600_000);
      for (let k = 0; k < path.length; k++) {
        const last = k === path.length - 1;
        const next = last ? null : t + Math.floor((span / path.length) * (0.3 + rnd.next() * 0.7));
        rows.push({
          workspace_id: ctx.actor.workspaceId,
          pipeline_id: oppsObj.pipeline.id,
          record_id: oppIds[i]!,
          step_key: path[k]!,
          entered_at: new Date(t).toISOString(),
          left_at: next === null ? null : new Date(next).toISOString(),
        });
        if (next !== null) t = next;
      }
    }
    await ctx.db.kysely.transaction().execute(async (trx) => {
      for (let i = 0; i < rows.length; i += 4000)
        await (trx as unknown as Kysely<any>)
          .insertInto('stage_history')
          .values(rows.slice(i, i + 4000))
          .execute();
    });
  }

  const tasksObj = schema.objects.get('tasks')!;
  const nTasks = opts.tasks ?? 0;
  await insertBatches(
    ctx.db,
    tasksObj,
    nTasks,
    batchSize,
    (i) => {
      const created = arrival(i, nTasks, 120);
      // Due dates from three weeks ago to six weeks ahead: some overdue, some today, most upcoming.
      const due = new Date(base + rnd.int(-21 * 24, 42 * 24) * 3_600_000).toISOString();
      const status = rnd.weighted([
        ['open', 45],
        ['in_progress', 15],
        ['waiting', 5],
        ['completed', 30],
        ['cancelled', 5],
      ] as [string, number][]);
      const oi = oppIds.length && rnd.chance(0.5) ? rnd.int(0, oppIds.length - 1) : -1;
      const ci = contactIds.length ? rnd.int(0, contactIds.length - 1) : -1;
      const kind = rnd.pick(['Call', 'Email', 'Send proposal to', 'Follow up with', 'Book a demo with', 'Prepare QBR for']);
      return {
        id: newId(),
        created_at: created,
        updated_at: created,
        created_by: creator,
        title: `${kind} ${ci >= 0 ? 'contact' : 'prospect'} #${i + 1}`,
        description: rnd.chance(0.4) ? rnd.pick(voc.nextSteps) : null,
        status,
        priority: rnd.weighted([
          ['low', 3],
          ['medium', 5],
          ['high', 2],
          ['urgent', 1],
        ] as [string, number][]),
        due_at: due,
        assignee: rnd.pick(owners),
        time_estimate: rnd.pick([900, 1800, 3600, 7200, 14400]),
        completed_at: status === 'completed' ? due : null,
        contact: ci >= 0 ? contactIds[ci]! : null,
        company: ci >= 0 ? (contactCompany[ci] ?? null) : null,
        opportunity: oi >= 0 ? oppIds[oi]! : null,
      };
    },
    opts.onProgress,
    opts.activity === false ? undefined : ctx,
  );

  if (opts.searchIndex !== false) {
    const objects = [...(opts.companies ? ['companies'] : []), ...(opts.contacts ? ['contacts'] : []), ...(opts.opportunities ? ['opportunities'] : []), ...(nTasks ? ['tasks'] : [])];
    // Rebuilds whole objects: simple and exact; a seed into a large existing workspace re-indexes it.
    const total = (opts.companies ?? 0) + (opts.contacts ?? 0) + (opts.opportunities ?? 0) + nTasks;
    if (objects.length)
      await rebuildSearchIndex(ctx.db, ctx.actor.workspaceId, await getSchema(ctx), {
        objects,
        onProgress: ({ done }) => opts.onProgress?.({ object: 'search index', done: Math.min(done, total), total }),
      });
  }
  if (opts.matchKeys !== false) {
    const objects = [...(opts.companies ? ['companies'] : []), ...(opts.contacts ? ['contacts'] : []), ...(opts.opportunities ? ['opportunities'] : []), ...(nTasks ? ['tasks'] : [])];
    if (objects.length) await rebuildDedupeKeys(ctx.db, ctx.actor.workspaceId, await getSchema(ctx), objects);
  }

  const nThreads = Math.min(opts.threads ?? 0, contactIds.length);
  if (nThreads > 0) await seedThreads(ctx, rnd, voc, nThreads, contactIds, contactCompany, base);
  // A bulk load changes the data's shape: give the planner fresh statistics, read whole, for the
  // tables loaded (and any other the database finds stale), not every workspace's record tables.
  // With what is derived from them (those that exist: the list is a hint; PostgreSQL analyses the workspace's schema).
  const loaded = [...[companiesObj, contactsObj, oppsObj, tasksObj].map((o) => o.table), ...DERIVED_TABLES];
  await ctx.db.adapter.analyze(ctx.db.kysely as unknown as Kysely<any>, true, loaded);

  return {
    companies: companyIds.length,
    contacts: contactIds.length,
    opportunities: opts.opportunities,
    tasks: nTasks,
    threads: nThreads,
    users: users.length,
    seconds: (performance.now() - t0) / 1000,
  };
}

const SUBJECTS = ['Pricing question', 'Renewal next quarter', 'Demo follow-up', 'Contract redlines', 'Intro call', 'Security review', 'Invoice', 'Onboarding'];
const BODIES = [
  'Thanks for the call today. Could you send over the updated pricing for the team plan?',
  'We are reviewing the proposal internally and will come back to you by Friday.',
  'Attached are our comments on the contract. Legal would like to discuss clause 7.',
  'Great meeting you at the event! Happy to set up a short intro call next week.',
  'Can you confirm the renewal date and whether the discount still applies?',
  'Our security team has a few questions about data retention and SSO.',
];

/** Email threads for the demo inbox, with their timeline entries on the linked contact and company. */
async function seedThreads(ctx: Ctx, rnd: ReturnType<typeof prng>, voc: ReturnType<typeof vocabulary>, n: number, contactIds: string[], contactCompany: (string | null)[], base: number) {
  const contactsObj = (await getSchema(ctx)).objects.get('contacts')!;
  const k = ctx.db.kysely;
  await k.transaction().execute(async (trx) => {
    for (let i = 0; i < n; i++) {
      const ci = rnd.int(0, contactIds.length - 1);
      const contactId = contactIds[ci]!;
      const contact = (await (trx as unknown as Kysely<any>).selectFrom(contactsObj.table).select(['first_name', 'last_name', 'email']).where('id', '=', contactId).executeTakeFirst()) as
        | { first_name: string; last_name: string | null; email: string | null }
        | undefined;
      const email = contact?.email ?? `contact${ci}@example.com`;
      const name = [contact?.first_name, contact?.last_name].filter(Boolean).join(' ');
      const subject = rnd.pick(SUBJECTS);
      const count = rnd.int(1, 5);
      let t = base - rnd.int(1, 60 * 24) * 60_000 * 60;
      const threadId = newId();
      const msgs = [];
      for (let m = 0; m < count; m++) {
        const inbound = m % 2 === 0;
        msgs.push({
          id: newId(),
          workspace_id: ctx.actor.workspaceId,
          thread_id: threadId,
          direction: inbound ? ('inbound' as const) : ('outbound' as const),
          from_email: inbound ? email : 'sales@example.com',
          from_name: inbound ? name : 'Sales team',
          to_emails: JSON.stringify([inbound ? 'sales@example.com' : email]),
          subject: m === 0 ? subject : `Re: ${subject}`,
          body: `${rnd.pick(BODIES)}\n\n${rnd.pick(voc.descriptions)}`,
          sent_at: new Date(t).toISOString(),
        });
        t += rnd.int(1, 72) * 3_600_000;
      }
      // Nothing in the inbox comes from the future: shift the thread back if it ran past now.
      const overshoot = t - base;
      if (overshoot > 0) for (const m of msgs) m.sent_at = new Date(Date.parse(m.sent_at) - overshoot - 3_600_000).toISOString();
      const last = msgs[msgs.length - 1]!;
      const companyId = contactCompany[ci] ?? null;
      await trx
        .insertInto('threads')
        .values({
          id: threadId,
          workspace_id: ctx.actor.workspaceId,
          subject,
          snippet: last.body.replace(/\s+/g, ' ').slice(0, 160),
          contact_id: contactId,
          company_id: companyId,
          unread: last.direction === 'inbound' && rnd.chance(0.6) ? 1 : 0,
          message_count: msgs.length,
          last_message_at: last.sent_at,
          created_at: msgs[0]!.sent_at,
        })
        .execute();
      await trx.insertInto('messages').values(msgs).execute();
      await recordActivity(
        trx,
        ctx,
        msgs.flatMap((m) => {
          const payload = { thread_id: threadId, message_id: m.id, subject, sent_at: m.sent_at };
          const action = m.direction === 'inbound' ? 'email_received' : 'email_sent';
          return [{ object: 'contacts', recordId: contactId, action, payload }, ...(companyId ? [{ object: 'companies', recordId: companyId, action, payload }] : [])];
        }),
      );
    }
  });
}
