import { type ColumnDataType, type ColumnDefinitionBuilder, type CreateTableBuilder, type Expression, type Kysely, type RawBuilder, type SelectQueryBuilder, type SqlBool, sql } from 'kysely';
import type { Interval, ZoneSegment } from '../services/time-buckets.js';
import { classifyPostgresError } from './postgres/adapter.js';
import { classifySqliteError, type DbErrorKind } from './sqlite/dialect.js';

export type { DbErrorKind } from './sqlite/dialect.js';

/**
 * Everything that differs between SQLite and PostgreSQL lives behind this interface,
 * so services stay dialect-neutral: sqlite/adapter.ts and postgres/adapter.ts implement it.
 */
export interface DialectAdapter {
  name: 'sqlite' | 'postgres';
  /** Column type of a generated integer key (with `identity`). */
  idType: 'integer' | 'bigint';
  /**
   * A primary key the database numbers itself (SQLite: INTEGER PRIMARY KEY, AUTOINCREMENT where a
   * number must never be reused, as the change feed's cursor needs; PostgreSQL: an identity column,
   * whose sequence never reuses a number).
   */
  identity(c: ColumnDefinitionBuilder, neverReused?: boolean): ColumnDefinitionBuilder;
  /**
   * The workspace_id column of a workspace's own table (objects, notes, …). SQLite: a key of the
   * shared workspaces table (every workspace's rows share the table). PostgreSQL: not null only: the
   * table is in the workspace's schema, and a foreign key to the shared table would lock it each
   * time a workspace's tables are made (two workspaces created at once would deadlock).
   */
  workspaceKey(c: ColumnDefinitionBuilder): ColumnDefinitionBuilder;
  /**
   * A table stored in the order of its primary key, so the table is its own lookup index (SQLite:
   * WITHOUT ROWID, one b-tree instead of a table and an index; PostgreSQL: unchanged, a heap and
   * its primary key's index).
   */
  keyOrdered<T extends string, C extends string>(t: CreateTableBuilder<T, C>): CreateTableBuilder<T, C>;
  /**
   * SQL column type of a record field's storage class. Text compares and sorts by code point on
   * both dialects (SQLite's BINARY; PostgreSQL's "C" collation, whatever the database's own).
   */
  columnType(storage: 'text' | 'real' | 'integer'): ColumnDataType | Expression<unknown>;
  /** Case-insensitive LIKE (pattern already escaped with backslash). */
  ilike(ref: Expression<unknown>, pattern: string): RawBuilder<SqlBool>;
  /** A JSON-array text column holds the value. */
  jsonArrayHas(ref: Expression<unknown>, value: string): RawBuilder<SqlBool>;
  /** A JSON-array text column holds any of the values. */
  jsonArrayHasAny(ref: Expression<unknown>, values: string[]): RawBuilder<SqlBool>;
  /** The text before the first `sep` in a text column (every value holds one): a key's leading part. */
  textBefore(ref: Expression<unknown>, sep: string): RawBuilder<string>;
  /**
   * Each element of a JSON-array text column as a row beside its record, as `${alias}.value` (text);
   * a record with none (NULL) keeps one row whose value is NULL. (PostgreSQL: LEFT JOIN LATERAL
   * jsonb_array_elements_text(array::jsonb) AS alias ON true.)
   */
  leftJoinJsonArray<QB extends SelectQueryBuilder<any, any, any>>(qb: QB, array: Expression<unknown>, alias: string): QB;
  /** The smallest or largest element of a JSON-array text column, compared as text; NULL when it has none. */
  jsonArrayExtreme(array: Expression<unknown>, which: 'min' | 'max'): RawBuilder<string | null>;
  /**
   * A text column is one of `values`, at most `textInMax` of them a statement. SQLite binds each
   * (IN (?, ?, …), under its parameter limit); PostgreSQL binds one array (= ANY($1)): one statement
   * whatever the count, where a list of thousands of parameters costs more to parse than to look up.
   */
  textIn(ref: Expression<unknown>, values: string[]): RawBuilder<SqlBool>;
  textInMax: number;
  /**
   * Rows of `columns` columns a multi-row insert of records takes at most in one statement (one
   * savepoint each on PostgreSQL, redone row by row when it fails). SQLite binds each value, under
   * its parameter limit; PostgreSQL sends the rows as one JSON parameter: a whole batch at once.
   */
  rowsPerInsert(columns: number): number;
  /**
   * Whether a statement leaves this thread free while the database runs it (PostgreSQL: a round
   * trip to the server), so JavaScript work done meanwhile (an import preparing its next batch)
   * costs the write no time. SQLite runs each statement on this thread: nothing to overlap.
   */
  overlapsStatements: boolean;
  /**
   * The seq (a record table's integer key) the table gives the next row it takes, inside a write
   * transaction: rows inserted in order with seqs from it get exactly those the table would have
   * given them, and the writer knows them without reading them back. SQLite only (one writer at a
   * time, the transaction holds the lock); PostgreSQL's identity sequence is shared by concurrent
   * writers, and its rows' seqs are read back.
   */
  nextRowNumber?(trx: Kysely<any>, table: string): Promise<number>;
  isUniqueViolation(err: unknown): boolean;
  /**
   * Runs a statement that may fail and be followed by others in the same transaction (a bulk insert
   * redone row by row to name the duplicate). SQLite undoes only the failed statement; PostgreSQL
   * aborts the whole transaction at its first error, so there it runs inside a savepoint. `keep`:
   * once fn succeeds, the savepoint is left to the transaction's COMMIT rather than released (one
   * round trip less, for a caller that makes a few in turn in one transaction: an import's pieces).
   */
  attempt<T>(trx: Kysely<any>, fn: () => Promise<T>, opts?: { keep?: boolean }): Promise<T>;
  /**
   * What a driver error means, for the surfaces: 'busy' (another process holds the write lock
   * longer than the wait allows: 503, retry), 'unique' (a unique constraint or index: 409, with the
   * table and columns it named). Null for anything else (a bug: 500).
   */
  classifyError(err: unknown): DbErrorKind | null;
  /**
   * The local calendar bucket (YYYY-MM-DD text, the bucket's first day) of a date or UTC ISO
   * datetime text column in time zone `tz`. `segments` are the zone's offsets over the data's span,
   * computed by the caller where `zoneSegments` says the dialect needs them (SQLite has no time
   * zone database; PostgreSQL has one and ignores them).
   */
  timeBucket(col: Expression<unknown>, interval: Interval, tz: string, segments: ZoneSegment[]): RawBuilder<unknown>;
  zoneSegments: boolean;
  /** The start of a number's histogram bucket of `width`: floor(value / width) * width, never integer division. */
  histogramBucket(col: Expression<unknown>, width: number): RawBuilder<unknown>;
  /**
   * Before a transaction appends to a workspace's activity: entries must take their ids in commit
   * order, or a change-feed poller past id N would never see an id below N committed later.
   * SQLite has one writer at a time; PostgreSQL takes a per-workspace lock held until commit.
   */
  feedOrder(trx: Kysely<any>, workspaceId: number): Promise<void>;
  /**
   * An update's timeline payload as JSON text, {"changes": {field: [before, after], …}}, built in SQL
   * from a record's columns before the update (a bulk update's INSERT … SELECT of its entries): only
   * the fields whose column differs from the value written (IS DISTINCT FROM), in the order given.
   * For the records where one at least differs; for columns whose stored value is the value shown
   * (text and real: not a boolean's 0/1, a currency's minor units, a multi-select's JSON text).
   * SQLite only: the entries go in before the update, which PostgreSQL's feed lock (see feedOrder)
   * forbids: taken before the records' row locks, it would make every other writer of the workspace
   * wait for the whole update, and deadlock with one holding a record's lock. There a bulk update
   * builds its entries in JavaScript and appends them last.
   */
  changesPayload?(fields: { name: string; column: Expression<unknown>; value: string | number | null }[]): RawBuilder<string>;
  /** Seconds from one ISO-8601 timestamp (text) to another. */
  secondsBetween(from: Expression<unknown>, to: Expression<unknown>): RawBuilder<number>;
  /** Migration 0008: what tells other processes of schema and vocabulary changes (PostgreSQL: NOTIFY triggers on the shared tables and in each workspace's). */
  changeNotifications?: { shared(db: Kysely<any>): Promise<void>; space(db: Kysely<any>): Promise<void> };
  /** Migration 0010: what advances the token version when a token, a user or a workspace changes (PostgreSQL: triggers on the shared tables). */
  tokenVersion?: { shared(db: Kysely<any>): Promise<void> };
  /** Before the migrations: what the database needs first (PostgreSQL: its schema, whose name it returns). */
  prepare?(db: Kysely<any>): Promise<string>;
  /**
   * Refresh the planner's statistics: after a bulk load (full: `tables`, or every table, read whole)
   * or now and then (the tables the database finds stale). Best effort: never fails on a lock.
   */
  analyze(db: Kysely<any>, full: boolean, tables?: string[]): Promise<void>;
  /** Secondary (non-unique) indexes of a table with the statements that recreate them: bulk loads drop and rebuild them. */
  secondaryIndexes(db: Kysely<any>, table: string): Promise<{ name: string; create: string }[]>;
}

/**
 * An ORDER BY term with NULLs placed as SQLite places them (smallest: first ascending, last
 * descending), written out so PostgreSQL (largest by default) orders the same way.
 */
export function ordered(expr: Expression<unknown>, dir: 'asc' | 'desc'): RawBuilder<unknown> {
  return dir === 'asc' ? sql`${expr} ASC NULLS FIRST` : sql`${expr} DESC NULLS LAST`;
}

/** Escape LIKE metacharacters so user text matches literally. */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/**
 * The driver error's meaning, whatever the dialect that raised it: for the surfaces' error
 * handlers, which map it once (busy: 503 with Retry-After; unique: 409).
 */
export function classifyDbError(err: unknown): DbErrorKind | null {
  return classifySqliteError(err) ?? classifyPostgresError(err);
}

/** The tables a bulk load of records also fills (match keys, search, timeline, stage history): named to analyze with the record tables. */
export const DERIVED_TABLES = ['dedupe_keys', 'search_docs', 'activity', 'stage_history'];
