/**
 * One HTTP server for the throughput comparison, run in a child process forked by run.ts (and
 * pg-http.ts) so the load generator (autocannon, in the parent) and the server do not share a
 * JavaScript thread.
 *
 *   service <dbfile>          buildApp from src/http/app.ts (auth, routing, validation, listRecords)
 *   bare <dbfile> <table>     node:http + better-sqlite3, same JSON for GET /api/v1/records/opportunities
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
import { applyServicePragmas, page, pgListSql, type RawPage, type RawRow, rawQueries } from './raw-sql.js';

const [mode, file, table] = process.argv.slice(2);
if (!process.send || !file || (mode !== 'service' && mode !== 'bare')) {
  console.error('usage (forked by bench/run.ts): server.ts service|bare <dbfile|postgres-url> [table]');
  process.exit(2);
}

let stop: () => Promise<void>;
let port: number;

/** The first page (created_at desc), with or without the total, from the database by hand. */
function bareFirstPage(): { first: (limit: number, withTotal: boolean) => RawPage | Promise<RawPage>; close: () => Promise<void> } {
  if (!/^postgres(ql)?:\/\//i.test(file!)) {
    const sqlite = new Database(file!);
    applyServicePragmas(sqlite);
    const raw = rawQueries(sqlite, table!);
    return { first: (limit, withTotal) => raw.first(limit, withTotal), close: async () => void sqlite.close() };
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

if (mode === 'service') {
  const db = openDatabase({ file });
  const app = await buildApp({ db, log: pino({ level: 'silent' }) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as AddressInfo).port;
  stop = async () => {
    await app.close();
    await db.close();
  };
} else {
  const raw = bareFirstPage();
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
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
