import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRecords } from '../src/services/records.js';
import { createUser, type User } from '../src/services/users.js';
import { cmpValue, decimal, expectNear, present, prng, type Rec, toCents } from './aggregate-reference.js';
import { call, listAll, type TestApp, testApp } from './helpers.js';

/**
 * Multi-metric, multi-dimension aggregates (POST /api/v1/aggregate/{object}), after
 * bitrix24-tasks-aggregate.txt, on a custom object shaped like Bitrix24 tasks. Expected values are
 * computed here in plain JavaScript from the records read back (or the data inserted).
 */

const WORK_ITEMS = {
  name: 'work_items',
  label: 'Work item',
  label_plural: 'Work items',
  fields: [
    { name: 'title', type: 'TEXT', required: true },
    {
      name: 'status',
      type: 'SELECT',
      // Bitrix24's task status codes, with their names as labels.
      options: [
        { value: '2', label: 'Pending' },
        { value: '3', label: 'In progress' },
        { value: '4', label: 'Supposedly completed' },
        { value: '5', label: 'Completed' },
        { value: '6', label: 'Deferred' },
      ],
    },
    { name: 'priority', type: 'SELECT', options: ['low', 'normal', 'high'] },
    { name: 'responsible', type: 'RELATION', target: 'users' },
    { name: 'time_estimate', type: 'INTEGER', min: 0, description: 'Effort estimate in seconds' },
    { name: 'budget', type: 'CURRENCY' },
    { name: 'group_id', type: 'TEXT' },
    { name: 'deadline', type: 'DATE' },
  ],
};
const STATUSES = ['2', '3', '4', '5', '6'];
const PRIORITIES = ['low', 'normal', 'high'];

function makeItems(n: number, seed: number, users: string[]): Rec[] {
  const r = prng(seed);
  return Array.from({ length: n }, (_, i) => ({
    title: `Task ${i}`,
    status: r.pick([...STATUSES, '2', '5', '5']),
    priority: r.next() < 0.1 ? null : r.pick(PRIORITIES),
    responsible: r.next() < 0.1 ? null : r.pick(users),
    time_estimate: r.next() < 0.15 ? null : r.int(0, 600) * 60,
    // Amounts with cents: a float running sum of these drifts.
    budget: r.next() < 0.2 ? null : r.int(1, 5_000_000) / 100,
    group_id: r.next() < 0.3 ? null : r.pick(['g1', 'g2', 'g3']),
    deadline: r.next() < 0.3 ? null : `2026-0${r.int(1, 9)}-${String(r.int(10, 28))}`,
  }));
}

// ---------------------------------------------------------------------------------------------
// The JavaScript reference

function metric(fn: string, rs: Rec[], f: string): unknown {
  const vs = present(rs, f);
  switch (fn) {
    case 'count':
      return f === 'id' ? rs.length : vs.length;
    case 'count_distinct':
      return new Set(vs).size;
    case 'sum':
      return f === 'budget' ? decimal(vs.reduce((s: bigint, v) => s + toCents(v), 0n)) : (vs as number[]).reduce((s, v) => s + v, 0);
    case 'avg':
      return vs.length ? (vs as number[]).reduce((s, v) => s + v, 0) / vs.length : null;
    case 'min':
      return vs.length ? [...vs].sort(cmpValue)[0] : null;
    case 'max':
      return vs.length ? [...vs].sort(cmpValue)[vs.length - 1] : null;
  }
  throw new Error(fn);
}

function aggregates(rs: Rec[], metrics: { field: string; function: string }[]) {
  const out: Record<string, Record<string, unknown>> = {};
  for (const m of metrics) (out[m.field] ??= {})[m.function] = metric(m.function, rs, m.field);
  return out;
}

/** Bitrix-shaped groups: the group values, count and aggregates; ordered by count desc, then values asc. */
function groups(rs: Rec[], by: string[], metrics: { field: string; function: string }[], labels?: Map<unknown, string>): Rec[] {
  const m = new Map<string, Rec[]>();
  for (const r of rs) {
    const k = JSON.stringify(by.map((f) => r[f] ?? null));
    m.set(k, [...(m.get(k) ?? []), r]);
  }
  const out = [...m.entries()].map(([k, members]) => {
    const vals = JSON.parse(k) as unknown[];
    const g: Rec = { ...Object.fromEntries(by.map((f, i) => [f, vals[i]])), count: members.length, aggregates: aggregates(members, metrics) };
    if (labels) g.labels = Object.fromEntries(by.filter((f) => f === 'responsible').map((f) => [f, g[f] === null ? null : (labels.get(g[f]) ?? null)]));
    return g;
  });
  return out.sort((x, y) => (y.count as number) - (x.count as number) || by.reduce((c, f) => c || cmpValue(x[f], y[f]), 0));
}

async function setUp(t: TestApp): Promise<User[]> {
  const s = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', WORK_ITEMS);
  expect(s.status).toBe(201);
  const users: User[] = [];
  for (const name of ['Ivan Petrov', 'Olga Smirnova', 'Chen Wei'])
    users.push(await createUser(t.db, t.a.workspace.id, { email: `${name.split(' ')[0]!.toLowerCase()}@alpha.test`, name, role: 'member' }));
  return users;
}

// ---------------------------------------------------------------------------------------------

describe('Bitrix24-style aggregate (POST /api/v1/aggregate/{object})', () => {
  let t: TestApp;
  let users: User[];
  let items: Rec[];
  let names: Map<unknown, string>;
  const post = (body?: unknown, token?: string) => call(t.app, token ?? t.a.adminToken, 'POST', '/api/v1/aggregate/work_items', body);

  beforeAll(async () => {
    t = await testApp();
    users = await setUp(t);
    const ids = [...users.map((u) => u.id), t.a.admin.id];
    const data = makeItems(240, 7, ids);
    for (let i = 0; i < data.length; i += 100) {
      const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/work_items/batch/create', { records: data.slice(i, i + 100) });
      expect(r.status).toBe(201);
    }
    items = await listAll(t.a.ctx, 'work_items');
    expect(items).toHaveLength(240);
    names = new Map([...users, t.a.admin, t.a.member].map((u) => [u.id, u.name]));
  });
  afterAll(() => t?.close());

  describe('the examples of bitrix24-tasks-aggregate.txt', () => {
    it('sums time_estimate by status: count, aggregates, groups and meta', async () => {
      const metrics = [{ field: 'time_estimate', function: 'sum' }];
      const r = await post({ aggregate: metrics, groupBy: 'status' });
      expect(r.status).toBe(200);
      const g = groups(items, ['status'], metrics);
      expect(r.body).toEqual({
        success: true,
        data: {
          count: items.length,
          aggregates: aggregates(items, metrics),
          groups: g,
          meta: { totalRecords: items.length, recordsProcessed: items.length, truncated: false, groupTotal: g.length, groupsTruncated: false, otherCount: 0 },
        },
      });
      // The sums of the groups add up to the total.
      expect(g.reduce((s, x) => s + ((x.aggregates as any).time_estimate.sum as number), 0)).toBe(r.body.data.aggregates.time_estimate.sum);
    });

    it('{} answers the total count, with no groups', async () => {
      const r = await post({});
      expect(r.status).toBe(200);
      expect(r.body).toEqual({
        success: true,
        data: { count: items.length, aggregates: {}, meta: { totalRecords: items.length, recordsProcessed: items.length, truncated: false } },
      });
      // No body at all is the same request.
      const none = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/work_items');
      expect(none.body).toEqual(r.body);
    });

    it('how many items each responsible person has, with their names', async () => {
      const r = await post({ groupBy: 'responsible' });
      expect(r.status).toBe(200);
      const g = groups(items, ['responsible'], [], names);
      expect(g.some((x) => x.responsible === null)).toBe(true);
      expect(r.body.data.groups).toEqual(g);
      expect(r.body.data.meta.groupTotal).toBe(g.length);
      for (const x of r.body.data.groups) if (x.responsible) expect(x.labels.responsible).toBe(names.get(x.responsible));
    });

    it('groups by an array of two fields', async () => {
      const metrics = [{ field: 'time_estimate', function: 'sum' }];
      const r = await post({ aggregate: metrics, groupBy: ['status', 'responsible'], limit: 1000 });
      expect(r.status).toBe(200);
      const g = groups(items, ['status', 'responsible'], metrics, names);
      expect(r.body.data.groups).toEqual(g);
      expect(r.body.data.meta).toMatchObject({ groupTotal: g.length, groupsTruncated: false, otherCount: 0 });
      expect(r.body.data.groups.reduce((s: number, x: Rec) => s + (x.count as number), 0)).toBe(items.length);
    });

    it('sums a currency field by priority, exactly', async () => {
      const metrics = [{ field: 'budget', function: 'sum' }];
      const r = await post({ aggregate: metrics, groupBy: 'priority' });
      expect(r.status).toBe(200);
      expect(r.body.data.groups).toEqual(groups(items, ['priority'], metrics));
      expect(r.body.data.aggregates).toEqual(aggregates(items, metrics));
    });

    it('filters with the Bitrix {field: value} form ({"responsible": id}) and one-of lists', async () => {
      const who = users[1]!.id;
      const r = await post({ filter: { responsible: who }, aggregate: [{ field: 'time_estimate', function: 'sum' }] });
      const mine = items.filter((x) => x.responsible === who);
      expect(r.body.data.count).toBe(mine.length);
      expect(r.body.data.aggregates.time_estimate.sum).toBe(metric('sum', mine, 'time_estimate'));
      expect(r.body.data.meta).toEqual({ totalRecords: items.length, recordsProcessed: mine.length, truncated: false });

      const open = await post({ filter: { status: ['2', '3'], priority: 'high' }, groupBy: 'status' });
      const hits = items.filter((x) => ['2', '3'].includes(x.status as string) && x.priority === 'high');
      expect(open.body.data.groups).toEqual(groups(hits, ['status'], []));

      const unassigned = await post({ filter: { responsible: null } });
      expect(unassigned.body.data.count).toBe(items.filter((x) => x.responsible === null).length);
    });
  });

  describe('several metrics and dimensions', () => {
    it('answers every function on one field, and several fields at once', async () => {
      const metrics = ['count', 'count_distinct', 'sum', 'avg', 'min', 'max']
        .map((fn) => ({ field: 'time_estimate', function: fn }))
        .concat([
          { field: 'budget', function: 'sum' },
          { field: 'budget', function: 'avg' },
          { field: 'deadline', function: 'min' },
          { field: 'id', function: 'count' },
        ]);
      const r = await post({ aggregate: metrics, groupBy: 'priority' });
      expect(r.status).toBe(200);
      expectNear(r.body.data.aggregates, aggregates(items, metrics));
      expectNear(r.body.data.groups, groups(items, ['priority'], metrics));
    });

    it('groups by five fields (the maximum)', async () => {
      const by = ['status', 'priority', 'responsible', 'group_id', 'deadline'];
      const r = await post({ groupBy: by, limit: 10_000 });
      expect(r.status).toBe(200);
      expect(r.body.data.groups).toEqual(groups(items, by, [], names));
    });

    it('orders by a metric, and limits the groups with exact totals', async () => {
      const metrics = [{ field: 'budget', function: 'sum' }];
      const all = groups(items, ['responsible'], metrics, names).sort(
        (x, y) => cmpValue((y.aggregates as any).budget.sum, (x.aggregates as any).budget.sum) || (y.count as number) - (x.count as number) || cmpValue(x.responsible, y.responsible),
      );
      const r = await post({ aggregate: metrics, groupBy: 'responsible', order: { by: { field: 'budget', function: 'sum' }, dir: 'desc' }, limit: 2 });
      expect(r.status).toBe(200);
      expect(r.body.data.groups).toEqual(all.slice(0, 2));
      expect(r.body.data.meta).toEqual({
        totalRecords: items.length,
        recordsProcessed: items.length,
        truncated: false,
        groupTotal: all.length,
        groupsTruncated: true,
        otherCount: all.slice(2).reduce((s, g) => s + (g.count as number), 0),
      });
      // The overall aggregates still cover every record.
      expect(r.body.data.aggregates).toEqual(aggregates(items, metrics));
    });

    it('orders by group value, ascending and descending', async () => {
      const asc = await post({ groupBy: 'deadline', order: { by: 'group', dir: 'asc' }, limit: 1000 });
      const ref = groups(items, ['deadline'], []).sort((x, y) => cmpValue(x.deadline, y.deadline));
      expect(asc.body.data.groups).toEqual(ref);
      const desc = await post({ groupBy: 'deadline', order: { by: 'group', dir: 'desc' }, limit: 1000 });
      expect(desc.body.data.groups).toEqual([...ref].reverse());
    });

    it('groups a date by month and a number into a histogram', async () => {
      const r = await post({ groupBy: [{ field: 'deadline', interval: 'month' }] });
      const month = items.map((x) => ({ ...x, deadline: typeof x.deadline === 'string' ? `${x.deadline.slice(0, 7)}-01` : null }));
      expect(r.body.data.groups).toEqual(groups(month, ['deadline'], []).sort((x, y) => cmpValue(x.deadline, y.deadline)));
      const h = await post({ groupBy: [{ field: 'time_estimate', histogram: 7200 }] });
      const hist = items.map((x) => ({ ...x, time_estimate: x.time_estimate === null ? null : Math.floor((x.time_estimate as number) / 7200) * 7200 }));
      expect(h.body.data.groups).toEqual(groups(hist, ['time_estimate'], []).sort((x, y) => cmpValue(x.time_estimate, y.time_estimate)));
    });
  });

  describe('errors', () => {
    const fieldNames = ['id', 'created_at', 'updated_at', 'created_by', ...WORK_ITEMS.fields.map((f) => f.name)];

    it('an unknown field is answered with the list of available fields', async () => {
      for (const body of [{ aggregate: [{ field: 'noSuchField', function: 'sum' }] }, { groupBy: 'noSuchField' }, { groupBy: ['status', 'noSuchField'] }]) {
        const r = await post(body);
        expect(r.status).toBe(400);
        expect(r.body.code).toBe('VALIDATION_ERROR');
        expect(r.body.message).toContain("Unknown field 'noSuchField'");
        expect(r.body.message).toContain(`Available: ${fieldNames.join(', ')}`);
        expect(r.body.details.validFields).toEqual(fieldNames);
      }
    });

    it('an unknown function is answered with the list of functions', async () => {
      const r = await post({ aggregate: [{ field: 'time_estimate', function: 'median' }] });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain("'median'");
      expect(r.body.message).toContain('COUNT, SUM, AVG, MIN, MAX, COUNT_DISTINCT');
    });

    it.each([
      ['sum', 'status', 'SELECT'],
      ['avg', 'title', 'TEXT'],
      ['sum', 'deadline', 'DATE'],
      ['avg', 'responsible', 'RELATION'],
      ['sum', 'created_at', 'DATETIME'],
    ])('%s of %s names the type (%s) and the numeric fields', async (fn, field, type) => {
      const r = await post({ aggregate: [{ field, function: fn }] });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain(`is ${type}`);
      expect(r.body.details.numericFields).toEqual(['time_estimate', 'budget']);
    });

    it('more than 5 groupBy fields are rejected', async () => {
      const r = await post({ groupBy: ['status', 'priority', 'responsible', 'group_id', 'deadline', 'title'] });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('VALIDATION_ERROR');
      expect(r.body.message).toContain('at most 5');
    });

    it.each(['count', 'aggregates', 'meta', 'groups'])('the reserved key %s is rejected in groupBy', async (key) => {
      for (const groupBy of [key, ['status', key]]) {
        const r = await post({ groupBy });
        expect(r.status).toBe(400);
        expect(r.body.code).toBe('VALIDATION_ERROR');
        expect(r.body.message).toContain(`'${key}' is reserved`);
      }
    });

    it('rejects a field twice in groupBy, unknown body keys, a bad filter and a bad limit', async () => {
      for (const body of [
        { groupBy: ['status', 'status'] },
        { groupBy: 'status', having: {} },
        { aggregate: [{ field: 'budget' }] },
        { filter: { status: 'done' } },
        { filter: { noSuchField: 1 } },
        { filter: [1] },
        { groupBy: 'status', limit: 0 },
        { groupBy: [{ field: 'status', interval: 'month' }] },
        { groupBy: [{ field: 'budget', histogram: -5 }] },
        { groupBy: 'status', order: { by: { field: 'budget', function: 'sum' } } },
      ]) {
        const r = await post(body);
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.body.code, JSON.stringify(body)).toBe('VALIDATION_ERROR');
      }
    });

    it('an object that does not exist is INVALID_OBJECT; another workspace has no such object', async () => {
      const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/tasks_v2', {});
      expect(r.status).toBe(400);
      expect(r.body.code).toBe('INVALID_OBJECT');
      const b = await post({}, t.b.adminToken);
      expect(b.body.code).toBe('INVALID_OBJECT');
    });
  });
});

describe('exact on any volume (Bitrix24 stops at 5,000 records)', () => {
  let t: TestApp;
  let data: Rec[];
  const N = 7_000;

  beforeAll(async () => {
    t = await testApp();
    const users = await setUp(t);
    data = makeItems(
      N,
      99,
      users.map((u) => u.id),
    );
    for (let i = 0; i < N; i += 100) await createRecords(t.a.ctx, 'work_items', data.slice(i, i + 100));
  });
  afterAll(() => t?.close());

  it('SUM, AVG, MIN, MAX and COUNT over every record, with meta.truncated false', async () => {
    const metrics = [
      { field: 'time_estimate', function: 'sum' },
      { field: 'time_estimate', function: 'avg' },
      { field: 'time_estimate', function: 'min' },
      { field: 'time_estimate', function: 'max' },
      { field: 'budget', function: 'sum' },
      { field: 'budget', function: 'count' },
      { field: 'responsible', function: 'count_distinct' },
    ];
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/work_items', { aggregate: metrics, groupBy: 'status' });
    expect(r.status).toBe(200);
    const g = groups(data, ['status'], metrics);
    expectNear(r.body.data, {
      count: N,
      aggregates: aggregates(data, metrics),
      groups: g,
      meta: { totalRecords: N, recordsProcessed: N, truncated: false, groupTotal: g.length, groupsTruncated: false, otherCount: 0 },
    });
    // Counting only the first 5,000 records (Bitrix24's cap) would give another answer.
    const first = data.slice(0, 5000);
    expect(r.body.data.aggregates.time_estimate.sum).not.toBe(metric('sum', first, 'time_estimate'));
    expect(r.body.data.aggregates.budget.sum).not.toBe(metric('sum', first, 'budget'));
    // The budget total is exact (summed in cents): a float running sum of the same amounts drifts.
    const floatSum = (present(data, 'budget') as number[]).reduce((s, v) => s + v, 0);
    expect(r.body.data.aggregates.budget.sum).toBe(metric('sum', data, 'budget'));
    expect(floatSum).not.toBe(r.body.data.aggregates.budget.sum);
  });

  it('with a filter: recordsProcessed is every match, totalRecords every record', async () => {
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/work_items', {
      aggregate: [{ field: 'budget', function: 'sum' }],
      filter: { operator: 'and', conditions: [{ field: 'budget', operator: 'gte', value: 500 }] },
    });
    const hits = data.filter((x) => x.budget !== null && (x.budget as number) >= 500);
    expect(hits.length).toBeGreaterThan(5000);
    expect(r.body.data).toEqual({
      count: hits.length,
      aggregates: { budget: { sum: metric('sum', hits, 'budget') } },
      meta: { totalRecords: N, recordsProcessed: hits.length, truncated: false },
    });
  });

  it('the total count is exact', async () => {
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/aggregate/work_items', {});
    expect(r.body.data.count).toBe(N);
  });
});
