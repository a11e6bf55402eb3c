import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { type CallToolResult, LoggingMessageNotificationSchema, type Tool } from '@modelcontextprotocol/sdk/types.js';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANNOTATIONS_BY_KIND } from '../src/mcp/tool.js';
import { resolveObject } from '../src/services/schema.js';
import { seedWorkspace } from '../src/services/seed.js';
import { TOOLS } from '../tools/index.js';
import { call, sqlAll, sqlGet, type TestApp, testApp } from './helpers.js';
import { callError, callOk, dbDigest, hintsRead, memoryClient } from './mcp-helpers.js';

/**
 * An agent that slips must not change data it did not mean to: unknown arguments refused, a dry run
 * on every write, broad writes only on purpose, cancellation that rolls back, progress and logs.
 */
let t: TestApp;
let client: Client;
let tools: Tool[];
let contacts: string;

beforeAll(async () => {
  t = await testApp();
  await seedWorkspace(t.a.ctx, { companies: 20, contacts: 1200, opportunities: 30, tasks: 10, threads: 3, seed: 11 });
  client = await memoryClient(t.db, t.a);
  tools = (await client.listTools()).tools;
  contacts = (await resolveObject(t.a.ctx, 'contacts')).table;
});
afterAll(() => t.close());

const text = (r: CallToolResult) => (r.content[0] as { text: string }).text;
const raw = (name: string, args: Record<string, unknown>) => client.callTool({ name, arguments: args }) as Promise<CallToolResult>;
const count = async (table: string) => (await sqlGet<{ n: number }>(t.db, sql`SELECT COUNT(*) AS n FROM ${sql.table(table)}`))!.n;
const anyContact = async () => (await callOk(client, tools, 'crm_search', { object: 'contacts', limit: 1, fields: ['first_name'] })).data[0];

describe('unknown arguments', () => {
  it('every tool refuses an unknown argument, naming it and listing the valid ones', async () => {
    expect(tools.length).toBe(TOOLS.length);
    for (const tool of tools) {
      const r = await raw(tool.name, { zz_not_an_argument: 1 });
      expect(r.isError, tool.name).toBe(true);
      const valid = Object.keys(tool.inputSchema.properties ?? {});
      expect(text(r), tool.name).toContain("Unknown argument 'zz_not_an_argument'");
      expect(text(r), tool.name).toContain(`Valid arguments: ${valid.join(', ')}`);
      expect(tool.inputSchema.additionalProperties, `${tool.name} lists additionalProperties: false`).toBe(false);
    }
  });

  it('a misspelt dry_run deletes nothing and suggests the right name', async () => {
    const ct = await anyContact();
    const msg = await callError(client, 'crm_delete_record', { object: 'contacts', id: ct.id, dryrun: true });
    expect(msg).toContain("Unknown argument 'dryrun' (did you mean 'dry_run'?)");
    expect((await callOk(client, tools, 'crm_get_record', { object: 'contacts', id: ct.id })).record.id).toBe(ct.id);
  });

  it('filters (plural) and query on crm_search are refused, not ignored', async () => {
    const filters = await callError(client, 'crm_search', { object: 'contacts', filters: { operator: 'and', conditions: [] } });
    expect(filters).toContain("'filters' (did you mean 'filter'?)");
    expect(await callError(client, 'crm_search', { object: 'contacts', query: 'alice' })).toContain("Unknown argument 'query'");
  });

  it('a misspelt key inside a nested object is refused too', async () => {
    const ct = await anyContact();
    const msg = await callError(client, 'crm_bulk_update', { object: 'contacts', action: 'add_relation', ids: [ct.id], relation: { objcet: 'companies', id: 'x' } });
    expect(msg).toMatch(/Unknown key 'objcet' \(did you mean 'object'\?\)/);
  });

  it('a huge or numerous unknown key keeps the message short', async () => {
    const many = Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`k${i}_${'x'.repeat(200)}`, 1]));
    const msg = await callError(client, 'crm_whoami', { ['y'.repeat(100_000)]: 1, ...many });
    expect(msg.length).toBeLessThan(2000);
    expect(msg).toContain('and 1996 more');
  });

  it('REST bodies get the same message', async () => {
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/bulk', { object: 'contacts', action: 'update', ids: ['x'], values: { status: 'lead' }, dryrun: true });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(r.body.message).toContain("'dryrun' (did you mean 'dry_run'?)");
  });
});

describe('dry_run on every write tool', () => {
  it('every tool that writes takes dry_run, and no read tool does', () => {
    for (const tool of tools) expect('dry_run' in (tool.inputSchema.properties ?? {}), tool.name).toBe(tool.annotations?.readOnlyHint !== true);
  });

  it('writes nothing on any write tool, and says so', async () => {
    const co = (await callOk(client, tools, 'crm_create_record', { object: 'companies', values: { name: 'Dry Run Co' } })).record;
    const ct = (await callOk(client, tools, 'crm_create_record', { object: 'contacts', values: { first_name: 'Dry', email: 'dry.run@example.com', company: co.id } })).record;
    const twin = (await callOk(client, tools, 'crm_create_record', { object: 'contacts', values: { first_name: 'Dry', email: 'dry.run.2@example.com', phone: '+1 555 010 7777' } })).record;
    const twin2 = (await callOk(client, tools, 'crm_create_record', { object: 'contacts', values: { first_name: 'Dry', phone: '(555) 010-7777' } })).record;
    const deal = (await callOk(client, tools, 'crm_create_record', { object: 'opportunities', values: { name: 'Dry deal', amount: 10 } })).record;
    const deal2 = (await callOk(client, tools, 'crm_create_record', { object: 'opportunities', values: { name: 'Dry deal 2', amount: 20 } })).record;
    await callOk(client, tools, 'crm_link', { object: 'contacts', id: ct.id, to_object: 'opportunities', to_id: deal.id });
    const task = (await callOk(client, tools, 'crm_create_task', { title: 'Dry task' })).task;
    const merged = await callOk(client, tools, 'crm_merge_duplicates', { object: 'contacts', primary_id: twin.id, duplicate_ids: [twin2.id] });

    const args: Record<string, Record<string, unknown>> = {
      crm_create_record: { object: 'contacts', values: { first_name: 'Nobody' } },
      crm_update_record: { object: 'contacts', id: ct.id, values: { job_title: 'CEO' } },
      crm_delete_record: { object: 'contacts', id: ct.id },
      crm_batch_write: { object: 'contacts', mode: 'create', records: [{ first_name: 'A' }, { first_name: 'B' }] },
      crm_link: { object: 'contacts', id: ct.id, to_object: 'opportunities', to_id: deal2.id },
      crm_create_task: { title: 'Never', contact: ct.id },
      crm_update_task: { id: task.id, priority: 'urgent' },
      crm_create_note: { body: 'Never written', object: 'contacts', record_id: ct.id },
      crm_move_pipeline_step: { object: 'opportunities', id: deal.id, step: 'proposal' },
      crm_merge_duplicates: { object: 'contacts', primary_id: ct.id, duplicate_ids: [twin.id] },
      crm_unmerge: { merge_id: merged.merge_id },
      crm_bulk_update: { object: 'contacts', action: 'update', ids: [ct.id, twin.id], values: { source: 'event' } },
      crm_import: { object: 'contacts', records: [{ first_name: 'Imp', email: 'imp.dry@example.com' }] },
      crm_create_object: { name: 'dry_projects', label: 'Dry project', label_plural: 'Dry projects', fields: [{ name: 'title', type: 'TEXT' }] },
      crm_create_field: { object: 'contacts', name: 'dry_score', label: 'Dry score', type: 'INTEGER' },
    };
    const writers = tools.filter((x) => x.annotations?.readOnlyHint !== true);
    for (const tool of writers) {
      const a = args[tool.name];
      expect(a, `the test covers ${tool.name}`).toBeDefined();
      const before = await dbDigest(t.db);
      const r = await raw(tool.name, { ...a, dry_run: true });
      expect(r.isError, `${tool.name}: ${JSON.stringify(r.content)}`).toBeFalsy();
      expect((r.structuredContent as { dry_run?: boolean }).dry_run, tool.name).toBe(true);
      expect(text(r), tool.name).toMatch(/dry run/i);
      expect(await dbDigest(t.db), `${tool.name} dry run wrote nothing`).toBe(before);
    }
  });

  it('a dry run of a create answers the record the create would store', async () => {
    const dry = await callOk(client, tools, 'crm_create_record', { object: 'contacts', values: { first_name: 'Would', email: 'would@example.com' }, dry_run: true });
    expect(dry.record).toMatchObject({ first_name: 'Would', email: 'would@example.com', status: 'lead' });
    expect(await callError(client, 'crm_get_record', { object: 'contacts', id: dry.record.id })).toMatch(/RECORD_NOT_FOUND/);
    // And it fails as the create would.
    expect(await callError(client, 'crm_create_record', { object: 'contacts', values: { first_name: 'X', email: 'not an email' }, dry_run: true })).toMatch(/VALIDATION_ERROR/);
  });
});

describe('broad writes need an explicit all: true', () => {
  const everything = { operator: 'and', conditions: [] };

  it('MCP: a bulk update whose filter has no conditions is refused, with the count; all: true goes through', async () => {
    const n = await count(contacts);
    const before = await dbDigest(t.db);
    for (const filter of [everything, { operator: 'or', conditions: [{ operator: 'and', conditions: [] }] }]) {
      const msg = await callError(client, 'crm_bulk_update', { object: 'contacts', action: 'update', filter, values: { source: 'event' }, dry_run: true });
      expect(msg).toContain(`chooses every contacts record (${n})`);
      expect(msg).toContain('"all": true');
    }
    expect(await callError(client, 'crm_bulk_update', { object: 'contacts', action: 'update', filter: everything, values: { source: 'event' } })).toMatch(/no conditions/);
    // An empty group beside a condition in an 'or' would hold for every record: refused too.
    const sneaky = {
      operator: 'or',
      conditions: [
        { operator: 'and', conditions: [] },
        { field: 'first_name', operator: 'eq', value: 'nobody' },
      ],
    };
    expect(await callError(client, 'crm_bulk_update', { object: 'contacts', action: 'update', filter: sneaky, values: { source: 'event' }, dry_run: true })).toMatch(/group without conditions/);
    expect(await dbDigest(t.db)).toBe(before);
    const dry = await callOk(client, tools, 'crm_bulk_update', { object: 'contacts', action: 'update', filter: everything, all: true, values: { source: 'event' }, dry_run: true });
    expect(dry.matched).toBe(n);
    expect(await dbDigest(t.db)).toBe(before);
  });

  it('members get the same guard', async () => {
    const member = await memoryClient(t.db, t.a, { member: true });
    expect(await callError(member, 'crm_bulk_update', { object: 'contacts', action: 'update', filter: everything, values: { source: 'event' } })).toMatch(/no conditions/);
  });

  it('REST POST /bulk: refused with 400 in the contract shape; all: true allowed', async () => {
    const before = await dbDigest(t.db);
    const r = await call(t.app, t.a.adminToken, 'POST', '/api/v1/bulk', { object: 'contacts', action: 'update', filter: everything, values: { source: 'event' } });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: true, code: 'VALIDATION_ERROR' });
    expect(r.body.message).toMatch(/no conditions/);
    const empty = await call(t.app, t.a.adminToken, 'POST', '/api/v1/bulk', { object: 'contacts', action: 'update', filter: {}, values: { source: 'event' } });
    expect(empty.status).toBe(400);
    expect(await dbDigest(t.db)).toBe(before);
    const ok = await call(t.app, t.a.adminToken, 'POST', '/api/v1/bulk', { object: 'contacts', action: 'update', all: true, values: { source: 'event' }, dry_run: true });
    expect(ok.status).toBe(200);
    expect(ok.body.data.matched).toBe(await count(contacts));
  });
});

describe('cancellation, progress and log messages', () => {
  it('a cancelled bulk update changes no row and leaves no trace', async () => {
    const ids = (await sqlAll<{ id: string }>(t.db, sql`SELECT id FROM ${sql.table(contacts)} ORDER BY seq LIMIT 1000`)).map((r) => r.id);
    const before = await dbDigest(t.db);
    const controller = new AbortController();
    let progressSeen = 0;
    const pending = client.callTool({ name: 'crm_bulk_update', arguments: { object: 'contacts', action: 'update', ids, values: { job_title: 'Cancelled' } } }, undefined, {
      signal: controller.signal,
      onprogress: () => {
        progressSeen++;
        controller.abort('changed my mind');
      },
    });
    await expect(pending).rejects.toThrow();
    expect(progressSeen).toBeGreaterThan(0);
    // The next call queues behind the cancelled one's transaction on the one connection: its rollback is done by then.
    await callOk(client, tools, 'crm_search', { object: 'contacts', limit: 1 });
    expect(await dbDigest(t.db)).toBe(before);
    expect((await sqlGet<{ n: number }>(t.db, sql`SELECT COUNT(*) AS n FROM ${sql.table(contacts)} WHERE job_title = 'Cancelled'`))!.n).toBe(0);
  });

  it('a long call sends monotonic progress notifications to an SDK client', async () => {
    const ids = (await sqlAll<{ id: string }>(t.db, sql`SELECT id FROM ${sql.table(contacts)} ORDER BY seq LIMIT 1000`)).map((r) => r.id);
    const seen: { progress: number; total?: number; message?: string }[] = [];
    const r = (await client.callTool({ name: 'crm_bulk_update', arguments: { object: 'contacts', action: 'update', ids, values: { job_title: 'Progress' }, dry_run: true } }, undefined, {
      onprogress: (p) => void seen.push(p),
      resetTimeoutOnProgress: true,
    })) as CallToolResult;
    expect(r.isError).toBeFalsy();
    expect(seen.length).toBeGreaterThan(1);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.progress).toBeGreaterThan(seen[i - 1]!.progress);
    expect(seen.some((p) => /updating contacts|previewing contacts/.test(p.message ?? ''))).toBe(true);
  });

  it('reading a large export reports progress, and a cancelled read stops', async () => {
    const link = (await callOk(client, tools, 'crm_export', { object: 'contacts', limit: 1200, fields: ['first_name', 'email', 'company'] })).csv.uri;
    const seen: number[] = [];
    const file = await client.readResource({ uri: link }, { onprogress: (p) => void seen.push(p.progress) });
    expect((file.contents[0] as { text: string }).text.split('\n').length).toBeGreaterThan(1200);
    expect(seen.length).toBeGreaterThan(0);
    const controller = new AbortController();
    const read = client.readResource({ uri: link }, { signal: controller.signal, onprogress: () => controller.abort('enough') });
    await expect(read).rejects.toThrow();
  });

  it('writes send a log message through MCP logging, at the level the client set', async () => {
    const logs: { level: string; data: unknown }[] = [];
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(n.params));
    await callOk(client, tools, 'crm_create_task', { title: 'Logged task' });
    await new Promise((r) => setTimeout(r, 20));
    expect(logs.some((l) => l.level === 'info' && JSON.stringify(l.data).includes('crm_create_task committed'))).toBe(true);
    await client.setLoggingLevel('warning');
    logs.length = 0;
    await callOk(client, tools, 'crm_create_task', { title: 'Quiet task' });
    await new Promise((r) => setTimeout(r, 20));
    expect(logs).toEqual([]);
    await client.setLoggingLevel('debug');
  });
});

describe('tasks are records', () => {
  it('completing a task through any write path stamps completed_at; reopening clears it', async () => {
    const t1 = (await callOk(client, tools, 'crm_create_task', { title: 'Via record tools' })).task;
    const done = await callOk(client, tools, 'crm_update_record', { object: 'tasks', id: t1.id, values: { status: 'completed' } });
    expect(done.record.completed_at).toEqual(expect.any(String));
    expect(Object.keys(done.changes).sort()).toEqual(['completed_at', 'status']);
    const again = await callOk(client, tools, 'crm_update_record', { object: 'tasks', id: t1.id, values: { status: 'completed' } });
    expect(again.record.completed_at).toBe(done.record.completed_at);
    expect((await callOk(client, tools, 'crm_update_record', { object: 'tasks', id: t1.id, values: { status: 'open' } })).record.completed_at).toBeNull();
    const t2 = (await callOk(client, tools, 'crm_create_task', { title: 'Via bulk' })).task;
    await callOk(client, tools, 'crm_bulk_update', { object: 'tasks', action: 'update', ids: [t2.id], values: { status: 'completed' } });
    expect((await callOk(client, tools, 'crm_get_record', { object: 'tasks', id: t2.id })).record.completed_at).toEqual(expect.any(String));
    const created = await callOk(client, tools, 'crm_create_record', { object: 'tasks', values: { title: 'Born done', status: 'completed' } });
    expect(created.record.completed_at).toEqual(expect.any(String));
  });

  it('a bulk update whose filter is misspelt is refused, even with all: true', async () => {
    const before = await dbDigest(t.db);
    const typo = { operator: 'and', condtions: [{ field: 'status', operator: 'eq', value: 'customer' }] };
    for (const extra of [{}, { all: true }])
      expect(await callError(client, 'crm_bulk_update', { object: 'contacts', action: 'update', filter: typo, values: { job_title: 'x' }, ...extra })).toMatch(/Invalid filter at 'conditions'/);
    const rest = await call(t.app, t.a.adminToken, 'POST', '/api/v1/bulk', { object: 'contacts', action: 'update', filter: typo, all: true, values: { job_title: 'x' } });
    expect(rest.status).toBe(400);
    expect(await dbDigest(t.db)).toBe(before);
  });

  it('REST batch and import bodies refuse keys they do not take (a dry_run there would otherwise write)', async () => {
    const before = await dbDigest(t.db);
    for (const [url, body] of [
      ['/api/v1/import/contacts', { records: [{ first_name: 'Imp' }], dry_run: true }],
      ['/api/v1/records/contacts/batch/create', { records: [{ first_name: 'B' }], dry_run: true }],
      ['/api/v1/records/contacts/batch/upsert', { records: [{ first_name: 'U' }], dryrun: true }],
    ] as const) {
      const r = await call(t.app, t.a.adminToken, 'POST', url, body);
      expect(r.status, url).toBe(400);
      expect(r.body.message, url).toMatch(/Unknown key/);
    }
    expect(await dbDigest(t.db)).toBe(before);
  });
});

describe('a lean tool list', () => {
  it("an admin's full tools/list is at most 40 KB (about 10k tokens), every tool described with an output schema", async () => {
    const bytes = JSON.stringify(tools).length;
    expect(bytes, `tools/list is ${bytes} bytes`).toBeLessThanOrEqual(40_000);
    for (const tool of tools) {
      expect(tool.description!.length, tool.name).toBeGreaterThan(60);
      expect(tool.outputSchema?.type, tool.name).toBe('object');
      expect(Object.keys(tool.outputSchema?.properties ?? {}).length, tool.name).toBeGreaterThan(0);
    }
    console.log(`tools/list: ${tools.length} tools, ${bytes} bytes (about ${Math.round(bytes / 4)} tokens)`);
  });

  it("a member's list is smaller still", async () => {
    const member = await memoryClient(t.db, t.a, { member: true });
    const listed = (await member.listTools()).tools;
    expect(JSON.stringify(listed).length).toBeLessThan(JSON.stringify(tools).length);
  });
});

describe('members and errors', () => {
  it('a member sees only the tools a member may use', async () => {
    const member = await memoryClient(t.db, t.a, { member: true });
    const names = (await member.listTools()).tools.map((x) => x.name);
    const adminOnly = TOOLS.filter((x) => x.admin).map((x) => x.name);
    expect(adminOnly).toEqual(expect.arrayContaining(['crm_import', 'crm_export', 'crm_merge_duplicates', 'crm_unmerge']));
    for (const n of adminOnly) expect(names).not.toContain(n);
    expect(names.length).toBe(TOOLS.length - adminOnly.length);
    const me = await callOk(member, (await member.listTools()).tools, 'crm_whoami', {});
    expect(me.tools).toEqual(names);
  });

  it('a resource error carries its code prefix once', async () => {
    const e = await client.readResource({ uri: 'crm://schema/nope' }).catch((x: Error) => x);
    expect(String((e as Error).message)).toMatch(/^MCP error -32002: INVALID_OBJECT/);
  });

  it('kinds and annotations still agree for every tool', () => {
    for (const tool of tools) expect(hintsRead(tool.annotations)).toEqual(ANNOTATIONS_BY_KIND[TOOLS.find((x) => x.name === tool.name)!.kind]);
  });
});
