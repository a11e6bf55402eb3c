import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { z } from 'zod';
import { compiledOnce } from '../db/compiled-once.js';
import type { Db } from '../db/database.js';
import type { DialectAdapter } from '../db/dialect.js';
import type { Tables } from '../db/tables.js';
import { recordActivity } from './activity.js';
import { nowIso } from './clock.js';
import type { Ctx } from './context.js';
import { keyColumns, rebuildKeysIn } from './dedupe-keys.js';
import { CrmError, duplicateOn, validationError } from './errors.js';
import { decodeValue, encodeValue, FIELD_TYPES, type FieldDef, type FieldType, type SelectOption, storageOf } from './field-types.js';
import { requireAdmin } from './permissions.js';
import { hasRows } from './record-tables.js';
import { closest } from './suggest.js';
import { DEFAULT_PIPELINES, type FieldSpec, type ObjectSpec, type PipelineSpec, RESERVED_FIELD_NAMES, RESERVED_OBJECT_NAMES, SYSTEM_OBJECTS } from './system-objects.js';

export interface ObjectDef {
  id: number;
  name: string;
  label: string;
  labelPlural: string;
  description: string | null;
  /** Physical table; comes from metadata only. */
  table: string;
  system: boolean;
  displayFields: string[];
  /** Built-in fields first, then the object's fields in position order. */
  fields: FieldDef[];
  byName: Map<string, FieldDef>;
  /** The object's pipeline, when it has one: the SELECT field holding the step, and the ordered steps. */
  pipeline?: PipelineDef;
}

export interface PipelineStep {
  id: string;
  key: string;
  name: string;
  position: number;
  probability: number | null;
  won: boolean;
  lost: boolean;
  defaults: Record<string, unknown>;
}

export interface PipelineDef {
  id: string;
  object: string;
  name: string;
  field: string;
  steps: PipelineStep[];
}

export interface WorkspaceSchema {
  version: number;
  /** The change token it was read under (Db.schemaToken), if any. */
  token?: string | null;
  /** Without change tokens: the database's change version (Db.changeVersion) read before its version was last checked. */
  unchangedSince?: string;
  objects: Map<string, ObjectDef>;
  /** Workspace settings that change with the schema version: setting them bumps it. */
  workspaceId: number;
  timeZone: string;
}

const NAME_RE = /^[a-z][a-z0-9_]{0,39}$/;

const BUILT_IN: FieldDef[] = [
  { id: 0, name: 'id', label: 'ID', type: 'TEXT', column: 'id', required: false, unique: true, system: true, readOnly: true, indexed: true, position: -4 },
  { id: 0, name: 'created_at', label: 'Created at', type: 'DATETIME', column: 'created_at', required: false, unique: false, system: true, readOnly: true, indexed: true, position: -3 },
  { id: 0, name: 'updated_at', label: 'Updated at', type: 'DATETIME', column: 'updated_at', required: false, unique: false, system: true, readOnly: true, indexed: false, position: -2 },
  {
    id: 0,
    name: 'created_by',
    label: 'Created by',
    type: 'RELATION',
    target: 'users',
    column: 'created_by',
    required: false,
    unique: false,
    system: true,
    readOnly: true,
    indexed: false,
    position: -1,
  },
];

function labelFor(name: string): string {
  const s = name.replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function normOptions(options: FieldSpec['options']): SelectOption[] | undefined {
  return options?.map((o) => (typeof o === 'string' ? { value: o, label: labelFor(o) } : o));
}

// ---------------------------------------------------------------------------------------------
// DDL: record tables live in typed columns, one table per object and workspace.

function tableName(workspaceId: number, objectName: string): string {
  return `w${workspaceId}_${objectName}`;
}

async function createRecordTable(db: Kysely<any>, adapter: DialectAdapter, table: string, fields: FieldSpec[]) {
  let t = db.schema
    .createTable(table)
    // seq: internal row number, the keyset tie-breaker (every index carries it in SQLite). Never exposed.
    .addColumn('seq', adapter.idType, (c) => adapter.identity(c))
    .addColumn('id', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text');
  for (const f of fields) t = t.addColumn(f.name, adapter.columnType(storageOf(f.type)));
  await t.execute();
  await db.schema.createIndex(`${table}__created_at`).on(table).column('created_at').execute();
  for (const f of fields) await createFieldIndex(db, table, f);
}

async function createFieldIndex(db: Kysely<any>, table: string, f: FieldSpec) {
  if (f.unique) await db.schema.createIndex(`${table}__${f.name}`).on(table).column(f.name).unique().execute();
  else if (f.indexed) await db.schema.createIndex(`${table}__${f.name}`).on(table).column(f.name).execute();
}

async function insertObjectMeta(db: Kysely<Tables>, workspaceId: number, spec: ObjectSpec, system: boolean) {
  const now = nowIso();
  const obj = await db
    .insertInto('objects')
    .values({
      workspace_id: workspaceId,
      name: spec.name,
      label: spec.label,
      label_plural: spec.labelPlural,
      description: spec.description ?? null,
      table_name: tableName(workspaceId, spec.name),
      is_system: system ? 1 : 0,
      display_fields: JSON.stringify(spec.displayFields),
      created_at: now,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  let pos = 0;
  for (const f of spec.fields) await insertFieldMeta(db, workspaceId, obj.id, f, system, pos++);
  return obj.id;
}

async function insertFieldMeta(db: Kysely<Tables>, workspaceId: number, objectId: number, f: FieldSpec, system: boolean, position: number) {
  const config: Record<string, unknown> = {};
  if (f.options) config.options = normOptions(f.options);
  if (f.target) config.target = f.target;
  if (f.type === 'CURRENCY') config.scale = f.scale ?? 2;
  if (f.min !== undefined) config.min = f.min;
  if (f.max !== undefined) config.max = f.max;
  if (f.indexed || f.unique) config.indexed = true;
  await db
    .insertInto('fields')
    .values({
      workspace_id: workspaceId,
      object_id: objectId,
      name: f.name,
      label: f.label ?? labelFor(f.name),
      type: f.type,
      column_name: f.name,
      required: f.required ? 1 : 0,
      is_unique: f.unique ? 1 : 0,
      is_system: system ? 1 : 0,
      config: JSON.stringify(config),
      default_value: f.default === undefined ? null : JSON.stringify(f.default),
      description: f.description ?? null,
      position,
      created_at: nowIso(),
    })
    .execute();
}

/** The default pipelines a workspace lacks (the sales pipeline over opportunities.status). */
export async function createDefaultPipelines(db: Kysely<any>, workspaceId: number) {
  for (const spec of DEFAULT_PIPELINES) {
    const exists = await db.selectFrom('pipelines').select('id').where('workspace_id', '=', workspaceId).where('object', '=', spec.object).executeTakeFirst();
    const hasObject = await db.selectFrom('objects').select('id').where('workspace_id', '=', workspaceId).where('name', '=', spec.object).executeTakeFirst();
    if (exists || !hasObject) continue;
    await insertPipeline(db, workspaceId, spec);
  }
}

export async function insertPipeline(db: Kysely<any>, workspaceId: number, spec: PipelineSpec): Promise<string> {
  const id = randomUUID();
  await db.insertInto('pipelines').values({ id, workspace_id: workspaceId, object: spec.object, name: spec.name, field: spec.field, created_at: nowIso() }).execute();
  await db
    .insertInto('pipeline_steps')
    .values(
      spec.steps.map((st, i) => ({
        id: randomUUID(),
        pipeline_id: id,
        position: i,
        key: st.key,
        name: st.name,
        probability: st.probability ?? null,
        is_won: st.won ? 1 : 0,
        is_lost: st.lost ? 1 : 0,
        defaults: JSON.stringify(st.defaults ?? {}),
      })),
    )
    .execute();
  return id;
}

/**
 * Creates the system objects a workspace lacks (all of them for a new workspace; the ones a newer
 * version added for an existing one). Runs inside the caller's transaction.
 */
export async function createSystemSchema(db: Kysely<Tables>, adapter: DialectAdapter, workspaceId: number) {
  const have = new Set((await db.selectFrom('objects').select('name').where('workspace_id', '=', workspaceId).execute()).map((o) => o.name));
  const missing = SYSTEM_OBJECTS.filter((spec) => !have.has(spec.name));
  if (missing.length && have.size) await bumpVersion(db, workspaceId);
  for (const spec of missing) {
    await insertObjectMeta(db, workspaceId, spec, true);
    const table = tableName(workspaceId, spec.name);
    await createRecordTable(db, adapter, table, spec.fields);
    for (const cols of spec.indexes ?? [])
      await (db as Kysely<any>).schema
        .createIndex(`${table}__${cols.join('_')}`)
        .on(table)
        .columns(cols)
        .execute();
  }
}

// ---------------------------------------------------------------------------------------------
// Loading and caching: schema_version on the workspace row invalidates every process's cache.

const caches = new WeakMap<Db, Map<number, WorkspaceSchema>>();

/** A workspace's objects and fields as stored (getSchema caches them; migrations read them in their transaction). */
export async function loadSchema(db: Kysely<Tables>, workspaceId: number, version: number, timeZone: string): Promise<WorkspaceSchema> {
  const objects = await db.selectFrom('objects').selectAll().where('workspace_id', '=', workspaceId).orderBy('id').execute();
  const fields = await db.selectFrom('fields').selectAll().where('workspace_id', '=', workspaceId).orderBy('position').execute();
  const pipelines = await db.selectFrom('pipelines').selectAll().where('workspace_id', '=', workspaceId).execute();
  const steps = pipelines.length
    ? await db
        .selectFrom('pipeline_steps')
        .selectAll()
        .where(
          'pipeline_id',
          'in',
          pipelines.map((p) => p.id),
        )
        .orderBy('position')
        .execute()
    : [];
  const pipelineOf = new Map<string, PipelineDef>(
    pipelines.map((p) => [
      p.object,
      {
        id: p.id,
        object: p.object,
        name: p.name,
        field: p.field,
        steps: steps
          .filter((st) => st.pipeline_id === p.id)
          .map((st) => ({
            id: st.id,
            key: st.key,
            name: st.name,
            position: st.position,
            probability: st.probability,
            won: st.is_won === 1,
            lost: st.is_lost === 1,
            defaults: JSON.parse(st.defaults) as Record<string, unknown>,
          })),
      },
    ]),
  );
  const map = new Map<string, ObjectDef>();
  for (const o of objects) {
    const own: FieldDef[] = fields
      .filter((f) => f.object_id === o.id)
      .map((f) => {
        const cfg = JSON.parse(f.config) as Record<string, unknown>;
        const def: FieldDef = {
          id: f.id,
          name: f.name,
          label: f.label,
          type: f.type as FieldType,
          column: f.column_name,
          required: f.required === 1,
          unique: f.is_unique === 1,
          system: f.is_system === 1,
          readOnly: false,
          indexed: cfg.indexed === true,
          position: f.position,
        };
        if (cfg.options) def.options = cfg.options as SelectOption[];
        if (typeof cfg.target === 'string') def.target = cfg.target;
        if (typeof cfg.scale === 'number') def.scale = cfg.scale;
        if (typeof cfg.min === 'number') def.min = cfg.min;
        if (typeof cfg.max === 'number') def.max = cfg.max;
        if (f.default_value !== null) def.defaultValue = JSON.parse(f.default_value);
        if (f.description) def.description = f.description;
        return def;
      });
    const all = [...BUILT_IN, ...own];
    map.set(o.name, {
      id: o.id,
      name: o.name,
      label: o.label,
      labelPlural: o.label_plural,
      description: o.description,
      table: o.table_name,
      system: o.is_system === 1,
      displayFields: JSON.parse(o.display_fields) as string[],
      fields: all,
      byName: new Map(all.map((f) => [f.name, f])),
      ...(pipelineOf.has(o.name) ? { pipeline: pipelineOf.get(o.name)! } : {}),
    });
  }
  return { version, objects: map, workspaceId, timeZone };
}

/** The workspace's schema version and time zone, by its id (the one parameter). */
const schemaVersionOf = compiledOnce((k) => k.selectFrom('workspaces').select(['schema_version', 'time_zone']).where('id', '=', 0));

export async function getSchema(ctx: Ctx, opts: { verify?: boolean } = {}): Promise<WorkspaceSchema> {
  // Told of every change (PostgreSQL's notifications): the cached schema stands while the token does.
  // `verify` reads the version anyway (a name not found may be one another process just created).
  const mine = bumped.get(ctx.actor.workspaceId);
  const token = opts.verify || (mine && mine.until > Date.now()) ? null : (ctx.db.schemaToken?.(ctx.actor.workspaceId) ?? null);
  const known = token !== null ? caches.get(ctx.db)?.get(ctx.actor.workspaceId) : undefined;
  if (known && known.token === token) return known;
  // Without notifications (SQLite): the schema whose version was checked while the database stood as
  // it stands now is still the schema (any write since, by any connection or process, moves the
  // change version, read before that check); else its version is read again.
  const unchanged = !opts.verify && !mine && !ctx.db.schemaToken ? (ctx.db.changeVersion?.(ctx.dataVersion) ?? null) : null;
  if (unchanged !== null) {
    const checked = caches.get(ctx.db)?.get(ctx.actor.workspaceId);
    if (checked && checked.unchangedSince === unchanged) return checked;
  }
  const [ws] = await schemaVersionOf(ctx.db.kysely, [ctx.actor.workspaceId]);
  if (!ws) throw new CrmError('UNAUTHORIZED', 'Workspace no longer exists');
  if (mine && ws.schema_version >= mine.version) bumped.delete(ctx.actor.workspaceId);
  let perDb = caches.get(ctx.db);
  if (!perDb) caches.set(ctx.db, (perDb = new Map()));
  const cached = perDb.get(ctx.actor.workspaceId);
  // Without notifications the version tells; with them, a changed token reloads whatever the version
  // (a copy --replace rewrites the metadata under the same version).
  if (cached && cached.version === ws.schema_version && (token === null || cached.token === null)) {
    cached.token = token;
    cached.unchangedSince = unchanged ?? undefined;
    return cached;
  }
  const fresh = await loadSchema(ctx.db.kysely, ctx.actor.workspaceId, ws.schema_version, ws.time_zone);
  fresh.token = token;
  fresh.unchangedSince = unchanged ?? undefined;
  perDb.set(ctx.actor.workspaceId, fresh);
  return fresh;
}

/**
 * The schema getSchema loaded last for this workspace, without a query: for code inside a write
 * transaction (which already resolved its object), where a query through the pool would wait on
 * the transaction's own connection.
 */
export function loadedSchema(ctx: Ctx): WorkspaceSchema | undefined {
  return caches.get(ctx.db)?.get(ctx.actor.workspaceId);
}

export async function resolveObject(ctx: Ctx, name: string): Promise<ObjectDef> {
  let schema = await getSchema(ctx);
  // Created a moment ago by another process, whose notification has not arrived: asked once more.
  if (!schema.objects.has(name) && ctx.db.schemaToken) schema = await getSchema(ctx, { verify: true });
  const obj = schema.objects.get(name);
  if (!obj)
    throw new CrmError('INVALID_OBJECT', `Object '${name}' does not exist. Valid objects: ${[...schema.objects.keys()].join(', ')}`, {
      validObjects: [...schema.objects.keys()],
    });
  return obj;
}

export function resolveField(obj: ObjectDef, name: string): FieldDef {
  const f = obj.byName.get(name);
  if (!f) throw unknownField(obj, name);
  return f;
}

export function unknownField(obj: ObjectDef, name: string): CrmError {
  const valid = obj.fields.map((x) => x.name);
  const guess = closest(name, valid);
  return validationError(`Unknown field '${name}' on ${obj.name}${guess ? ` (did you mean '${guess}'?)` : ''}. Valid fields: ${valid.join(', ')}`, {
    field: name,
    validFields: valid,
  });
}

// ---------------------------------------------------------------------------------------------
// Describing

export function describeField(f: FieldDef) {
  return {
    name: f.name,
    label: f.label,
    type: f.type,
    required: f.required,
    unique: f.unique,
    system: f.system,
    read_only: f.readOnly,
    ...(f.options ? { options: f.options } : {}),
    ...(f.target ? { target: f.target } : {}),
    ...(f.scale !== undefined ? { scale: f.scale } : {}),
    ...(f.min !== undefined ? { min: f.min } : {}),
    ...(f.max !== undefined ? { max: f.max } : {}),
    ...(f.defaultValue !== undefined ? { default: f.defaultValue } : {}),
    ...(f.description ? { description: f.description } : {}),
  };
}

export function describeObject(o: ObjectDef) {
  return {
    name: o.name,
    label: o.label,
    label_plural: o.labelPlural,
    description: o.description,
    system: o.system,
    display_fields: o.displayFields,
    fields: o.fields.map(describeField),
  };
}

export async function listObjects(ctx: Ctx) {
  const schema = await getSchema(ctx);
  return [...schema.objects.values()].map(describeObject);
}

export async function getObjectSchema(ctx: Ctx, name: string) {
  return describeObject(await resolveObject(ctx, name));
}

// ---------------------------------------------------------------------------------------------
// Custom objects and fields (admins only)

const optionSchema = z.union([z.string().min(1).max(100), z.object({ value: z.string().min(1).max(100), label: z.string().min(1).max(200) }).strict()]);

export const fieldSpecSchema = z
  .object({
    name: z.string().regex(NAME_RE, 'lowercase letters, digits and _, starting with a letter, at most 40 characters'),
    label: z.string().min(1).max(200).optional(),
    type: z.enum(FIELD_TYPES),
    required: z.boolean().optional(),
    unique: z.boolean().optional(),
    indexed: z.boolean().optional(),
    options: z.array(optionSchema).max(500).optional(),
    target: z.string().optional(),
    scale: z.number().int().min(0).max(6).optional(),
    min: z.number().optional(),
    max: z.number().optional(),
    default: z.unknown().optional(),
    description: z.string().max(1000).optional(),
  })
  .strict();

export const objectSpecSchema = z
  .object({
    name: z.string().regex(NAME_RE, 'lowercase letters, digits and _, starting with a letter, at most 40 characters'),
    label: z.string().min(1).max(200).optional(),
    label_plural: z.string().min(1).max(200).optional(),
    description: z.string().max(1000).optional(),
    display_fields: z.array(z.string()).min(1).max(5).optional(),
    fields: z.array(fieldSpecSchema).min(1).max(200),
  })
  .strict();

export function parseWith<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const at = issue.path.length ? ` at '${issue.path.join('.')}'` : '';
  throw validationError(`Invalid ${what}${at}: ${issue.message}`);
}

function checkFieldSpec(schema: WorkspaceSchema, f: FieldSpec, selfObject?: string) {
  if (RESERVED_FIELD_NAMES.has(f.name)) throw validationError(`Field name '${f.name}' is reserved`);
  if ((f.type === 'SELECT' || f.type === 'MULTI_SELECT') && !f.options?.length) throw validationError(`Field '${f.name}' of type ${f.type} needs 'options'`);
  if (f.type !== 'SELECT' && f.type !== 'MULTI_SELECT' && f.options) throw validationError(`Field '${f.name}': 'options' only apply to SELECT and MULTI_SELECT`);
  if (f.options) {
    const values = normOptions(f.options)!.map((o) => o.value);
    if (new Set(values).size !== values.length) throw validationError(`Field '${f.name}' has duplicate options`);
  }
  if (f.type === 'RELATION') {
    const valid = ['users', ...schema.objects.keys(), ...(selfObject ? [selfObject] : [])];
    if (!f.target || !valid.includes(f.target)) throw validationError(`Field '${f.name}' of type RELATION needs 'target', one of: ${valid.join(', ')}`);
  } else if (f.target) throw validationError(`Field '${f.name}': 'target' only applies to RELATION`);
  if (f.unique && ['BOOLEAN', 'MULTI_SELECT'].includes(f.type)) throw validationError(`Field '${f.name}': ${f.type} cannot be unique`);
  if (f.default !== undefined && f.default !== null) {
    const probe: FieldDef = {
      id: 0,
      name: f.name,
      label: f.name,
      type: f.type,
      column: f.name,
      required: false,
      unique: false,
      system: false,
      readOnly: false,
      indexed: false,
      position: 0,
      ...(f.options ? { options: normOptions(f.options)! } : {}),
      ...(f.scale !== undefined ? { scale: f.scale } : {}),
      ...(f.min !== undefined ? { min: f.min } : {}),
      ...(f.max !== undefined ? { max: f.max } : {}),
    };
    if (f.type === 'RELATION') throw validationError(`Field '${f.name}': RELATION fields cannot have a default`);
    decodeValue(probe, encodeValue(probe, f.default));
  }
}

export async function bumpVersion(db: Kysely<Tables>, workspaceId: number) {
  const r = await db
    .updateTable('workspaces')
    .set((eb) => ({ schema_version: eb('schema_version', '+', 1) }))
    .where('id', '=', workspaceId)
    .returning('schema_version')
    .executeTakeFirst();
  // This process's own change: read from the database until it has committed (see getSchema).
  if (r) bumped.set(workspaceId, { version: r.schema_version, until: Date.now() + 10_000 });
}

/**
 * Schema versions this process is writing, by workspace: until the database shows them (or a
 * rolled-back change's 10 s pass), getSchema reads the version instead of trusting the change
 * token, which moves only when the notification of the commit arrives, a moment after it.
 */
const bumped = new Map<number, { version: number; until: number }>();

export async function createObject(ctx: Ctx, input: unknown) {
  requireAdmin(ctx, 'create objects');
  const spec = parseWith(objectSpecSchema, input, 'object definition');
  const schema = await getSchema(ctx);
  if (RESERVED_OBJECT_NAMES.has(spec.name)) throw validationError(`Object name '${spec.name}' is reserved`);
  if (schema.objects.has(spec.name)) throw new CrmError('DUPLICATE_RECORD', `Object '${spec.name}' already exists`);
  const names = spec.fields.map((f) => f.name);
  if (new Set(names).size !== names.length) throw validationError('Field names must be unique within an object');
  for (const f of spec.fields) checkFieldSpec(schema, f, spec.name);
  const displayFields = spec.display_fields ?? [spec.fields.find((f) => f.type === 'TEXT')?.name ?? spec.fields[0]!.name];
  for (const d of displayFields) if (!names.includes(d)) throw validationError(`display_fields: '${d}' is not one of the object's fields`);
  const objSpec: ObjectSpec = {
    name: spec.name,
    label: spec.label ?? labelFor(spec.name),
    labelPlural: spec.label_plural ?? spec.label ?? labelFor(spec.name),
    displayFields,
    fields: spec.fields.map((f) => ({ ...f, indexed: f.indexed ?? (f.type === 'RELATION' || f.type === 'SELECT') })),
    ...(spec.description ? { description: spec.description } : {}),
  };
  await ctx.db.kysely
    .transaction()
    .execute(async (trx) => {
      await insertObjectMeta(trx, ctx.actor.workspaceId, objSpec, false);
      await createRecordTable(trx, ctx.db.adapter, tableName(ctx.actor.workspaceId, spec.name), objSpec.fields);
      await bumpVersion(trx, ctx.actor.workspaceId);
      // Schema changes are in the feed too (no record: record_id ''), so agents following it learn of new objects.
      await recordActivity(trx, ctx, [{ object: spec.name, recordId: '', action: 'object_created', payload: { fields: names } }]);
    })
    .catch(duplicateOn(ctx.db.adapter, 'objects', `Object '${spec.name}' already exists`));
  return getObjectSchema(ctx, spec.name);
}

/**
 * Fields per object, the built-in ones (id, created_at, updated_at, created_by) not counted. Each
 * field is a column: SQLite allows 2,000 per table (SQLITE_MAX_COLUMN) and PostgreSQL 1,600, and an
 * object with hundreds of fields is a modelling mistake long before either.
 */
export const MAX_FIELDS_PER_OBJECT = 500;

export async function createField(ctx: Ctx, objectName: string, input: unknown, limits: { maxFields?: number } = {}) {
  requireAdmin(ctx, 'create fields');
  const obj = await resolveObject(ctx, objectName);
  const spec = parseWith(fieldSpecSchema, input, 'field definition');
  const schema = await getSchema(ctx);
  if (obj.byName.has(spec.name)) throw new CrmError('DUPLICATE_RECORD', `Field '${spec.name}' already exists on ${obj.name}`);
  const maxFields = limits.maxFields ?? MAX_FIELDS_PER_OBJECT;
  const own = obj.fields.length - BUILT_IN.length;
  if (own >= maxFields) throw validationError(`${obj.name} has ${own} fields; the limit is ${maxFields} fields per object (built-in fields not counted)`, { limit: maxFields });
  checkFieldSpec(schema, spec);
  if (spec.required && spec.default === undefined) {
    if (await hasRows(ctx.db.kysely, obj)) throw validationError(`A required field needs a 'default' when ${obj.name} already has records`);
  }
  const fieldSpec: FieldSpec = { ...spec, indexed: spec.indexed ?? (spec.type === 'RELATION' || spec.type === 'SELECT') };
  await ctx.db.kysely
    .transaction()
    .execute(async (trx) => {
      const pos = await trx
        .selectFrom('fields')
        .select((eb) => eb.fn.max('position').as('p'))
        .where('object_id', '=', obj.id)
        .executeTakeFirst();
      await insertFieldMeta(trx, ctx.actor.workspaceId, obj.id, fieldSpec, false, Number(pos?.p ?? -1) + 1);
      const k = trx as unknown as Kysely<any>;
      await k.schema
        .alterTable(obj.table)
        .addColumn(spec.name, ctx.db.adapter.columnType(storageOf(spec.type)))
        .execute();
      if (spec.default !== undefined && spec.default !== null) {
        const probe = {
          ...BUILT_IN[0]!,
          name: spec.name,
          type: spec.type,
          readOnly: false,
          ...(spec.options ? { options: normOptions(spec.options)! } : {}),
          ...(spec.scale !== undefined ? { scale: spec.scale } : {}),
        } as FieldDef;
        await k
          .updateTable(obj.table)
          .set({ [spec.name]: encodeValue(probe, spec.default) })
          .execute();
        // Every record now holds the default: when match keys are made of the field (an email, a
        // domain), theirs are made again, so that they stay exactly what the values give (writeKeys).
        const now = await loadSchema(trx, ctx.actor.workspaceId, 0, 'UTC');
        if (keyColumns(now.objects.get(obj.name)!).has(spec.name)) await rebuildKeysIn(k, ctx.actor.workspaceId, now, [obj.name]);
      }
      if (fieldSpec.unique) {
        try {
          await createFieldIndex(k, obj.table, fieldSpec);
        } catch (e) {
          if (/UNIQUE/i.test(String(e))) throw validationError(`Existing ${obj.name} records have duplicate values for '${spec.name}'`);
          throw e;
        }
      } else await createFieldIndex(k, obj.table, fieldSpec);
      await bumpVersion(trx, ctx.actor.workspaceId);
      await recordActivity(trx, ctx, [{ object: obj.name, recordId: '', action: 'field_created', payload: { field: spec.name, type: spec.type } }]);
    })
    .catch(duplicateOn(ctx.db.adapter, 'fields', `Field '${spec.name}' already exists on ${obj.name}`));
  const fresh = await resolveObject(ctx, objectName);
  return describeField(resolveField(fresh, spec.name));
}
