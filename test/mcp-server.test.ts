import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { type CallToolResult, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { selectTools } from '../src/mcp/server.js';
import { ANNOTATIONS_BY_KIND, defineTool, parseToolsets, type ToolKind } from '../src/mcp/tool.js';
import { UNTRUSTED_NOTE } from '../src/mcp/untrusted.js';
import { createObject } from '../src/services/schema.js';
import { seedWorkspace } from '../src/services/seed.js';
import { TOOLS } from '../tools/index.js';
import { call, sqlGet, type TestApp, testApp } from './helpers.js';
import { callError, callOk, dbDigest, exerciseAllTools, hintsRead, memoryClient } from './mcp-helpers.js';

let t: TestApp;
let client: Client;

beforeAll(async () => {
  t = await testApp();
  await seedWorkspace(t.a.ctx, { companies: 30, contacts: 150, opportunities: 40, tasks: 10, threads: 5, seed: 7 });
  client = await memoryClient(t.db, t.a);
});
afterAll(() => t.close());

const listed = async (c: Client = client) => (await c.listTools()).tools;

describe('MCP tools over the in-memory transport', () => {
  it('lists every tool of tools/index.ts, each argument described', async () => {
    const tools = await listed();
    expect(tools.map((x) => x.name)).toEqual(TOOLS.map((x) => x.name));
    for (const tool of tools) {
      expect(tool.description, tool.name).toBeTruthy();
      expect(tool.outputSchema, tool.name).toBeTruthy();
      for (const [arg, s] of Object.entries(tool.inputSchema.properties ?? {})) expect((s as { description?: string }).description, `${tool.name}.${arg} has a description`).toBeTruthy();
    }
  });

  it('calls every tool; each result validates against its outputSchema', async () => {
    const called = await exerciseAllTools(client);
    expect([...called].sort()).toEqual(TOOLS.map((x) => x.name).sort());
  });

  it('derives all four annotations from the kind table', async () => {
    for (const tool of await listed()) {
      const def = TOOLS.find((x) => x.name === tool.name)!;
      expect(tool.title).toBe(def.title);
      expect(hintsRead(tool.annotations)).toEqual({ ...ANNOTATIONS_BY_KIND[def.kind] });
    }
  });

  it('the tools that write are exactly those with readOnlyHint false', async () => {
    const tools = await listed();
    const wrote = new Set<string>();
    // Each tool once with real (not dry-run) arguments; a change of any row in any table counts as a write.
    const co = (await callOk(client, tools, 'crm_create_record', { object: 'companies', values: { name: 'Probe' } })).record;
    const ct = (await callOk(client, tools, 'crm_create_record', { object: 'contacts', values: { first_name: 'Probe' } })).record;
    const deal = (await callOk(client, tools, 'crm_create_record', { object: 'opportunities', values: { name: 'Probe deal' } })).record;
    const task = (await callOk(client, tools, 'crm_create_task', { title: 'Probe task' })).task;
    const [d1, d2] = (
      await callOk(client, tools, 'crm_batch_write', {
        object: 'contacts',
        mode: 'create',
        records: [
          { first_name: 'Dup', phone: '+1 555 010 9999' },
          { first_name: 'Dup', phone: '(555) 010-9999' },
        ],
      })
    ).results.map((r: { id: string }) => r.id);
    const thread = (await callOk(client, tools, 'crm_list_threads', { limit: 1 })).data[0].id;
    const results: Record<string, any> = {};
    // In call order (the merge before its undo, the deletes last); a function reads earlier results.
    const args: Record<string, Record<string, unknown> | (() => Record<string, unknown>)> = {
      crm_describe_schema: {},
      crm_search: { object: 'contacts', limit: 5 },
      crm_full_text_search: { q: 'Probe' },
      crm_get_record: { object: 'contacts', id: ct.id },
      crm_aggregate: { object: 'opportunities', aggregate: [{ field: 'amount', function: 'sum' }], groupBy: ['status'] },
      crm_whoami: {},
      crm_list_tasks: { mode: 'all' },
      crm_list_notes: {},
      crm_get_activity: { object: 'contacts', id: ct.id },
      crm_list_changes: { limit: 5 },
      crm_list_threads: {},
      crm_get_thread: { id: thread },
      crm_find_duplicates: { object: 'contacts' },
      crm_export: { object: 'contacts', limit: 5, include_csv: true },
      crm_create_record: { object: 'contacts', values: { first_name: 'Probe 2' } },
      crm_update_record: { object: 'contacts', id: ct.id, values: { job_title: 'Probe' } },
      crm_batch_write: { object: 'contacts', mode: 'create', records: [{ first_name: 'Probe 3' }] },
      crm_link: { object: 'contacts', id: ct.id, to_object: 'companies', to_id: co.id },
      crm_create_task: { title: 'Probe task 2' },
      crm_update_task: { id: task.id, priority: 'high' },
      crm_create_note: { body: 'Probe note' },
      crm_move_pipeline_step: { object: 'opportunities', id: deal.id, step: 'qualified' },
      crm_import: { object: 'contacts', records: [{ first_name: 'Imported probe' }] },
      crm_create_object: { name: 'probe_things', fields: [{ name: 'title', type: 'TEXT' }] },
      crm_create_field: { object: 'contacts', name: 'probe_score', type: 'INTEGER' },
      crm_bulk_update: { object: 'contacts', action: 'update', ids: [ct.id], values: { source: 'event' } },
      crm_merge_duplicates: { object: 'contacts', primary_id: d1, duplicate_ids: [d2] },
      crm_unmerge: () => ({ merge_id: results.crm_merge_duplicates.merge_id }),
      crm_delete_record: { object: 'contacts', id: ct.id },
    };
    expect(Object.keys(args).sort()).toEqual(TOOLS.map((x) => x.name).sort());
    for (const [name, a] of Object.entries(args)) {
      const before = await dbDigest(t.db);
      results[name] = await callOk(client, tools, name, typeof a === 'function' ? a() : a);
      if ((await dbDigest(t.db)) !== before) wrote.add(name);
    }
    const notReadOnly = tools.filter((x) => x.annotations?.readOnlyHint !== true).map((x) => x.name);
    expect([...wrote].sort()).toEqual(notReadOnly.sort());
    expect(notReadOnly.length).toBeGreaterThan(0);
  });

  it('records the tool name as the surface in the activity feed', async () => {
    const r = await callOk(client, await listed(), 'crm_create_record', { object: 'companies', values: { name: 'Traced' } });
    const row = (await sqlGet<{ via: string }>(t.db, sql`SELECT via FROM activity WHERE record_id = ${r.record.id}`))!;
    expect(row.via).toBe('mcp:crm_create_record');
  });

  it('names the workspace objects in descriptions, custom objects included, per session', async () => {
    await createObject(t.a.ctx, { name: 'projects', fields: [{ name: 'title', type: 'TEXT' }] });
    const fresh = await memoryClient(t.db, t.a);
    const search = (await listed(fresh)).find((x) => x.name === 'crm_search')!;
    expect(search.description).toContain('- projects: ');
    expect(search.description).toContain('status(lead|qualified|customer|churned)');
    expect((search.inputSchema.properties!.object as { enum: string[] }).enum).toEqual(expect.arrayContaining(['contacts', 'projects']));
    // Another workspace's session does not see it.
    const other = await memoryClient(t.db, t.b);
    expect((await listed(other)).find((x) => x.name === 'crm_search')!.description).not.toContain('projects');
  });

  it('a long-lived session notices a schema change: tools/list_changed, descriptions rebuilt', async () => {
    const c = await memoryClient(t.db, t.a, { watchSchema: true });
    let changed = 0;
    c.setNotificationHandler(ToolListChangedNotificationSchema, async () => {
      changed++;
    });
    await c.callTool({ name: 'crm_whoami', arguments: {} });
    expect(changed).toBe(0);
    await createObject(t.a.ctx, { name: 'invoices', fields: [{ name: 'number', type: 'TEXT' }] });
    await c.callTool({ name: 'crm_whoami', arguments: {} });
    await new Promise((r) => setTimeout(r, 10));
    expect(changed).toBe(1);
    expect((await listed(c)).find((x) => x.name === 'crm_search')!.description).toContain('- invoices: ');
  });

  it('pages with total and next_cursor, limit default 20 and max 100', async () => {
    const tools = await listed();
    const p1 = await callOk(client, tools, 'crm_search', { object: 'contacts', sort_by: 'email', sort_dir: 'asc', fields: ['email'] });
    expect(p1.data).toHaveLength(20);
    expect(p1.total).toBeGreaterThan(150);
    expect(Object.keys(p1.data[0]).sort()).toEqual(['email', 'id']);
    const p2 = await callOk(client, tools, 'crm_search', { object: 'contacts', sort_by: 'email', sort_dir: 'asc', fields: ['email'], cursor: p1.next_cursor });
    expect(p2.data[0].email >= p1.data[19].email).toBe(true);
    expect(await callError(client, 'crm_search', { object: 'contacts', limit: 101 })).toMatch(/limit/);
  });

  it('renders compact text without empty fields', async () => {
    const r = (await client.callTool({ name: 'crm_search', arguments: { object: 'contacts', limit: 3 } })) as CallToolResult;
    const text = (r.content[0] as { text: string }).text;
    expect(text).toMatch(/^3 of \d+ contacts; next_cursor: /);
    expect(text).not.toContain('null');
    // Head, the untrusted note, then the three records inside one untrusted block.
    const lines = text.split('\n');
    expect(lines).toHaveLength(7);
    expect(lines[1]).toBe(UNTRUSTED_NOTE);
    expect(lines[2]).toBe('<untrusted_content source="contacts records">');
    expect(lines[6]).toBe('</untrusted_content>');
  });
});

describe('errors name the fix', () => {
  it('an unknown field lists the valid fields', async () => {
    const text = await callError(client, 'crm_search', { object: 'contacts', fields: ['shoe_size'] });
    expect(text).toContain("Unknown field 'shoe_size'");
    expect(text).toMatch(/Valid fields: .*first_name.*email/);
  });

  it('an unknown object lists the objects, a bad option lists the allowed values', async () => {
    expect(await callError(client, 'crm_search', { object: 'people' })).toMatch(/Valid objects: companies, contacts/);
    const bad = await callError(client, 'crm_create_record', { object: 'contacts', values: { first_name: 'X', status: 'vip' } });
    expect(bad).toMatch(/lead.*qualified.*customer.*churned/);
  });

  it('a failing batch lists every failing row and writes nothing', async () => {
    const before = await dbDigest(t.db);
    const text = await callError(client, 'crm_batch_write', {
      object: 'contacts',
      mode: 'create',
      records: [{ first_name: 'ok' }, { first_name: 'x', nope: 1 }, { last_name: 'no first name' }],
    });
    expect(text).toMatch(/#1 VALIDATION_ERROR: Unknown field 'nope'/);
    expect(text).toMatch(/#2 MISSING_REQUIRED_FIELD/);
    expect(await dbDigest(t.db)).toBe(before);
  });

  it('unknown errors answer generically: no stack, no SQL', async () => {
    const boom = defineTool({
      name: 'crm_boom',
      title: 'Boom',
      description: 'fails',
      kind: 'read',
      toolset: 'records',
      inputSchema: z.object({}),
      outputSchema: z.object({}),
      handler: async () => {
        throw new Error('SQLITE_ERROR: near "FROM": syntax error in SELECT * FROM w1_contacts');
      },
    });
    const c = await memoryClient(t.db, t.a, { tools: [boom] });
    const text = await callError(c, 'crm_boom', {});
    expect(text).toMatch(/Internal error/);
    expect(text).not.toMatch(/SQLITE|SELECT|at .*\.ts/);
  });

  it('a record of another workspace does not exist here', async () => {
    const other = await callOk(await memoryClient(t.db, t.b), await listed(), 'crm_create_record', { object: 'contacts', values: { first_name: 'Secret' } });
    expect(await callError(client, 'crm_get_record', { object: 'contacts', id: other.record.id })).toMatch(/RECORD_NOT_FOUND/);
  });
});

describe('dry_run', () => {
  it('is offered by exactly the tools that write', async () => {
    for (const tool of await listed()) expect('dry_run' in (tool.inputSchema.properties ?? {}), tool.name).toBe(tool.annotations?.readOnlyHint !== true);
  });

  it('writes nothing and answers what the real call answers', async () => {
    const tools = await listed();
    const co = (await callOk(client, tools, 'crm_create_record', { object: 'companies', values: { name: 'Dry Co' } })).record;
    const ct = (await callOk(client, tools, 'crm_create_record', { object: 'contacts', values: { first_name: 'Dry', email: 'dry@example.com', company: co.id } })).record;
    await callOk(client, tools, 'crm_link', { object: 'contacts', id: ct.id, to_object: 'companies', to_id: co.id });

    const check = async (name: string, args: Record<string, unknown>, same: (dry: any, real: any) => void) => {
      const before = await dbDigest(t.db);
      const dry = await callOk(client, tools, name, { ...args, dry_run: true });
      expect(await dbDigest(t.db), `${name} dry run wrote nothing`).toBe(before);
      expect(dry.dry_run).toBe(true);
      const real = await callOk(client, tools, name, args);
      expect(real.dry_run).toBe(false);
      same(dry, real);
    };
    await check('crm_update_record', { object: 'contacts', id: ct.id, values: { status: 'customer', email: 'DRY2@example.com' } }, (d, r) => {
      expect(d.changes).toEqual(r.changes);
      expect(d.changes.email).toEqual({ from: 'dry@example.com', to: 'dry2@example.com' });
      expect({ ...d.record, updated_at: 0 }).toEqual({ ...r.record, updated_at: 0 });
    });
    await check(
      'crm_batch_write',
      {
        object: 'contacts',
        mode: 'upsert',
        key: 'email',
        records: [
          { email: 'dry2@example.com', job_title: 'CFO' },
          { email: 'new@example.com', first_name: 'New' },
        ],
      },
      (d, r) => {
        expect(d.results.map((x: any) => x.action)).toEqual(['updated', 'created']);
        expect(r.results.map((x: any) => x.action)).toEqual(['updated', 'created']);
        expect(d.results[0].changes).toEqual({ job_title: { from: null, to: 'CFO' } });
        expect(d.results[1].id).toBeNull();
        expect(d.data[1]).toMatchObject({ first_name: 'New', email: 'new@example.com', status: 'lead' });
      },
    );
    await check('crm_link', { object: 'contacts', id: ct.id, to_object: 'companies', to_id: co.id, unlink: true }, (d, r) => {
      expect({ ...d, dry_run: 0 }).toEqual({ ...r, dry_run: 0 });
    });
    await check('crm_delete_record', { object: 'companies', id: co.id }, (d, r) => {
      expect(d.unlinked).toEqual([{ object: 'contacts', total: 1, via: ['company'], ids: [ct.id] }]);
      expect({ ...d, dry_run: 0 }).toEqual({ ...r, dry_run: 0 });
    });
    // The delete emptied the contact's company field, as the dry run said.
    expect((await callOk(client, tools, 'crm_get_record', { object: 'contacts', id: ct.id })).record.company).toBeNull();
  });

  it('a dry run that would fail fails the same way, and writes nothing', async () => {
    const before = await dbDigest(t.db);
    const text = await callError(client, 'crm_batch_write', {
      object: 'contacts',
      mode: 'update',
      records: [{ id: 'no-such-id', first_name: 'x' }],
      dry_run: true,
    });
    expect(text).toMatch(/No contacts record with id 'no-such-id'/);
    expect(await callError(client, 'crm_link', { object: 'contacts', id: 'a', to_object: 'companies', to_id: 'b', unlink: true, dry_run: true })).toMatch(/No association/);
    expect(await dbDigest(t.db)).toBe(before);
  });
});

describe('read-only mode and tool sets', () => {
  it('read-only mode lists only tools with readOnlyHint true and refuses the others', async () => {
    const ro = await memoryClient(t.db, t.a, { readOnly: true });
    const tools = await listed(ro);
    expect(tools.length).toBeGreaterThan(0);
    expect(tools.every((x) => x.annotations?.readOnlyHint === true)).toBe(true);
    expect(tools.map((x) => x.name).sort()).toEqual(
      TOOLS.filter((x) => x.kind === 'read')
        .map((x) => x.name)
        .sort(),
    );
    const before = await dbDigest(t.db);
    const r = (await ro.callTool({ name: 'crm_create_record', arguments: { object: 'contacts', values: { first_name: 'No' } } })) as CallToolResult;
    expect(r.isError).toBe(true);
    expect(await dbDigest(t.db)).toBe(before);
    expect((await callOk(ro, tools, 'crm_whoami', {})).read_only).toBe(true);
  });

  it('tool sets choose tools; unknown sets are refused with the valid ones', async () => {
    const c = await memoryClient(t.db, t.a, { toolsets: parseToolsets('schema,users') });
    expect((await listed(c)).map((x) => x.name)).toEqual(['crm_describe_schema', 'crm_whoami', 'crm_create_object', 'crm_create_field']);
    expect(parseToolsets('all')).toBeUndefined();
    expect(() => parseToolsets('records,tasks2')).toThrow(/Unknown tool set\(s\) tasks2. Tool sets: schema, records, search, aggregate, pipelines, tasks, notes, activity, inbox, data, users/);
    const kinds = new Set<ToolKind>(selectTools(TOOLS, { readOnly: true, toolsets: ['records'] }).map((x) => x.kind));
    expect([...kinds]).toEqual(['read']);
  });
});

describe('resources and prompts', () => {
  it('crm://schema and crm://schema/{object}', async () => {
    const { resources } = await client.listResources();
    expect(resources.map((r) => r.uri)).toEqual(expect.arrayContaining(['crm://schema', 'crm://schema/contacts', 'crm://schema/companies']));
    const { resourceTemplates } = await client.listResourceTemplates();
    expect(resourceTemplates.map((r) => r.uriTemplate)).toContain('crm://schema/{object}');
    const all = JSON.parse(((await client.readResource({ uri: 'crm://schema' })).contents[0] as { text: string }).text);
    expect(all.objects.map((o: { name: string }) => o.name)).toContain('opportunities');
    const one = JSON.parse(((await client.readResource({ uri: 'crm://schema/contacts' })).contents[0] as { text: string }).text);
    expect(one.fields.find((f: { name: string }) => f.name === 'status').options.length).toBe(4);
    await expect(client.readResource({ uri: 'crm://schema/people' })).rejects.toThrow(/No object 'people'. Objects: companies, contacts/);
    const done = await client.complete({ ref: { type: 'ref/resource', uri: 'crm://schema/{object}' }, argument: { name: 'object', value: 'co' } });
    expect(done.completion.values).toEqual(['companies', 'contacts']);
  });

  it('the crm_record_brief prompt carries the record as data', async () => {
    const { prompts } = await client.listPrompts();
    expect(prompts.map((p) => p.name)).toEqual(['crm_record_brief', 'crm_pipeline_review', 'crm_weekly_digest', 'crm_clean_up_duplicates']);
    const r = await client.callTool({ name: 'crm_search', arguments: { object: 'companies', limit: 1 } });
    const id = (r.structuredContent as any).data[0].id;
    const p = await client.getPrompt({ name: 'crm_record_brief', arguments: { object: 'companies', id } });
    expect((p.messages[0]!.content as { text: string }).text).toContain(id);
  });
});

/** A record as REST gives it: relation values {id, name} back to the bare id. */
const relationIds = (rec: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(rec).map(([k, v]) => [k, v && typeof v === 'object' && !Array.isArray(v) && 'id' in v && 'name' in v ? (v as { id: string }).id : v]));

describe('parity with REST', () => {
  const questions: Record<string, unknown>[] = [
    { limit: 20 },
    { filter: { operator: 'and', conditions: [{ field: 'status', operator: 'in', value: ['lead', 'customer'] }] }, sort_by: 'last_name', sort_dir: 'asc', limit: 50 },
    {
      filter: {
        operator: 'or',
        conditions: [
          { field: 'email', operator: 'contains', value: 'example' },
          { field: 'city', operator: 'is_null' },
        ],
      },
      fields: ['first_name', 'email', 'city'],
      limit: 7,
    },
    { filter: { operator: 'not', conditions: [{ field: 'do_not_contact', operator: 'eq', value: true }] }, sort_by: 'created_at', sort_dir: 'asc', limit: 100 },
  ];
  it.each(questions.map((q, i) => [i, q] as const))('question %i gets the same records, page after page', async (_i, q) => {
    const tools = await listed();
    let cursor: string | undefined;
    for (let page = 0; page < 3; page++) {
      const mcp = await callOk(client, tools, 'crm_search', { object: 'contacts', ...q, ...(cursor ? { cursor } : {}) });
      const rest = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts/search', { ...q, ...(cursor ? { cursor } : {}) });
      expect(rest.status).toBe(200);
      // The same records; MCP's relation values carry the related record's name beside its id.
      expect(mcp.data.map(relationIds)).toEqual(rest.body.data);
      expect(mcp.total).toBe(rest.body.total);
      expect(mcp.next_cursor).toBe(rest.body.nextCursor);
      if (!mcp.next_cursor) break;
      cursor = mcp.next_cursor;
    }
  });
});
