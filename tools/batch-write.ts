import { z } from 'zod';
import { batchArg, dryRunArg, objectArg } from '../src/mcp/arguments.js';
import { changesOut, diffRecords, renderChanges } from '../src/mcp/changes.js';
import { RELATION_VALUE } from '../src/mcp/relations.js';
import { compactJson } from '../src/mcp/render.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, UNTRUSTED_FIELD, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import type { Ctx } from '../src/services/context.js';
import { withRollback } from '../src/services/dry-run.js';
import { createRecords, listRecords, MAX_BATCH, nameRelations, type RecordData, updateRecords, upsertRecords } from '../src/services/records.js';

type Mode = 'create' | 'update' | 'upsert';
interface Outcome {
  data: RecordData[];
  results: { index: number; id: string; action: 'created' | 'updated' }[];
}

async function run(ctx: Ctx, object: string, mode: Mode, records: Record<string, unknown>[], key: string): Promise<Outcome> {
  if (mode === 'create') {
    const data = await createRecords(ctx, object, records);
    return { data, results: data.map((r, index) => ({ index, id: r.id, action: 'created' as const })) };
  }
  if (mode === 'update') {
    const data = await updateRecords(
      ctx,
      object,
      records.map(({ id, ...values }) => ({ id: id as string, values })),
    );
    return { data, results: data.map((r, index) => ({ index, id: r.id, action: 'updated' as const })) };
  }
  return upsertRecords(ctx, object, records, key);
}

/** Columns the system fills at write time: a dry run cannot promise their values. */
const ASSIGNED = ['id', 'created_at', 'updated_at', 'created_by'];

export default defineTool({
  name: 'crm_batch_write',
  title: 'Create, update or upsert many records',
  description:
    `Write up to ${MAX_BATCH} records of one object, all or none: mode create, update (rows carry their id) or upsert ` +
    '(matched on key: id or a unique field such as email). A failing batch names every failing row.',
  kind: 'write',
  toolset: 'records',
  inputSchema: z.object({
    object: objectArg,
    mode: z.enum(['create', 'update', 'upsert']).describe("'create', 'update' (rows need 'id') or 'upsert' (matched on key)"),
    records: batchArg,
    key: z.string().default('id').describe("upsert: 'id' or a unique field, e.g. email"),
    dry_run: dryRunArg,
  }),
  outputSchema: z.object({
    object: z.string(),
    mode: z.enum(['create', 'update', 'upsert']),
    dry_run: z.boolean().describe('true: nothing was written; this is what the batch would do'),
    results: z
      .array(
        z.object({
          index: z.number().describe('Position in records'),
          id: z.string().nullable().describe('Record id; null for a record a dry run would create'),
          action: z.enum(['created', 'updated']),
          changes: changesOut.optional().describe('Dry run, updated rows: field -> {from, to}'),
        }),
      )
      .describe('One entry per input row, in order'),
    data: z
      .array(z.looseObject({ id: z.string().optional() }))
      .describe(`The records as stored (a dry run: as they would be stored, without the ids of new records). ${RELATION_VALUE}. Text fields: ${UNTRUSTED_FIELD}`),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    if (!a.dry_run) {
      const r = await run(ctx, a.object, a.mode, a.records, a.key);
      return markUntrusted({ object: a.object, mode: a.mode, dry_run: false, results: r.results, data: await nameRelations(ctx, a.object, r.data) });
    }
    const r = await withRollback(ctx, (dry) => run(dry, a.object, a.mode, a.records, a.key));
    // Rolled back: the database holds the state before the batch, to compare with.
    const updated = [...new Set(r.results.filter((x) => x.action === 'updated').map((x) => x.id))];
    const before = new Map<string, RecordData>();
    if (updated.length) {
      const cur = await listRecords(ctx, a.object, {
        filter: { operator: 'and', conditions: [{ field: 'id', operator: 'in', value: updated }] },
        limit: MAX_BATCH,
        includeTotal: false,
      });
      for (const rec of await nameRelations(ctx, a.object, cur.data)) before.set(rec.id, rec);
    }
    const byId = new Map((await nameRelations(ctx, a.object, r.data)).map((d) => [d.id, d]));
    return markUntrusted({
      object: a.object,
      mode: a.mode,
      dry_run: true,
      results: r.results.map((x) =>
        x.action === 'created' ? { index: x.index, id: null, action: x.action } : { index: x.index, id: x.id, action: x.action, changes: diffRecords(before.get(x.id) ?? {}, byId.get(x.id) ?? {}) },
      ),
      data: await nameRelations(
        ctx,
        a.object,
        r.results.map((x) => {
          const d: Record<string, unknown> = { ...byId.get(x.id) };
          if (x.action === 'created') for (const k of ASSIGNED) delete d[k];
          return d as RecordData;
        }),
      ),
    });
  },
  render: (out) => {
    const created = out.results.filter((x) => x.action === 'created').length;
    const updated = out.results.length - created;
    const head = `${out.dry_run ? 'Dry run, nothing written. Would create' : 'Created'} ${created} and ${out.dry_run ? 'update' : 'updated'} ${updated} ${out.object}`;
    const rows = out.results.map((x) =>
      x.changes ? `#${x.index} ${x.action} ${x.id}: ${renderChanges(x.changes)}` : `#${x.index} ${x.action}${x.id ? ` ${x.id}` : ''}: ${compactJson(out.data[x.index])}`,
    );
    return rows.length ? `${head}\n${untrustedBlock(`${out.object} batch`, rows.join('\n'))}` : head;
  },
});
