import type { ExpressionBuilder, Kysely } from 'kysely';
import type { Tables } from '../db/tables.js';
import { recordActivity } from './activity.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { displayColumns, displayNameOfRow, namesFor } from './display-names.js';
import { CrmError, validationError } from './errors.js';
import { notFound } from './record-rows.js';
import { recordExists } from './record-tables.js';
import { getSchema, type ObjectDef, resolveObject } from './schema.js';

/**
 * Associations: the records linked to one record (through its relation fields, relation fields
 * pointing at it, and explicit many-to-many links), shown as previews; associate and dissociate.
 */

type AnyDb = Kysely<any>;
type EB = ExpressionBuilder<any, any>;
const dyn = (db: Kysely<Tables>) => db as unknown as AnyDb;

export interface Related {
  id: string;
  name: string;
  /** The relation field that links the two records, or 'association' for an explicit link. */
  via: string;
}

const ASSOC_PREVIEW = 20;

export async function associationsOf(ctx: Ctx, obj: ObjectDef, id: string, row: Record<string, unknown>) {
  const groups = new Map<string, { total: number; records: Related[] }>();
  const add = (object: string, rel: Related) => {
    let g = groups.get(object);
    if (!g) groups.set(object, (g = { total: 0, records: [] }));
    g.total++;
    if (g.records.length < ASSOC_PREVIEW) g.records.push(rel);
  };
  // 1. Relation fields of this record (company, owner, ...).
  const schema = await getSchema(ctx);
  const outgoing = obj.fields.filter((f) => f.type === 'RELATION' && f.name !== 'created_by' && row[f.column]);
  for (const f of outgoing) {
    const target = f.target!;
    const names = await namesFor(ctx, schema, target, [row[f.column] as string]);
    const tid = row[f.column] as string;
    add(target, { id: tid, name: names.get(tid) ?? tid, via: f.name });
  }
  // 2. Records of any object whose relation field points here (a company's contacts and opportunities).
  for (const other of schema.objects.values()) {
    for (const f of other.fields) {
      if (f.type !== 'RELATION' || f.target !== obj.name) continue;
      const cols = displayColumns(other);
      const base = dyn(ctx.db.kysely).selectFrom(other.table).where(f.column, '=', id);
      const rows = (await base.select(cols).orderBy('created_at', 'desc').limit(ASSOC_PREVIEW).execute()) as Record<string, unknown>[];
      if (rows.length === 0) continue;
      const n = rows.length < ASSOC_PREVIEW ? rows.length : Number(((await base.select((eb: EB) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()) as { n: number }).n);
      let g = groups.get(other.name);
      if (!g) groups.set(other.name, (g = { total: 0, records: [] }));
      g.total += n;
      for (const r of rows) {
        if (g.records.length >= ASSOC_PREVIEW) break;
        g.records.push({ id: r.id as string, name: displayNameOfRow(other, r), via: f.name });
      }
    }
  }
  // 3. Explicit many-to-many associations.
  const links = await ctx.db.kysely
    .selectFrom('associations')
    .select(['a_object', 'a_id', 'b_object', 'b_id'])
    .where('workspace_id', '=', ctx.actor.workspaceId)
    .where((eb) => eb.or([eb.and([eb('a_object', '=', obj.name), eb('a_id', '=', id)]), eb.and([eb('b_object', '=', obj.name), eb('b_id', '=', id)])]))
    .orderBy('id')
    .execute();
  const byTarget = new Map<string, string[]>();
  for (const l of links) {
    const [to, toId] = l.a_object === obj.name && l.a_id === id ? [l.b_object, l.b_id] : [l.a_object, l.a_id];
    byTarget.set(to, [...(byTarget.get(to) ?? []), toId]);
  }
  for (const [to, ids] of byTarget) {
    const names = await namesFor(ctx, schema, to, ids.slice(0, ASSOC_PREVIEW));
    for (const tid of ids) add(to, { id: tid, name: names.get(tid) ?? tid, via: 'association' });
  }
  return Object.fromEntries(groups);
}

// ---------------------------------------------------------------------------------------------
// Associations (many-to-many links between any two records)

function orderPair(aObj: string, aId: string, bObj: string, bId: string) {
  // One row per pair, whichever side asked: canonical order by (object, id).
  return aObj < bObj || (aObj === bObj && aId <= bId) ? [aObj, aId, bObj, bId] : [bObj, bId, aObj, aId];
}

async function checkExists(trx: Kysely<Tables>, obj: ObjectDef, id: string) {
  if (!(await recordExists(trx, obj, id))) throw notFound(obj, id);
}

export async function associate(ctx: Ctx, objectName: string, id: string, toObjectName: string, toId: string) {
  const obj = await resolveObject(ctx, objectName);
  const to = await resolveObject(ctx, toObjectName);
  if (obj.name === to.name && id === toId) throw validationError('A record cannot be associated with itself');
  const [aO, aI, bO, bI] = orderPair(obj.name, id, to.name, toId) as [string, string, string, string];
  return ctx.db.kysely.transaction().execute(async (trx) => {
    await checkExists(trx, obj, id);
    await checkExists(trx, to, toId);
    const res = await trx
      .insertInto('associations')
      .values({ workspace_id: ctx.actor.workspaceId, a_object: aO, a_id: aI, b_object: bO, b_id: bI, created_at: nowIso(), created_by: ctx.actor.userId })
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    const created = Number(res.numInsertedOrUpdatedRows ?? 0n) > 0;
    if (created)
      await recordActivity(trx, ctx, [
        { object: obj.name, recordId: id, action: 'associated', payload: { object: to.name, id: toId } },
        { object: to.name, recordId: toId, action: 'associated', payload: { object: obj.name, id } },
      ]);
    return { object: obj.name, id, to_object: to.name, to_id: toId, created };
  });
}

export async function dissociate(ctx: Ctx, objectName: string, id: string, toObjectName: string, toId: string) {
  const obj = await resolveObject(ctx, objectName);
  const to = await resolveObject(ctx, toObjectName);
  const [aO, aI, bO, bI] = orderPair(obj.name, id, to.name, toId) as [string, string, string, string];
  return ctx.db.kysely.transaction().execute(async (trx) => {
    const res = await trx
      .deleteFrom('associations')
      .where('workspace_id', '=', ctx.actor.workspaceId)
      .where('a_object', '=', aO)
      .where('a_id', '=', aI)
      .where('b_object', '=', bO)
      .where('b_id', '=', bI)
      .executeTakeFirst();
    if (Number(res.numDeletedRows) === 0) throw new CrmError('RECORD_NOT_FOUND', `No association between ${obj.name} '${id}' and ${to.name} '${toId}'`);
    await recordActivity(trx, ctx, [
      { object: obj.name, recordId: id, action: 'dissociated', payload: { object: to.name, id: toId } },
      { object: to.name, recordId: toId, action: 'dissociated', payload: { object: obj.name, id } },
    ]);
    return { object: obj.name, id, to_object: to.name, to_id: toId, deleted: true };
  });
}
