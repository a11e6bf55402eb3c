import { AsyncLocalStorage } from 'node:async_hooks';
import { type Kysely, sql } from 'kysely';
import { bulkInsert } from '../db/bulk-insert.js';
import type { SearchDoc } from '../db/search.js';
import type { Tables } from '../db/tables.js';
import { type ActivityEntry, createdPayload, recordActivity } from './activity.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { keyColumns, type MatchKey, removeKeys, writeKeys } from './dedupe-keys.js';
import { displayColumns, displayNameOfRow } from './display-names.js';
import { CrmError, type ErrorCode, validationError } from './errors.js';
import { decodeValue, encodeValue, storageOf } from './field-types.js';
import { newId } from './ids.js';
import { MAX_BATCH, notFound, type RecordData, toRecord } from './record-rows.js';
import { deleteRows, existingIds, repoint, rowBatches, rowsByIds, updateRow } from './record-tables.js';
import { getSchema, loadedSchema, type ObjectDef, resolveObject, type WorkspaceSchema } from './schema.js';
import { docColumns, documentsOf, indexReferrers, indexRows, unindexRecords } from './search.js';
import { checkpoint } from './work.js';

/**
 * Writing records: create, update, upsert and delete, with their derived rows (match keys, search
 * documents), stage history and activity, each in one transaction.
 */

type AnyDb = Kysely<any>;
const dyn = (db: Kysely<Tables>) => db as unknown as AnyDb;

// ---------------------------------------------------------------------------------------------
// Writing

type Row = Record<string, string | number | null>;

export interface Prepared {
  row: Row;
  /** field name -> stored value, only for fields the input mentioned */
  touched: Map<string, string | number | null>;
  /** Duplicate-match keys, when the caller computed them already (imports): not computed twice. */
  keys?: MatchKey[];
  /** The new record's id and search document, when made ahead of the transaction (prepareDocuments). */
  id?: string;
  doc?: SearchDoc;
  /** A new record's 'created' entry payload (createdPayload of `touched`), when made ahead: see prepareForImport. */
  created?: number[];
}

/**
 * `touched` of a row prepared for an import once its 'created' payload is made: nothing reads it
 * again. One map shared by every such row, so writing to it would be a bug: it refuses.
 */
const DONE_WITH_FIELDS: Map<string, string | number | null> = new (class extends Map<string, string | number | null> {
  override set(): never {
    throw new Error("an import's prepared row no longer keeps the fields it set (prepareForImport)");
  }
})();

function prepareWrite(obj: ObjectDef, input: unknown, mode: 'create' | 'update'): Prepared {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw validationError(`A ${obj.name} record must be a JSON object of field names to values`);
  const touched = new Map<string, string | number | null>();
  const source = input as Record<string, unknown>;
  // Keys, not entries: no [name, value] pair made per field (an import validates 5,000 rows a batch).
  for (const name of Object.keys(source)) {
    const value = source[name];
    if (name === 'id' && mode === 'update') continue;
    const f = obj.byName.get(name);
    if (!f) {
      const writable = obj.fields.filter((x) => !x.readOnly).map((x) => x.name);
      throw validationError(`Unknown field '${name}' on ${obj.name}. Writable fields: ${writable.join(', ')}`, { field: name, validFields: writable });
    }
    if (f.readOnly) throw validationError(`Field '${name}' is read-only`);
    touched.set(f.name, encodeValue(f, value));
  }
  const row: Row = {};
  for (const f of obj.fields) {
    if (f.readOnly) continue;
    if (touched.has(f.name)) row[f.column] = touched.get(f.name)!;
    else if (mode === 'create' && f.defaultValue !== undefined && f.defaultValue !== null) row[f.column] = encodeValue(f, f.defaultValue);
    if (f.required && (mode === 'create' ? row[f.column] === undefined || row[f.column] === null : touched.has(f.name) && touched.get(f.name) === null))
      throw new CrmError('MISSING_REQUIRED_FIELD', `Field '${f.name}' is required`, { field: f.name });
  }
  const p = { row, touched };
  if (obj.pipeline) {
    const field = obj.byName.get(obj.pipeline.field)!;
    // A new record starts on the pipeline's first step unless it names one (the field's own default,
    // set before the pipeline existed, may not even be a step).
    if (mode === 'create' && (!touched.has(field.name) || row[field.column] === null)) row[field.column] = obj.pipeline.steps[0]!.key;
    if (mode === 'create') enterStep(obj, p, row[field.column] as string);
    else if (touched.has(field.name)) stepOf(obj, touched.get(field.name) as string | null);
  }
  if (mode === 'create') stampCompletion(obj, p, undefined);
  return p;
}

/**
 * A task's completed_at follows its status on every path (crm_update_record, batch and bulk
 * writes, imports, not only the task service): entering 'completed' stamps it, leaving clears it.
 */
function stampCompletion(obj: ObjectDef, p: Prepared, oldStatus: unknown): void {
  if (obj.name !== 'tasks' || !obj.system) return;
  const status = obj.byName.get('status');
  const done = obj.byName.get('completed_at');
  if (!status || !done || !p.touched.has(status.name) || p.touched.has(done.name)) return;
  const now = p.touched.get(status.name);
  if (now === oldStatus) return;
  const value = now === 'completed' ? nowIso() : oldStatus === undefined ? undefined : null;
  if (value === undefined) return;
  p.row[done.column] = value;
  p.touched.set(done.name, value);
}

/**
 * Validate a record as create would (imports check duplicates on its stored form, `row`, then hand
 * it to createPrepared: validated once).
 */
export function prepareForImport(obj: ObjectDef, input: unknown): Prepared {
  const p = prepareWrite(obj, input, 'create');
  // An import's batch stays in memory from its planning to its write: each row keeps its field ids
  // (the 'created' entry's payload, what `touched` is read for then) rather than a Map per row, which
  // the garbage collector copies on every collection until the batch is written.
  p.created = createdPayload(obj, p.touched.keys());
  p.touched = DONE_WITH_FIELDS;
  return p;
}

/**
 * Ahead of createPrepared, outside any transaction: each record's id and search document (the
 * names of the companies it links to read now, with everything the search index computes that
 * needs no database). An import prepares its next batch so while the previous one is written, and
 * the transaction is then left with little but its statements.
 */
export async function prepareDocuments(ctx: Ctx, obj: ObjectDef, prepared: Prepared[]): Promise<void> {
  if (!prepared.length) return;
  const schema = await getSchema(ctx);
  // The id goes on the row itself (insertPrepared sets it there too): no copy of each row.
  for (const p of prepared) p.row.id = p.id ??= newId();
  const docs = await documentsOf(
    dyn(ctx.db.kysely),
    ctx.db,
    obj,
    ctx.actor.workspaceId,
    prepared.map((p) => p.row),
    schema,
  );
  prepared.forEach((p, i) => (p.doc = docs[i]));
}

/** Create records validated by prepareForImport, in one transaction; returns their ids. */
export async function createPrepared(ctx: Ctx, obj: ObjectDef, prepared: Prepared[]): Promise<string[]> {
  return inTransaction(ctx, obj, (trx) => insertPrepared(ctx, trx, obj, prepared));
}

/** The pipeline step with this key, or a VALIDATION_ERROR listing the steps. */
function stepOf(obj: ObjectDef, key: string | null) {
  const pl = obj.pipeline!;
  const step = pl.steps.find((s) => s.key === key);
  if (!step)
    throw validationError(`Field '${pl.field}' must be a step of the ${pl.name}: ${pl.steps.map((s) => s.key).join(', ')}; got ${JSON.stringify(key)}`, {
      field: pl.field,
      allowed: pl.steps.map((s) => s.key),
    });
  return step;
}

/** A record entering a step takes the step's defaults (e.g. probability) for the fields the write did not set. */
function enterStep(obj: ObjectDef, p: Prepared, key: string) {
  const step = stepOf(obj, key);
  for (const [name, value] of Object.entries(step.defaults)) {
    const f = obj.byName.get(name);
    if (!f || f.readOnly || p.touched.has(name)) continue;
    const stored = encodeValue(f, value);
    p.row[f.column] = stored;
    p.touched.set(name, stored);
  }
}

/** Stage history: close the open interval, open the next. Kept for time-in-stage and conversion. */
async function moveHistory(trx: Kysely<Tables>, ctx: Ctx, obj: ObjectDef, id: string, from: string | null, to: string | null) {
  const pl = obj.pipeline;
  if (!pl || from === to) return;
  const at = nowIso();
  if (from !== null) await trx.updateTable('stage_history').set({ left_at: at }).where('pipeline_id', '=', pl.id).where('record_id', '=', id).where('left_at', 'is', null).execute();
  if (to !== null) await trx.insertInto('stage_history').values({ workspace_id: ctx.actor.workspaceId, pipeline_id: pl.id, record_id: id, step_key: to, entered_at: at, left_at: null }).execute();
}

function pipelineMove(obj: ObjectDef, id: string, from: unknown, to: unknown): ActivityEntry[] {
  const pl = obj.pipeline;
  if (!pl || from === to) return [];
  return [{ object: obj.name, recordId: id, action: 'pipeline_moved', payload: { pipeline: pl.name, pipeline_id: pl.id, from: from ?? null, to: to ?? null } }];
}

/**
 * RELATION values must name existing records of the target object in this workspace. `verified`:
 * `target:id` of the records found already in the same transaction (an import's earlier pieces),
 * not asked for again; those found now are added.
 */
async function checkRelations(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, rows: Row[], verified?: Set<string>): Promise<void> {
  // The schema comes from the cache loaded before the transaction began: querying outside
  // the transaction here would wait on the transaction's own connection.
  const schema =
    schemaCache.get(ctx) ??
    (() => {
      throw new Error('schema not preloaded');
    })();
  for (const f of obj.fields) {
    if (f.type !== 'RELATION' || f.readOnly) continue;
    const ids = [...new Set(rows.map((r) => r[f.column]).filter((v): v is string => typeof v === 'string' && !verified?.has(`${f.target}:${v}`)))];
    if (ids.length === 0) continue;
    let found: Set<string>;
    if (f.target === 'users') {
      const got = await trx.selectFrom('users').select('id').where('workspace_id', '=', ctx.actor.workspaceId).where('id', 'in', ids).execute();
      found = new Set(got.map((r) => r.id));
    } else {
      const target = schema.objects.get(f.target!);
      if (!target) throw validationError(`Field '${f.name}' points to missing object '${f.target}'`);
      found = await existingIds(trx, target, ids);
    }
    const missing = ids.find((x) => !found.has(x));
    if (missing !== undefined) throw validationError(`Field '${f.name}' must reference an existing ${f.target} record; no ${f.target} record has id '${missing}'`, { field: f.name });
    if (verified) for (const id of ids) verified.add(`${f.target}:${id}`);
  }
}

function duplicateError(ctx: Ctx, obj: ObjectDef, err: unknown, row?: Row): CrmError | null {
  const kind = ctx.db.adapter.classifyError(err);
  if (kind?.kind !== 'unique') return null;
  const f = obj.fields.find((x) => x.column === kind.columns[0]);
  if (f) {
    const v = row?.[f.column];
    return new CrmError('DUPLICATE_RECORD', `A ${obj.name} record with ${f.name} ${v !== undefined ? `'${String(v)}' ` : ''}already exists`, { field: f.name });
  }
  return new CrmError('DUPLICATE_RECORD', `A ${obj.name} record with the same unique value already exists`);
}

async function insertRow(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, row: Row): Promise<string> {
  const now = nowIso();
  const id = newId();
  try {
    await dyn(trx)
      .insertInto(obj.table)
      .values({ ...row, id, created_at: now, updated_at: now, created_by: ctx.actor.userId })
      .execute();
  } catch (e) {
    throw duplicateError(ctx, obj, e, row) ?? e;
  }
  return id;
}

export interface RowError {
  index: number;
  code: string;
  message: string;
}

/**
 * Validate every row before anything is written, and report all the failing rows at once
 * (index, code, message), so a client can fix a batch in one round trip.
 */
function validateRows<T, R>(items: T[], fn: (item: T, index: number) => R): R[] {
  const out: R[] = [];
  const errors: RowError[] = [];
  items.forEach((item, i) => {
    try {
      out.push(fn(item, i));
    } catch (e) {
      if (!(e instanceof CrmError)) throw e;
      errors.push({ index: i, code: e.code, message: e.message });
    }
  });
  if (errors.length) {
    const first = errors[0]!;
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more failing rows, listed in details.errors)` : '';
    throw new CrmError(first.code as ErrorCode, `Row ${first.index}: ${first.message}${more}. Nothing was written.`, { index: first.index, errors });
  }
  return out;
}

/** Run fn per item inside a transaction; the first failure aborts it, naming the row, so nothing is half-written. */
async function eachRow<T, R>(items: T[], fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i++) {
    try {
      out.push(await fn(items[i]!, i));
    } catch (e) {
      if (e instanceof CrmError) {
        throw new CrmError(e.code, `Row ${i}: ${e.message}. Nothing was written.`, { ...e.details, index: i, errors: [{ index: i, code: e.code, message: e.message }] });
      }
      throw e;
    }
  }
  return out;
}

function changes(obj: ObjectDef, before: Record<string, unknown>, touched: Map<string, unknown>) {
  const diff: Record<string, [unknown, unknown]> = {};
  for (const [name, stored] of touched) {
    const f = obj.byName.get(name)!;
    if (before[f.column] !== stored) diff[name] = [decodeValue(f, before[f.column]), decodeValue(f, stored)];
  }
  return diff;
}

/**
 * Timeline entries on the records this one links to (a task's contact, an opportunity's company):
 * created, deleted, linked/unlinked, and status changes, so a contact's timeline shows its tasks
 * and deals moving. Written in the same transaction as the write itself.
 */
function relatedEntries(obj: ObjectDef, id: string, before: Record<string, unknown> | null, after: Record<string, unknown> | null): ActivityEntry[] {
  const out: ActivityEntry[] = [];
  const current = after ?? before!;
  const name = displayNameOfRow(obj, current);
  const base = { object: obj.name, id, name };
  const status = obj.byName.get('status');
  for (const f of obj.fields) {
    if (f.type !== 'RELATION' || f.target === 'users' || f.readOnly) continue;
    const was = (before?.[f.column] ?? null) as string | null;
    const now = (after?.[f.column] ?? null) as string | null;
    if (!before && now) out.push({ object: f.target!, recordId: now, action: 'related_created', payload: { ...base, field: f.name } });
    else if (!after && was) out.push({ object: f.target!, recordId: was, action: 'related_deleted', payload: { ...base, field: f.name } });
    else if (before && after && was !== now) {
      if (was) out.push({ object: f.target!, recordId: was, action: 'related_unlinked', payload: { ...base, field: f.name } });
      if (now) out.push({ object: f.target!, recordId: now, action: 'related_linked', payload: { ...base, field: f.name } });
    } else if (before && after && now && status && before[status.column] !== after[status.column])
      out.push({ object: f.target!, recordId: now, action: 'related_status_changed', payload: { ...base, field: f.name, from: before[status.column] ?? null, to: after[status.column] ?? null } });
  }
  return out;
}

export async function createRecord(ctx: Ctx, objectName: string, input: unknown): Promise<RecordData> {
  const [rec] = await createRecords(ctx, objectName, [input]).catch((e: unknown) => {
    // A single create reports its own message, without the batch's row prefix.
    if (e instanceof CrmError && e.details?.errors) {
      const first = (e.details.errors as RowError[])[0]!;
      throw new CrmError(e.code, first.message, { ...e.details, errors: undefined, index: undefined });
    }
    throw e;
  });
  return rec!;
}

export interface CreateOptions {
  /** Largest batch accepted (REST and MCP: 100; imports use larger internal batches). */
  max?: number;
  /** false: return only the ids (bulk loaders do not need the records back). */
  readBack?: boolean;
}

/**
 * The object written to. Where the schema follows other processes through notifications, a record
 * naming a field the cached object lacks has it read again first: another process may have created
 * the field a moment ago, before its notification arrived here.
 */
async function writableObject(ctx: Ctx, objectName: string, records: unknown[]): Promise<ObjectDef> {
  const obj = await resolveObject(ctx, objectName);
  if (!ctx.db.schemaToken) return obj;
  const unknown = records.some((r) => typeof r === 'object' && r !== null && Object.keys(r).some((k) => k !== 'id' && !obj.byName.has(k)));
  return unknown ? ((await getSchema(ctx, { verify: true })).objects.get(objectName) ?? obj) : obj;
}

export async function createRecords(ctx: Ctx, objectName: string, inputs: unknown[], opts: CreateOptions = {}): Promise<RecordData[]> {
  const obj = await writableObject(ctx, objectName, Array.isArray(inputs) ? inputs : []);
  checkBatch(inputs, opts.max);
  const prepared = validateRows(inputs, (input) => prepareWrite(obj, input, 'create'));
  if (opts.readBack === false) return (await inTransaction(ctx, obj, (trx) => insertPrepared(ctx, trx, obj, prepared))).map((id) => ({ id }));
  const stored = new Map<string, Record<string, unknown>>();
  const ids = await inTransaction(ctx, obj, (trx) => {
    // A transaction run again (see inTransaction) starts over.
    stored.clear();
    return insertPrepared(ctx, trx, obj, prepared, { stored });
  });
  // Committed: the records as the INSERT stored them, without reading them again (a row inserted
  // one by one after a refused batch has none: those are read back).
  return ids.every((id) => stored.has(id)) ? ids.map((id) => toRecord(obj, stored.get(id)!)) : readBack(ctx, obj, ids);
}

/**
 * Insert validated rows, with their stage history, search entries, match keys and activity, in the
 * caller's transaction. Relations are checked and rows inserted in bulk; when a bulk step fails it
 * is redone row by row, so the error names the failing row. `activity`: the entries are handed to
 * the caller, who writes them later. `inSavepoint`: the caller holds a savepoint around this call,
 * undone when it fails, and then creates the rows one by one (createInPieces): a refused insert is
 * simply reported (a savepoint of its own and the search for the row would be statements for nothing).
 * `verified`: see checkRelations.
 */
async function insertPrepared(
  ctx: Ctx,
  trx: Kysely<Tables>,
  obj: ObjectDef,
  prepared: Prepared[],
  opts: { activity?: ActivityEntry[]; inSavepoint?: boolean; verified?: Set<string>; stored?: Map<string, Record<string, unknown>> } = {},
): Promise<string[]> {
  try {
    await checkRelations(
      ctx,
      trx,
      obj,
      prepared.map((p) => p.row),
      opts.verified,
    );
  } catch (e) {
    if (!(e instanceof CrmError) || prepared.length === 1) throw e;
    await eachRow(prepared, async (p) => checkRelations(ctx, trx, obj, [p.row]));
  }
  const now = nowIso();
  // The validated rows themselves, completed (not copies: an import's batch made 5,000 copies of
  // 20 columns for the collector). A row inserted again (alone, after its batch was refused) is
  // completed again.
  const full = prepared.map((p) => {
    const r = p.row as Row & { id: string };
    r.id = p.id ?? newId();
    r.created_at = now;
    r.updated_at = now;
    r.created_by = ctx.actor.userId;
    return r;
  });
  // Where the database lets the rows be numbered ahead (SQLite, inside the write lock), each takes
  // the seq the table would give it: its match keys, which name it by seq, need not read it back.
  const first = await ctx.db.adapter.nextRowNumber?.(trx, obj.table);
  if (first !== undefined) full.forEach((r, j) => (r.seq = first + j));
  // Every row gets every column (absent = null), so one statement shape serves all chunks.
  const columns = new Set<string>();
  for (const r of full) for (const k in r) columns.add(k);
  const keys = [...columns];
  const chunk = ctx.db.adapter.rowsPerInsert(keys.length);
  for (let i = 0; i < full.length; i += chunk) {
    const part = full.slice(i, i + chunk);
    const insert = () => bulkInsert(dyn(trx), obj.table, keys, part, { returning: opts.stored !== undefined });
    try {
      const inserted = await (opts.inSavepoint ? insert() : ctx.db.adapter.attempt(trx, insert));
      if (opts.stored) {
        // The rows as stored (what reading them back after COMMIT would give: nothing else in the
        // transaction changes them), and their seqs, which the match keys are written under.
        const seqs = new Map<string, string | number | null>();
        for (const r of inserted) {
          opts.stored.set(r.id as string, r);
          seqs.set(r.id as string, r.seq as string | number | null);
        }
        for (const r of part) if (seqs.has(r.id)) r.seq = seqs.get(r.id)!;
      }
    } catch (e) {
      if (!ctx.db.adapter.isUniqueViolation(e)) throw e;
      if (opts.inSavepoint) throw duplicateError(ctx, obj, e, part.length === 1 ? prepared[i]!.row : undefined) ?? e;
      // Find the row: insert one by one (the failed statement wrote nothing).
      await eachRow(part, async (r, j) => {
        try {
          await dyn(trx).insertInto(obj.table).values(r).execute();
        } catch (err) {
          throw duplicateError(ctx, obj, err, prepared[i + j]!.row) ?? err;
        }
      }).catch((err: unknown) => {
        if (err instanceof CrmError && typeof err.details?.index === 'number') {
          const idx = i + (err.details.index as number);
          throw new CrmError(err.code, `Row ${idx}: ${(err.details.errors as RowError[])[0]!.message}. Nothing was written.`, {
            ...err.details,
            index: idx,
            errors: [{ index: idx, code: err.code, message: (err.details.errors as RowError[])[0]!.message }],
          });
        }
        throw err;
      });
    }
  }
  const ids = full.map((r) => r.id);
  if (obj.pipeline) {
    const col = obj.byName.get(obj.pipeline.field)!.column;
    const pl = obj.pipeline;
    const hist = full
      .filter((r) => r[col] !== null && r[col] !== undefined)
      .map((r) => ({ workspace_id: ctx.actor.workspaceId, pipeline_id: pl.id, record_id: r.id, step_key: r[col] as string, entered_at: now, left_at: null }));
    for (let i = 0; i < hist.length; i += 1000)
      await trx
        .insertInto('stage_history')
        .values(hist.slice(i, i + 1000))
        .execute();
  }
  await writeDerived(trx, ctx, obj, full, 'new', prepared.every((p) => p.keys) ? prepared.map((p) => p.keys!) : undefined, prepared.every((p) => p.doc) ? prepared.map((p) => p.doc!) : undefined);
  const entries: ActivityEntry[] = [
    ...ids.map((id, i) => ({ object: obj.name, recordId: id, action: 'created', payload: prepared[i]!.created ?? createdPayload(obj, prepared[i]!.touched.keys()) })),
    ...ids.flatMap((id, i) => relatedEntries(obj, id, null, prepared[i]!.row)),
  ];
  if (opts.activity) opts.activity.push(...entries);
  else await recordActivity(trx, ctx, entries);
  return ids;
}

/**
 * One transaction that takes records validated by prepareForImport a piece at a time, as the
 * caller makes them (an import's batch while its next rows are prepared): `add` inserts a piece
 * with its stage history, search entries and match keys in a savepoint of its own (a piece that
 * fails leaves nothing behind, and the caller may try its rows one by one), and the activity
 * entries of every piece are written last, before COMMIT: the feed's order is taken then. Each
 * statement is a round trip the transaction waits for, on a busy machine several milliseconds: the
 * savepoints are left to COMMIT rather than released, and a related record (the company a piece's
 * contacts name) is looked for once a transaction, not once a piece (read committed, a check
 * sees a moment of the transaction either way, not its end).
 */
export async function createInPieces<T>(ctx: Ctx, obj: ObjectDef, fn: (add: (prepared: Prepared[]) => Promise<string[]>) => Promise<T>): Promise<T> {
  return inTransaction(ctx, obj, async (trx) => {
    const activity: ActivityEntry[] = [];
    const verified = new Set<string>();
    const r = await fn(async (prepared) => {
      const entries: ActivityEntry[] = [];
      const ids = await ctx.db.adapter.attempt(trx, () => insertPrepared(ctx, trx, obj, prepared, { activity: entries, inSavepoint: true, verified }), { keep: true });
      activity.push(...entries);
      return ids;
    });
    await recordActivity(trx, ctx, activity);
    return r;
  });
}

/**
 * The search index and the duplicate-match keys follow every write, in its transaction. `before`:
 * 'new' for new records, else each row as it was stored before the write (undefined for one that
 * was not: a record an unmerge restores), which the match keys to remove are found from (writeKeys).
 */
export async function writeDerived(
  trx: Kysely<Tables>,
  ctx: Ctx,
  obj: ObjectDef,
  rows: Record<string, unknown>[],
  before: 'new' | (Record<string, unknown> | undefined)[],
  keys?: MatchKey[][],
  docs?: SearchDoc[],
) {
  const fresh = before === 'new';
  await indexRows(dyn(trx), ctx.db, obj, ctx.actor.workspaceId, rows, fresh, schemaCache.get(ctx) ?? loadedSchema(ctx), docs);
  await writeKeys(dyn(trx), obj, ctx.actor.workspaceId, rows, fresh ? undefined : before, keys);
}

/**
 * Records whose search documents hold this record's name (a company's contacts and deals) are
 * reindexed when the name changes, in the same transaction. Bounded by the records linked to it:
 * read and rewritten in batches, never the whole object.
 */
async function followRename(trx: Kysely<Tables>, ctx: Ctx, obj: ObjectDef, id: string, diff: Record<string, unknown>) {
  if (!obj.displayFields.some((n) => n in diff)) return;
  await indexReferrers(dyn(trx), ctx.db, schemaCache.get(ctx)!, ctx.actor.workspaceId, obj, [id]);
}

/** Before records are deleted: their search documents and match keys (found from `rows`, the records as stored). */
export async function removeDerived(trx: Kysely<Tables>, ctx: Ctx, obj: ObjectDef, rows: Record<string, unknown>[]) {
  await unindexRecords(
    dyn(trx),
    ctx.db,
    obj,
    ctx.actor.workspaceId,
    rows.map((r) => r.id as string),
  );
  await removeKeys(dyn(trx), obj, ctx.actor.workspaceId, rows);
}

/**
 * The schema preloaded by the call running a transaction, for code inside it. Per call, not per
 * context: two concurrent calls on one context (an MCP session's parallel tool calls) each keep
 * their own; kept per context, the first call to finish removed the other's ("schema not preloaded").
 */
const preloaded = new AsyncLocalStorage<WorkspaceSchema>();
const schemaCache = {
  get(ctx: Ctx): WorkspaceSchema | undefined {
    const schema = preloaded.getStore();
    return schema?.workspaceId === ctx.actor.workspaceId ? schema : undefined;
  },
};

/** The schema `obj` was resolved from: the one loaded last while it holds that very object, else read again. */
async function schemaOf(ctx: Ctx, obj: ObjectDef): Promise<WorkspaceSchema> {
  const known = loadedSchema(ctx);
  return known?.objects.get(obj.name) === obj ? known : getSchema(ctx);
}

/** Times a transaction the database aborted to break a conflict is run again before its caller hears 503. */
const WRITE_RERUNS = 3;

/**
 * Runs a write in a transaction of its own (SQLite: committed with the writes queued beside it,
 * see Db.groupWrite), with the workspace's schema preloaded. `obj`: the object the caller resolved;
 * when the schema loaded last still holds it, that schema is the one the write was validated
 * against, and is used without asking the database for its version again.
 *
 * A transaction the database aborted to break a conflict with another (PostgreSQL: a deadlock
 * between two writes locking the same records in another order, a serialization failure) wrote
 * nothing, and the other one goes on once it is gone: it is run again, up to WRITE_RERUNS times
 * after a short random pause (so that two victims do not meet again in step), before the caller
 * answers 503 with Retry-After. `fn` is therefore run again from the start: it keeps its state in
 * the transaction or in variables of its own, never in what it was given (see updateRecords and
 * upsertRecords). SQLite's writes take turns (BEGIN IMMEDIATE) and are never aborted so.
 */
async function inTransaction<T>(ctx: Ctx, obj: ObjectDef, fn: (trx: Kysely<Tables>) => Promise<T>): Promise<T> {
  const schema = await schemaOf(ctx, obj);
  const group = ctx.db.groupWrite;
  const run = () => preloaded.run(schema, () => (group && group.kysely === ctx.db.kysely ? group(fn) : ctx.db.kysely.transaction().execute(fn)));
  for (let rerun = 0; ; rerun++) {
    try {
      return await run();
    } catch (e) {
      const kind = ctx.db.adapter.classifyError(e);
      if (kind?.kind !== 'busy' || !kind.aborted || rerun >= WRITE_RERUNS) throw e;
      // 5-15 ms, then 10-30, 20-60: the other transaction commits meanwhile.
      const pause = 5 * 2 ** rerun * (1 + 2 * Math.random());
      ctx.log.warn(
        { object: obj.name, code: (e as { code?: string }).code, rerun: rerun + 1, pauseMs: Math.round(pause) },
        'write transaction aborted by the database to break a conflict; running it again',
      );
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}

async function readBack(ctx: Ctx, obj: ObjectDef, ids: string[]): Promise<RecordData[]> {
  const rows = await rowsByIds(ctx.db.kysely, obj, ids);
  return ids.map((id) => toRecord(obj, rows.get(id)!));
}

export function checkBatch(items: unknown[], max = MAX_BATCH): void {
  if (!Array.isArray(items) || items.length === 0) throw validationError('Send a non-empty array of records');
  if (items.length > max) throw validationError(`A batch holds at most ${max} records; got ${items.length}. Split it into several requests.`, { limit: max });
}

export interface UpdateInput {
  id: string;
  values: unknown;
}

export async function updateRecord(ctx: Ctx, objectName: string, id: string, values: unknown): Promise<RecordData> {
  const [rec] = await updateRecords(ctx, objectName, [{ id, values }]).catch((e: unknown) => {
    if (e instanceof CrmError && e.details?.errors) throw new CrmError(e.code, (e.details.errors as RowError[])[0]!.message, { ...e.details, errors: undefined, index: undefined });
    throw e;
  });
  return rec!;
}

export async function updateRecords(ctx: Ctx, objectName: string, updates: UpdateInput[], opts: CreateOptions = {}): Promise<RecordData[]> {
  const obj = await writableObject(ctx, objectName, Array.isArray(updates) ? updates.map((u) => u?.values) : []);
  checkBatch(updates, opts.max);
  const prepared = validateRows(updates, (u) => {
    if (typeof u.id !== 'string' || !u.id) throw validationError("Each update needs the record's 'id'");
    return prepareWrite(obj, u.values, 'update');
  });
  const ids = updates.map((u) => u.id);
  await inTransaction(ctx, obj, async (trx) => {
    const before = await rowsByIds(trx, obj, ids);
    const activity: ActivityEntry[] = [];
    // Copies: a transaction run again after a conflict starts from the validated input, not from
    // what a step's defaults or a completion stamp made of it the first time.
    const attempt = prepared.map((p) => ({ ...p, row: { ...p.row }, touched: new Map(p.touched) }));
    await eachRow(attempt, async (p, i) => {
      await checkpoint(ctx, i, prepared.length, `updating ${obj.name}`);
      const id = ids[i]!;
      const old = before.get(id);
      if (!old) throw notFound(obj, id);
      await checkRelations(ctx, trx, obj, [p.row]);
      stampCompletion(obj, p, old[obj.byName.get('status')?.column ?? 'status']);
      const stageCol = obj.pipeline ? obj.byName.get(obj.pipeline.field)!.column : undefined;
      const moved = stageCol !== undefined && p.row[stageCol] !== undefined && p.row[stageCol] !== old[stageCol];
      if (moved) enterStep(obj, p, p.row[stageCol!] as string);
      const diff = changes(obj, old, p.touched);
      if (Object.keys(diff).length === 0) return;
      try {
        await updateRow(trx, obj, id, p.row);
      } catch (e) {
        throw duplicateError(ctx, obj, e, p.row) ?? e;
      }
      if (moved) await moveHistory(trx, ctx, obj, id, old[stageCol!] as string | null, p.row[stageCol!] as string);
      await writeDerived(trx, ctx, obj, [{ ...old, ...p.row }], [old]);
      await followRename(trx, ctx, obj, id, diff);
      // Later updates in the same batch see this one.
      before.set(id, { ...old, ...p.row });
      activity.push(
        { object: obj.name, recordId: id, action: 'updated', payload: { changes: diff } },
        ...(moved ? pipelineMove(obj, id, old[stageCol!], p.row[stageCol!]) : []),
        ...relatedEntries(obj, id, old, { ...old, ...p.row }),
      );
    });
    await checkpoint(ctx, prepared.length, prepared.length, `updated ${obj.name}`);
    await recordActivity(trx, ctx, activity);
  });
  return opts.readBack === false ? ids.map((id) => ({ id })) : readBack(ctx, obj, ids);
}

/** One record's change: field -> [before, after], the fields that changed only. */
export interface RecordChange {
  id: string;
  changes: Record<string, [unknown, unknown]>;
}

/** What a bulk update changed (a dry run's answer): how many records, how many per field, the first few with their diffs. */
export interface ManyChanges {
  changed: number;
  byField: Record<string, number>;
  /** The first MANY_SAMPLES records that changed, in the order of the ids given. */
  samples: RecordChange[];
}

export const MANY_SAMPLES = 20;

/**
 * The columns updateMany reads: those the diffs, a task's and a pipeline's rules, the timeline
 * entries (display names, relations) and, when the write may change them, the search documents and
 * match keys are made of. Not the whole row: most of a record's columns play no part in a bulk update.
 */
function updateColumns(obj: ObjectDef, p: Prepared): string[] {
  const fields = new Set(p.touched.keys());
  if (obj.pipeline && fields.has(obj.pipeline.field)) for (const s of obj.pipeline.steps) for (const n of Object.keys(s.defaults)) fields.add(n);
  if (obj.name === 'tasks') fields.add('completed_at');
  fields.add('status');
  const touched = [...fields].flatMap((n) => obj.byName.get(n)?.column ?? []);
  const cols = new Set([...displayColumns(obj), ...touched]);
  for (const f of obj.fields) if (f.type === 'RELATION' && !f.readOnly) cols.add(f.column);
  for (const derived of [docColumns(obj), [...keyColumns(obj)]]) if (derived.some((c) => touched.includes(c))) for (const c of derived) cols.add(c);
  return [...cols];
}

/** Ids per statement of a set-based update: far below either dialect's parameter limit. */
const SET_CHUNK = 1000;

/**
 * Whether the same values written to many records make the same change on each, whose timeline
 * entry SQL can build from the row alone: no pipeline step (its defaults and stage history) or task
 * status (its completion stamp), no status or relation (entries on the related records), and only
 * fields whose stored value is the value shown (not a boolean, a currency or a multi-select).
 */
function sameChangeForAll(obj: ObjectDef, p: Prepared): boolean {
  for (const name of p.touched.keys()) {
    const f = obj.byName.get(name)!;
    if (name === 'status' || name === obj.pipeline?.field || f.type === 'RELATION' || f.type === 'MULTI_SELECT' || storageOf(f.type) === 'integer') return false;
  }
  return true;
}

/**
 * The same values written to many records (a bulk update), set-based, in one transaction, with
 * their stage history, search documents and match keys (rewritten only when the fields they are
 * made of change) and timeline entries. Returns what changed; a dry run is this, rolled back.
 */
export async function updateMany(ctx: Ctx, obj: ObjectDef, records: { id: string; seq: number }[], values: unknown): Promise<ManyChanges> {
  const p = prepareWrite(obj, values, 'update');
  if (sameChangeForAll(obj, p)) return inTransaction(ctx, obj, (trx) => updateAllInSql(ctx, trx, obj, records, p));
  const ids = records.map((r) => r.id);
  return inTransaction(ctx, obj, (trx) => updateEachRecord(ctx, trx, obj, ids, p));
}

/**
 * The same change on every record, in SQL, a chunk of records at a time (looked up by seq, the
 * table's own key): the timeline entries with their old values (SQLite: INSERT … SELECT, the
 * payload built in SQL), then the records that differ (UPDATE, RETURNING what their search
 * documents and match keys are made of when the write changes them). JavaScript reads the old
 * values of the first records changed (a dry run's samples), of all of them when several fields are
 * written (to count the changes per field), and on PostgreSQL, which appends the entries last
 * (changesPayload), to make the entries.
 */
async function updateAllInSql(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, records: { id: string; seq: number }[], p: Prepared): Promise<ManyChanges> {
  await checkRelations(ctx, trx, obj, [p.row]);
  const fields = [...p.touched.keys()].map((n) => obj.byName.get(n)!);
  const written = new Set(fields.map((f) => f.column));
  const differs = (eb: any) => eb.or(fields.map((f) => eb(f.column, 'is distinct from', p.row[f.column])));
  const touches = (cols: Iterable<string>) => [...cols].some((c) => written.has(c));
  const docs = touches(docColumns(obj));
  const keys = touches(keyColumns(obj));
  const returned = docs || keys ? [...new Set(['id', ...(docs ? docColumns(obj) : []), ...(keys ? ['seq', ...keyColumns(obj)] : [])])] : undefined;
  const { workspaceId, userId, via } = ctx.actor;
  const at = nowIso();
  const payload = ctx.db.adapter.changesPayload?.(fields.map((f) => ({ name: f.name, column: sql.ref(f.column), value: p.row[f.column]! })));
  const byField: Record<string, number> = {};
  const samples: RecordChange[] = [];
  const activity: ActivityEntry[] = [];
  const after: Record<string, unknown>[] = [];
  // With match keys to rewrite: each changed record's key columns before the write, which the keys
  // to remove are found from (writeKeys; there is no index of keys by record).
  const before: Record<string, unknown>[] = [];
  let changed = 0;
  const chunk = Math.min(SET_CHUNK, ctx.db.adapter.textInMax);
  for (let i = 0; i < records.length; i += chunk) {
    await checkpoint(ctx, i, records.length, `updating ${obj.name}`);
    // A checkpoint a chunk: its statements take milliseconds, so a cancellation is heard as soon.
    const part = records.slice(i, i + chunk);
    const seqs = part.map((r) => r.seq);
    const chosen = (eb: any) => eb.and([eb('seq', 'in', seqs), differs(eb)]);
    // The old values, read once: for the diffs (samples, counts per field, PostgreSQL's entries)
    // and, when match keys change, the key columns their old keys are found from.
    const diffs = !payload || fields.length > 1 || samples.length < MANY_SAMPLES;
    const old =
      diffs || keys
        ? new Map(
            (
              (await dyn(trx)
                .selectFrom(obj.table)
                .select([...new Set(['id', ...written, ...(keys ? keyColumns(obj) : [])])])
                .where(chosen)
                .execute()) as Record<string, unknown>[]
            ).map((r) => [r.id as string, r]),
          )
        : undefined;
    if (old && diffs) {
      for (const { id } of part) {
        const row = old.get(id);
        if (!row) continue;
        const diff = changes(obj, row, p.touched);
        for (const name of Object.keys(diff)) byField[name] = (byField[name] ?? 0) + 1;
        if (samples.length < MANY_SAMPLES) samples.push({ id, changes: diff });
        if (!payload) activity.push({ object: obj.name, recordId: id, action: 'updated', payload: { changes: diff } });
      }
    }
    if (payload)
      await dyn(trx)
        .insertInto('activity')
        .columns(['workspace_id', 'object', 'record_id', 'action', 'payload', 'user_id', 'via', 'created_at'])
        .expression(
          dyn(trx)
            .selectFrom(obj.table)
            .select([
              sql`${workspaceId}`.as('workspace_id'),
              sql`${obj.name}`.as('object'),
              'id',
              sql`'updated'`.as('action'),
              payload.as('payload'),
              sql`${userId}`.as('user_id'),
              sql`${via}`.as('via'),
              sql`${at}`.as('created_at'),
            ])
            .where(chosen),
        )
        .execute();
    const update = dyn(trx)
      .updateTable(obj.table)
      .set({ ...p.row, updated_at: at })
      .where(chosen);
    try {
      if (returned) {
        const rows = (await update.returning(returned).execute()) as Record<string, unknown>[];
        after.push(...rows);
        if (keys) for (const r of rows) before.push(old!.get(r.id as string)!);
        changed += rows.length;
      } else changed += Number((await update.executeTakeFirst()).numUpdatedRows);
    } catch (e) {
      throw duplicateError(ctx, obj, e, p.row) ?? e;
    }
  }
  if (fields.length === 1 && changed) byField[fields[0]!.name] = changed;
  if (after.length) await rewriteDerived(ctx, trx, obj, new Set(Object.keys(byField)), after, before, records.length);
  await checkpoint(ctx, records.length, records.length, `updated ${obj.name}`);
  await recordActivity(trx, ctx, activity);
  return { changed, byField, samples };
}

/**
 * Search documents, match keys and the documents that hold a renamed record's name, after a bulk
 * update, each only where the fields it is made of changed (a status or a date changes none).
 * `after`: the changed records as now stored, with at least the columns those are made of;
 * `before`: each as it was, with at least its key columns (the match keys to remove are found from it).
 */
async function rewriteDerived(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, changedFields: Set<string>, after: Record<string, unknown>[], before: Record<string, unknown>[], total: number) {
  const schema = schemaCache.get(ctx)!;
  const columns = new Set([...changedFields].map((n) => obj.byName.get(n)!.column));
  const touches = (cols: Iterable<string>) => [...cols].some((c) => columns.has(c));
  if (touches(docColumns(obj))) {
    await checkpoint(ctx, total - 1, total, `indexing ${obj.name}`);
    await indexRows(dyn(trx), ctx.db, obj, ctx.actor.workspaceId, after, false, schema, undefined, columns);
  }
  if (touches(keyColumns(obj))) {
    await checkpoint(ctx, total - 1, total, `updating ${obj.name}`);
    await writeKeys(dyn(trx), obj, ctx.actor.workspaceId, after, before);
  }
  if (obj.displayFields.some((n) => changedFields.has(n))) {
    const renamed = after.map((r) => r.id as string);
    for (let i = 0; i < renamed.length; i += SET_CHUNK) await indexReferrers(dyn(trx), ctx.db, schema, ctx.actor.workspaceId, obj, renamed.slice(i, i + SET_CHUNK));
  }
}

/**
 * Records whose change differs one from another (a pipeline step's defaults, a task's completion
 * stamp) or whose timeline needs more than the row (entries on related records): read, diffed and
 * their entries made in JavaScript; written by one UPDATE per chunk of ids for the records that get
 * the same stored values (all of them, unless a step's defaults or a completion stamp differ), their
 * stage history and timeline entries in multi-row statements.
 */
async function updateEachRecord(ctx: Ctx, trx: Kysely<Tables>, obj: ObjectDef, ids: string[], p: Prepared): Promise<ManyChanges> {
  const stageField = obj.pipeline ? obj.byName.get(obj.pipeline.field) : undefined;
  // Only a task's status and a pipeline step make one record's write differ from another's.
  const perRecord = (obj.name === 'tasks' && obj.system && p.touched.has('status')) || (stageField !== undefined && p.touched.has(stageField.name));
  const readColumns = updateColumns(obj, p);
  await checkRelations(ctx, trx, obj, [p.row]);
  const statusCol = obj.byName.get('status')?.column ?? 'status';
  const stageCol = stageField?.column;
  const out: RecordChange[] = [];
  const after: Record<string, unknown>[] = [];
  const olds: Record<string, unknown>[] = [];
  // Records that get the same stored values share a statement: every one, unless a step's
  // defaults or a task's completion stamp make some differ.
  const groups = new Map<string, { row: Row; ids: string[] }>();
  const moves: { id: string; from: string | null; to: string }[] = [];
  const byField: Record<string, number> = {};
  const activity: ActivityEntry[] = [];
  // Progress in two halves: reading the records and computing their changes, then writing.
  const total = 2 * ids.length;
  for (let i = 0; i < ids.length; i += SET_CHUNK) {
    await checkpoint(ctx, i, total, `updating ${obj.name}`);
    const part = ids.slice(i, i + SET_CHUNK);
    const before = await rowsByIds(trx, obj, part, readColumns);
    for (const [j, id] of part.entries()) {
      // A turn of the event loop now and then (checkpoint): a cancellation is heard, other requests run.
      if (j > 0 && j % 100 === 0) await checkpoint(ctx, i + j, total, `updating ${obj.name}`);
      const old = before.get(id);
      if (!old) throw notFound(obj, id);
      const q: Prepared = perRecord ? { row: { ...p.row }, touched: new Map(p.touched) } : p;
      stampCompletion(obj, q, old[statusCol]);
      const moved = stageCol !== undefined && q.row[stageCol] !== undefined && q.row[stageCol] !== old[stageCol];
      if (moved) enterStep(obj, q, q.row[stageCol!] as string);
      const diff = changes(obj, old, q.touched);
      if (Object.keys(diff).length === 0) continue;
      for (const name of Object.keys(diff)) byField[name] = (byField[name] ?? 0) + 1;
      const key = perRecord ? JSON.stringify(q.row) : '';
      const g = groups.get(key);
      if (g) g.ids.push(id);
      else groups.set(key, { row: q.row, ids: [id] });
      const now = { ...old, ...q.row };
      after.push(now);
      olds.push(old);
      out.push({ id, changes: diff });
      if (moved) moves.push({ id, from: old[stageCol!] as string | null, to: q.row[stageCol!] as string });
      activity.push(
        { object: obj.name, recordId: id, action: 'updated', payload: { changes: diff } },
        ...(moved ? pipelineMove(obj, id, old[stageCol!], q.row[stageCol!]) : []),
        ...relatedEntries(obj, id, old, now),
      );
    }
  }
  const result = { changed: out.length, byField, samples: out.slice(0, MANY_SAMPLES) };
  if (!out.length) return result;
  const at = nowIso();
  let done = 0;
  for (const g of groups.values())
    for (let i = 0; i < g.ids.length; i += SET_CHUNK) {
      await checkpoint(ctx, ids.length + Math.floor((done * ids.length) / out.length), total, `updating ${obj.name}`);
      const part = g.ids.slice(i, i + SET_CHUNK);
      try {
        await dyn(trx)
          .updateTable(obj.table)
          .set({ ...g.row, updated_at: at })
          .where('id', 'in', part)
          .execute();
      } catch (e) {
        throw duplicateError(ctx, obj, e, g.row) ?? e;
      }
      done += part.length;
    }
  if (moves.length && obj.pipeline) {
    const pl = obj.pipeline;
    const leaving = moves.filter((m) => m.from !== null).map((m) => m.id);
    for (let i = 0; i < leaving.length; i += SET_CHUNK)
      await trx
        .updateTable('stage_history')
        .set({ left_at: at })
        .where('pipeline_id', '=', pl.id)
        .where('record_id', 'in', leaving.slice(i, i + SET_CHUNK))
        .where('left_at', 'is', null)
        .execute();
    const entering = moves.map((m) => ({ workspace_id: ctx.actor.workspaceId, pipeline_id: pl.id, record_id: m.id, step_key: m.to, entered_at: at, left_at: null }));
    for (let i = 0; i < entering.length; i += SET_CHUNK)
      await trx
        .insertInto('stage_history')
        .values(entering.slice(i, i + SET_CHUNK))
        .execute();
  }
  await rewriteDerived(ctx, trx, obj, new Set(Object.keys(byField)), after, olds, total);
  await checkpoint(ctx, total, total, `updated ${obj.name}`);
  await recordActivity(trx, ctx, activity);
  return result;
}

export interface UpsertResult {
  data: RecordData[];
  results: { index: number; id: string; action: 'created' | 'updated' }[];
}

/** Create or update by 'id' or by a unique field (e.g. email). All rows or none. */
export async function upsertRecords(ctx: Ctx, objectName: string, inputs: unknown[], key = 'id'): Promise<UpsertResult> {
  const obj = await writableObject(ctx, objectName, Array.isArray(inputs) ? inputs : []);
  checkBatch(inputs);
  const keyField = obj.byName.get(key);
  if (!keyField?.unique) {
    const uniques = obj.fields.filter((f) => f.unique).map((f) => f.name);
    throw validationError(`Upsert key '${key}' must be 'id' or a unique field of ${obj.name}: ${uniques.join(', ')}`, { validKeys: uniques });
  }
  const keys = validateRows(inputs, (input) => {
    const v = typeof input === 'object' && input !== null ? (input as Record<string, unknown>)[key] : undefined;
    if (v === undefined || v === null || v === '') {
      if (key === 'id') return null; // no id: create
      throw new CrmError('MISSING_REQUIRED_FIELD', `Field '${key}' (the upsert key) is required in every record`);
    }
    return key === 'id' ? String(v) : encodeValue(keyField, v);
  });
  const results: UpsertResult['results'] = [];
  await inTransaction(ctx, obj, async (trx) => {
    // A transaction run again after a conflict answers each record once.
    results.length = 0;
    const activity: ActivityEntry[] = [];
    await eachRow(inputs, async (input, i) => {
      const k = keys[i];
      const existing = k === null ? undefined : ((await dyn(trx).selectFrom(obj.table).selectAll().where(keyField.column, '=', k).executeTakeFirst()) as Record<string, unknown> | undefined);
      if (!existing) {
        if (key === 'id' && k !== null) throw notFound(obj, String(k));
        const p = prepareWrite(obj, input, 'create');
        await checkRelations(ctx, trx, obj, [p.row]);
        const id = await insertRow(ctx, trx, obj, p.row);
        if (obj.pipeline) await moveHistory(trx, ctx, obj, id, null, p.row[obj.byName.get(obj.pipeline.field)!.column] as string);
        await writeDerived(trx, ctx, obj, [{ ...p.row, id }], 'new');
        results.push({ index: i, id, action: 'created' });
        activity.push({ object: obj.name, recordId: id, action: 'created', payload: createdPayload(obj, p.touched.keys()) }, ...relatedEntries(obj, id, null, p.row));
      } else {
        const values = { ...(input as Record<string, unknown>) };
        delete values.id;
        const p = prepareWrite(obj, values, 'update');
        await checkRelations(ctx, trx, obj, [p.row]);
        const id = existing.id as string;
        const stageCol = obj.pipeline ? obj.byName.get(obj.pipeline.field)!.column : undefined;
        const moved = stageCol !== undefined && p.row[stageCol] !== undefined && p.row[stageCol] !== existing[stageCol];
        if (moved) enterStep(obj, p, p.row[stageCol!] as string);
        const diff = changes(obj, existing, p.touched);
        if (Object.keys(diff).length) {
          try {
            await updateRow(trx, obj, id, p.row);
          } catch (e) {
            throw duplicateError(ctx, obj, e, p.row) ?? e;
          }
          if (moved) await moveHistory(trx, ctx, obj, id, existing[stageCol!] as string | null, p.row[stageCol!] as string);
          await writeDerived(trx, ctx, obj, [{ ...existing, ...p.row }], [existing]);
          await followRename(trx, ctx, obj, id, diff);
          activity.push(
            { object: obj.name, recordId: id, action: 'updated', payload: { changes: diff } },
            ...(moved ? pipelineMove(obj, id, existing[stageCol!], p.row[stageCol!]) : []),
            ...relatedEntries(obj, id, existing, { ...existing, ...p.row }),
          );
        }
        results.push({ index: i, id, action: 'updated' });
      }
    });
    await recordActivity(trx, ctx, activity);
  });
  return {
    data: await readBack(
      ctx,
      obj,
      results.map((r) => r.id),
    ),
    results,
  };
}

// ---------------------------------------------------------------------------------------------
// Deleting

/**
 * Records of `other` whose relation `column` points at `ids` (being deleted) point at nothing now.
 * A person's name key holds its company (keysOf): when `column` is one keys are made of, the keys
 * of the records unlinked follow, found from their values before (writeKeys), a batch at a time.
 */
async function unlinkReferrers(trx: Kysely<Tables>, ctx: Ctx, other: ObjectDef, column: string, ids: string[]): Promise<void> {
  const keyed = keyColumns(other);
  if (keyed.has(column))
    for await (const rows of rowBatches(dyn(trx), other, ['id', ...keyed], { batch: 2000, where: { column, ids } }))
      await writeKeys(
        dyn(trx),
        other,
        ctx.actor.workspaceId,
        rows.map((r) => ({ ...r, [column]: null })),
        rows,
      );
  await repoint(trx, other, column, ids, null);
}

export async function deleteRecord(ctx: Ctx, objectName: string, id: string): Promise<{ id: string; deleted: true }> {
  const r = await deleteRecords(ctx, objectName, [id]);
  if (r.not_found.length) throw notFound(await resolveObject(ctx, objectName), id);
  return { id, deleted: true };
}

/** Deletes what exists, reports what did not; one transaction. Links to the deleted records are cleared. */
export async function deleteRecords(ctx: Ctx, objectName: string, ids: string[]): Promise<{ deleted: string[]; not_found: string[] }> {
  const obj = await resolveObject(ctx, objectName);
  if (!Array.isArray(ids) || ids.length === 0 || ids.some((x) => typeof x !== 'string')) throw validationError('Send the ids to delete: {"ids": ["..."]}');
  if (ids.length > MAX_BATCH) throw validationError(`Delete at most ${MAX_BATCH} records per request; got ${ids.length}`, { limit: MAX_BATCH });
  const unique = [...new Set(ids)];
  const schema = await schemaOf(ctx, obj);
  return inTransaction(ctx, obj, async (trx) => {
    const rows = await rowsByIds(trx, obj, unique);
    const present = unique.filter((id) => rows.has(id));
    if (present.length) {
      await deleteRows(trx, obj, present);
      await removeDerived(
        trx,
        ctx,
        obj,
        present.map((id) => rows.get(id)!),
      );
      if (obj.pipeline)
        await trx.updateTable('stage_history').set({ left_at: nowIso() }).where('pipeline_id', '=', obj.pipeline.id).where('record_id', 'in', present).where('left_at', 'is', null).execute();
      // Documents that held these records' names (a deleted company's contacts) are rewritten
      // without them, while the relation fields still find them.
      await indexReferrers(dyn(trx), ctx.db, schema, ctx.actor.workspaceId, obj, present);
      // Relation fields elsewhere that pointed at these records become empty.
      for (const other of schema.objects.values()) for (const f of other.fields) if (f.type === 'RELATION' && f.target === obj.name) await unlinkReferrers(trx, ctx, other, f.column, present);
      await trx
        .deleteFrom('associations')
        .where('workspace_id', '=', ctx.actor.workspaceId)
        .where((eb) => eb.or([eb.and([eb('a_object', '=', obj.name), eb('a_id', 'in', present)]), eb.and([eb('b_object', '=', obj.name), eb('b_id', 'in', present)])]))
        .execute();
      await recordActivity(trx, ctx, [
        ...present.map((id) => ({ object: obj.name, recordId: id, action: 'deleted', payload: { name: displayNameOfRow(obj, rows.get(id)!) } })),
        ...present.flatMap((id) => relatedEntries(obj, id, rows.get(id)!, null)),
      ]);
    }
    return { deleted: present, not_found: unique.filter((id) => !rows.has(id)) };
  });
}
