import { type Kysely, type Migration, type MigrationProvider, type MigrationResult, Migrator, sql } from 'kysely';
import { rebuildDedupeKeys, rebuildKeysIn } from '../services/dedupe-keys.js';
import { defaultRegion } from '../services/phone-parse.js';
import { createDefaultPipelines, createSystemSchema, getSchema, loadSchema } from '../services/schema.js';
import { rebuildSearchIndex } from '../services/search.js';
import type { Db } from './database.js';
import type { DialectAdapter } from './dialect.js';
import { isCatalogRace } from './postgres/adapter.js';
import type { SearchBackend } from './search.js';
import { isSqliteBusy } from './sqlite/dialect.js';

/**
 * One step of the database's layout, in order. Its parts:
 * - `shared`: the shared tables (workspaces, users, api_tokens), once per database;
 * - `space`: the tables each workspace holds (objects, fields, associations, activity, notes, the
 *   search index, …): once per database on SQLite, where every workspace's rows share them (keyed
 *   by workspace_id); in each workspace's own schema on PostgreSQL, when the workspace is created
 *   or, for a step added later, when the workspace is migrated;
 * - `each`: what a workspace that existed before the step needs (rows, its record tables, a
 *   rebuilt index), per workspace in a transaction of its own, resumably (migrateWorkspaces).
 * A workspace created after a step never runs its `each`: creating a workspace builds the latest
 * layout at once. Record tables are created per workspace and object by the schema service
 * (services/schema.ts) from the field metadata.
 */
export interface Step {
  shared?(db: Kysely<any>): Promise<void>;
  space?(db: Kysely<any>): Promise<void>;
  each?(db: Kysely<any>, workspaceId: number): Promise<void>;
}

function steps(adapter: DialectAdapter, search: SearchBackend, ctx: { before: Set<string> }): Record<string, Step> {
  return {
    '0001_core': {
      async shared(db) {
        await db.schema
          .createTable('workspaces')
          .addColumn('id', adapter.idType, (c) => adapter.identity(c, true))
          .addColumn('name', 'text', (c) => c.notNull().unique())
          .addColumn('schema_version', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('users')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id').onDelete('cascade'))
          .addColumn('email', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('role', 'text', (c) => c.notNull().check(sql`role in ('admin', 'member')`))
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('users_workspace_email', ['workspace_id', 'email'])
          .execute();
        await db.schema
          .createTable('api_tokens')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id').onDelete('cascade'))
          .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('token_prefix', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('last_used_at', 'text')
          .addColumn('revoked_at', 'text')
          .execute();
      },
      async space(db) {
        await db.schema
          .createTable('objects')
          .addColumn('id', adapter.idType, (c) => adapter.identity(c, true))
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('label', 'text', (c) => c.notNull())
          .addColumn('label_plural', 'text', (c) => c.notNull())
          .addColumn('description', 'text')
          .addColumn('table_name', 'text', (c) => c.notNull().unique())
          .addColumn('is_system', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('display_fields', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('objects_workspace_name', ['workspace_id', 'name'])
          .execute();
        await db.schema
          .createTable('fields')
          .addColumn('id', adapter.idType, (c) => adapter.identity(c, true))
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('object_id', 'integer', (c) => c.notNull().references('objects.id').onDelete('cascade'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('label', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('column_name', 'text', (c) => c.notNull())
          .addColumn('required', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('is_unique', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('is_system', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('config', 'text', (c) => c.notNull().defaultTo('{}'))
          .addColumn('default_value', 'text')
          .addColumn('description', 'text')
          .addColumn('position', 'integer', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('fields_object_name', ['object_id', 'name'])
          .execute();
        await db.schema
          .createTable('associations')
          .addColumn('id', adapter.idType, (c) => adapter.identity(c, true))
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('a_object', 'text', (c) => c.notNull())
          .addColumn('a_id', 'text', (c) => c.notNull())
          .addColumn('b_object', 'text', (c) => c.notNull())
          .addColumn('b_id', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text')
          .addUniqueConstraint('associations_pair', ['workspace_id', 'a_object', 'a_id', 'b_object', 'b_id'])
          .execute();
        await db.schema.createIndex('associations_b').on('associations').columns(['workspace_id', 'b_object', 'b_id']).execute();
        await db.schema
          .createTable('activity')
          .addColumn('id', adapter.idType, (c) => adapter.identity(c, true))
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('object', 'text', (c) => c.notNull())
          .addColumn('record_id', 'text', (c) => c.notNull())
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('payload', 'text')
          .addColumn('user_id', 'text')
          .addColumn('via', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('activity_record').on('activity').columns(['workspace_id', 'object', 'record_id', 'id']).execute();
      },
    },
    '0002_tasks_notes_inbox': {
      // Tasks are a system object (record table per workspace): add it to existing workspaces.
      each: (db, ws) => createSystemSchema(db, adapter, ws),
      async space(db) {
        await db.schema
          .createTable('notes')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('author_id', 'text', (c) => c.notNull())
          .addColumn('body', 'text', (c) => c.notNull())
          .addColumn('visibility', 'text', (c) => c.notNull().check(sql`visibility in ('private', 'workspace')`))
          .addColumn('object', 'text')
          .addColumn('record_id', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('notes_record').on('notes').columns(['workspace_id', 'object', 'record_id', 'created_at']).execute();
        await db.schema.createIndex('notes_author').on('notes').columns(['workspace_id', 'author_id', 'created_at']).execute();
        await db.schema
          .createTable('threads')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('subject', 'text', (c) => c.notNull())
          .addColumn('snippet', 'text')
          .addColumn('contact_id', 'text')
          .addColumn('company_id', 'text')
          .addColumn('unread', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('message_count', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('last_message_at', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('threads_recent').on('threads').columns(['workspace_id', 'last_message_at']).execute();
        await db.schema.createIndex('threads_contact').on('threads').columns(['workspace_id', 'contact_id']).execute();
        await db.schema.createIndex('threads_company').on('threads').columns(['workspace_id', 'company_id']).execute();
        await db.schema
          .createTable('messages')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('thread_id', 'text', (c) => c.notNull().references('threads.id').onDelete('cascade'))
          .addColumn('direction', 'text', (c) => c.notNull().check(sql`direction in ('inbound', 'outbound')`))
          .addColumn('from_email', 'text', (c) => c.notNull())
          .addColumn('from_name', 'text')
          .addColumn('to_emails', 'text', (c) => c.notNull())
          .addColumn('subject', 'text', (c) => c.notNull())
          .addColumn('body', 'text', (c) => c.notNull())
          .addColumn('sent_at', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('messages_thread').on('messages').columns(['thread_id', 'sent_at']).execute();
      },
    },
    '0003_pipelines': {
      each: (db, ws) => createDefaultPipelines(db, ws),
      async space(db) {
        await db.schema
          .createTable('pipelines')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('object', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('field', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addUniqueConstraint('pipelines_object', ['workspace_id', 'object'])
          .execute();
        await db.schema
          .createTable('pipeline_steps')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('pipeline_id', 'text', (c) => c.notNull().references('pipelines.id').onDelete('cascade'))
          .addColumn('position', 'integer', (c) => c.notNull())
          .addColumn('key', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('probability', 'real')
          .addColumn('is_won', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('is_lost', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('defaults', 'text', (c) => c.notNull().defaultTo('{}'))
          .addUniqueConstraint('pipeline_steps_key', ['pipeline_id', 'key'])
          .execute();
        await db.schema
          .createTable('stage_history')
          .addColumn('id', adapter.idType, (c) => adapter.identity(c, true))
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('pipeline_id', 'text', (c) => c.notNull().references('pipelines.id').onDelete('cascade'))
          .addColumn('record_id', 'text', (c) => c.notNull())
          .addColumn('step_key', 'text', (c) => c.notNull())
          .addColumn('entered_at', 'text', (c) => c.notNull())
          .addColumn('left_at', 'text')
          .execute();
        await db.schema.createIndex('stage_history_record').on('stage_history').columns(['pipeline_id', 'record_id', 'entered_at']).execute();
        await db.schema.createIndex('stage_history_step').on('stage_history').columns(['pipeline_id', 'step_key', 'record_id']).execute();
      },
    },
    '0004_search': {
      // Records written before the search index existed are indexed once, after the steps (migrate).
      space: (db) => search.createTables(db),
    },
    '0005_dedupe_merges': {
      async space(db) {
        await db.schema
          .createTable('dedupe_keys')
          .addColumn('workspace_id', 'integer', (c) => c.notNull())
          .addColumn('object_id', 'integer', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('key', 'text', (c) => c.notNull())
          .addColumn('record_id', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('dedupe_keys_key').on('dedupe_keys').columns(['workspace_id', 'object_id', 'kind', 'key']).execute();
        await db.schema.createIndex('dedupe_keys_record').on('dedupe_keys').columns(['workspace_id', 'object_id', 'record_id']).execute();
        await db.schema
          .createTable('merges')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('workspace_id', 'integer', (c) => adapter.workspaceKey(c))
          .addColumn('object', 'text', (c) => c.notNull())
          .addColumn('primary_id', 'text', (c) => c.notNull())
          .addColumn('merged_ids', 'text', (c) => c.notNull())
          .addColumn('snapshot', 'text', (c) => c.notNull())
          .addColumn('user_id', 'text')
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('undone_at', 'text')
          .execute();
        await db.schema.createIndex('merges_primary').on('merges').columns(['workspace_id', 'object', 'primary_id']).execute();
      },
    },
    '0006_workspace_time_zone': {
      async shared(db) {
        // Relative dates in filters ('today', 'this_week') are days in the workspace's zone.
        await db.schema
          .alterTable('workspaces')
          .addColumn('time_zone', 'text', (c) => c.notNull().defaultTo('UTC'))
          .execute();
      },
    },
    '0007_search_terms': {
      // Each workspace's own words for typo-tolerant search (FTS5's vocabulary mixes workspaces).
      space: (db) => search.createTermTable(db),
    },
    '0008_change_notifications': {
      // Other processes' caches follow schema and vocabulary changes (PostgreSQL; SQLite reads versions).
      shared: async (db) => adapter.changeNotifications?.shared(db),
      space: async (db) => adapter.changeNotifications?.space(db),
    },
    '0009_workspace_migrations': {
      async shared(db) {
        // How far each workspace's own migration has gone (the name of its last step): a workspace
        // that existed before is as far as the steps this database had run before this upgrade.
        await db.schema
          .alterTable('workspaces')
          .addColumn('migrated_to', 'text', (c) => c.notNull().defaultTo(''))
          .execute();
        const last = [...ctx.before].sort().at(-1) ?? '';
        await db.updateTable('workspaces').set({ migrated_to: last }).execute();
      },
    },
    '0010_token_version': {
      // Cached tokens in every process follow revocations and user changes (PostgreSQL; SQLite looks tokens up each time).
      shared: async (db) => adapter.tokenVersion?.shared(db),
    },
    '0011_dedupe_keys_lookup_order': {
      // Match keys stored in the order they are looked up by (workspace, object, kind, key, record):
      // on SQLite the table is its own lookup index (one b-tree fewer per key written: a third of
      // their bytes, and pages per create). A record's keys are still found by the record's index.
      // A record holding the same key twice (two phone fields with one number) keeps it once.
      async space(db) {
        await adapter
          .keyOrdered(
            db.schema
              .createTable('dedupe_keys_new')
              .addColumn('workspace_id', 'integer', (c) => c.notNull())
              .addColumn('object_id', 'integer', (c) => c.notNull())
              .addColumn('kind', 'text', (c) => c.notNull())
              .addColumn('key', 'text', (c) => c.notNull())
              .addColumn('record_id', 'text', (c) => c.notNull())
              .addPrimaryKeyConstraint('dedupe_keys_lookup', ['workspace_id', 'object_id', 'kind', 'key', 'record_id']),
          )
          .execute();
        await db
          .insertInto('dedupe_keys_new')
          .columns(['workspace_id', 'object_id', 'kind', 'key', 'record_id'])
          .expression(db.selectFrom('dedupe_keys').select(['workspace_id', 'object_id', 'kind', 'key', 'record_id']).distinct())
          .execute();
        await db.schema.dropTable('dedupe_keys').execute();
        await db.schema.alterTable('dedupe_keys_new').renameTo('dedupe_keys').execute();
        await db.schema.createIndex('dedupe_keys_record').on('dedupe_keys').columns(['workspace_id', 'object_id', 'record_id']).execute();
      },
    },
    '0012_search_without_text': {
      // The full-text index keeps no copy of the documents' text (SQLite; PostgreSQL's search_docs
      // keeps its text for snippets): search snippets are made from the hits' records.
      space: async (db) => search.dropText?.(db),
    },
    '0013_dedupe_keys_by_seq': {
      // A key names its record by the record's seq (the record table's integer key, a few bytes)
      // instead of its id (36 characters), and a record's keys are found from its stored values
      // (writeKeys), no longer by an index on the record (a copy of every key). The keys are made
      // again from the records, so that they are exactly what the values give (a company deleted
      // before this left its contacts' name keys naming it).
      async space(db) {
        await adapter
          .keyOrdered(
            db.schema
              .createTable('dedupe_keys_new')
              .addColumn('workspace_id', 'integer', (c) => c.notNull())
              .addColumn('object_id', 'integer', (c) => c.notNull())
              .addColumn('kind', 'text', (c) => c.notNull())
              .addColumn('key', 'text', (c) => c.notNull())
              .addColumn('record_seq', adapter.idType, (c) => c.notNull())
              .addPrimaryKeyConstraint('dedupe_keys_by_seq', ['workspace_id', 'object_id', 'kind', 'key', 'record_seq']),
          )
          .execute();
        await db.schema.dropTable('dedupe_keys').execute();
        await db.schema.alterTable('dedupe_keys_new').renameTo('dedupe_keys').execute();
      },
      async each(db, workspaceId) {
        const ws = await db.selectFrom('workspaces').select(['schema_version', 'time_zone']).where('id', '=', workspaceId).executeTakeFirstOrThrow();
        await rebuildKeysIn(db, workspaceId, await loadSchema(db, workspaceId, ws.schema_version, ws.time_zone));
      },
    },
    '0014_phone_region': {
      // The region each workspace's phone keys and search forms were made in (followPhoneRegion).
      async shared(db) {
        await db.schema.alterTable('workspaces').addColumn('phone_region', 'text').execute();
      },
    },
  };
}

/** Each step as a migration of the shared schema: its shared part, and its space part where the workspaces share one space. */
class StepProvider implements MigrationProvider {
  constructor(
    private readonly all: Record<string, Step>,
    private readonly sharedSpace: boolean,
  ) {}
  async getMigrations(): Promise<Record<string, Migration>> {
    const up = (step: Step) => async (db: Kysely<any>) => {
      await step.shared?.(db);
      if (this.sharedSpace) await step.space?.(db);
    };
    return Object.fromEntries(Object.entries(this.all).map(([name, step]) => [name, { up: up(step) }]));
  }
}

/** The steps a database had run (their names), before this process migrates it. */
async function ranBefore(db: Db): Promise<Set<string>> {
  try {
    return new Set((await sql<{ name: string }>`SELECT name FROM kysely_migration`.execute(db.kysely)).rows.map((r) => r.name));
  } catch {
    return new Set(); // a new database: no migration table yet
  }
}

/**
 * Another process may be migrating the same file (a rolling restart, servers started together): its
 * upgrade holds the write lock for as long as it runs, which may be longer than a write's wait
 * (a migration that reads the whole search index). Waiting costs nothing (our transaction had not
 * begun), so try again, for up to this long.
 */
const MIGRATION_LOCK_WAIT_MS = 10 * 60_000;

/**
 * Brings the database to the latest layout: the shared schema's steps (Kysely's migrator, under its
 * lock), then every workspace that is behind (migrateWorkspaces). Returns the shared steps applied.
 */
export async function migrate(db: Db, opts: { lockWaitMs?: number } = {}): Promise<string[]> {
  const schema = await db.adapter.prepare?.(db.kysely);
  const before = await ranBefore(db);
  if (db.sharedSchema && before.size && !before.has('0009_workspace_migrations'))
    throw new Error(
      `This PostgreSQL schema (${db.sharedSchema}) holds every workspace's tables in one schema, as development builds made it; ` +
        'this version keeps each workspace in a schema of its own. Copy the data from SQLite again (crm-mcp copy --replace) into a new schema.',
    );
  const all = steps(db.adapter, db.search, { before });
  let results: MigrationResult[] = [];
  // Every step already run (every start but the first after an upgrade): the migrator is not needed.
  // (It lists the tables of every schema of the database: thousands with a schema per workspace.)
  if (Object.keys(all).some((name) => !before.has(name))) {
    // The migrator's own tables in the database's schema: told nothing, it finds another schema's and skips creating its own.
    const migrator = new Migrator({ db: db.kysely, provider: new StepProvider(all, !db.sharedSchema), ...(schema ? { migrationTableSchema: schema } : {}) });
    const deadline = Date.now() + (opts.lockWaitMs ?? MIGRATION_LOCK_WAIT_MS);
    let outcome = await migrator.migrateToLatest();
    while (outcome.error && (isSqliteBusy(outcome.error) || isCatalogRace(outcome.error)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      outcome = await migrator.migrateToLatest();
    }
    if (outcome.error) throw outcome.error;
    results = outcome.results ?? [];
  }
  await migrateWorkspaces(db, { steps: all });
  // Records written before the search index existed get indexed once (SQLite files older than it).
  const applied = (name: string) => results.some((r) => r.migrationName === name && r.status === 'Success');
  if (applied('0004_search') || applied('0005_dedupe_merges')) {
    const workspaces = await db.kysely.selectFrom('workspaces').select('id').execute();
    for (const ws of workspaces) {
      const wdb = db.forWorkspace(ws.id);
      const schema = await getSchema(systemCtx(wdb, ws.id));
      if (applied('0004_search')) await rebuildSearchIndex(wdb, ws.id, schema);
      if (applied('0005_dedupe_merges')) await rebuildDedupeKeys(wdb, ws.id, schema);
    }
  }
  await followPhoneRegion(db);
  return results.filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

const systemCtx = (db: Db, workspaceId: number) => ({
  db,
  log: { info() {}, warn() {}, error() {}, debug() {} },
  actor: { workspaceId, userId: 'system', role: 'admin' as const, via: 'cli' },
});

/**
 * Phone numbers written without a country code are read in CRM_DEFAULT_REGION ('(415) 555-0100' is
 * +1 415 555 0100 in the US), for their match keys and their search forms. A record's keys are
 * found from its values when it changes (there is no index of keys by record), so keys made in one
 * region and removed in another would stay behind for good. Each workspace records the region its
 * keys were made in; when the process runs in another, its keys and search documents are made again
 * in this one, once, at start (a workspace that recorded none takes this one). Returns the
 * workspaces rebuilt.
 */
export async function followPhoneRegion(db: Db, region: string = defaultRegion): Promise<number[]> {
  const rows = await db.kysely
    .selectFrom('workspaces')
    .select(['id', 'phone_region'])
    .where((eb) => eb.or([eb('phone_region', 'is', null), eb('phone_region', '!=', region)]))
    .execute();
  const unset = rows.filter((r) => r.phone_region === null).map((r) => r.id);
  if (unset.length) await db.kysely.updateTable('workspaces').set({ phone_region: region }).where('id', 'in', unset).where('phone_region', 'is', null).execute();
  const rebuilt: number[] = [];
  for (const { id, phone_region } of rows) {
    if (phone_region === null) continue;
    const wdb = db.forWorkspace(id);
    const schema = await getSchema(systemCtx(wdb, id));
    process.stderr.write(`crm-mcp: workspace ${id}'s phone numbers were read in region ${phone_region}, CRM_DEFAULT_REGION is ${region}: making its match keys and search documents again\n`);
    await rebuildDedupeKeys(wdb, id, schema);
    await rebuildSearchIndex(wdb, id, schema);
    await db.kysely.updateTable('workspaces').set({ phone_region: region }).where('id', '=', id).execute();
    rebuilt.push(id);
  }
  return rebuilt;
}

/** The steps in order, for migrateWorkspaces and createWorkspaceSpace (tests and the bench may pass steps of their own). */
export const layoutSteps = (db: Db) => steps(db.adapter, db.search, { before: new Set() });

/**
 * Every workspace that is behind the latest step, brought up to it: per workspace in a transaction
 * of its own (its row locked: a second process migrating at once waits, then finds it done), its
 * missing steps' `space` parts (PostgreSQL: in its schema) and `each` parts, then its
 * `migrated_to`. Interrupted, it resumes where it stopped: the workspaces done stay done, the one
 * it was on rolled back. Returns the workspaces migrated.
 */
export async function migrateWorkspaces(db: Db, opts: { steps?: Record<string, Step>; onProgress?: (done: number, total: number) => void } = {}): Promise<number> {
  const all = opts.steps ?? layoutSteps(db);
  const names = Object.keys(all).sort();
  const last = names.at(-1)!;
  const behind = await db.kysely.selectFrom('workspaces').select('id').where('migrated_to', '<', last).orderBy('id').execute();
  let done = 0;
  for (const { id } of behind) {
    if (await migrateWorkspace(db, id, all, names)) done++;
    opts.onProgress?.(done, behind.length);
  }
  return done;
}

async function migrateWorkspace(db: Db, id: number, all: Record<string, Step>, names: string[]): Promise<boolean> {
  return db.kysely.transaction().execute(async (trx) => {
    const row = await trx
      .updateTable('workspaces')
      .set((eb) => ({ migrated_to: eb.ref('migrated_to') }))
      .where('id', '=', id)
      .returning('migrated_to')
      .executeTakeFirst();
    const todo = names.filter((n) => n > (row?.migrated_to ?? names.at(-1)!));
    if (!todo.length) return false;
    await db.enterWorkspace?.(trx, id);
    for (const name of todo) {
      if (db.sharedSchema) await all[name]!.space?.(trx);
      await all[name]!.each?.(trx, id);
    }
    await trx
      .updateTable('workspaces')
      .set({ migrated_to: names.at(-1)! })
      .where('id', '=', id)
      .execute();
    return true;
  });
}

/**
 * A new workspace's own tables, in the transaction that inserted its row: on PostgreSQL its schema
 * with every step's `space` part; then, on either dialect, it counts as migrated to the latest step.
 * The caller goes on in the workspace (the transaction's search path names its schema first).
 */
export async function createWorkspaceSpace(db: Db, trx: Kysely<any>, id: number): Promise<void> {
  const all = layoutSteps(db);
  const names = Object.keys(all).sort();
  await db.enterWorkspace?.(trx, id);
  if (db.sharedSchema) for (const name of names) await all[name]!.space?.(trx);
  await trx
    .updateTable('workspaces')
    .set({ migrated_to: names.at(-1)! })
    .where('id', '=', id)
    .execute();
}
