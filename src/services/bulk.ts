import type { Kysely } from 'kysely';
import { z } from 'zod';
import { recordActivity } from './activity.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { withRollback } from './dry-run.js';
import { validationError } from './errors.js';
import { encodeValue } from './field-types.js';
import { normalizeFilter } from './filter-styles.js';
import { compileFilter, type FilterGroup, filterGroupSchema } from './filters.js';
import { countRows, recordExists, seqsOf } from './record-tables.js';
import { notFound, updateMany } from './records.js';
import { getSchema, parseWith, resolveObject } from './schema.js';
import { checkpoint, throwIfCancelled } from './work.js';

/**
 * Bulk operations over many records chosen by ids or by a filter: update fields, add a relation
 * (an association to one record), remove it. One transaction: all records change or none.
 * dry_run answers exactly what would change and writes nothing.
 */

export const BULK_MAX = 10_000;

export const bulkSchema = z
  .object({
    action: z.enum(['update', 'add_relation', 'remove_relation']),
    object: z.string(),
    ids: z.array(z.string()).min(1).max(BULK_MAX).optional(),
    filter: z.unknown().optional(),
    values: z.record(z.string(), z.unknown()).optional(),
    relation: z.object({ object: z.string(), id: z.string() }).strict().optional(),
    /** The explicit "yes, every record" a filter without conditions needs. */
    all: z.boolean().optional(),
    dry_run: z.boolean().optional(),
  })
  .strict();

/** Leaf conditions anywhere in the group tree: a filter with none chooses every record. */
function leafCount(g: FilterGroup | undefined): number {
  if (!g || !Array.isArray(g.conditions)) return 0;
  return g.conditions.reduce((n, c) => n + (c && typeof c === 'object' && 'conditions' in c ? leafCount(c as FilterGroup) : 1), 0);
}

/** A group without conditions holds for every record: beside others in an 'or', it makes the whole filter choose everything. */
function hasEmptyGroup(g: FilterGroup | undefined): boolean {
  if (!g || !Array.isArray(g.conditions)) return false;
  return g.conditions.length === 0 || g.conditions.some((c) => c && typeof c === 'object' && 'conditions' in c && hasEmptyGroup(c as FilterGroup));
}

export type BulkInput = z.infer<typeof bulkSchema>;

type AnyDb = Kysely<any>;

export async function bulkOperation(ctx: Ctx, input: unknown) {
  const b = parseWith(bulkSchema, input, 'bulk request');
  const obj = await resolveObject(ctx, b.object);
  const schema = await getSchema(ctx);
  if (b.ids && (b.filter !== undefined || b.all)) throw validationError('Choose the records with either "ids" or "filter" (a FilterGroup), not both');
  if (!b.ids && b.filter === undefined && !b.all) throw validationError('Choose the records with "ids" or "filter" (a FilterGroup); "all": true for every record');
  const k = ctx.db.kysely as unknown as AnyDb;

  // The records concerned, in a stable order, with their seq (set-based updates look them up by it).
  let chosen: { id: string; seq: number }[];
  if (b.ids) {
    const unique = [...new Set(b.ids)];
    const found = await seqsOf(k, obj, unique);
    const missing = unique.find((x) => !found.has(x));
    if (missing) throw notFound(obj, missing);
    chosen = unique.map((id) => ({ id, seq: found.get(id)! }));
  } else {
    const g = normalizeFilter(b.filter);
    // Checked in full before it is counted: a misspelt key ("condtions") must not pass for "no conditions".
    if (g) parseWith(filterGroupSchema, g, 'filter');
    if (leafCount(g) === 0 && !b.all) {
      const n = await countRows(k, obj);
      throw validationError(
        `This filter has no conditions, so it chooses every ${obj.name} record (${n}). Add conditions, or send "all": true to ${b.action === 'update' ? 'change' : 'relink'} all ${n} on purpose.`,
        { matched: n },
      );
    }
    if (b.all && leafCount(g) > 0) throw validationError('"all": true is only for a filter without conditions; this filter has conditions, drop "all"');
    if (!b.all && hasEmptyGroup(g))
      throw validationError('A group without conditions ({"operator": ..., "conditions": []}) matches every record; remove it, or send "all": true to change every record on purpose');
    const where = g && leafCount(g) > 0 ? compileFilter(obj, ctx.db.adapter, g, undefined, schema, { userId: ctx.actor.userId }) : undefined;
    let q = k
      .selectFrom(obj.table)
      .select(['id', 'seq'])
      .orderBy('seq')
      .limit(BULK_MAX + 1);
    if (where) q = q.where((eb: any) => where(eb));
    chosen = (await q.execute()) as { id: string; seq: number }[];
    if (chosen.length > BULK_MAX) throw validationError(`The filter matches more than ${BULK_MAX} records; narrow it or run several bulk requests`, { limit: BULK_MAX });
  }
  const ids = chosen.map((r) => r.id);
  const head = { action: b.action, object: obj.name, matched: ids.length };

  if (b.action === 'update') {
    if (!b.values || !Object.keys(b.values).length) throw validationError('"values" holds the fields to set, e.g. {"status": "qualified"}');
    // Validate once, up front (unknown fields, bad values), with the field list in the message.
    for (const [name, v] of Object.entries(b.values)) {
      const f = obj.byName.get(name);
      if (!f || f.readOnly)
        throw validationError(
          `Unknown or read-only field '${name}'. Writable fields: ${obj.fields
            .filter((x) => !x.readOnly)
            .map((x) => x.name)
            .join(', ')}`,
        );
      encodeValue(f, v);
    }
    // Nothing chosen (an empty object, or a filter nobody matches): nothing to do, and no error.
    if (ids.length === 0) return b.dry_run ? { ...head, dry_run: true, would_change: 0, unchanged: 0, changes_by_field: {}, samples: [] } : { ...head, dry_run: false, updated: 0 };
    // The dry run is the update itself, rolled back: the same validation, unique constraints,
    // relation checks and step defaults, and so exactly the changes the update would make.
    if (b.dry_run) {
      const changed = await withRollback(ctx, (dry) => updateMany(dry, obj, chosen, b.values));
      return { ...head, dry_run: true, would_change: changed.changed, unchanged: ids.length - changed.changed, changes_by_field: changed.byField, samples: changed.samples };
    }
    await updateMany(ctx, obj, chosen, b.values);
    return { ...head, dry_run: false, updated: ids.length };
  }

  // Relations: associations between each record and one target record.
  if (!b.relation) throw validationError('"relation": {"object": "companies", "id": "..."} names the record to link or unlink');
  const to = await resolveObject(ctx, b.relation.object);
  if (!(await recordExists(k, to, b.relation.id))) throw notFound(to, b.relation.id);
  const pairs = ids
    .filter((id) => !(to.name === obj.name && id === b.relation!.id))
    .map(
      (id) =>
        (obj.name < to.name || (obj.name === to.name && id <= b.relation!.id) ? [obj.name, id, to.name, b.relation!.id] : [to.name, b.relation!.id, obj.name, id]) as [string, string, string, string],
    );
  const existing = new Set<string>();
  for (let i = 0; i < pairs.length; i += 300) {
    await checkpoint(ctx, i, pairs.length, 'reading existing links');
    const part = pairs.slice(i, i + 300);
    const rows = await ctx.db.kysely
      .selectFrom('associations')
      .select(['a_object', 'a_id', 'b_object', 'b_id'])
      .where('workspace_id', '=', ctx.actor.workspaceId)
      .where((eb) => eb.or(part.map(([ao, ai, bo, bi]) => eb.and([eb('a_object', '=', ao), eb('a_id', '=', ai), eb('b_object', '=', bo), eb('b_id', '=', bi)]))))
      .execute();
    for (const r of rows) existing.add(`${r.a_object}|${r.a_id}|${r.b_object}|${r.b_id}`);
  }
  const key = (p: string[]) => p.join('|');
  const todo = b.action === 'add_relation' ? pairs.filter((p) => !existing.has(key(p))) : pairs.filter((p) => existing.has(key(p)));
  if (b.dry_run) return { ...head, dry_run: true, would_change: todo.length, unchanged: ids.length - todo.length, relation: { object: to.name, id: b.relation.id } };
  await ctx.db.kysely.transaction().execute(async (trx) => {
    const at = nowIso();
    for (let i = 0; i < todo.length; i += 200) {
      await checkpoint(ctx, i, todo.length, b.action === 'add_relation' ? 'linking' : 'unlinking');
      const part = todo.slice(i, i + 200);
      if (b.action === 'add_relation')
        await trx
          .insertInto('associations')
          .values(part.map(([ao, ai, bo, bi]) => ({ workspace_id: ctx.actor.workspaceId, a_object: ao, a_id: ai, b_object: bo, b_id: bi, created_at: at, created_by: ctx.actor.userId })))
          .onConflict((oc) => oc.doNothing())
          .execute();
      else
        await trx
          .deleteFrom('associations')
          .where('workspace_id', '=', ctx.actor.workspaceId)
          .where((eb) => eb.or(part.map(([ao, ai, bo, bi]) => eb.and([eb('a_object', '=', ao), eb('a_id', '=', ai), eb('b_object', '=', bo), eb('b_id', '=', bi)]))))
          .execute();
    }
    const action = b.action === 'add_relation' ? 'associated' : 'dissociated';
    throwIfCancelled(ctx);
    await recordActivity(
      trx,
      ctx,
      todo.flatMap(([ao, ai, bo, bi]) => [
        { object: ao, recordId: ai, action, payload: { object: bo, id: bi, bulk: true } },
        { object: bo, recordId: bi, action, payload: { object: ao, id: ai, bulk: true } },
      ]),
    );
  });
  return { ...head, dry_run: false, changed: todo.length, unchanged: ids.length - todo.length, relation: { object: to.name, id: b.relation.id } };
}
