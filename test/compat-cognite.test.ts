import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TREE_LIMITS } from '../src/services/aggregate-tree.js';
import { setClock } from '../src/services/clock.js';
import { createRecords } from '../src/services/records.js';
import { prng, type Rec } from './aggregate-reference.js';
import { call, listAll, type TestApp, testApp } from './helpers.js';

/**
 * POST /api/v1/projects/{project}/streams/{streamId}/records/aggregate, after
 * cognite-records-aggregate.txt: the stream 'devices' is the object of that name; answers are
 * recomputed here from the records read back.
 */

const URL = '/api/v1/projects/acme/streams/devices/records/aggregate';
const P = (name: string) => ['mySpace', 'myContainer', name];

/** The document's example request, verbatim. */
const EXAMPLE = `{
  "aggregates": {
    "my_avg_aggregate1": {
      "avg": {
        "property": [
          "mySpace",
          "myContainer",
          "manufacturer"
        ]
      }
    },
    "my_terms_aggregate2": {
      "uniqueValues": {
        "property": [
          "mySpace",
          "myContainer",
          "manufacturer"
        ],
        "aggregates": {
          "my_sub_aggregate1": {
            "min": {
              "property": [
                "mySpace",
                "myContainer",
                "price"
              ]
            }
          },
          "my_sub_aggregate2": {
            "max": {
              "property": [
                "mySpace",
                "myContainer",
                "price"
              ]
            }
          },
          "my_sub_aggregate3": {
            "uniqueValues": {
              "property": [
                "mySpace",
                "myContainer",
                "region"
              ]
            }
          }
        }
      }
    }
  },
  "lastUpdatedTime": {
    "gt": 1705341600000,
    "lt": "2030-05-15T18:00:00.00Z"
  },
  "filter": {
    "and": [
      {
        "containsAll": {
          "property": [
            "mySpace",
            "myContainer",
            "myProperty"
          ],
          "values": [
            10011,
            10012
          ]
        }
      },
      {
        "range": {
          "property": [
            "my_space",
            "my_container",
            "my_weight"
          ],
          "gte": 0
        }
      }
    ]
  }
}`;

const MAKERS = ['Cognite', 'AkerBP', 'Equinor', 'Aibel', 'Aker', 'Statkraft', 'Hydro', 'Yara', 'Orkla', 'Telenor', 'Kongsberg', 'Vår Energi'];

/** Buckets as the document orders them: most records first, then by value. */
function buckets(rs: Rec[], f: string, sub?: (g: Rec[]) => Rec) {
  const groups = new Map<unknown, Rec[]>();
  for (const r of rs) if (r[f] !== null && r[f] !== undefined) groups.set(r[f], [...(groups.get(r[f]) ?? []), r]);
  return [...groups].sort(([a, x], [b, y]) => y.length - x.length || (String(a) < String(b) ? -1 : 1)).map(([value, g]) => ({ value, count: g.length, ...(sub ? { aggregates: sub(g) } : {}) }));
}
const nums = (rs: Rec[], f: string) => rs.map((r) => r[f]).filter((v): v is number => typeof v === 'number');
const min = (xs: number[]) => (xs.length ? Math.min(...xs) : null);
const max = (xs: number[]) => (xs.length ? Math.max(...xs) : null);
const ms = (r: Rec) => Date.parse(r.updated_at as string);

describe('Cognite records aggregate (POST /api/v1/projects/{project}/streams/{streamId}/records/aggregate)', () => {
  let t: TestApp;
  let devices: Rec[];
  const post = (body: unknown, url = URL, token?: string | null) => call(t.app, token === undefined ? t.a.adminToken : token, 'POST', url, body);
  /** Records last updated on these instants: before the example's range, inside it, after it. */
  const T0 = Date.parse('2024-01-15T18:00:00Z'); // the example's gt: 1705341600000
  const T1 = Date.parse('2030-05-15T18:00:00Z'); // the example's lt
  const stamps = [T0 - 86_400_000, T0, T0 + 1, Date.parse('2026-06-01T12:00:00Z'), T1 - 1, T1, T1 + 3_600_000];

  beforeAll(async () => {
    t = await testApp();
    const s = await call(t.app, t.a.adminToken, 'POST', '/api/v1/schema', {
      name: 'devices',
      fields: [
        { name: 'manufacturer', type: 'TEXT' },
        { name: 'price', type: 'NUMBER' },
        { name: 'region', type: 'SELECT', options: ['us1', 'ie1', 'eu2'] },
        { name: 'my_weight', type: 'NUMBER' },
        { name: 'my_property', type: 'MULTI_SELECT', options: ['10011', '10012', '10013'] },
      ],
    });
    expect(s.status).toBe(201);
    const r = prng(1515);
    const codes = ['10011', '10012', '10013'];
    try {
      for (const [i, at] of stamps.entries()) {
        setClock(at);
        await createRecords(
          t.a.ctx,
          'devices',
          Array.from({ length: i === 3 ? 100 : 12 }, () => ({
            manufacturer: r.chance(0.05) ? null : r.pick(MAKERS),
            price: r.chance(0.1) ? null : r.int(1, 2000),
            region: r.chance(0.1) ? null : r.pick(['us1', 'us1', 'ie1', 'eu2']),
            my_weight: r.chance(0.1) ? null : r.int(-20, 60) / 4,
            my_property: r.chance(0.1) ? null : codes.filter(() => r.chance(0.7)),
          })),
        );
      }
    } finally {
      setClock(null);
    }
    devices = await listAll(t.a.ctx, 'devices');
    // Another workspace's devices never count.
    await call(t.app, t.b.adminToken, 'POST', '/api/v1/schema', { name: 'devices', fields: [{ name: 'manufacturer', type: 'TEXT' }] });
    await createRecords(t.b.ctx, 'devices', [{ manufacturer: 'Cognite' }]);
  });
  afterAll(() => t?.close());

  const example = (rs: Rec[]) => {
    const hits = rs.filter(
      (d) => Array.isArray(d.my_property) && d.my_property.includes('10011') && d.my_property.includes('10012') && typeof d.my_weight === 'number' && d.my_weight >= 0 && ms(d) > T0 && ms(d) < T1,
    );
    return {
      hits,
      answer: {
        aggregates: {
          // The document averages "manufacturer", a text property: the average of no numbers.
          my_avg_aggregate1: { avg: null },
          my_terms_aggregate2: {
            uniqueValueBuckets: buckets(hits, 'manufacturer', (g) => ({
              my_sub_aggregate1: { min: min(nums(g, 'price')) },
              my_sub_aggregate2: { max: max(nums(g, 'price')) },
              my_sub_aggregate3: { uniqueValueBuckets: buckets(g, 'region') },
            })),
          },
        },
      },
    };
  };

  describe("the document's example", () => {
    it('sent verbatim, answers in the documented shape with values recomputed from the records', async () => {
      const r = await post(EXAMPLE);
      expect(r.status).toBe(200);
      const { hits, answer } = example(devices);
      expect(hits.length).toBeGreaterThan(20);
      // Records updated exactly on the bounds or outside them are left out.
      expect(hits.every((d) => ms(d) !== T0 && ms(d) !== T1)).toBe(true);
      expect(r.body).toEqual(answer);
      // More than the 10 buckets a default size would keep: the document gives uniqueValues no size.
      expect(r.body.aggregates.my_terms_aggregate2.uniqueValueBuckets.length).toBeGreaterThan(TREE_LIMITS.defaultSize);
    });

    it('answers the same at the path without /projects/{project}', async () => {
      const r = await post(EXAMPLE, '/api/v1/streams/devices/records/aggregate');
      expect(r.status).toBe(200);
      expect(r.body).toEqual(example(devices).answer);
    });

    it("averages a numeric property, and the response example's avg/max dictionary", async () => {
      const body = { aggregates: { my_aggr_1: { avg: { property: P('price') } }, my_aggr_2: { max: { property: P('price') } } } };
      const r = await post(body);
      expect(r.status).toBe(200);
      const prices = nums(devices, 'price');
      expect(r.body.aggregates.my_aggr_2).toEqual({ max: max(prices) });
      expect(r.body.aggregates.my_aggr_1.avg).toBeCloseTo(prices.reduce((s, x) => s + x, 0) / prices.length, 9);
      expect(Object.keys(r.body)).toEqual(['aggregates']);
    });

    it('the aggregates dictionary example (uniqueValues with an avg sub-aggregate)', async () => {
      const body = {
        aggregates: {
          my_aggr_1: { min: { property: ['space1', 'container1', 'my_weight'] } },
          my_aggr_2: { uniqueValues: { property: ['space1', 'container2', 'region'], aggregates: { my_sub_aggr: { avg: { property: ['space2', 'container1', 'price'] } } } } },
        },
      };
      const r = await post(body);
      expect(r.status).toBe(200);
      expect(r.body.aggregates.my_aggr_1).toEqual({ min: min(nums(devices, 'my_weight')) });
      const want = buckets(devices, 'region', (g) => ({ my_sub_aggr: { avg: nums(g, 'price').reduce((s, x) => s + x, 0) / nums(g, 'price').length } }));
      const got = r.body.aggregates.my_aggr_2.uniqueValueBuckets;
      expect(got.map((b: Rec) => [b.value, b.count])).toEqual(want.map((b) => [b.value, b.count]));
      got.forEach((b: any, i: number) => expect(b.aggregates.my_sub_aggr.avg).toBeCloseTo((want[i]!.aggregates as any).my_sub_aggr.avg, 9));
    });
  });

  it('avg of a text property is null inside buckets too; an explicit size keeps the first buckets', async () => {
    const body = {
      aggregates: {
        by_region: { uniqueValues: { property: P('region'), aggregates: { a: { avg: { property: P('manufacturer') } }, hi: { max: { property: P('price') } } } } },
        top3: { uniqueValues: { property: P('manufacturer'), size: 3 } },
      },
    };
    const r = await post(body);
    expect(r.status).toBe(200);
    expect(r.body.aggregates.by_region.uniqueValueBuckets).toEqual(buckets(devices, 'region', (g) => ({ a: { avg: null }, hi: { max: max(nums(g, 'price')) } })));
    expect(r.body.aggregates.top3.uniqueValueBuckets).toEqual(buckets(devices, 'manufacturer').slice(0, 3));
  });

  describe('lastUpdatedTime', () => {
    const count = async (lastUpdatedTime: unknown) => {
      const r = await post({ aggregates: { n: { uniqueValues: { property: P('region') } } }, lastUpdatedTime });
      expect(r.status).toBe(200);
      return r.body.aggregates.n.uniqueValueBuckets.reduce((s: number, b: Rec) => s + (b.count as number), 0);
    };
    const expected = (p: (m: number) => boolean) => devices.filter((d) => d.region !== null && p(ms(d))).length;

    it('gt, gte, lt and lte, each bound exact to the millisecond', async () => {
      expect(await count({ gt: T0 })).toBe(expected((m) => m > T0));
      expect(await count({ gte: T0 })).toBe(expected((m) => m >= T0));
      expect(await count({ gte: T0 })).toBeGreaterThan(await count({ gt: T0 }));
      expect(await count({ gte: T0, lt: T1 })).toBe(expected((m) => m >= T0 && m < T1));
      expect(await count({ gte: T0, lte: T1 })).toBe(expected((m) => m >= T0 && m <= T1));
      expect(await count({ gt: T1 })).toBe(expected((m) => m > T1));
      // An empty range matches nothing.
      expect(await count({ gt: T1, lt: T0 })).toBe(0);
    });

    it('takes ISO-8601 strings (any offset) and epoch milliseconds alike', async () => {
      expect(await count({ gte: '2024-01-15T18:00:00Z', lte: '2030-05-15T18:00:00.00Z' })).toBe(expected((m) => m >= T0 && m <= T1));
      expect(await count({ gt: '2024-01-15T19:00:00+01:00', lt: T1 })).toBe(expected((m) => m > T0 && m < T1));
      expect(await count({ gte: 0 })).toBe(expected(() => true));
    });

    it.each([
      [{ lt: T1 }, /lower bound \(gt or gte\)/],
      [{}, /lower bound/],
      [{ gt: T0, gte: T0 }, /two lower bounds/],
      [{ gt: T0, lt: T1, lte: T1 }, /two upper bounds/],
      [{ gt: 'yesterday' }, /ISO-8601/],
      [{ gt: '2024-02-30T00:00:00Z' }, /ISO-8601/],
      [{ gt: 1705341600000.5 }, /milliseconds/],
      [{ gt: '1705341600000' }, /ISO-8601/],
      [{ gt: T0, between: [1, 2] }, /unknown: between/],
      [[T0], /must be an object/],
    ])("%j is refused in Cognite's error shape", async (lastUpdatedTime, message) => {
      const r = await post({ aggregates: { a: { max: { property: P('price') } } }, lastUpdatedTime });
      expect(r.status).toBe(400);
      expect(Object.keys(r.body)).toEqual(['error']);
      expect(r.body.error).toEqual({ code: 400, message: expect.stringMatching(message) });
    });
  });

  describe('filters', () => {
    const hits = async (filter: unknown) => {
      const r = await post({ aggregates: { w: { uniqueValues: { property: P('manufacturer') } } }, filter });
      expect(r.status).toBe(200);
      return r.body.aggregates.w.uniqueValueBuckets.reduce((s: number, b: Rec) => s + (b.count as number), 0);
    };
    const named = (rs: Rec[]) => rs.filter((d) => d.manufacturer !== null);
    const has = (d: Rec, v: string) => Array.isArray(d.my_property) && d.my_property.includes(v);

    it.each([
      ['containsAll', { containsAll: { property: P('myProperty'), values: [10011, 10013] } }, (d: Rec) => has(d, '10011') && has(d, '10013')],
      ['containsAny', { containsAny: { property: P('my_property'), values: ['10012'] } }, (d: Rec) => has(d, '10012')],
      ['range', { range: { property: P('price'), gt: 100, lte: 900 } }, (d: Rec) => typeof d.price === 'number' && d.price > 100 && d.price <= 900],
      ['equals', { equals: { property: P('region'), value: 'ie1' } }, (d: Rec) => d.region === 'ie1'],
      ['in', { in: { property: P('region'), values: ['ie1', 'eu2'] } }, (d: Rec) => d.region === 'ie1' || d.region === 'eu2'],
      ['prefix', { prefix: { property: P('manufacturer'), value: 'Ake' } }, (d: Rec) => String(d.manufacturer).startsWith('Ake')],
      ['exists', { exists: { property: P('price') } }, (d: Rec) => d.price !== null],
      [
        'or',
        { or: [{ equals: { property: P('region'), value: 'ie1' } }, { range: { property: P('my_weight'), lt: 0 } }] },
        (d: Rec) => d.region === 'ie1' || (typeof d.my_weight === 'number' && d.my_weight < 0),
      ],
      ['not', { not: { equals: { property: P('region'), value: 'us1' } } }, (d: Rec) => d.region !== 'us1'],
    ])('%s', async (_kind, filter, match) => {
      const want = named(devices).filter(match).length;
      expect(want).toBeGreaterThan(0);
      expect(await hits(filter)).toBe(want);
    });
  });

  describe('errors, in Cognite\'s shape {"error": {"code", "message"}}', () => {
    const refused = async (body: unknown, status: number, message: RegExp, url = URL, token?: string | null) => {
      const r = await post(body, url, token);
      expect(r.status).toBe(status);
      expect(r.body).toEqual({ error: { code: status, message: expect.stringMatching(message) } });
    };
    const ok = { aggregates: { a: { max: { property: P('price') } } } };
    const level = (n: number, leaf: unknown) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`a${i}`, leaf]));
    const deep = (depth: number): unknown => (depth === 1 ? { min: { property: P('price') } } : { uniqueValues: { property: P('region'), aggregates: { x: deep(depth - 1) } } });

    it('streams: the pattern, unknown streams, other workspaces', async () => {
      await refused(ok, 400, /streamId 'Devices'/, '/api/v1/projects/acme/streams/Devices/records/aggregate');
      await refused(ok, 400, /streamId 'devices-'/, '/api/v1/projects/acme/streams/devices-/records/aggregate');
      await refused(ok, 404, /Stream 'gadgets' does not exist.*devices/, '/api/v1/projects/acme/streams/gadgets/records/aggregate');
      // Workspace B's own devices stream holds its one record only.
      const b = await post({ aggregates: { m: { uniqueValues: { property: P('manufacturer') } } } }, URL, t.b.adminToken);
      expect(b.body).toEqual({ aggregates: { m: { uniqueValueBuckets: [{ value: 'Cognite', count: 1 }] } } });
    });

    it('authentication', async () => {
      await refused(ok, 401, /Missing API token/, URL, null);
      await refused(ok, 401, /Invalid or revoked/, URL, 'ksr_not_a_token');
    });

    it('the body', async () => {
      await refused('{"aggregates": ', 400, /Malformed JSON/);
      await refused({}, 400, /"aggregates" is required/);
      await refused({ aggregates: [] }, 400, /"aggregates" must be an object/);
      await refused({ ...ok, search: 'x' }, 400, /Unknown key\(s\) search/);
      await refused({ ...ok, filter: { status: 'open' } }, 400, /'filter' must be an object with exactly one of/);
      await refused({ ...ok, filter: { and: [{ match: {} }] } }, 400, /'filter.and\[0\]' must be/);
    });

    it('property references', async () => {
      await refused({ aggregates: { a: { max: { property: 'price' } } } }, 400, /'a.max.property' must be a property reference \[space, container, property\]/);
      await refused({ aggregates: { a: { max: { property: ['myContainer', 'price'] } } } }, 400, /property reference/);
      await refused({ ...ok, filter: { range: { property: ['s', 'c', ''], gte: 1 } } }, 400, /'filter.range.property'/);
      await refused({ aggregates: { a: { max: { property: P('weight') } } } }, 400, /weight/);
      await refused({ ...ok, filter: { containsAll: { property: P('my_property'), values: [99] } } }, 400, /not an option/);
    });

    it('aggregate kinds and limits: 5 per level, 5 deep, 16 in all', async () => {
      await refused({ aggregates: { a: { median: { property: P('price') } } } }, 400, /Unknown aggregate 'median'/);
      await refused({ aggregates: { a: { avg: { property: P('price') }, max: { property: P('price') } } } }, 400, /exactly one of/);
      await refused({ aggregates: level(6, { max: { property: P('price') } }) }, 400, /At most 5 aggregates per level/);
      expect((await post({ aggregates: level(5, { max: { property: P('price') } }) })).status).toBe(200);
      await refused({ aggregates: { d: deep(6) } }, 400, /nest at most 5 deep/);
      expect((await post({ aggregates: { d: deep(5) } })).status).toBe(200);
      const wide = { uniqueValues: { property: P('region'), aggregates: level(5, { max: { property: P('price') } }) } };
      await refused({ aggregates: level(3, wide) }, 400, /At most 16 aggregates/);
      expect((await post({ aggregates: { ...level(2, wide), x: { min: { property: P('price') } }, y: { min: { property: P('price') } } } })).status).toBe(200);
    });
  });
});
