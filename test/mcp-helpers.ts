import crypto from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv-provider.js';
import { sql } from 'kysely';
import { expect } from 'vitest';
import type { Db } from '../src/db/database.js';
import { createMcpServer, type McpDeps } from '../src/mcp/server.js';
import { TOOLS } from '../tools/index.js';
import { silent, sqlAll, type TestWorkspace, tableNames } from './helpers.js';

export const toolByName = new Map(TOOLS.map((t) => [t.name, t]));

/**
 * Listed hints as a client reads them (the server leaves out those equal to the MCP spec's
 * defaults: readOnly false, destructive true, idempotent false, openWorld true; a read-only tool
 * destroys nothing and is idempotent).
 */
export function hintsRead(a: Tool['annotations'] = {}) {
  const readOnlyHint = a.readOnlyHint ?? false;
  return {
    readOnlyHint,
    destructiveHint: readOnlyHint ? false : (a.destructiveHint ?? true),
    idempotentHint: readOnlyHint ? true : (a.idempotentHint ?? false),
    openWorldHint: a.openWorldHint ?? true,
  };
}

/** An SDK client over the in-memory transport, acting as the workspace's admin (or member). */
export async function memoryClient(db: Db, w: TestWorkspace, opts: Partial<McpDeps> & { member?: boolean } = {}) {
  const user = opts.member ? w.member : w.admin;
  const server = await createMcpServer({
    db,
    log: silent,
    actor: { workspaceId: w.workspace.id, userId: user.id, role: user.role, via: 'mcp' },
    ...opts,
  });
  const [a, b] = InMemoryTransport.createLinkedPair();
  await server.connect(a);
  const client = new Client({ name: 'test', version: '1.0.0' });
  await client.connect(b);
  return client;
}

const ajv = new AjvJsonSchemaValidator();

/**
 * Call a tool and check the answer the way a strict client would: no error, structuredContent
 * valid against both the zod outputSchema in tools/ and the JSON Schema the server listed, text present.
 */
export async function callOk(client: Client, listed: Tool[], name: string, args: Record<string, unknown>) {
  const r = (await client.callTool({ name, arguments: args })) as CallToolResult;
  if (r.isError) throw new Error(`${name} failed: ${JSON.stringify(r.content)}`);
  const tool = toolByName.get(name)!;
  const parsed = tool.outputSchema.safeParse(r.structuredContent);
  expect(parsed.success, `${name} output vs zod outputSchema: ${parsed.success ? '' : parsed.error.message}`).toBe(true);
  const schema = listed.find((t) => t.name === name)?.outputSchema;
  expect(schema, `${name} lists an outputSchema`).toBeTruthy();
  const v = ajv.getValidator(schema as never)(r.structuredContent);
  expect(v.valid, `${name} output vs listed JSON Schema: ${v.errorMessage ?? ''}`).toBe(true);
  expect(r.content[0]?.type).toBe('text');
  return r.structuredContent as any;
}

export async function callError(client: Client, name: string, args: Record<string, unknown>): Promise<string> {
  const r = (await client.callTool({ name, arguments: args })) as CallToolResult;
  expect(r.isError, `${name} should fail`).toBe(true);
  return (r.content[0] as { text: string }).text;
}

/**
 * Lists the tools and calls every one of them with valid arguments, in an order that needs no
 * existing data. Returns the tools called, so a test can check that none was left out.
 */
export async function exerciseAllTools(client: Client): Promise<Set<string>> {
  const { tools: listed } = await client.listTools();
  const called = new Set<string>();
  const call = async (name: string, args: Record<string, unknown>) => {
    called.add(name);
    return callOk(client, listed, name, args);
  };
  const tag = crypto.randomBytes(4).toString('hex');

  const me = await call('crm_whoami', {});
  expect(me.tools.length).toBe(listed.length);
  const schema = await call('crm_describe_schema', {});
  expect(schema.objects.map((o: { name: string }) => o.name)).toEqual(expect.arrayContaining(['companies', 'contacts']));
  await call('crm_describe_schema', { object: 'contacts' });

  const co = (await call('crm_create_record', { object: 'companies', values: { name: `Acme ${tag}`, industry: 'software' } })).record;
  const ct = (await call('crm_create_record', { object: 'contacts', values: { first_name: 'Ada', email: `ada.${tag}@example.com`, company: co.id } })).record;
  const found = await call('crm_search', {
    object: 'contacts',
    filter: { operator: 'and', conditions: [{ field: 'email', operator: 'eq', value: `ada.${tag}@example.com` }] },
    fields: ['first_name', 'email'],
  });
  expect(found.data.map((r: { id: string }) => r.id)).toEqual([ct.id]);
  const got = await call('crm_get_record', { object: 'companies', id: co.id });
  expect(got.record.associations.contacts.records[0].id).toBe(ct.id);

  const dry = await call('crm_update_record', { object: 'contacts', id: ct.id, values: { status: 'customer' }, dry_run: true });
  expect(dry.changes).toEqual({ status: { from: 'lead', to: 'customer' } });
  await call('crm_update_record', { object: 'contacts', id: ct.id, values: { status: 'customer' } });

  const batch = await call('crm_batch_write', {
    object: 'contacts',
    mode: 'create',
    records: [{ first_name: 'Bo', email: `bo.${tag}@example.com` }, { first_name: 'Cy' }],
  });
  const [bo, cy] = batch.results.map((r: { id: string }) => r.id);
  await call('crm_batch_write', { object: 'contacts', mode: 'update', records: [{ id: cy, last_name: 'Young' }] });
  await call('crm_batch_write', { object: 'contacts', mode: 'upsert', key: 'email', records: [{ email: `bo.${tag}@example.com`, job_title: 'CTO' }], dry_run: true });
  await call('crm_batch_write', { object: 'contacts', mode: 'upsert', key: 'email', records: [{ email: `bo.${tag}@example.com`, job_title: 'CTO' }] });

  await call('crm_link', { object: 'contacts', id: bo, to_object: 'companies', to_id: co.id });
  await call('crm_link', { object: 'contacts', id: bo, to_object: 'companies', to_id: co.id, unlink: true, dry_run: true });
  await call('crm_link', { object: 'contacts', id: bo, to_object: 'companies', to_id: co.id, unlink: true });

  await call('crm_delete_record', { object: 'contacts', id: cy, dry_run: true });
  await call('crm_delete_record', { object: 'contacts', id: cy });

  // Search and aggregation.
  const hits = await call('crm_full_text_search', { q: tag, limit: 10 });
  expect(hits.data.map((h: { id: string }) => h.id)).toEqual(expect.arrayContaining([co.id, ct.id]));
  const byStatus = await call('crm_aggregate', { object: 'contacts', aggregate: [{ field: 'id', function: 'count' }], groupBy: ['status'], limit: 10 });
  expect(byStatus.groups.length).toBeGreaterThan(0);
  const tree = await call('crm_aggregate', {
    object: 'contacts',
    filter: { operator: 'and', conditions: [{ field: 'company', operator: 'eq', value: co.id }] },
    aggregates: { by_status: { uniqueValues: { property: 'status', aggregates: { n: { count: {} } } } } },
  });
  expect(tree.count).toBe(1);

  // Tasks.
  const task = (await call('crm_create_task', { title: `Call Ada ${tag}`, contact: ct.id, due_at: '2031-01-01T10:00:00Z', priority: 'high' })).task;
  const mine = await call('crm_list_tasks', { mode: 'my_open', linked_object: 'contacts', linked_id: ct.id });
  expect(mine.data.map((x: { id: string }) => x.id)).toEqual([task.id]);
  expect((await call('crm_update_task', { id: task.id, priority: 'urgent', dry_run: true })).changes).toEqual({ priority: { from: 'high', to: 'urgent' } });
  await call('crm_update_task', { id: task.id, priority: 'urgent' });
  expect((await call('crm_update_task', { id: task.id, status: 'completed', dry_run: true })).changes.status.to).toBe('completed');
  expect((await call('crm_update_task', { id: task.id, status: 'completed' })).task.status).toBe('completed');
  await call('crm_aggregate', { object: 'tasks', filter: { operator: 'and', conditions: [{ field: 'assignee', operator: 'eq', value: 'me' }] }, groupBy: ['status'] });

  // Notes, timeline, inbox.
  await call('crm_create_note', { body: `Met Ada ${tag} at the fair`, object: 'contacts', record_id: ct.id });
  expect((await call('crm_list_notes', { object: 'contacts', record_id: ct.id })).total).toBe(1);
  const timeline = await call('crm_get_activity', { object: 'contacts', id: ct.id });
  expect(timeline.data.map((e: { action: string }) => e.action)).toEqual(expect.arrayContaining(['created', 'updated', 'note_added']));
  expect((await call('crm_get_activity', { object: 'contacts', id: ct.id, actions: ['note_added'], from: new Date().toISOString().slice(0, 10) })).total).toBe(1);

  // Schema (admins): a custom object and a field, each dry-run first; the new field takes a value at once.
  const objectName = `proj_${tag}`;
  await call('crm_create_object', {
    name: objectName,
    fields: [
      { name: 'title', type: 'TEXT' },
      { name: 'phase', type: 'SELECT', options: ['plan', 'build'] },
    ],
    dry_run: true,
  });
  expect(
    (
      await call('crm_create_object', {
        name: objectName,
        fields: [
          { name: 'title', type: 'TEXT' },
          { name: 'phase', type: 'SELECT', options: ['plan', 'build'] },
        ],
      })
    ).object.name,
  ).toBe(objectName);
  const fieldName = `score_${tag}`;
  await call('crm_create_field', { object: 'contacts', name: fieldName, type: 'INTEGER', dry_run: true });
  expect((await call('crm_create_field', { object: 'contacts', name: fieldName, type: 'INTEGER' })).field.type).toBe('INTEGER');
  await call('crm_update_record', { object: 'contacts', id: ct.id, values: { [fieldName]: 7 } });
  const feed = await call('crm_list_changes', { object: 'contacts', actions: ['updated'], user: 'me', limit: 200 });
  expect(feed.data.some((e: { record_id: string; changes?: Record<string, unknown> }) => e.record_id === ct.id && e.changes?.[fieldName])).toBe(true);

  const threads = await call('crm_list_threads', { limit: 5 });
  expect(threads.data.length, 'exerciseAllTools needs an email thread in the workspace').toBeGreaterThan(0);
  expect((await call('crm_get_thread', { id: threads.data[0].id })).thread.messages.length).toBeGreaterThan(0);

  // Pipelines.
  expect((await call('crm_describe_schema', {})).pipelines.map((p: { object: string }) => p.object)).toContain('opportunities');
  const deal = (await call('crm_create_record', { object: 'opportunities', values: { name: `Deal ${tag}`, amount: 1000 } })).record;
  await call('crm_move_pipeline_step', { object: 'opportunities', id: deal.id, step: 'proposal', dry_run: true });
  expect((await call('crm_move_pipeline_step', { object: 'opportunities', id: deal.id, step: 'proposal' })).moved).toBe(true);

  // Data: import, duplicates, merge and undo, bulk, export.
  const phone = `+1 555 ${String(parseInt(tag, 16) % 10_000_000).padStart(7, '0')}`;
  const imported = await call('crm_import', {
    object: 'contacts',
    records: [
      { first_name: 'Eve', last_name: tag, email: `eve.${tag}@example.com`, phone },
      { first_name: 'Ada again', email: `ada.${tag}@example.com` },
    ],
  });
  expect([imported.created, imported.duplicates]).toEqual([1, 1]);
  const eve = imported.rows[0].id;
  const eva = (await call('crm_create_record', { object: 'contacts', values: { first_name: 'Eva', phone: phone.replace(/ /g, '-') } })).record;
  const dups = await call('crm_find_duplicates', { object: 'contacts', record_id: eve });
  expect(dups.data[0].records.map((r: { id: string }) => r.id)).toEqual(expect.arrayContaining([eve, eva.id]));
  await call('crm_merge_duplicates', { object: 'contacts', primary_id: eve, duplicate_ids: [eva.id], dry_run: true });
  const merged = await call('crm_merge_duplicates', { object: 'contacts', primary_id: eve, duplicate_ids: [eva.id] });
  await call('crm_unmerge', { merge_id: merged.merge_id, dry_run: true });
  expect((await call('crm_unmerge', { merge_id: merged.merge_id })).restored_ids).toEqual([eva.id]);
  await call('crm_bulk_update', { object: 'contacts', action: 'update', ids: [eve, eva.id], values: { source: 'event' }, dry_run: true });
  expect((await call('crm_bulk_update', { object: 'contacts', action: 'add_relation', ids: [eve, eva.id], relation: { object: 'companies', id: co.id } })).changed).toBe(2);
  const exported = await call('crm_export', {
    object: 'contacts',
    filter: { operator: 'and', conditions: [{ field: 'email', operator: 'contains', value: tag }] },
    fields: ['first_name', 'email'],
    include_csv: true,
  });
  expect(exported.exported).toBe(3);
  expect(exported.csv.embedded).toBe(true);

  await call('crm_delete_record', { object: 'tasks', id: task.id, dry_run: true });
  await call('crm_delete_record', { object: 'tasks', id: task.id });
  return called;
}

/**
 * Digest of every row of every table: equal digests mean nothing was written. The tables of the
 * database (its schema's, on PostgreSQL), each one's rows in a fixed order (sorted by their JSON:
 * PostgreSQL returns an unordered scan in no promised order).
 */
export async function dbDigest(db: Db): Promise<string> {
  if (db.sharedSchema) return pgDigest(db, db.sharedSchema);
  const h = crypto.createHash('sha256');
  for (const name of await tableNames(db)) {
    h.update(name);
    const rows = (await sqlAll(db, sql`SELECT * FROM ${sql.table(name)}`)).map((row) => JSON.stringify(row));
    for (const row of rows.sort()) h.update(row);
  }
  return h.digest('hex');
}

/**
 * PostgreSQL: every table of the shared schema and of every workspace's schema, each digested by
 * the server (its rows as text, sorted), in one statement: a table-by-table read costs a round
 * trip or four per table, before and after each of thousands of fuzzed requests.
 */
async function pgDigest(db: Db, shared: string): Promise<string> {
  const tables = await sqlAll<{ s: string; t: string }>(
    db.kysely,
    sql`SELECT table_schema AS s, table_name AS t FROM information_schema.tables
        WHERE (table_schema = ${shared} OR table_schema ~ ${`^${shared}_w[0-9]+$`}) AND table_type = 'BASE TABLE'
        ORDER BY 1, 2`,
  );
  const parts = tables.map(({ s, t }) => sql`SELECT ${`${s}.${t}`}::text AS name, md5(coalesce(string_agg(x::text, chr(10) ORDER BY x::text COLLATE "C"), '')) AS d FROM ${sql.table(`${s}.${t}`)} x`);
  const rows = await sqlAll<{ name: string; d: string }>(db.kysely, sql`SELECT name, d FROM (${sql.join(parts, sql` UNION ALL `)}) all_tables ORDER BY name COLLATE "C"`);
  return crypto
    .createHash('sha256')
    .update(rows.map((r) => `${r.name}:${r.d}`).join('\n'))
    .digest('hex');
}
