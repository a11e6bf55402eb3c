/**
 * One HTTP server for the throughput comparison, run in a child process forked by run.ts (and
 * pg-http.ts) so the load generator (autocannon, in the parent) and the server do not share a
 * JavaScript thread.
 *
 *   service <dbfile>          buildApp from src/http/app.ts (auth, routing, validation, listRecords)
 *   bare <dbfile> <table>     node:http + better-sqlite3, same JSON for GET /api/v1/records/opportunities
 *                           and POST /api/v1/records/opportunities: the row alone, one INSERT … RETURNING
 *   bare-full <dbfile> <table>
 *                             the same, but its POST does by hand the writes the service's create does: the
 *                             record, its stage history, search terms, search document and full-text row,
 *                             match keys (name and block) and a 'created' timeline entry, in one
 *                             transaction a request (BEGIN IMMEDIATE … COMMIT), the row read back by RETURNING
 *   bare <postgres://…?schema=s> <table>
 *                             node:http + a node-postgres pool of 10 (the service's size), the same
 *                             page by hand-written SQL
 *
 * Reports {port} to the parent over IPC; exits on 'stop'.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import pino from 'pino';
import { openDatabase } from '../src/db/database.js';
import { numberTypes, splitSchema, workspaceSchema } from '../src/db/postgres/open.js';
import Database from '../src/db/sqlite/driver.js';
import { buildApp } from '../src/http/app.js';
import { rememberedCountHits } from '../src/services/count-cache.js';
import { newId } from '../src/services/ids.js';
import { applyServicePragmas, OPP_COLUMNS, page, pgListSql, type RawPage, type RawRow, rawQueries, toRecord } from './raw-sql.js';

const [mode, file, table] = process.argv.slice(2);
if (!process.send || !file || (mode !== 'service' && mode !== 'bare' && mode !== 'bare-full')) {
  console.error('usage (forked by bench/run.ts): server.ts service|bare|bare-full <dbfile|postgres-url> [table]');
  process.exit(2);
}

let stop: () => Promise<void>;
let port: number;

/** A created opportunity as the bare server answers it (the service's shape: `{data}` with every field). */
type Created = { data: Record<string, unknown> } | { error: string };

/**
 * The first page (created_at desc), with or without the total, from the database by hand; and on
 * SQLite a single create: the body checked for the fields it may hold, then the row alone, one
 * INSERT … RETURNING (no search document, match keys, timeline entry or stage history: what a
 * minimal server writes, the floor the service's create is measured against).
 */
function bareFirstPage(): {
  first: (limit: number, withTotal: boolean) => RawPage | Promise<RawPage>;
  create?: (body: unknown) => Created;
  close: () => Promise<void>;
} {
  if (!/^postgres(ql)?:\/\//i.test(file!)) {
    const sqlite = new Database(file!);
    applyServicePragmas(sqlite);
    const raw = rawQueries(sqlite, table!);
    const insert = sqlite.prepare(
      `INSERT INTO ${table} (id, created_at, updated_at, name, amount, status, close_date, probability, priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq, ${OPP_COLUMNS.join(', ')}`,
    );
    const full = mode === 'bare-full' ? fullWrites(sqlite, table!) : undefined;
    const create = (body: unknown): Created => {
      const b = body as Record<string, unknown>;
      if (!b || typeof b !== 'object' || typeof b.name !== 'string' || (b.amount !== undefined && typeof b.amount !== 'number')) return { error: 'name (text) and amount (number) expected' };
      const now = new Date().toISOString();
      const values = [newId(), now, now, b.name, b.amount === undefined ? null : Math.round(b.amount * 100), b.status ?? 'prospecting', b.close_date ?? null, 10, 'medium'] as const;
      const row = (full ? full(values) : insert.get(...values)) as RawRow;
      return { data: toRecord(row) };
    };
    return { first: (limit, withTotal) => raw.first(limit, withTotal), create, close: async () => void sqlite.close() };
  }
  const { url, schema } = splitSchema(file!);
  const pool = new pg.Pool({ connectionString: url, max: 10, types: numberTypes, options: `-c TimeZone=UTC -c search_path=${workspaceSchema(schema ?? 'public', 1)},${schema ?? 'public'},public` });
  pool.on('error', () => {});
  const sql = pgListSql(table!);
  return {
    async first(limit, withTotal) {
      const [rows, total] = await Promise.all([
        pool.query<RawRow>({ name: 'first', text: sql.first, values: [limit + 1] }),
        withTotal ? pool.query<{ n: number }>({ name: 'count', text: sql.count }) : null,
      ]);
      return page(rows.rows, limit, 'created_at', 'desc', total ? total.rows[0]!.n : null);
    },
    close: () => pool.end(),
  };
}

/**
 * bare-full's create: what the service's create writes, by hand, one transaction a request. The
 * workspace's ids (object, pipeline, a user, the fields named) read once at start; the name's search
 * terms and match keys computed plainly (lower case, words of letters and digits; the name key the
 * words joined, the block key its first four letters), as the service's would for a plain name.
 */
function fullWrites(sqlite: InstanceType<typeof Database>, table: string) {
  const ws = Number(/^w(\d+)_/.exec(table)?.[1]);
  const object = sqlite.prepare('SELECT id, name FROM objects WHERE table_name = ?').get(table) as { id: number; name: string };
  const pipeline = sqlite.prepare('SELECT id FROM pipelines WHERE workspace_id = ? AND object = ?').pluck().get(ws, object.name) as string;
  const user = sqlite.prepare('SELECT id FROM users WHERE workspace_id = ? ORDER BY id LIMIT 1').pluck().get(ws) as string;
  const fieldIds = sqlite.prepare(`SELECT id FROM fields WHERE object_id = ? AND name IN ('name', 'amount', 'status', 'close_date') ORDER BY id`).pluck().all(object.id);
  const payload = JSON.stringify(fieldIds);
  const begin = sqlite.prepare('BEGIN IMMEDIATE');
  const commit = sqlite.prepare('COMMIT');
  const rollback = sqlite.prepare('ROLLBACK');
  const record = sqlite.prepare(
    `INSERT INTO ${table} (id, created_at, updated_at, name, amount, status, close_date, probability, priority, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq, ${OPP_COLUMNS.join(', ')}`,
  );
  const stage = sqlite.prepare('INSERT INTO stage_history (workspace_id, pipeline_id, record_id, step_key, entered_at, left_at) VALUES (?, ?, ?, ?, ?, NULL)');
  const term = sqlite.prepare('INSERT INTO search_terms (workspace_id, term) VALUES (?, ?) ON CONFLICT DO NOTHING');
  const doc = sqlite.prepare('INSERT INTO search_docs (workspace_id, object_id, record_id) VALUES (?, ?, ?) RETURNING doc_id').pluck();
  const fts = sqlite.prepare(`INSERT INTO search_index (rowid, scope, name, body, exact) VALUES (?, '', ?, '', '')`);
  const key = sqlite.prepare('INSERT INTO dedupe_keys (workspace_id, object_id, kind, key, record_seq) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING');
  const activity = sqlite.prepare(`INSERT INTO activity (workspace_id, object, record_id, action, payload, user_id, via, created_at) VALUES (?, ?, ?, 'created', ?, ?, 'rest', ?)`);
  return (v: readonly [string, string, string, string, number | null, unknown, unknown, number, string]): RawRow => {
    begin.run();
    try {
      const row = record.get(...v, user) as RawRow;
      const [id, now, , name] = v;
      stage.run(ws, pipeline, id, row.status, now);
      const words = name
        .toLowerCase()
        .split(/[^\p{L}\p{N}]+/u)
        .filter(Boolean);
      for (const w of new Set(words)) term.run(ws, w);
      fts.run(doc.get(ws, object.id, id), name);
      key.run(ws, object.id, 'name', `${words.join(' ')}|`, row.seq);
      key.run(ws, object.id, 'block', words.join('').slice(0, 4), row.seq);
      activity.run(ws, object.name, id, payload, user, now);
      commit.run();
      return row;
    } catch (e) {
      if (sqlite.inTransaction) rollback.run();
      throw e;
    }
  };
}

if (mode === 'service') {
  const db = openDatabase({ file });
  const app = await buildApp({ db, log: pino({ level: 'silent' }) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as AddressInfo).port;
  stop = async () => {
    if (process.env.BENCH_VERBOSE) console.error(`  [service server] totals answered from memory: ${rememberedCountHits()}`);
    await app.close();
    await db.close();
  };
} else {
  const raw = bareFirstPage();
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method === 'POST' && url.pathname === '/api/v1/records/opportunities' && raw.create) {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      let answer: Created;
      try {
        answer = raw.create(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        answer = { error: 'malformed JSON' };
      }
      const body = JSON.stringify('error' in answer ? { error: true, code: 'VALIDATION_ERROR', message: answer.error } : answer);
      res.writeHead('error' in answer ? 400 : 201, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    if (req.method !== 'GET' || url.pathname !== '/api/v1/records/opportunities') {
      res.writeHead(404).end();
      return;
    }
    const limit = Number(url.searchParams.get('limit') ?? 20);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":true,"code":"VALIDATION_ERROR"}');
      return;
    }
    try {
      const body = JSON.stringify(await raw.first(limit, url.searchParams.get('include_total') !== 'false'));
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    } catch {
      res.writeHead(500).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  stop = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await raw.close();
  };
}

process.on('message', async (m) => {
  if (m === 'stop') {
    await stop();
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
process.send({ port });
