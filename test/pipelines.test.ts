import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setClock } from '../src/services/clock.js';
import { call, makeWorkspace, type TestApp, type TestWorkspace, testApp } from './helpers.js';

/**
 * Pipelines through REST: the default Sales pipeline, first-step defaults on every create surface
 * (REST, batch, upsert, import), validated moves with their activity entries and stage history,
 * exact stats over a scripted history on a fixed clock, custom pipelines (admins only), tenancy.
 */

const T0 = Date.parse('2026-05-04T08:00:00Z');
const HOUR = 3_600_000;
const iso = (ms: number) => new Date(ms).toISOString();

const SALES_STEPS = [
  { key: 'open', name: 'Open', probability: 10, won: false, lost: false },
  { key: 'qualified', name: 'Qualified', probability: 25, won: false, lost: false },
  { key: 'proposal', name: 'Proposal', probability: 50, won: false, lost: false },
  { key: 'negotiation', name: 'Negotiation', probability: 75, won: false, lost: false },
  { key: 'closed_won', name: 'Closed won', probability: 100, won: true, lost: false },
  { key: 'closed_lost', name: 'Closed lost', probability: 0, won: false, lost: true },
];
const SALES_KEYS = SALES_STEPS.map((s) => s.key);

let t: TestApp;
let clock = T0;
/** Every request runs one minute after the previous one: each history entry has its own time. */
const tick = () => {
  clock += 60_000;
  setClock(clock);
  return iso(clock);
};
const api = (token: string, method: string, url: string, body?: unknown) => {
  tick();
  return call(t.app, token, method, `/api/v1${url}`, body);
};
const admin = () => t.a.adminToken;
const member = () => t.a.memberToken;

function ok(r: { status: number; body: any }, status?: number) {
  if (status !== undefined) expect(r.status, JSON.stringify(r.body)).toBe(status);
  else expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  return r.body;
}

function err(r: { status: number; body: any }, status: number, code: string) {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.body.error).toBe(true);
  expect(r.body.code).toBe(code);
  return r.body as { code: string; message: string; details?: any };
}

const history = (id: string) => t.a.ctx.db.kysely.selectFrom('stage_history').select(['pipeline_id', 'step_key', 'entered_at', 'left_at']).where('record_id', '=', id).orderBy('id').execute();

async function timeline(id: string, object = 'opportunities', token = admin()) {
  const r = ok(await call(t.app, token, 'GET', `/api/v1/activity/${object}/${id}?limit=100`));
  return r.data as { action: string; at: string; via: string; user: { id: string; name: string | null } | null; details: any }[];
}
const moves = async (id: string, object = 'opportunities') => (await timeline(id, object)).filter((e) => e.action === 'pipeline_moved').reverse();

async function byName(object: string, name: string, token = admin()) {
  const r = ok(await call(t.app, token, 'GET', `/api/v1/records/${object}?filter_field=name&filter_operator=eq&filter_value=${encodeURIComponent(name)}`));
  expect(r.data, `one ${object} named ${name}`).toHaveLength(1);
  return r.data[0];
}

let sales: { id: string; steps: { id: string; key: string }[] };

beforeAll(async () => {
  setClock(clock);
  t = await testApp();
  sales = ok(await api(admin(), 'GET', '/pipelines')).data[0];
});

afterAll(async () => {
  setClock(null);
  await t?.close();
});

describe('GET /pipelines', () => {
  it('lists the default Sales pipeline with its ordered steps', async () => {
    const r = ok(await api(member(), 'GET', '/pipelines'));
    expect(r.total).toBe(1);
    const [p] = r.data;
    expect(p).toMatchObject({ object: 'opportunities', name: 'Sales pipeline', field: 'status' });
    expect(typeof p.id).toBe('string');
    expect(p.steps.map((s: any) => ({ key: s.key, name: s.name, probability: s.probability, won: s.won, lost: s.lost }))).toEqual(SALES_STEPS);
    expect(p.steps.map((s: any) => s.position)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(p.steps.map((s: any) => s.defaults)).toEqual(SALES_STEPS.map((s) => ({ probability: s.probability })));
    expect(new Set(p.steps.map((s: any) => s.id)).size).toBe(6);

    // One pipeline by id, by object filter; other objects have none; unknown object and id are errors.
    expect(ok(await api(member(), 'GET', `/pipelines/${p.id}`)).data).toEqual(p);
    expect(ok(await api(admin(), 'GET', '/pipelines?object=opportunities')).data).toEqual([p]);
    expect(ok(await api(admin(), 'GET', '/pipelines?object=contacts'))).toEqual({ data: [], total: 0 });
    err(await api(admin(), 'GET', '/pipelines?object=nope'), 400, 'INVALID_OBJECT');
    err(await api(admin(), 'GET', '/pipelines/00000000-0000-0000-0000-000000000000'), 404, 'RECORD_NOT_FOUND');
    err(await call(t.app, null, 'GET', '/api/v1/pipelines'), 401, 'UNAUTHORIZED');
  });
});

describe('new records start on the first step with its defaults', () => {
  it('REST create: first step and probability 10, or the step given with its defaults for fields not given', async () => {
    const at = iso(clock + 60_000);
    const plain = ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Plain deal', amount: 1000 }), 201).data;
    expect(plain).toMatchObject({ status: 'open', probability: 10 });
    expect(await history(plain.id)).toEqual([{ pipeline_id: sales.id, step_key: 'open', entered_at: at, left_at: null }]);

    const onProposal = ok(await api(member(), 'POST', '/records/opportunities', { name: 'Proposal deal', status: 'proposal' }), 201).data;
    expect(onProposal).toMatchObject({ status: 'proposal', probability: 50 });
    expect((await history(onProposal.id)).map((h) => h.step_key)).toEqual(['proposal']);

    // A value sent wins over the step's default.
    const own = ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Own probability', status: 'negotiation', probability: 33 }), 201).data;
    expect(own).toMatchObject({ status: 'negotiation', probability: 33 });
    const noStatus = ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Explicit null', status: null }), 201).data;
    expect(noStatus).toMatchObject({ status: 'open', probability: 10 });

    // A create is not a move.
    expect(await moves(plain.id)).toEqual([]);
    const created = (await timeline(plain.id)).map((e) => e.action);
    expect(created).toEqual(['created']);

    // Not a step: refused, nothing written.
    const before = await t.a.ctx.db.kysely
      .selectFrom('stage_history')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    const bad = err(await api(admin(), 'POST', '/records/opportunities', { name: 'Bad', status: 'won' }), 400, 'VALIDATION_ERROR');
    expect(bad.message).toMatch(/status/);
    const after = await t.a.ctx.db.kysely
      .selectFrom('stage_history')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(after.n)).toBe(Number(before.n));
  });

  it('batch create', async () => {
    const r = ok(
      await api(admin(), 'POST', '/records/opportunities/batch/create', {
        records: [{ name: 'Batch one' }, { name: 'Batch two', status: 'qualified' }, { name: 'Batch three', status: 'closed_won', probability: 90 }],
      }),
      201,
    ).data;
    expect(r.map((x: any) => [x.name, x.status, x.probability])).toEqual([
      ['Batch one', 'open', 10],
      ['Batch two', 'qualified', 25],
      ['Batch three', 'closed_won', 90],
    ]);
    for (const [i, step] of ['open', 'qualified', 'closed_won'].entries()) expect((await history(r[i].id)).map((h) => [h.step_key, h.left_at])).toEqual([[step, null]]);
  });

  it('upsert: created rows start on the first step; updated rows that change step move', async () => {
    const first = ok(await api(admin(), 'POST', '/records/opportunities/batch/upsert', { records: [{ name: 'Upsert new' }, { name: 'Upsert on proposal', status: 'proposal' }] }));
    expect(first.results.map((x: any) => x.action)).toEqual(['created', 'created']);
    expect(first.data.map((x: any) => [x.status, x.probability])).toEqual([
      ['open', 10],
      ['proposal', 50],
    ]);
    const [a, b] = first.data;
    expect((await history(a.id)).map((h) => h.step_key)).toEqual(['open']);

    const second = ok(
      await api(admin(), 'POST', '/records/opportunities/batch/upsert', {
        records: [
          { id: a.id, status: 'negotiation' },
          { id: b.id, name: 'Upsert renamed' },
        ],
      }),
    );
    expect(second.results.map((x: any) => x.action)).toEqual(['updated', 'updated']);
    expect(second.data.map((x: any) => [x.status, x.probability])).toEqual([
      ['negotiation', 75],
      ['proposal', 50],
    ]);
    expect((await moves(a.id)).map((m) => [m.details.from, m.details.to, m.via])).toEqual([['open', 'negotiation', 'rest']]);
    expect((await history(a.id)).map((h) => [h.step_key, h.left_at === null])).toEqual([
      ['open', false],
      ['negotiation', true],
    ]);
    expect(await moves(b.id)).toEqual([]);
    expect((await history(b.id)).map((h) => h.step_key)).toEqual(['proposal']);
  });

  it('POST /import: first step with its defaults, or the step given', async () => {
    const at = iso(clock + 60_000);
    const r = ok(
      await api(admin(), 'POST', '/import/opportunities', {
        records: [
          { name: 'Imported plain', amount: 500 },
          { name: 'Imported lost', status: 'closed_lost' },
          { name: 'Imported own', status: 'qualified', probability: 40 },
          { name: 'Imported bad', status: 'nope' },
        ],
      }),
    );
    expect(r).toMatchObject({ object_name: 'opportunities', created: 3, duplicates: 0, failed: 1 });
    expect(r.errors.map((e: any) => [e.index, e.code])).toEqual([[3, 'VALIDATION_ERROR']]);
    const plain = await byName('opportunities', 'Imported plain');
    expect(plain).toMatchObject({ status: 'open', probability: 10, amount: 500 });
    expect(await history(plain.id)).toEqual([{ pipeline_id: sales.id, step_key: 'open', entered_at: at, left_at: null }]);
    const lost = await byName('opportunities', 'Imported lost');
    expect(lost).toMatchObject({ status: 'closed_lost', probability: 0 });
    expect((await history(lost.id)).map((h) => h.step_key)).toEqual(['closed_lost']);
    expect(await byName('opportunities', 'Imported own')).toMatchObject({ status: 'qualified', probability: 40 });
    // Members cannot import.
    err(await api(member(), 'POST', '/import/opportunities', { records: [{ name: 'Nope' }] }), 403, 'PERMISSION_DENIED');
  });
});

describe('PUT /pipelines/{object}/{id}/move', () => {
  it('moves, applies the step defaults, logs pipeline_moved with from/to and via, keeps stage history', async () => {
    const created = iso(clock + 60_000);
    const deal = ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Mover', probability: 33 }), 201).data;
    expect(deal).toMatchObject({ status: 'open', probability: 33 });

    const movedAt = iso(clock + 60_000);
    const r = ok(await api(admin(), 'PUT', `/pipelines/opportunities/${deal.id}/move`, { step: 'negotiation' }));
    expect(r.move).toEqual({ from: 'open', to: 'negotiation', moved: true });
    // The step's default replaces the earlier value: entering a step sets its probability.
    expect(r.data).toMatchObject({ id: deal.id, status: 'negotiation', probability: 75 });
    expect(ok(await api(admin(), 'GET', `/records/opportunities/${deal.id}`)).data).toMatchObject({ status: 'negotiation', probability: 75, updated_at: movedAt });

    const m = await moves(deal.id);
    expect(m).toHaveLength(1);
    expect(m[0]).toMatchObject({ at: movedAt, via: 'rest', user: { id: t.a.admin.id } });
    expect(m[0]!.details).toEqual({ pipeline: 'Sales pipeline', pipeline_id: sales.id, from: 'open', to: 'negotiation' });
    // The field change is in the feed too.
    const updated = (await timeline(deal.id)).find((e) => e.action === 'updated');
    expect(updated?.details.changes).toEqual({ status: ['open', 'negotiation'], probability: [33, 75] });

    expect(await history(deal.id)).toEqual([
      { pipeline_id: sales.id, step_key: 'open', entered_at: created, left_at: movedAt },
      { pipeline_id: sales.id, step_key: 'negotiation', entered_at: movedAt, left_at: null },
    ]);

    // By step id; by a member (records are members' work).
    const wonStep = sales.steps.find((s) => s.key === 'closed_won')!;
    const byId = ok(await api(member(), 'PUT', `/pipelines/opportunities/${deal.id}/move`, { step_id: wonStep.id }));
    expect(byId.move).toEqual({ from: 'negotiation', to: 'closed_won', moved: true });
    expect(byId.data).toMatchObject({ status: 'closed_won', probability: 100 });
    const m2 = await moves(deal.id);
    expect(m2.map((e) => [e.details.from, e.details.to, e.user?.id])).toEqual([
      ['open', 'negotiation', t.a.admin.id],
      ['negotiation', 'closed_won', t.a.member.id],
    ]);
    expect((await history(deal.id)).map((h) => [h.step_key, h.left_at === null])).toEqual([
      ['open', false],
      ['negotiation', false],
      ['closed_won', true],
    ]);

    // Moving to the step it is on: nothing happens, nothing is logged.
    const entries = (await timeline(deal.id)).length;
    const same = ok(await api(admin(), 'PUT', `/pipelines/opportunities/${deal.id}/move`, { step: 'closed_won' }));
    expect(same.move).toEqual({ from: 'closed_won', to: 'closed_won', moved: false });
    expect((await timeline(deal.id)).length).toBe(entries);
    expect(await history(deal.id)).toHaveLength(3);

    // And back again: a record may re-enter a step.
    ok(await api(admin(), 'PUT', `/pipelines/opportunities/${deal.id}/move`, { step: 'negotiation' }));
    expect((await history(deal.id)).map((h) => h.step_key)).toEqual(['open', 'negotiation', 'closed_won', 'negotiation']);
  });

  it('validates the step: unknown step -> 400 listing the steps, nothing changes', async () => {
    const deal = ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Validated' }), 201).data;
    const entries = (await timeline(deal.id)).length;

    const bad = err(await api(admin(), 'PUT', `/pipelines/opportunities/${deal.id}/move`, { step: 'won' }), 400, 'VALIDATION_ERROR');
    expect(bad.message).toContain("'won'");
    for (const k of SALES_KEYS) expect(bad.message).toContain(k);
    expect(bad.details.allowed).toEqual(SALES_KEYS);

    // A select option of another field, a missing step, a non-string step.
    err(await api(admin(), 'PUT', `/pipelines/opportunities/${deal.id}/move`, { step: 'medium' }), 400, 'VALIDATION_ERROR');
    expect(err(await api(admin(), 'PUT', `/pipelines/opportunities/${deal.id}/move`, {}), 400, 'VALIDATION_ERROR').message).toMatch(/step/);
    err(await api(admin(), 'PUT', `/pipelines/opportunities/${deal.id}/move`, { step: 3 }), 400, 'VALIDATION_ERROR');

    expect(ok(await api(admin(), 'GET', `/records/opportunities/${deal.id}`)).data).toMatchObject({ status: 'open', probability: 10 });
    expect((await timeline(deal.id)).length).toBe(entries);
    expect((await history(deal.id)).map((h) => h.step_key)).toEqual(['open']);

    // Unknown record, unknown object.
    err(await api(admin(), 'PUT', '/pipelines/opportunities/no-such-id/move', { step: 'qualified' }), 404, 'RECORD_NOT_FOUND');
    err(await api(admin(), 'PUT', `/pipelines/nope/${deal.id}/move`, { step: 'qualified' }), 400, 'INVALID_OBJECT');
  });

  it('an object without a pipeline answers move with a clear 400', async () => {
    const c = ok(await api(admin(), 'POST', '/records/contacts', { first_name: 'No', last_name: 'Pipeline', status: 'lead' }), 201).data;
    const r = err(await api(admin(), 'PUT', `/pipelines/contacts/${c.id}/move`, { step: 'qualified' }), 400, 'VALIDATION_ERROR');
    expect(r.message).toMatch(/^contacts has no pipeline/);
    expect(r.message).toContain('opportunities');
    expect(ok(await api(admin(), 'GET', `/records/contacts/${c.id}`)).data.status).toBe('lead');
    expect((await timeline(c.id, 'contacts')).map((e) => e.action)).toEqual(['created']);
  });

  it('PATCH / PUT of status, batch update and bulk update move the same way', async () => {
    const deal = ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Patched' }), 201).data;
    const at = iso(clock + 60_000);
    const p = ok(await api(admin(), 'PATCH', `/records/opportunities/${deal.id}`, { status: 'proposal' })).data;
    expect(p).toMatchObject({ status: 'proposal', probability: 50 });
    expect((await moves(deal.id)).map((m) => [m.at, m.via, m.details.from, m.details.to])).toEqual([[at, 'rest', 'open', 'proposal']]);
    expect((await history(deal.id)).map((h) => [h.step_key, h.entered_at, h.left_at])).toEqual([
      ['open', expect.any(String), at],
      ['proposal', at, null],
    ]);

    // With a probability in the same write: the value sent wins.
    const q = ok(await api(admin(), 'PUT', `/records/opportunities/${deal.id}`, { status: 'negotiation', probability: 60 })).data;
    expect(q).toMatchObject({ status: 'negotiation', probability: 60 });
    // Writes that leave the step alone are not moves.
    ok(await api(admin(), 'PATCH', `/records/opportunities/${deal.id}`, { next_step: 'Call', status: 'negotiation' }));
    expect((await moves(deal.id)).map((m) => m.details.to)).toEqual(['proposal', 'negotiation']);
    expect((await history(deal.id)).map((h) => h.step_key)).toEqual(['open', 'proposal', 'negotiation']);

    // A status that is not a step: 400, nothing logged.
    err(await api(admin(), 'PATCH', `/records/opportunities/${deal.id}`, { status: 'archived' }), 400, 'VALIDATION_ERROR');
    expect(await moves(deal.id)).toHaveLength(2);

    // Batch update: all or nothing; a failing row leaves no move behind.
    const other = ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Batch mover' }), 201).data;
    err(
      await api(admin(), 'POST', '/records/opportunities/batch/update', {
        records: [
          { id: other.id, status: 'qualified' },
          { id: 'missing', status: 'qualified' },
        ],
      }),
      404,
      'RECORD_NOT_FOUND',
    );
    expect(await moves(other.id)).toEqual([]);
    expect((await history(other.id)).map((h) => h.step_key)).toEqual(['open']);
    const b = ok(await api(admin(), 'POST', '/records/opportunities/batch/update', { records: [{ id: other.id, status: 'qualified' }] })).data;
    expect(b[0]).toMatchObject({ status: 'qualified', probability: 25 });
    expect((await moves(other.id)).map((m) => [m.details.from, m.details.to])).toEqual([['open', 'qualified']]);

    // Bulk update.
    const bulk = ok(await api(admin(), 'POST', '/bulk', { action: 'update', object: 'opportunities', ids: [deal.id, other.id], values: { status: 'closed_lost' } })).data;
    expect(bulk).toMatchObject({ updated: 2 });
    for (const [id, from] of [
      [deal.id, 'negotiation'],
      [other.id, 'qualified'],
    ] as const) {
      expect(ok(await api(admin(), 'GET', `/records/opportunities/${id}`)).data).toMatchObject({ status: 'closed_lost', probability: 0 });
      expect((await moves(id)).at(-1)!.details).toMatchObject({ from, to: 'closed_lost' });
      expect((await history(id)).at(-1)).toMatchObject({ step_key: 'closed_lost', left_at: null });
    }
  });
});

describe('GET /pipelines/{id}/stats', () => {
  let g: TestWorkspace;
  const gapi = (method: string, url: string, body?: unknown) => call(t.app, g.adminToken, method, `/api/v1${url}`, body);

  it('exact counts, amounts, entered, time in stage, conversion and win rate on a scripted history', async () => {
    g = await makeWorkspace(t.db, 'gamma');
    const pid = ok(await gapi('GET', '/pipelines')).data[0].id;
    expect(pid).not.toBe(sales.id);
    const at = (h: number) => setClock(T0 + 100 * HOUR + h * HOUR);
    const move = async (id: string, step: string) => ok(await gapi('PUT', `/pipelines/opportunities/${id}/move`, { step }));

    // t = 0: four deals enter "open".
    at(0);
    const [a, b, c, d] = ok(
      await gapi('POST', '/records/opportunities/batch/create', {
        records: [
          { name: 'A', amount: 100 },
          { name: 'B', amount: 200.5 },
          { name: 'C', amount: 300 },
          { name: 'D', amount: 400 },
        ],
      }),
      201,
    ).data;
    at(1);
    await move(a.id, 'qualified'); // A: 1 h in open
    at(3);
    await move(b.id, 'qualified'); // B: 3 h in open
    at(4);
    await move(a.id, 'proposal'); // A: 3 h in qualified
    at(6);
    await move(a.id, 'closed_won'); // A: 2 h in proposal
    await move(c.id, 'closed_lost'); // C: 6 h in open
    at(10); // time passes; open stays (B, D) are not counted in the averages

    const s = ok(await gapi('GET', `/pipelines/${pid}/stats`)).data;
    expect(s.pipeline).toEqual({ id: pid, name: 'Sales pipeline', object: 'opportunities', field: 'status' });
    expect(s.win_rate).toBe(0.5);
    const byKey = Object.fromEntries(s.steps.map((x: any) => [x.key, x]));
    expect(s.steps.map((x: any) => x.key)).toEqual(SALES_KEYS);
    expect(byKey.open).toEqual({
      key: 'open',
      name: 'Open',
      current_count: 1,
      current_amount: 400,
      entered: 4,
      avg_time_in_stage_seconds: ((1 + 3 + 6) * 3600) / 3,
      completed_stays: 3,
      converted: 2,
      conversion_rate: 0.5,
    });
    expect(byKey.qualified).toEqual({
      key: 'qualified',
      name: 'Qualified',
      current_count: 1,
      current_amount: 200.5,
      entered: 2,
      avg_time_in_stage_seconds: 3 * 3600,
      completed_stays: 1,
      converted: 1,
      conversion_rate: 0.5,
    });
    expect(byKey.proposal).toEqual({
      key: 'proposal',
      name: 'Proposal',
      current_count: 0,
      current_amount: 0,
      entered: 1,
      avg_time_in_stage_seconds: 2 * 3600,
      completed_stays: 1,
      converted: 1,
      conversion_rate: 1,
    });
    expect(byKey.negotiation).toEqual({
      key: 'negotiation',
      name: 'Negotiation',
      current_count: 0,
      current_amount: 0,
      entered: 0,
      avg_time_in_stage_seconds: null,
      completed_stays: 0,
      converted: 0,
      conversion_rate: null,
    });
    // Closed steps: no conversion onward.
    expect(byKey.closed_won).toEqual({ key: 'closed_won', name: 'Closed won', current_count: 1, current_amount: 100, entered: 1, avg_time_in_stage_seconds: null, completed_stays: 0 });
    expect(byKey.closed_lost).toEqual({ key: 'closed_lost', name: 'Closed lost', current_count: 1, current_amount: 300, entered: 1, avg_time_in_stage_seconds: null, completed_stays: 0 });

    // The pipeline may be named by its object; members read stats too.
    expect(ok(await call(t.app, g.memberToken, 'GET', '/api/v1/pipelines/opportunities/stats')).data).toEqual(s);

    // D leaves open after 12 h: open's average becomes (1 + 3 + 6 + 12) / 4 h, B's and D's stays now differ.
    at(12);
    await move(d.id, 'closed_won');
    const s2 = ok(await gapi('GET', `/pipelines/${pid}/stats`)).data;
    const open2 = s2.steps.find((x: any) => x.key === 'open');
    expect(open2).toMatchObject({ current_count: 0, current_amount: 0, entered: 4, avg_time_in_stage_seconds: ((1 + 3 + 6 + 12) * 3600) / 4, completed_stays: 4, converted: 3, conversion_rate: 0.75 });
    expect(s2.win_rate).toBeCloseTo(2 / 3, 12);
    expect(s2.steps.find((x: any) => x.key === 'closed_won')).toMatchObject({ current_count: 2, current_amount: 500, entered: 2 });

    // Workspace A's stats are untouched by gamma's deals, and the other way round.
    const sa = ok(await api(admin(), 'GET', `/pipelines/${sales.id}/stats`)).data;
    expect(sa.steps.find((x: any) => x.key === 'open').entered).toBeGreaterThan(0);
    err(await gapi('GET', `/pipelines/${sales.id}/stats`), 404, 'RECORD_NOT_FOUND');
    err(await gapi('GET', '/pipelines/nope/stats'), 404, 'RECORD_NOT_FOUND');
    expect(c && b).toBeTruthy();
  });
});

describe('pipelines for custom objects', () => {
  let ticketPipeline: any;

  it('admins create one over a SELECT field; members get 403; bad field or step -> 400', async () => {
    ok(
      await api(admin(), 'POST', '/schema', {
        name: 'tickets',
        fields: [
          { name: 'title', type: 'TEXT', required: true },
          // The field's default is not a step: the pipeline's first step still decides where new records start.
          { name: 'stage', type: 'SELECT', options: ['new', 'triage', 'doing', 'done', 'wontfix'], default: 'triage' },
          { name: 'severity', type: 'SELECT', options: ['low', 'high'] },
          { name: 'hours', type: 'INTEGER' },
        ],
      }),
      201,
    );
    // Records made before the pipeline exists.
    const early = ok(await api(admin(), 'POST', '/records/tickets', { title: 'Early', stage: 'doing' }), 201).data;

    const spec = {
      object: 'tickets',
      name: 'Support',
      field: 'stage',
      steps: [
        { key: 'new', defaults: { severity: 'low', hours: 1 } },
        { key: 'doing', name: 'In progress', probability: 50, defaults: { severity: 'high' } },
        { key: 'done', won: true },
        { key: 'wontfix', lost: true },
      ],
    };
    err(await api(member(), 'POST', '/pipelines', spec), 403, 'PERMISSION_DENIED');
    const notSelect = err(await api(admin(), 'POST', '/pipelines', { ...spec, field: 'title' }), 400, 'VALIDATION_ERROR');
    expect(notSelect.message).toContain('stage');
    expect(notSelect.message).toContain('severity');
    err(await api(admin(), 'POST', '/pipelines', { ...spec, field: 'nope' }), 400, 'VALIDATION_ERROR');
    const unknownStep = err(await api(admin(), 'POST', '/pipelines', { ...spec, steps: [...spec.steps, { key: 'closed' }] }), 400, 'VALIDATION_ERROR');
    expect(unknownStep.message).toContain("'closed'");
    expect(unknownStep.message).toContain('new, triage, doing, done, wontfix');
    err(await api(admin(), 'POST', '/pipelines', { ...spec, steps: [{ key: 'new' }, { key: 'new' }] }), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'POST', '/pipelines', { ...spec, steps: [{ key: 'new' }, { key: 'done', won: true, lost: true }] }), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'POST', '/pipelines', { ...spec, steps: [{ key: 'new', defaults: { nope: 1 } }, { key: 'done' }] }), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'POST', '/pipelines', { ...spec, steps: [{ key: 'new', defaults: { severity: 'urgent' } }, { key: 'done' }] }), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'POST', '/pipelines', { ...spec, steps: [{ key: 'new' }] }), 400, 'VALIDATION_ERROR');
    err(await api(admin(), 'POST', '/pipelines', { ...spec, object: 'nope' }), 400, 'INVALID_OBJECT');
    err(await api(admin(), 'POST', '/pipelines', { ...spec, object: 'opportunities', field: 'priority' }), 409, 'DUPLICATE_RECORD');
    expect(ok(await api(admin(), 'GET', '/pipelines')).total).toBe(1);

    const createdAt = iso(clock + 60_000);
    ticketPipeline = ok(await api(admin(), 'POST', '/pipelines', spec), 201).data;
    expect(ticketPipeline).toMatchObject({ object: 'tickets', name: 'Support', field: 'stage' });
    expect(ticketPipeline.steps.map((s: any) => [s.key, s.name, s.position, s.won, s.lost])).toEqual([
      ['new', 'New', 0, false, false],
      ['doing', 'In progress', 1, false, false],
      ['done', 'Done', 2, true, false],
      ['wontfix', 'Wontfix', 3, false, true],
    ]);
    expect(ticketPipeline.steps[1].probability).toBe(50);
    err(await api(admin(), 'POST', '/pipelines', spec), 409, 'DUPLICATE_RECORD');

    const list = ok(await api(member(), 'GET', '/pipelines'));
    expect(list.data.map((p: any) => p.object).sort()).toEqual(['opportunities', 'tickets']);
    expect(ok(await api(member(), 'GET', '/pipelines?object=tickets')).data).toEqual([ticketPipeline]);
    // The record already on a step entered it when the pipeline was made.
    expect(await history(early.id)).toEqual([{ pipeline_id: ticketPipeline.id, step_key: 'doing', entered_at: createdAt, left_at: null }]);
  });

  it('its records start on the first step with its defaults, from REST and import, and move with activity', async () => {
    const tk = ok(await api(member(), 'POST', '/records/tickets', { title: 'Printer on fire' }), 201).data;
    expect(tk).toMatchObject({ stage: 'new', severity: 'low', hours: 1 });
    expect((await history(tk.id)).map((h) => [h.pipeline_id, h.step_key])).toEqual([[ticketPipeline.id, 'new']]);
    const doing = ok(await api(admin(), 'POST', '/records/tickets', { title: 'Already started', stage: 'doing', hours: 5 }), 201).data;
    expect(doing).toMatchObject({ stage: 'doing', severity: 'high', hours: 5 });
    // An option of the field that is not a step.
    err(await api(admin(), 'POST', '/records/tickets', { title: 'Triage', stage: 'triage' }), 400, 'VALIDATION_ERROR');

    const imp = ok(await api(admin(), 'POST', '/import/tickets', { records: [{ title: 'Imported ticket' }, { title: 'Imported done', stage: 'done' }] }));
    expect(imp).toMatchObject({ created: 2, failed: 0 });
    const rows = ok(await api(admin(), 'GET', '/records/tickets?filter_field=title&filter_operator=starts_with&filter_value=Imported&sort_by=title&sort_dir=asc')).data;
    expect(rows.map((r: any) => [r.title, r.stage, r.severity, r.hours])).toEqual([
      ['Imported done', 'done', null, null],
      ['Imported ticket', 'new', 'low', 1],
    ]);

    const bad = err(await api(admin(), 'PUT', `/pipelines/tickets/${tk.id}/move`, { step: 'triage' }), 400, 'VALIDATION_ERROR');
    expect(bad.message).toContain('new, doing, done, wontfix');
    const m = ok(await api(member(), 'PUT', `/pipelines/tickets/${tk.id}/move`, { step: 'doing' }));
    expect(m.move).toEqual({ from: 'new', to: 'doing', moved: true });
    expect(m.data).toMatchObject({ stage: 'doing', severity: 'high', hours: 1 });
    expect((await moves(tk.id, 'tickets')).map((e) => e.details)).toEqual([{ pipeline: 'Support', pipeline_id: ticketPipeline.id, from: 'new', to: 'doing' }]);

    const s = ok(await api(admin(), 'GET', `/pipelines/${ticketPipeline.id}/stats`)).data;
    const doingStats = s.steps.find((x: any) => x.key === 'doing');
    // Early (before the pipeline), Already started and the moved ticket are in progress; no amount on tickets.
    expect(doingStats).toMatchObject({ current_count: 3, entered: 3, completed_stays: 0 });
    expect('current_amount' in doingStats).toBe(false);
    expect(s.steps.find((x: any) => x.key === 'new')).toMatchObject({ current_count: 1, entered: 2, completed_stays: 1, converted: 1, conversion_rate: 0.5 });
    expect(s.win_rate).toBe(1);
  });
});

describe('tenancy', () => {
  it("workspace B sees only its own pipelines and cannot move A's records", async () => {
    const bt = t.b.adminToken;
    const deal = ok(await api(admin(), 'POST', '/records/opportunities', { name: 'Private deal' }), 201).data;
    const bl = ok(await call(t.app, bt, 'GET', '/api/v1/pipelines'));
    expect(bl.data.map((p: any) => p.object)).toEqual(['opportunities']);
    expect(bl.data[0].id).not.toBe(sales.id);
    expect(bl.data[0].steps.map((s: any) => s.key)).toEqual(SALES_KEYS);

    err(await call(t.app, bt, 'PUT', `/api/v1/pipelines/opportunities/${deal.id}/move`, { step: 'qualified' }), 404, 'RECORD_NOT_FOUND');
    err(await call(t.app, bt, 'PATCH', `/api/v1/records/opportunities/${deal.id}`, { status: 'qualified' }), 404, 'RECORD_NOT_FOUND');
    expect(ok(await api(admin(), 'GET', `/records/opportunities/${deal.id}`)).data.status).toBe('open');
    expect(await moves(deal.id)).toEqual([]);

    err(await call(t.app, bt, 'GET', `/api/v1/pipelines/${sales.id}`), 404, 'RECORD_NOT_FOUND');
    err(await call(t.app, bt, 'GET', `/api/v1/pipelines/${sales.id}/stats`), 404, 'RECORD_NOT_FOUND');
    err(await call(t.app, bt, 'GET', '/api/v1/pipelines?object=tickets'), 400, 'INVALID_OBJECT');
    err(await call(t.app, t.b.memberToken, 'POST', '/api/v1/pipelines', { object: 'opportunities', name: 'X', field: 'priority', steps: [{ key: 'low' }, { key: 'high' }] }), 403, 'PERMISSION_DENIED');

    // B's pipeline has seen none of A's records.
    const bs = ok(await call(t.app, bt, 'GET', `/api/v1/pipelines/${bl.data[0].id}/stats`)).data;
    for (const st of bs.steps) expect(st).toMatchObject({ current_count: 0, current_amount: 0, entered: 0, avg_time_in_stage_seconds: null });
    expect(bs.win_rate).toBeNull();
  });
});
