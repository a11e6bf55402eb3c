/**
 * Single creates through the REST app (Fastify's inject: routing, auth, validation, the service,
 * serialisation; no sockets), one at a time and ten at once, with SQLite's group commit
 * (Db.groupWrite) and without it, alternating, on a file of its own. Prints the CPU time and the
 * wall time per create, and how many transactions the writes took.
 *
 *   npm run bench:group-commit          (BENCH_CREATES per phase, default 1,000; BENCH_ROUNDS, default 3)
 */
import path from 'node:path';
import pino from 'pino';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { buildApp } from '../src/http/app.js';
import { createToken, createUser, createWorkspace } from '../src/services/users.js';
import { envInt, fmt, load1, log, median, scratchDir } from './common.js';

const N = envInt('BENCH_CREATES', 1000);
const ROUNDS = envInt('BENCH_ROUNDS', 3);
const dir = scratchDir('crm-bench-group-');

async function side(grouped: boolean) {
  const db = openDatabase({ file: path.join(dir, `${grouped ? 'grouped' : 'alone'}.db`) });
  const group = db.groupWrite;
  if (!grouped) delete db.groupWrite;
  await migrate(db);
  const ws = await createWorkspace(db, `bench-${grouped ? 'g' : 'a'}`);
  const u = await createUser(db, ws.id, { email: 'admin@bench.test', name: 'Admin', role: 'admin' });
  const token = (await createToken(db, ws.id, u.id, 'bench')).token;
  const app = await buildApp({ db, log: pino({ level: 'silent' }) });
  let i = 0;
  const create = async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/api/v1/records/opportunities',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      payload: { name: `Deal ${i++}`, amount: 12000, close_date: '2026-12-31' },
    });
    if (r.statusCode !== 201) throw new Error(r.body);
  };
  // Warm-up: JIT, page cache, the schema.
  for (let k = 0; k < 300; k++) await create();
  return { db, app, group, create };
}

async function phase(s: Awaited<ReturnType<typeof side>>, atOnce: number) {
  const before = s.group ? { ...s.group.counts } : null;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let k = 0; k < N; k += atOnce) await Promise.all(Array.from({ length: Math.min(atOnce, N - k) }, () => s.create()));
  const cpu = process.cpuUsage(c0);
  const wall = performance.now() - t0;
  const transactions = s.group && before && s.db.groupWrite ? s.group.counts.transactions - before.transactions : N;
  return { cpuMs: (cpu.user + cpu.system) / 1000 / N, wallMs: wall / N, transactions };
}

log(`group commit: ${fmt(N)} creates a phase, ${ROUNDS} rounds, sides alternating ${load1('start')}`);
const sides = { alone: await side(false), grouped: await side(true) };
const results: Record<string, { cpuMs: number; wallMs: number; transactions: number }[]> = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const atOnce of [1, 10]) {
    for (const name of ['alone', 'grouped'] as const) {
      const x = await phase(sides[name], atOnce);
      (results[`${name} ${atOnce}`] ??= []).push(x);
      log(`  round ${r + 1}, ${atOnce} at once, ${name}: ${x.cpuMs.toFixed(3)} ms CPU, ${x.wallMs.toFixed(3)} ms wall a create, ${fmt(x.transactions)} transactions`);
    }
  }
}
log(`\nmedians ${load1('end')}`);
for (const [k, xs] of Object.entries(results))
  log(
    `  ${k.padEnd(12)} ${median(xs.map((x) => x.cpuMs)).toFixed(3)} ms CPU, ${median(xs.map((x) => x.wallMs)).toFixed(3)} ms wall a create, ${fmt(median(xs.map((x) => x.transactions)))} transactions for ${fmt(N)}`,
  );
for (const s of Object.values(sides)) {
  await s.app.close();
  await s.db.close();
}
