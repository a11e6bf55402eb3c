import pg from 'pg';
const url = 'postgres://postgres@127.0.0.1:5432/test';
const a = new pg.Client({ connectionString: url }); await a.connect();
await a.query('CREATE SCHEMA IF NOT EXISTS idx_mine; SET search_path = idx_mine; CREATE TABLE IF NOT EXISTS t (x int, y int); CREATE INDEX IF NOT EXISTS t_y ON t (y)');
let stop = false;
const churners = await Promise.all([1,2,3].map(async (k) => { const b = new pg.Client({ connectionString: url }); await b.connect(); await b.query(`CREATE SCHEMA IF NOT EXISTS idx_other${k}; SET search_path = idx_other${k}`); return b; }));
const runs = churners.map(async (b) => { while (!stop) await b.query('CREATE TABLE t (x int, y text); CREATE INDEX ON t (x); CREATE INDEX ON t (y); CREATE INDEX ON t (lower(y)); CREATE INDEX ON t (x, y); DROP TABLE t'); });
const q = process.argv[2] === 'new'
  ? `SELECT i.relname AS name, pg_get_indexdef(i.oid) AS "create" FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
     WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = $1 AND NOT x.indisunique`
  : `SELECT indexname AS name, indexdef AS "create" FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1 AND indexdef NOT LIKE 'CREATE UNIQUE%'`;
let errors = 0, n = 0; const t0 = Date.now();
while (Date.now() - t0 < 8000) { try { const r = await a.query(q, ['t']); if (r.rows.length !== 1) throw new Error('rows ' + r.rows.length); } catch (e) { errors++; if (errors < 3) console.log(String(e)); } n++; }
stop = true; await Promise.all(runs);
console.log({ mode: process.argv[2] ?? 'old', n, errors });
await a.query('DROP SCHEMA idx_mine CASCADE'); for (const [k, b] of churners.entries()) { await b.query(`DROP SCHEMA idx_other${k+1} CASCADE`); await b.end(); }
await a.end();
