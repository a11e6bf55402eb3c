import { randomUUID } from 'node:crypto';
import { type Kysely, type Selectable, sql } from 'kysely';
import type { Tables } from '../db/tables.js';
import { recordActivity } from './activity.js';
import { runRead } from './aggregate-sql.js';
import { heavy } from './budget.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { isPerson, keysWithRecords, normalName } from './dedupe-keys.js';
import { displayNameOfRow, namesFor } from './display-names.js';
import { CrmError, validationError } from './errors.js';
import { decodeValue, encodeValue } from './field-types.js';
import { requireAdmin } from './permissions.js';
import { deleteRows, repoint, rowsByIds, updateRow } from './record-tables.js';
import { notFound, type RecordData, removeDerived, writeDerived } from './records.js';
import { getSchema, type ObjectDef, resolveObject, type WorkspaceSchema } from './schema.js';
import { checkpoint, throwIfCancelled } from './work.js';

/**
 * Duplicate detection (clusters with evidence and a score) and merge, with a dry run and an exact
 * undo. Detection reads the match keys kept by the records service: exact keys (email, phone,
 * domain, name with company) pair records directly; people sharing a full name whatever their
 * company pair by name alone, read from the same name keys (their part before '|'), so no key of
 * its own is stored; records sharing a coarse name block are compared with Jaro-Winkler for names
 * spelled differently.
 */

type AnyDb = Kysely<any>;
const dyn = (db: Kysely<Tables>) => db as unknown as AnyDb;

export const MAX_MERGE = 20;
/**
 * How much each kind of evidence says. A person's full name alone (no company, or different ones)
 * is weaker than the name at the same company, and stronger than a name spelled differently
 * (fuzzy_name is 0.6 x a similarity below 1).
 */
const WEIGHTS: Record<string, number> = { email: 0.95, phone: 0.85, domain: 0.85, name: 0.7, name_only: 0.6, fuzzy_name: 0.6 };
/** Key groups larger than this are too common to mean "same record" (e.g. a shared switchboard number). */
const MAX_GROUP = 50;

export interface Evidence {
  kind: 'email' | 'phone' | 'domain' | 'name' | 'name_only' | 'fuzzy_name';
  field: string;
  value: string;
  record_ids: string[];
  similarity?: number;
}

export interface Cluster {
  score: number;
  records: { id: string; name: string }[];
  evidence: Evidence[];
}

/** Jaro-Winkler similarity of two strings (1 = equal). */
export function jaroWinkler(a: string, b: string): number {
  if (a === b) return 1;
  const la = a.length;
  const lb = b.length;
  if (!la || !lb) return 0;
  const range = Math.max(0, Math.floor(Math.max(la, lb) / 2) - 1);
  const ma = new Array<boolean>(la).fill(false);
  const mb = new Array<boolean>(lb).fill(false);
  let matches = 0;
  for (let i = 0; i < la; i++) {
    for (let j = Math.max(0, i - range); j < Math.min(lb, i + range + 1); j++) {
      if (mb[j] || a[i] !== b[j]) continue;
      ma[i] = mb[j] = true;
      matches++;
      break;
    }
  }
  if (!matches) return 0;
  let t = 0;
  for (let i = 0, j = 0; i < la; i++) {
    if (!ma[i]) continue;
    while (!mb[j]) j++;
    if (a[i] !== b[j]) t++;
    j++;
  }
  const jaro = (matches / la + matches / lb + (matches - t / 2) / matches) / 3;
  let prefix = 0;
  while (prefix < 4 && a[prefix] === b[prefix]) prefix++;
  return jaro + prefix * 0.1 * (1 - jaro);
}

export interface DetectOptions {
  limit?: number | undefined;
  /** Only clusters containing this record. */
  recordId?: string | undefined;
  minScore?: number | undefined;
}

/** A scan of every record's match keys: a heavy read, so it waits its turn in the heavy lane (budget.ts). */
export function findDuplicates(ctx: Ctx, objectName: string, opts: DetectOptions = {}) {
  return heavy(ctx, () => scanDuplicates(ctx, objectName, opts));
}

async function scanDuplicates(ctx: Ctx, objectName: string, opts: DetectOptions) {
  const obj = await resolveObject(ctx, objectName);
  const limit = opts.limit ?? 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw validationError('limit (clusters) must be 1 to 500');
  const minScore = opts.minScore ?? 0.5;
  const k = dyn(ctx.db.kysely);
  const ws = ctx.actor.workspaceId;

  const person = isPerson(obj);
  // 1. Exact keys shared by 2..MAX_GROUP records. The GROUP BYs over every match key (about
  // 100 ms each on 200,000 contacts) run on the read pool when there is one (runRead), off the
  // event loop; the rest of the scan yields at its checkpoints. A person's name key without a
  // company ("ada lovelace|") is a name alone: step 1b scores it as such.
  const groups = await runRead<{ kind: string; key: string; n: number }>(
    ctx,
    k
      .selectFrom('dedupe_keys')
      .select(['kind', 'key', sql<number>`COUNT(*)`.as('n')])
      .where('workspace_id', '=', ws)
      .where('object_id', '=', obj.id)
      .where('kind', 'in', ['email', 'phone', 'domain', 'name'])
      .$if(person, (q) => q.where((eb) => eb.not(eb.and([eb('kind', '=', 'name'), eb('key', 'like', '%|')]))))
      .groupBy(['kind', 'key'])
      .having(sql`COUNT(*)`, '>', 1)
      .having(sql`COUNT(*)`, '<=', MAX_GROUP)
      .compile(),
  );
  const pairs = new Map<string, { a: string; b: string; evidence: Evidence[] }>();
  const addPair = (x: string, y: string, ev: Evidence) => {
    const [a, b] = x < y ? [x, y] : [y, x];
    const id = `${a}|${b}`;
    let p = pairs.get(id);
    if (!p) pairs.set(id, (p = { a, b, evidence: [] }));
    if (!p.evidence.some((e) => e.kind === ev.kind && e.value === ev.value)) p.evidence.push(ev);
  };
  const members = async (kind: string, keys: string[]) => {
    const out = new Map<string, string[]>();
    for (let i = 0; i < keys.length; i += 500) {
      await checkpoint(ctx, i, keys.length, `matching ${kind} keys`);
      const rows = (await keysWithRecords(k, ws, obj)
        .select(['k.key', 'r.id as record_id'])
        .where('k.kind', '=', kind)
        .where('k.key', 'in', keys.slice(i, i + 500))
        .execute()) as { key: string; record_id: string }[];
      for (const r of rows) out.set(r.key, [...(out.get(r.key) ?? []), r.record_id]);
    }
    return out;
  };
  const byKind = new Map<string, string[]>();
  for (const g of groups) byKind.set(g.kind, [...(byKind.get(g.kind) ?? []), g.key]);
  const fieldFor = (kind: string) =>
    kind === 'name'
      ? obj.displayFields.join('+')
      : (obj.fields.find((f) => (kind === 'email' ? f.type === 'EMAIL' : kind === 'phone' ? f.type === 'PHONE' : f.type === 'URL' || /domain/.test(f.name)))?.name ?? kind);
  // Checkpoints in the loops below: the scan runs on the main thread, so every few thousand steps it
  // lets the event loop in and checks the time limit (checkpoint yields only every ~25 ms of work).
  let steps = 0;
  for (const [kind, keys] of byKind) {
    for (const [key, ids] of await members(kind, keys)) {
      if ((++steps & 1023) === 0) await checkpoint(ctx, 0, undefined, 'pairing exact keys');
      const value = kind === 'name' ? key.split('|')[0]! : key;
      for (let i = 0; i < ids.length; i++) for (let j = i + 1; j < ids.length; j++) addPair(ids[i]!, ids[j]!, { kind: kind as Evidence['kind'], field: fieldFor(kind), value, record_ids: ids });
    }
  }

  // 1b. People with the same full name, whatever their companies: name keys grouped by their name
  // part. Pairs at the same company have the stronger 'name' evidence from step 1 already.
  if (person) {
    for (const [name, rows] of await sameNames(ctx, obj)) {
      if ((++steps & 1023) === 0) await checkpoint(ctx, 0, undefined, 'pairing names');
      const ids = rows.map((r) => r.record_id);
      for (let i = 0; i < rows.length; i++)
        for (let j = i + 1; j < rows.length; j++) {
          const [a, b] = [rows[i]!, rows[j]!];
          if (a.key === b.key && !a.key.endsWith('|')) continue;
          addPair(a.record_id, b.record_id, { kind: 'name_only', field: fieldFor('name'), value: name, record_ids: ids });
        }
    }
  }

  // 2. Names spelled differently: compare within blocks.
  const blocks = await runRead<{ key: string }>(
    ctx,
    k
      .selectFrom('dedupe_keys')
      .select(['key'])
      .where('workspace_id', '=', ws)
      .where('object_id', '=', obj.id)
      .where('kind', '=', 'block')
      .groupBy('key')
      .having(sql`COUNT(*)`, '>', 1)
      .having(sql`COUNT(*)`, '<=', MAX_GROUP)
      .compile(),
  );
  const blockMembers = await members(
    'block',
    blocks.map((b) => b.key),
  );
  const allIds = new Set<string>();
  for (const ids of blockMembers.values()) ids.forEach((x) => allIds.add(x));
  const nameOf = await names(ctx, obj, [...allIds]);
  const normal = new Map<string, string>();
  for (const [id, n] of nameOf) {
    if ((++steps & 1023) === 0) await checkpoint(ctx, 0, undefined, 'comparing names');
    normal.set(id, normalName(n, !person));
  }
  for (const ids of blockMembers.values()) {
    for (let i = 0; i < ids.length; i++)
      for (let j = i + 1; j < ids.length; j++) {
        if ((++steps & 255) === 0) await checkpoint(ctx, 0, undefined, 'comparing names');
        const na = normal.get(ids[i]!) ?? '';
        const nb = normal.get(ids[j]!) ?? '';
        if (!na || !nb || na === nb) continue; // equal names are exact evidence already (steps 1 and 1b)
        const sim = jaroWinkler(na, nb);
        if (sim >= 0.9)
          addPair(ids[i]!, ids[j]!, { kind: 'fuzzy_name', field: obj.displayFields.join('+'), value: `${na} ~ ${nb}`, record_ids: [ids[i]!, ids[j]!], similarity: Math.round(sim * 1000) / 1000 });
      }
  }

  // 3. Pairs -> clusters (union-find); a pair's score combines its independent pieces of evidence.
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== undefined && parent.get(r) !== r) r = parent.get(r)!;
    parent.set(x, r);
    return r;
  };
  const scored: { a: string; b: string; evidence: Evidence[]; score: number }[] = [];
  for (const p of pairs.values()) {
    if ((++steps & 1023) === 0) await checkpoint(ctx, 0, undefined, 'scoring pairs');
    const kinds = new Set(p.evidence.map((e) => e.kind));
    const score = 1 - [...kinds].reduce((acc, kd) => acc * (1 - (kd === 'fuzzy_name' ? WEIGHTS.fuzzy_name! * (p.evidence.find((e) => e.kind === kd)!.similarity ?? 1) : WEIGHTS[kd]!)), 1);
    scored.push({ ...p, score });
  }
  for (const p of scored) {
    if ((++steps & 1023) === 0) await checkpoint(ctx, 0, undefined, 'clustering');
    if (p.score < minScore) continue;
    parent.set(p.a, find(p.a));
    parent.set(p.b, find(p.b));
    parent.set(find(p.a), find(p.b));
  }
  const clusters = new Map<string, { ids: Set<string>; score: number; evidence: Evidence[] }>();
  for (const p of scored) {
    if ((++steps & 1023) === 0) await checkpoint(ctx, 0, undefined, 'clustering');
    if (p.score < minScore) continue;
    const root = find(p.a);
    let c = clusters.get(root);
    if (!c) clusters.set(root, (c = { ids: new Set(), score: 0, evidence: [] }));
    c.ids.add(p.a).add(p.b);
    c.score = Math.max(c.score, p.score);
    for (const e of p.evidence) if (!c.evidence.some((x) => x.kind === e.kind && x.value === e.value)) c.evidence.push(e);
  }
  let list = [...clusters.values()];
  if (opts.recordId) list = list.filter((c) => c.ids.has(opts.recordId!));
  // Each cluster's smallest id once, not two sorted copies per comparison (57 ms for 12,000 clusters).
  const firstId = new Map(list.map((c) => [c, [...c.ids].sort()[0]!]));
  list.sort((x, y) => y.score - x.score || y.ids.size - x.ids.size || firstId.get(x)!.localeCompare(firstId.get(y)!));
  const total = list.length;
  list = list.slice(0, limit);
  const shownNames = await names(
    ctx,
    obj,
    list.flatMap((c) => [...c.ids]),
  );
  const data: Cluster[] = list.map((c) => ({
    score: Math.round(c.score * 1000) / 1000,
    records: [...c.ids].sort().map((id) => ({ id, name: shownNames.get(id) ?? id })),
    evidence: c.evidence.map((e) => ({ ...e, record_ids: e.record_ids.filter((x) => c.ids.has(x)) })),
  }));
  return { object: obj.name, data, total };
}

/**
 * Name keys of people whose full name 2..MAX_GROUP records share, by name, when they add to the
 * name-at-company evidence: the companies differ, or are missing. One statement on the read pool.
 */
async function sameNames(ctx: Ctx, obj: ObjectDef): Promise<Map<string, { key: string; record_id: string }[]>> {
  const k = dyn(ctx.db.kysely);
  const namePart = ctx.db.adapter.textBefore(sql.ref('key'), '|');
  const nameKeys = () => k.selectFrom('dedupe_keys').where('workspace_id', '=', ctx.actor.workspaceId).where('object_id', '=', obj.id).where('kind', '=', 'name');
  const shared = nameKeys()
    .select(namePart.as('n'))
    .groupBy(namePart)
    .having(sql`COUNT(*)`, '>', 1)
    .having(sql`COUNT(*)`, '<=', MAX_GROUP)
    .having((eb) => eb.or([eb(sql`COUNT(DISTINCT key)`, '>', 1), eb(sql`MAX(key)`, 'like', '%|')]));
  const rows = await runRead<{ key: string; record_id: string }>(
    ctx,
    keysWithRecords(k, ctx.actor.workspaceId, obj)
      .select(['k.key', 'r.id as record_id'])
      .where('k.kind', '=', 'name')
      .where(ctx.db.adapter.textBefore(sql.ref('k.key'), '|'), 'in', shared)
      .orderBy('k.key')
      .orderBy('r.id')
      .compile(),
  );
  const out = new Map<string, { key: string; record_id: string }[]>();
  for (const r of rows) {
    const name = r.key.slice(0, r.key.indexOf('|'));
    const list = out.get(name);
    if (list) list.push(r);
    else out.set(name, [r]);
  }
  return out;
}

/** Display names as stored (undecoded, '' when empty), for matching and for showing clusters. */
async function names(ctx: Ctx, obj: ObjectDef, ids: string[]): Promise<Map<string, string>> {
  const schema = await getSchema(ctx);
  return namesFor(ctx, schema, obj.name, ids, { stored: true, ifEmpty: '', chunk: 500, beforeChunk: (i, n) => checkpoint(ctx, i, n, 'reading names') });
}

// ---------------------------------------------------------------------------------------------
// Merge and unmerge

export interface MergeInput {
  primary_id: string;
  duplicate_ids: string[];
  /** Per field: a value, or {"from": "<record id>"} to take that record's value. */
  overrides?: Record<string, unknown>;
  dry_run?: boolean;
}

interface Moved {
  /** Relation fields repointed: object -> field -> record ids -> old target id */
  relations: { object: string; field: string; id: string; from: string }[];
  associations: { removed: Selectable<Tables['associations']>[]; added: number[] };
  notes: { id: string; from: string }[];
  activity: { id: number; from: string }[];
  threads: { id: string; column: 'contact_id' | 'company_id'; from: string }[];
  stageHistory: { id: number; from: string }[];
}

interface Snapshot {
  primaryBefore: Record<string, unknown>;
  duplicates: Record<string, unknown>[];
  changedFields: string[];
  moved: Moved;
  /** Stage history the merge closed (the duplicates' open stays, the primary's when its step changed) and opened. */
  history?: { closed: number[]; opened: number[] };
}

function mergedValues(obj: ObjectDef, primary: Record<string, unknown>, dups: Record<string, unknown>[], overrides: Record<string, unknown>, byId: Map<string, Record<string, unknown>>) {
  const values: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  for (const f of obj.fields) {
    if (f.readOnly) continue;
    const empty = (v: unknown) => v === null || v === undefined || v === '';
    if (f.name in overrides) {
      const o = overrides[f.name];
      if (o && typeof o === 'object' && !Array.isArray(o) && 'from' in o) {
        const src = byId.get(String((o as { from: unknown }).from));
        if (!src) throw validationError(`overrides.${f.name}.from must be the primary or one of the duplicates`);
        values[f.column] = src[f.column] ?? null;
        sources[f.name] = src.id as string;
      } else {
        values[f.column] = encodeValue(f, o);
        sources[f.name] = 'override';
      }
      continue;
    }
    if (!empty(primary[f.column])) {
      values[f.column] = primary[f.column];
      continue;
    }
    const donor = dups.find((d) => !empty(d[f.column]));
    values[f.column] = donor ? donor[f.column] : (primary[f.column] ?? null);
    if (donor) sources[f.name] = donor.id as string;
  }
  return { values, sources };
}

export async function mergeRecords(ctx: Ctx, objectName: string, input: MergeInput) {
  // Dry runs too: a member learns it from the first call, whatever the arguments.
  requireAdmin(ctx, 'merge records');
  const obj = await resolveObject(ctx, objectName);
  const schema = await getSchema(ctx);
  if (typeof input?.primary_id !== 'string' || !Array.isArray(input.duplicate_ids) || input.duplicate_ids.length === 0)
    throw validationError('Send {"primary_id": "...", "duplicate_ids": ["..."]} (1 to 20 duplicates)');
  if (input.duplicate_ids.length > MAX_MERGE) throw validationError(`Merge at most ${MAX_MERGE} duplicates into a primary at a time; got ${input.duplicate_ids.length}`);
  const dupIds = [...new Set(input.duplicate_ids)];
  if (dupIds.includes(input.primary_id)) throw validationError('The primary cannot also be a duplicate');
  const overrides = input.overrides ?? {};
  for (const name of Object.keys(overrides)) {
    const f = obj.byName.get(name);
    if (!f || f.readOnly)
      throw validationError(
        `overrides: unknown or read-only field '${name}'. Writable fields: ${obj.fields
          .filter((x) => !x.readOnly)
          .map((x) => x.name)
          .join(', ')}`,
      );
  }

  const run = async (trx: Kysely<Tables>, write: boolean) => {
    const byId = await rowsByIds(trx, obj, [input.primary_id, ...dupIds]);
    const primary = byId.get(input.primary_id);
    if (!primary) throw notFound(obj, input.primary_id);
    const missing = dupIds.find((d) => !byId.has(d));
    if (missing) throw notFound(obj, missing);
    const dups = dupIds.map((d) => byId.get(d)!);
    const { values, sources } = mergedValues(obj, primary, dups, overrides, byId);
    const changed = obj.fields.filter((f) => !f.readOnly && values[f.column] !== primary[f.column]);
    const moved = await moveLinks(trx, ctx, schema, obj, input.primary_id, dupIds, write);
    const preview = {
      primary_id: input.primary_id,
      merged_ids: dupIds,
      record: Object.fromEntries([['id', input.primary_id], ...obj.fields.filter((f) => !f.readOnly).map((f) => [f.name, decodeValue(f, values[f.column])])]) as RecordData,
      changes: Object.fromEntries(changed.map((f) => [f.name, { from: decodeValue(f, primary[f.column]), to: decodeValue(f, values[f.column]), source: sources[f.name] ?? null }])),
      moves: {
        relations: moved.relations.length,
        associations: moved.associations.removed.length,
        notes: moved.notes.length,
        activity: moved.activity.length,
        threads: moved.threads.length,
        stage_history: moved.stageHistory.length,
      },
    };
    if (!write) return { ...preview, dry_run: true as const };

    // Duplicates go first, so unique values (an email) can pass to the primary. Their match keys,
    // and the primary's, are found from the rows as they are now (moveLinks may have repointed
    // one of them: a relation between records of one object).
    const current = await rowsByIds(trx, obj, [input.primary_id, ...dupIds]);
    await removeDerived(
      trx,
      ctx,
      obj,
      dupIds.map((d) => current.get(d)!),
    );
    await deleteRows(trx, obj, dupIds);
    if (changed.length) {
      const set = Object.fromEntries(changed.map((f) => [f.column, values[f.column]]));
      await updateRow(trx, obj, input.primary_id, set);
    }
    const after = (await rowsByIds(trx, obj, [input.primary_id])).get(input.primary_id)!;
    await writeDerived(trx, ctx, obj, [after], [current.get(input.primary_id)]);
    await checkpoint(ctx, 1, 2, `merging ${obj.name}`);
    // Pipelines: the duplicates' stays end now (their history moved to the primary, which has one
    // current step); if the merge changed the primary's step, that is a move like any other.
    const history = { closed: [] as number[], opened: [] as number[] };
    const moves: Parameters<typeof recordActivity>[2] = [];
    if (obj.pipeline) {
      const at = nowIso();
      const col = obj.byName.get(obj.pipeline.field)!.column;
      const open = await trx.selectFrom('stage_history').select('id').where('pipeline_id', '=', obj.pipeline.id).where('record_id', '=', input.primary_id).where('left_at', 'is', null).execute();
      const dupOpen = moved.stageHistory.length
        ? await trx
            .selectFrom('stage_history')
            .select('id')
            .where(
              'id',
              'in',
              moved.stageHistory.map((h) => h.id),
            )
            .where('left_at', 'is', null)
            .execute()
        : [];
      const stepChanged = after[col] !== primary[col];
      const toClose = [...dupOpen.map((r) => r.id), ...(stepChanged ? open.map((r) => r.id) : [])];
      if (toClose.length) await trx.updateTable('stage_history').set({ left_at: at }).where('id', 'in', toClose).execute();
      history.closed = toClose;
      if (stepChanged && after[col] !== null && after[col] !== undefined) {
        const ins = await trx
          .insertInto('stage_history')
          .values({ workspace_id: ctx.actor.workspaceId, pipeline_id: obj.pipeline.id, record_id: input.primary_id, step_key: after[col] as string, entered_at: at, left_at: null })
          .returning('id')
          .executeTakeFirstOrThrow();
        history.opened.push(ins.id);
        moves.push({
          object: obj.name,
          recordId: input.primary_id,
          action: 'pipeline_moved',
          payload: { pipeline: obj.pipeline.name, pipeline_id: obj.pipeline.id, from: primary[col] ?? null, to: after[col], merge: true },
        });
      }
    }
    // The last moment to give up: after this the merge is recorded and commits.
    throwIfCancelled(ctx);
    const mergeId = randomUUID();
    const snapshot: Snapshot = { primaryBefore: primary, duplicates: dups, changedFields: changed.map((f) => f.name), moved, history };
    await trx
      .insertInto('merges')
      .values({
        id: mergeId,
        workspace_id: ctx.actor.workspaceId,
        object: obj.name,
        primary_id: input.primary_id,
        merged_ids: JSON.stringify(dupIds),
        snapshot: JSON.stringify(snapshot),
        user_id: ctx.actor.userId,
        created_at: nowIso(),
        undone_at: null,
      })
      .execute();
    // The step change first, the merge that caused it last (newest in the timeline).
    await recordActivity(trx, ctx, [
      ...moves,
      {
        object: obj.name,
        recordId: input.primary_id,
        action: 'merged',
        payload: { merge_id: mergeId, merged: dups.map((d) => ({ id: d.id, name: displayNameOfRow(obj, d) })), changes: preview.changes, moves: preview.moves },
      },
    ]);
    return { ...preview, merge_id: mergeId, dry_run: false as const };
  };

  if (input.dry_run) {
    // Read-only: the same computation, nothing written.
    return run(ctx.db.kysely, false);
  }
  return ctx.db.kysely.transaction().execute((trx) => run(trx, true));
}

/**
 * Search documents and match keys of records read back after a merge or unmerge changed them (`after`,
 * by id), each against its row before the change (undefined: none, its keys are all new).
 */
function derivedOf(trx: Kysely<Tables>, ctx: Ctx, obj: ObjectDef, after: Map<string, Record<string, unknown>>, before: (id: string) => Record<string, unknown> | undefined) {
  return writeDerived(trx, ctx, obj, [...after.values()], [...after.keys()].map(before));
}

/** Every link to the duplicates moves to the primary; what moved is returned for the undo. */
async function moveLinks(trx: Kysely<Tables>, ctx: Ctx, schema: WorkspaceSchema, obj: ObjectDef, primaryId: string, dupIds: string[], write: boolean): Promise<Moved> {
  const k = dyn(trx);
  const ws = ctx.actor.workspaceId;
  const moved: Moved = { relations: [], associations: { removed: [], added: [] }, notes: [], activity: [], threads: [], stageHistory: [] };
  // Relation fields anywhere (tasks' contact, opportunities' company, ...).
  for (const other of schema.objects.values())
    for (const f of other.fields) {
      if (f.type !== 'RELATION' || f.target !== obj.name || f.readOnly) continue;
      const rows = (await k.selectFrom(other.table).select(['id', f.column]).where(f.column, 'in', dupIds).execute()) as Record<string, string>[];
      for (const r of rows) moved.relations.push({ object: other.name, field: f.name, id: r.id!, from: r[f.column]! });
      if (write && rows.length) {
        const ids = rows.map((r) => r.id!);
        const before = await rowsByIds(trx, other, ids);
        await repoint(trx, other, f.column, dupIds, primaryId);
        const after = await rowsByIds(trx, other, ids);
        await derivedOf(trx, ctx, other, after, (id) => before.get(id));
      }
    }
  // Associations: re-link to the primary, dropping links it already has (or that would point at itself).
  const assoc = await trx
    .selectFrom('associations')
    .selectAll()
    .where('workspace_id', '=', ws)
    .where((eb) => eb.or([eb.and([eb('a_object', '=', obj.name), eb('a_id', 'in', dupIds)]), eb.and([eb('b_object', '=', obj.name), eb('b_id', 'in', dupIds)])]))
    .execute();
  moved.associations.removed = assoc;
  if (write && assoc.length) {
    await trx
      .deleteFrom('associations')
      .where(
        'id',
        'in',
        assoc.map((a) => a.id),
      )
      .execute();
    for (const a of assoc) {
      const [other, otherId] = a.a_object === obj.name && dupIds.includes(a.a_id) ? [a.b_object, a.b_id] : [a.a_object, a.a_id];
      if (other === obj.name && (otherId === primaryId || dupIds.includes(otherId))) continue;
      const pair = obj.name < other || (obj.name === other && primaryId <= otherId) ? [obj.name, primaryId, other, otherId] : [other, otherId, obj.name, primaryId];
      const res = await trx
        .insertInto('associations')
        .values({ workspace_id: ws, a_object: pair[0]!, a_id: pair[1]!, b_object: pair[2]!, b_id: pair[3]!, created_at: a.created_at, created_by: a.created_by })
        .onConflict((oc) => oc.doNothing())
        .returning('id')
        .executeTakeFirst();
      if (res) moved.associations.added.push(res.id);
    }
  }
  // Notes, timeline entries, threads and stage history.
  const notes = await trx.selectFrom('notes').select(['id', 'record_id']).where('workspace_id', '=', ws).where('object', '=', obj.name).where('record_id', 'in', dupIds).execute();
  moved.notes = notes.map((n) => ({ id: n.id, from: n.record_id! }));
  const acts = await trx.selectFrom('activity').select(['id', 'record_id']).where('workspace_id', '=', ws).where('object', '=', obj.name).where('record_id', 'in', dupIds).execute();
  moved.activity = acts.map((a) => ({ id: a.id, from: a.record_id }));
  for (const column of ['contact_id', 'company_id'] as const) {
    if ((column === 'contact_id' && obj.name !== 'contacts') || (column === 'company_id' && obj.name !== 'companies')) continue;
    const th = await trx.selectFrom('threads').select(['id', column]).where('workspace_id', '=', ws).where(column, 'in', dupIds).execute();
    moved.threads.push(...th.map((t) => ({ id: t.id, column, from: (t as Record<string, string>)[column]! })));
  }
  if (obj.pipeline) {
    const sh = await trx.selectFrom('stage_history').select(['id', 'record_id']).where('pipeline_id', '=', obj.pipeline.id).where('record_id', 'in', dupIds).execute();
    moved.stageHistory = sh.map((h) => ({ id: h.id, from: h.record_id }));
  }
  if (write) {
    if (notes.length)
      await trx
        .updateTable('notes')
        .set({ record_id: primaryId })
        .where(
          'id',
          'in',
          notes.map((n) => n.id),
        )
        .execute();
    for (let i = 0; i < acts.length; i += 500)
      await trx
        .updateTable('activity')
        .set({ record_id: primaryId })
        .where(
          'id',
          'in',
          acts.slice(i, i + 500).map((a) => a.id),
        )
        .execute();
    for (const t of moved.threads)
      await trx
        .updateTable('threads')
        .set({ [t.column]: primaryId })
        .where('id', '=', t.id)
        .execute();
    if (moved.stageHistory.length)
      await trx
        .updateTable('stage_history')
        .set({ record_id: primaryId })
        .where(
          'id',
          'in',
          moved.stageHistory.map((h) => h.id),
        )
        .execute();
  }
  return moved;
}

/** Undo a merge exactly: the merged records come back with their ids and values, and every link moves back. */
export async function unmergeRecords(ctx: Ctx, mergeId: string) {
  requireAdmin(ctx, 'undo merges');
  const m = await ctx.db.kysely.selectFrom('merges').selectAll().where('workspace_id', '=', ctx.actor.workspaceId).where('id', '=', mergeId).executeTakeFirst();
  if (!m) throw new CrmError('RECORD_NOT_FOUND', `No merge with id '${mergeId}'`);
  if (m.undone_at) throw validationError(`Merge '${mergeId}' was already undone at ${m.undone_at}`);
  const obj = await resolveObject(ctx, m.object);
  const schema = await getSchema(ctx);
  const snap = JSON.parse(m.snapshot) as Snapshot;
  return ctx.db.kysely.transaction().execute(async (trx) => {
    const k = dyn(trx);
    const primary = (await rowsByIds(trx, obj, [m.primary_id])).get(m.primary_id);
    if (!primary) throw validationError(`The primary record '${m.primary_id}' no longer exists; the merge cannot be undone`);
    const taken = await rowsByIds(
      trx,
      obj,
      snap.duplicates.map((d) => d.id as string),
    );
    if (taken.size) throw validationError(`Record ids ${[...taken.keys()].join(', ')} exist again; the merge cannot be undone`);
    // The primary's fields that the merge changed go back to what they were.
    if (snap.changedFields.length) {
      const set = Object.fromEntries(
        snap.changedFields
          .map((n) => obj.byName.get(n)!)
          .filter(Boolean)
          .map((f) => [f.column, snap.primaryBefore[f.column] ?? null]),
      );
      await updateRow(k, obj, m.primary_id, set);
    }
    for (const d of snap.duplicates) {
      const { seq, ...row } = d;
      const seqFree = !(await k
        .selectFrom(obj.table)
        .select('seq')
        .where('seq', '=', seq as number)
        .executeTakeFirst());
      await k
        .insertInto(obj.table)
        .values(seqFree ? d : row)
        .execute();
    }
    const mv = snap.moved;
    // The records whose links move back, as they are now: their match keys are found from these.
    const byObject = new Map<string, string[]>();
    for (const r of mv.relations) byObject.set(r.object, [...(byObject.get(r.object) ?? []), r.id]);
    const linkedBefore = new Map<string, Map<string, Record<string, unknown>>>();
    for (const [name, ids] of byObject) {
      const other = schema.objects.get(name);
      if (other) linkedBefore.set(name, await rowsByIds(trx, other, ids));
    }
    for (const r of mv.relations) {
      const other = schema.objects.get(r.object);
      const f = other?.byName.get(r.field);
      if (!other || !f) continue;
      await k
        .updateTable(other.table)
        .set({ [f.column]: r.from })
        .where('id', '=', r.id)
        .where(f.column, '=', m.primary_id)
        .execute();
    }
    if (mv.associations.added.length) await trx.deleteFrom('associations').where('id', 'in', mv.associations.added).execute();
    for (const a of mv.associations.removed) {
      const { id: _drop, ...rest } = a;
      await trx
        .insertInto('associations')
        .values(rest)
        .onConflict((oc) => oc.doNothing())
        .execute();
    }
    for (const n of mv.notes) await trx.updateTable('notes').set({ record_id: n.from }).where('id', '=', n.id).execute();
    for (const a of mv.activity) await trx.updateTable('activity').set({ record_id: a.from }).where('id', '=', a.id).execute();
    for (const t of mv.threads)
      await trx
        .updateTable('threads')
        .set({ [t.column]: t.from })
        .where('id', '=', t.id)
        .execute();
    for (const h of mv.stageHistory) await trx.updateTable('stage_history').set({ record_id: h.from }).where('id', '=', h.id).execute();
    if (snap.history?.opened.length) await trx.deleteFrom('stage_history').where('id', 'in', snap.history.opened).execute();
    if (snap.history?.closed.length) await trx.updateTable('stage_history').set({ left_at: null }).where('id', 'in', snap.history.closed).execute();
    // Search index and match keys of everything touched.
    const restored = await rowsByIds(trx, obj, [m.primary_id, ...snap.duplicates.map((d) => d.id as string)]);
    // The duplicates' keys went with them (mergeRecords); the primary's were made of its values then.
    await derivedOf(trx, ctx, obj, restored, (id) => (id === m.primary_id ? primary : undefined));
    for (const [name, ids] of byObject) {
      const other = schema.objects.get(name);
      if (!other) continue;
      const after = await rowsByIds(trx, other, ids);
      await derivedOf(trx, ctx, other, after, (id) => linkedBefore.get(name)!.get(id));
    }
    await trx.updateTable('merges').set({ undone_at: nowIso() }).where('id', '=', mergeId).execute();
    await recordActivity(trx, ctx, [{ object: obj.name, recordId: m.primary_id, action: 'unmerged', payload: { merge_id: mergeId, restored: snap.duplicates.map((d) => d.id) } }]);
    return { merge_id: mergeId, primary_id: m.primary_id, restored_ids: snap.duplicates.map((d) => d.id as string) };
  });
}
