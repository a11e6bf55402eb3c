import { stringify } from 'csv-stringify/sync';
import type { Kysely } from 'kysely';
import { budgetLimits, enterLane, type HeavySlot, inSlot, timeoutError, tooExpensive } from './budget.js';
import type { Ctx } from './context.js';
import { isPerson, keysOf, keysWithRecords, normalName } from './dedupe-keys.js';
import { CrmError, validationError } from './errors.js';
import type { FieldDef } from './field-types.js';
import type { FilterGroup } from './filters.js';
import { requireAdmin } from './permissions.js';
import { createInPieces, createPrepared, createRecords, listRecords, type Prepared, prepareDocuments, prepareForImport, type RecordData } from './records.js';
import { getSchema, type ObjectDef, resolveField, resolveObject } from './schema.js';
import { cancelledError, checkpoint, nextTurn, TURN_ROWS, throwIfCancelled } from './work.js';

/**
 * Import (with duplicate detection, per-row results) and export (streamed, JSON or CSV).
 */

export const IMPORT_BATCH = 50;
export const EXPORT_DEFAULT = 1000;

export interface ImportError {
  index: number;
  code: string;
  message: string;
}

export interface ImportResult {
  object_name: string;
  created: number;
  duplicates: number;
  failed: number;
  errors: ImportError[];
}

export interface ImportDetail extends ImportResult {
  /** Per row: what happened (for the CLI's rejects file and the MCP tool). */
  rows: { index: number; status: 'created' | 'duplicate' | 'failed'; id?: string; duplicate_of?: string; reason?: string }[];
}

/**
 * Duplicate evidence that is strong enough to skip a row on import: the same email, phone, domain,
 * or name at the same company; for a person without a company, the same full name of a person
 * without one (the document's "name matching"). The same name at another company is not: two
 * people may share a name, so the row is created and the detection scan lists the pair.
 */
const IMPORT_KINDS = new Set(['email', 'phone', 'domain', 'name']);

type AnyDb = Kysely<any>;

async function existingKeys(ctx: Ctx, obj: ObjectDef, keys: { kind: string; key: string }[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const byKind = new Map<string, string[]>();
  for (const k of keys) {
    const list = byKind.get(k.kind);
    if (list) list.push(k.key);
    else byKind.set(k.kind, [k.key]);
  }
  // Each kind's lookup a statement, all sent at once: where statements run beside this thread
  // (PostgreSQL) they run on connections of their own, and the plan waits for the slowest, not the sum.
  const { textIn, textInMax } = ctx.db.adapter;
  const lookups: { kind: string; keys: string[] }[] = [];
  for (const [kind, all] of byKind) {
    const list = [...new Set(all)];
    for (let i = 0; i < list.length; i += textInMax) lookups.push({ kind, keys: list.slice(i, i + textInMax) });
  }
  const found = await Promise.all(
    lookups.map(
      ({ kind, keys }) =>
        keysWithRecords(ctx.db.kysely as unknown as AnyDb, ctx.actor.workspaceId, obj)
          .select(['k.key', 'r.id as record_id'])
          .where('k.kind', '=', kind)
          .where((eb) => textIn(eb.ref('k.key'), keys))
          .execute() as Promise<{ key: string; record_id: string }[]>,
    ),
  );
  lookups.forEach(({ kind }, i) => {
    for (const r of found[i]!) if (!out.has(`${kind}:${r.key}`)) out.set(`${kind}:${r.key}`, r.record_id);
  });
  return out;
}

/**
 * The records an import found or created by name so far (`target object` NUL `normalised name` ->
 * id): a file names the same few companies in every batch, and each is looked up once per import.
 */
export type NameCache = Map<string, string>;

/** The `<relation>_name` columns an import row may hold instead of the relation's id (company_name), with their relation fields. */
const helperCache = new WeakMap<ObjectDef, Map<string, FieldDef>>();
function nameHelpers(obj: ObjectDef): Map<string, FieldDef> {
  let keys = helperCache.get(obj);
  if (!keys) {
    keys = new Map();
    for (const f of obj.fields) if (f.type === 'RELATION' && !f.readOnly && f.target !== 'users' && !obj.byName.has(`${f.name}_name`)) keys.set(`${f.name}_name`, f);
    helperCache.set(obj, keys);
  }
  return keys;
}

/**
 * `company_name: "Acme"` on an import row (in `names[i]`, apart from the row: the row holds fields
 * only): the company with that name (created when there is none), set on the row.
 */
async function resolveNames(ctx: Ctx, obj: ObjectDef, rows: Record<string, unknown>[], names: (Record<string, unknown> | undefined)[], known?: NameCache): Promise<void> {
  if (!names.some((n) => n !== undefined)) return;
  const schema = await getSchema(ctx);
  for (const [key, f] of nameHelpers(obj)) {
    // The name each row gives, for the rows that name one and do not give the id itself.
    const given = rows.map((r, i) => {
      const v = names[i]?.[key];
      return typeof v === 'string' && r[f.name] === undefined ? v : undefined;
    });
    if (!given.some((v) => v?.trim())) continue;
    const target = schema.objects.get(f.target!)!;
    const person = target.displayFields.length >= 2;
    const ids = new Map<string, string>();
    const original = new Map<string, string>();
    // A batch names few companies many times: each spelling normalised once.
    const normal = new Map<string, string>();
    const normalOf = (v: string) => {
      let n = normal.get(v);
      if (n === undefined) normal.set(v, (n = normalName(v, !person)));
      return n;
    };
    for (const v of given) {
      if (!v?.trim()) continue;
      const n = normalOf(v);
      if (!original.has(n)) original.set(n, v.trim());
    }
    const cacheKey = (n: string) => `${target.name}\u0000${n}`;
    if (known)
      for (const n of original.keys()) {
        const id = known.get(cacheKey(n));
        if (id !== undefined) ids.set(n, id);
      }
    const unknown = [...original.keys()].filter((n) => !ids.has(n));
    const lookup = keysWithRecords(ctx.db.kysely as unknown as AnyDb, ctx.actor.workspaceId, target)
      .select(['k.key', 'r.id as record_id'])
      .where('k.kind', '=', 'name');
    if (target.byName.get('company')?.type === 'RELATION') {
      // The name key of a record with a company (a person, a deal) ends with it: any company will do.
      for (const n of unknown) {
        const hit = (await lookup.where('k.key', '>=', `${n}|`).where('k.key', '<', `${n}|\uffff`).limit(1).executeTakeFirst()) as { record_id: string } | undefined;
        if (hit) ids.set(n, hit.record_id);
      }
    } else {
      // Without a company the key is "name|": found all at once.
      const { textIn, textInMax } = ctx.db.adapter;
      for (let i = 0; i < unknown.length; i += textInMax) {
        const rows = (await lookup
          .where((eb) =>
            textIn(
              eb.ref('k.key'),
              unknown.slice(i, i + textInMax).map((n) => `${n}|`),
            ),
          )
          .execute()) as { key: string; record_id: string }[];
        for (const r of rows) {
          const n = r.key.slice(0, -1);
          if (!ids.has(n)) ids.set(n, r.record_id);
        }
      }
    }
    if (target.name === 'companies') {
      const create = unknown.filter((n) => !ids.has(n));
      if (create.length) {
        const made = await createRecords(
          ctx,
          'companies',
          create.map((n) => ({ name: original.get(n)! })),
          { max: 10_000, readBack: false },
        );
        create.forEach((n, i) => ids.set(n, made[i]!.id));
      }
    }
    if (known) for (const n of unknown) if (ids.has(n)) known.set(cacheKey(n), ids.get(n)!);
    given.forEach((v, i) => {
      if (v === undefined) return;
      const id = ids.get(normalOf(v));
      if (id) rows[i]![f.name] = id;
      else rows[i]!.__error = `No ${target.name} record named '${v}' for '${key}'`;
    });
  }
}

/**
 * A batch of an import, validated and with its names resolved (companies named by `company_name`
 * found or created), its match keys computed and looked up in the workspace, and the search
 * documents of the rows not found there made: everything before the decision of which rows are new.
 */
export interface ImportPlan {
  obj: ObjectDef;
  rows: number;
  /** Rows that failed validation; the rest are candidates. */
  failed: ImportError[];
  candidates: { index: number; prepared: Prepared; keys: { kind: string; key: string; field: string }[]; ids: string[] }[];
  /** The candidates' keys already in the workspace when the plan was made: `kind:key` -> record id. */
  existing: Map<string, string>;
}

/**
 * Validate a batch of import rows, resolve the names they use and look their keys up. A file
 * import plans its next batch while the previous one's transaction is in the database: the plan
 * then cannot see that batch's records, and applyImport is given their keys (`earlier`). Long
 * loops take turns with the event loop (nextTurn), so the transaction in progress is not held up.
 */
export async function planImport(ctx: Ctx, objectName: string, records: unknown, max = IMPORT_BATCH, names?: NameCache): Promise<ImportPlan> {
  requireAdmin(ctx, 'import records');
  const obj = await resolveObject(ctx, objectName);
  if (!Array.isArray(records)) throw validationError('Send {"records": [ {...}, ... ]}');
  if (records.length === 0) throw validationError('"records" is empty');
  if (records.length > max) throw validationError(`An import request holds at most ${max} records; got ${records.length}. Split the file into batches of ${max}.`, { limit: max });

  // Each row copied with its fields only; the names it gives for relations (company_name) apart,
  // for resolveNames (deleting them from the row instead left every row a slow dictionary object).
  const helpers = nameHelpers(obj);
  const given: (Record<string, unknown> | undefined)[] = [];
  const rows: Record<string, unknown>[] = records.map((r, i) => {
    if (!r || typeof r !== 'object' || Array.isArray(r)) return { __error: 'Each record must be a JSON object' };
    const row: Record<string, unknown> = {};
    for (const k of Object.keys(r)) {
      const v = (r as Record<string, unknown>)[k];
      if (!helpers.has(k)) row[k] = v;
      else (given[i] ??= {})[k] = v;
    }
    return row;
  });
  given.length = rows.length;
  // Names may create records (company_name): not after the caller gave up.
  throwIfCancelled(ctx);
  await resolveNames(ctx, obj, rows, given, names);

  const plan: ImportPlan = { obj, rows: rows.length, failed: [], candidates: [], existing: new Map() };
  // Validate (to their stored form) and gather match keys.
  // A deal's name without a company ("Renewal") says nothing about which deal it is.
  const weakName = obj.byName.has('company') && !isPerson(obj);
  for (let index = 0; index < rows.length; index++) {
    if (index % TURN_ROWS === TURN_ROWS - 1) await nextTurn();
    const r = rows[index]!;
    if (typeof r.__error === 'string') {
      plan.failed.push({ index, code: 'VALIDATION_ERROR', message: r.__error });
      continue;
    }
    try {
      const prepared = prepareForImport(obj, r);
      // All of its keys are stored with the record; those that identify it decide whether it is new.
      prepared.keys = keysOf(obj, prepared.row);
      const keys = prepared.keys.filter((k) => IMPORT_KINDS.has(k.kind) && !(weakName && k.kind === 'name' && k.key.endsWith('|')));
      // Each key as `kind:key` once: the string every map of the import is then asked with (its hash computed once).
      plan.candidates.push({ index, prepared, keys, ids: keys.map((k) => `${k.kind}:${k.key}`) });
    } catch (e) {
      if (e instanceof CrmError) plan.failed.push({ index, code: e.code, message: e.message });
      else throw e;
    }
  }

  await checkpoint(ctx, 0, rows.length, `checking ${obj.name} for duplicates`);
  plan.existing = await existingKeys(
    ctx,
    obj,
    plan.candidates.flatMap((c) => c.keys),
  );
  // The documents of the rows that are new as far as the workspace knows (the few found to repeat
  // an earlier row or batch are simply not written).
  await prepareDocuments(
    ctx,
    obj,
    plan.candidates.filter((c) => !c.ids.some((id) => plan.existing.has(id))).map((c) => c.prepared),
  );
  return plan;
}

/** Plans of consecutive pieces of one batch, as one plan (the rows' indexes run on across them). */
export function joinPlans(plans: ImportPlan[]): ImportPlan {
  if (plans.length === 1) return plans[0]!;
  const out: ImportPlan = { obj: plans[0]!.obj, rows: 0, failed: [], candidates: [], existing: new Map() };
  for (const p of plans) {
    for (const f of p.failed) out.failed.push({ ...f, index: f.index + out.rows });
    for (const c of p.candidates) out.candidates.push({ ...c, index: c.index + out.rows });
    for (const [k, id] of p.existing) if (!out.existing.has(k)) out.existing.set(k, id);
    out.rows += p.rows;
  }
  return out;
}

/**
 * Import records: each row is validated, checked for duplicates against the workspace and the
 * earlier rows of the same import (by email, normalised phone, domain, and name at the same
 * company), and the rest are created. Rows are independent: a bad row fails alone.
 */
export async function importDetailed(ctx: Ctx, objectName: string, records: unknown, max = IMPORT_BATCH): Promise<ImportDetail> {
  return applyImport(ctx, await planImport(ctx, objectName, records, max));
}

/**
 * Write a planned batch: its rows that repeat a record of the workspace (as the plan found it, and
 * `earlier`: the keys of the records a batch written since the plan was made created) or an
 * earlier row of the batch are duplicates, the rest are created in one transaction. `written`, when
 * given, receives the keys of the records created (the next batch's `earlier`).
 */
export async function applyImport(ctx: Ctx, plan: ImportPlan, opts: { earlier?: Map<string, string>; written?: Map<string, string> } = {}): Promise<ImportDetail> {
  const batch = new BatchOutcome(plan.obj, opts);
  await checkpoint(ctx, 0, plan.rows, `creating ${plan.obj.name}`);
  const toCreate = batch.decide(plan, 0);
  if (toCreate.length) {
    try {
      const made = await createPrepared(
        ctx,
        plan.obj,
        toCreate.map((c) => c.prepared),
      );
      made.forEach((id, i) => batch.created(toCreate[i]!, id));
    } catch (e) {
      if (!(e instanceof CrmError)) throw e;
      // A row the bulk insert refused (say, a unique value taken meanwhile): create one by one.
      for (const c of toCreate) await batch.alone(c, async () => (await createPrepared(ctx, plan.obj, [c.prepared]))[0]!);
    }
  }
  return batch.result();
}

/**
 * Write a batch as its pieces are planned (planImport's plans of consecutive pieces, in order), in
 * one transaction (createInPieces): each piece's rows are decided as applyImport decides a batch's
 * (against the workspace as that piece's plan found it, `earlier`, and the batch's earlier rows) and
 * its new records inserted while the next piece is being planned; COMMIT once the pieces end. A
 * piece the database refuses is rolled back alone and its rows are created one by one.
 */
export async function applyImportPieces(
  ctx: Ctx,
  obj: ObjectDef,
  pieces: AsyncIterable<ImportPlan>,
  opts: { earlier?: Map<string, string>; written?: Map<string, string> } = {},
): Promise<ImportDetail> {
  // The transaction may be run again from the start (the database aborted it to break a deadlock:
  // inTransaction): the pieces read so far are kept to be written again, the outcome of the run that
  // was undone is dropped, and the keys it wrote reach the caller only once the batch has committed.
  const read: ImportPlan[] = [];
  const source = pieces[Symbol.asyncIterator]();
  const written = new Map<string, string>();
  let batch!: BatchOutcome;
  await createInPieces(ctx, obj, async (add) => {
    written.clear();
    batch = new BatchOutcome(obj, { ...opts, written });
    let offset = 0;
    for (let i = 0; ; i++) {
      let plan = read[i];
      if (!plan) {
        const next = await source.next();
        if (next.done) break;
        read.push((plan = next.value));
      }
      await checkpoint(ctx, offset, offset + plan.rows, `creating ${obj.name}`);
      const toCreate = batch.decide(plan, offset);
      offset += plan.rows;
      if (!toCreate.length) continue;
      try {
        const made = await add(toCreate.map((c) => c.prepared));
        made.forEach((id, i) => batch.created(toCreate[i]!, id));
      } catch (e) {
        if (!(e instanceof CrmError)) throw e;
        for (const c of toCreate) await batch.alone(c, async () => (await add([c.prepared]))[0]!);
      }
    }
  });
  if (opts.written) for (const [key, id] of written) opts.written.set(key, id);
  return batch.result();
}

type Candidate = ImportPlan['candidates'][number];

/** What became of a batch's rows, decided and recorded as its plans (or pieces of plans) are written. */
class BatchOutcome {
  private readonly out: ImportDetail;
  /** `kind:key` of the rows of the batch created so far (or to be) -> their row index. */
  private readonly seen = new Map<string, number>();
  constructor(
    obj: ObjectDef,
    private readonly opts: { earlier?: Map<string, string>; written?: Map<string, string> },
  ) {
    this.out = { object_name: obj.name, created: 0, duplicates: 0, failed: 0, errors: [], rows: [] };
  }

  private fail(index: number, code: string, message: string) {
    this.out.failed++;
    this.out.errors.push({ index, code, message });
    this.out.rows.push({ index, status: 'failed', reason: `${code}: ${message}` });
  }

  /** The plan's failed rows and duplicates recorded, its rows to create returned; indexes moved on by `offset`. */
  decide(plan: ImportPlan, offset: number): Candidate[] {
    for (const f of plan.failed) this.fail(f.index + offset, f.code, f.message);
    const { earlier } = this.opts;
    const existing = (k: string) => plan.existing.get(k) ?? earlier?.get(k);
    const toCreate: Candidate[] = [];
    for (const c0 of plan.candidates) {
      const c = offset ? { ...c0, index: c0.index + offset } : c0;
      const at = c.ids.findIndex((id) => existing(id) !== undefined || this.seen.has(id));
      if (at >= 0) {
        const hit = c.keys[at]!;
        this.out.duplicates++;
        const of = existing(c.ids[at]!);
        this.out.rows.push({
          index: c.index,
          status: 'duplicate',
          ...(of ? { duplicate_of: of } : {}),
          reason: `same ${hit.kind} as ${of ? `existing record ${of}` : `row ${this.seen.get(c.ids[at]!)}`}`,
        });
        continue;
      }
      for (const id of c.ids) this.seen.set(id, c.index);
      toCreate.push(c);
    }
    return toCreate;
  }

  created(c: Candidate, id: string) {
    this.out.rows.push({ index: c.index, status: 'created', id });
    const { written } = this.opts;
    if (written) for (const key of c.ids) written.set(key, id);
    this.out.created++;
  }

  /** A row created alone, after its batch's (or piece's) insert was refused: its own failure is its own. */
  async alone(c: Candidate, create: () => Promise<string>) {
    try {
      this.created(c, await create());
    } catch (err) {
      if (!(err instanceof CrmError)) throw err;
      const message = (err.details?.errors as ImportError[] | undefined)?.[0]?.message ?? err.message;
      if (err.code === 'DUPLICATE_RECORD') {
        this.out.duplicates++;
        this.out.rows.push({ index: c.index, status: 'duplicate', reason: message });
      } else this.fail(c.index, err.code, message);
    }
  }

  result(): ImportDetail {
    this.out.errors.sort((a, b) => a.index - b.index);
    this.out.rows.sort((a, b) => a.index - b.index);
    return this.out;
  }
}

/** The response of POST /import/{object}, exactly as the contract documents it. */
export async function importRecords(ctx: Ctx, objectName: string, records: unknown): Promise<ImportResult> {
  const r = await importDetailed(ctx, objectName, records);
  return { object_name: r.object_name, created: r.created, duplicates: r.duplicates, failed: r.failed, errors: r.errors };
}

// ---------------------------------------------------------------------------------------------
// Export

export interface ExportOptions {
  fields?: string[] | undefined;
  filter?: FilterGroup | undefined;
  sortBy?: string | undefined;
  sortDir?: 'asc' | 'desc' | undefined;
  limit?: number | undefined;
  /** Where a previous export stopped (its nextCursor): the next `limit` records from there. */
  cursor?: string | undefined;
}

export interface ExportPlan {
  object: ObjectDef;
  fields: string[];
  limit: number;
  /** CSV header: the fields, each RELATION field followed by `<field>_name` (the related record's name). */
  csvColumns: string[];
  /**
   * Take a place in the heavy lane (wait, or OVERLOADED / RATE_LIMITED when it is full) and return
   * the export's text. Call it before the answer's first byte, so a refusal is still an error answer.
   */
  open(format: 'json' | 'csv'): Promise<ExportStream>;
}

export interface ExportStream {
  /** The text, page by page (500 records at a time): memory stays flat whatever the size. */
  chunks: AsyncGenerator<string>;
  /** Aborted when the export runs out of time or its caller gives up, even while no one reads it. */
  stopped: AbortSignal;
  /** Why it stopped (QUERY_TOO_EXPENSIVE or CANCELLED), once stopped. */
  reason(): CrmError;
  /** Gives the lane's place back; the end of chunks does it too. Call it when the reader leaves. */
  close(): void;
}

/** RFC 4180: a value holding any line break (a lone CR or LF too) is quoted, not only one holding CRLF. */
const CSV_OPTIONS = { record_delimiter: '\r\n', quoted_match: /[\r\n]/ } as const;

/** Validates everything before the first byte is sent; open() then streams inside the heavy lane. */
export async function planExport(ctx: Ctx, objectName: string, opts: ExportOptions): Promise<ExportPlan> {
  requireAdmin(ctx, 'export records');
  const obj = await resolveObject(ctx, objectName);
  const limit = opts.limit ?? EXPORT_DEFAULT;
  if (!Number.isInteger(limit) || limit < 1) throw validationError(`limit must be a positive integer, got ${opts.limit}`);
  const { exportMaxRows } = budgetLimits(ctx.db);
  if (limit > exportMaxRows)
    throw tooExpensive(
      `An export holds at most ${exportMaxRows.toLocaleString('en-US')} rows (limit ${limit.toLocaleString('en-US')} asked); narrow it: a filter, fewer fields, or a limit of ${exportMaxRows.toLocaleString('en-US')} or less (several exports, sorted, for more)`,
      { limit: 'exportMaxRows', max: exportMaxRows, asked: limit },
    );
  const fields = opts.fields?.length ? opts.fields : obj.fields.map((f) => f.name);
  for (const f of fields) resolveField(obj, f);
  const sortBy = opts.sortBy ?? 'created_at';
  const sortDir = opts.sortDir ?? 'desc';
  // One probe page validates filter and sort now, so errors come back as JSON, not mid-stream.
  await listRecords(ctx, obj.name, { filter: opts.filter, sortBy, sortDir, cursor: opts.cursor, limit: 1, fields: ['id'], includeTotal: false });
  // A name column the object already has as a field, or that was asked for, is not added twice.
  const named = new Set(fields.filter((f) => obj.byName.get(f)?.type === 'RELATION' && !obj.byName.has(`${f}_name`) && !fields.includes(`${f}_name`)));
  const csvColumns = fields.flatMap((f) => (named.has(f) ? [f, `${f}_name`] : [f]));

  /** Pages of the export; the first counts every match when asked (the JSON answer's total). */
  async function* pages(relationNames: boolean, slot: HeavySlot, withTotal = false) {
    let cursor = opts.cursor;
    let sent = 0;
    while (sent < limit) {
      slot.check();
      const includeTotal = withTotal && sent === 0;
      const page = await inSlot(slot, () =>
        listRecords(ctx, obj.name, { filter: opts.filter, sortBy, sortDir, fields, cursor, limit: Math.min(500, limit - sent), maxLimit: 500, includeTotal, relationNames }),
      );
      slot.check();
      yield page;
      sent += page.data.length;
      await checkpoint(ctx, sent, limit, `exporting ${obj.name}`);
      if (!page.nextCursor) break;
      cursor = page.nextCursor;
    }
  }
  const csvRow = (r: RecordData) => {
    const out: Record<string, unknown> = {};
    for (const f of fields) {
      const v = r[f];
      if (named.has(f)) {
        const ref = v as { id: string; name: string | null } | null;
        out[f] = csvCell(ref?.id);
        out[`${f}_name`] = csvCell(ref?.name);
      } else out[f] = csvCell(v);
    }
    return out;
  };
  async function* text(format: 'json' | 'csv', slot: HeavySlot): AsyncGenerator<string> {
    if (format === 'csv') {
      yield stringify([], { header: true, columns: csvColumns, ...CSV_OPTIONS });
      for await (const { data } of pages(named.size > 0, slot)) if (data.length) yield stringify(data.map(csvRow), { header: false, columns: csvColumns, ...CSV_OPTIONS });
      return;
    }
    yield '{"format":"json","records":[';
    // total means what a list's total means: every matching record, not the ones this export holds.
    // When the limit cut the export short, nextCursor continues it (as a list's does); a complete
    // export has none, so it reads exactly as the document's example.
    let n = 0;
    let total: number | null = null;
    let next: string | null = null;
    for await (const page of pages(false, slot, true)) {
      total ??= page.total;
      next = page.nextCursor;
      let out = '';
      for (const r of page.data) out += `${n++ ? ',' : ''}${JSON.stringify(Object.fromEntries(fields.map((f) => [f, r[f] ?? null])))}`;
      yield out;
    }
    yield `],"total":${total ?? n}${next ? `,"nextCursor":${JSON.stringify(next)}` : ''}}`;
  }

  return {
    object: obj,
    fields,
    limit,
    csvColumns,
    async open(format) {
      const slot = await enterLane(ctx);
      const { exportMaxBytes } = slot.limits;
      const chunks = (async function* () {
        let bytes = 0;
        try {
          for await (const chunk of text(format, slot)) {
            bytes += Buffer.byteLength(chunk);
            if (bytes > exportMaxBytes)
              throw tooExpensive(
                `The export passed ${exportMaxBytes.toLocaleString('en-US')} bytes, the most one export may write, and was stopped; narrow it: a filter, fewer fields, or a smaller limit`,
                { limit: 'exportMaxBytes', max: exportMaxBytes },
              );
            yield chunk;
          }
        } catch (e) {
          if (slot.signal.aborted && !(e instanceof CrmError && e.code === 'QUERY_TOO_EXPENSIVE')) throw slot.timedOut() ? timeoutError(slot.limits) : cancelledError();
          throw e;
        } finally {
          slot.release();
        }
      })();
      return { chunks, stopped: slot.signal, reason: () => (slot.timedOut() ? timeoutError(slot.limits) : cancelledError()), close: slot.release };
    },
  };
}

/** Spreadsheet formula injection: text starting with = + - @ (or tab / carriage return) is prefixed with '. */
export function neutralize(v: unknown): unknown {
  if (typeof v === 'string' && /^[=+\-@\t\r]/.test(v)) return `'${v}`;
  return v;
}

export function csvCell(v: unknown): unknown {
  if (v === null || v === undefined) return '';
  if (Array.isArray(v)) return neutralize(v.join(';'));
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return neutralize(v);
}
