/**
 * npm run bench:pg-http -- --db postgres://postgres@127.0.0.1:5432/test
 *
 * HTTP list throughput on PostgreSQL: the real server (`crm-mcp serve --db <url>?schema=<bench
 * schema>`, a process of its own on a real port) beside a bare node:http + node-postgres server
 * answering the same page with hand-written SQL (bench/server.ts bare), in the same run; then one
 * and two `serve` processes on the same schema, the client spreading its connections over them.
 *
 *   BENCH_ROWS=100000        opportunities to seed (seedWorkspace; no search index, no activity)
 *   BENCH_HTTP_SECONDS=8     duration of each autocannon run (after a 2 s warm-up of each server)
 *   BENCH_CONNECTIONS=10     keep-alive connections of the client in all
 *   BENCH_REPEAT=3           rounds; each round runs service and bare (then 1 and 2 processes) back
 *                            to back, and the figures are the rounds' medians (the ratio: the
 *                            median of each round's ratio)
 *
 * GET /api/v1/records/opportunities?limit=50, with the exact total (count(*) of the table) and with
 * include_total=false. Target (issue 14): the service at least 0.5x the bare server. The run's schema
 * (bench_pghttp_<pid>) is dropped at the end.
 */
import { isDeepStrictEqual } from 'node:util';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { seedWorkspace } from '../src/services/seed.js';
import { createToken } from '../src/services/users.js';
import { benchWorkspace, check, envInt, fmt, load1, loadsLine, log, median, pgBenchTarget, printTable, type Row } from './common.js';
import { type Forked, forkServer, type Hammered, hammer, type Served, spawnServe, stopForked, stopServed } from './http-servers.js';

const target = pgBenchTarget('bench_pghttp', 'npm run bench:pg-http');
const ROWS = envInt('BENCH_ROWS', 100_000);
const SECONDS = envInt('BENCH_HTTP_SECONDS', 8);
const CONNECTIONS = envInt('BENCH_CONNECTIONS', 10);
const REPEAT = envInt('BENCH_REPEAT', 3);
const LIMIT = 50;
const VARIANTS = [`?limit=${LIMIT}`, `?limit=${LIMIT}&include_total=false`];
const PATH = '/api/v1/records/opportunities';

const table: Row[] = [];
const servers: Served[] = [];
let bare: Forked | undefined;
try {
  const db = openDatabase({ file: target.location });
  let token: string;
  let oppTable: string;
  try {
    await migrate(db);
    const { ws, admin, ctx } = await benchWorkspace(db);
    token = (await createToken(db, ws.id, admin.id, 'bench')).token;
    log(`crm-mcp bench:pg-http: ${fmt(ROWS)} opportunities on ${target.rawUrl.host}${target.rawUrl.pathname}, schema ${target.schema}; node ${process.version}`);
    const t0 = performance.now();
    await seedWorkspace(ctx, {
      companies: Math.max(1, Math.round(ROWS * 0.02)),
      contacts: Math.max(1, Math.round(ROWS * 0.05)),
      opportunities: ROWS,
      seed: 42,
      activity: false,
      searchIndex: false,
      matchKeys: false,
    });
    await db.adapter.analyze(ctx.db.kysely, true);
    log(`  seeded and analyzed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    oppTable = (await ctx.db.kysely.selectFrom('objects').select('table_name').where('workspace_id', '=', ws.id).where('name', '=', 'opportunities').executeTakeFirstOrThrow()).table_name;
  } finally {
    await db.close();
  }

  servers.push(await spawnServe(target.location, 'bench', 0));
  bare = await forkServer('bare', [target.location, oppTable]);
  const bareBase = `http://127.0.0.1:${bare.port}`;
  const get = async (base: string, variant: string) => (await fetch(`${base}${PATH}${variant}`, { headers: { authorization: `Bearer ${token}` } })).json();

  log(`\n[http] autocannon, ${CONNECTIONS} keep-alive connections, ${SECONDS} s a run, ${REPEAT} rounds; servers in processes of their own ${load1('http')}`);
  const show = (label: string, x: Hammered) =>
    log(`  ${label}: ${fmt(x.reqPerSec)} req/s, p50 ${x.latencyP50} ms, p99 ${x.latencyP99} ms, ${fmt(x.requests)} requests, non-2xx ${x.non2xx}, errors ${x.errors}`);
  for (const variant of VARIANTS) {
    const same = isDeepStrictEqual(await get(servers[0]!.base, variant), await get(bareBase, variant));
    if (!same) log(`  ! ${variant}: service and bare JSON differ`);
    const urls = { service: `${servers[0]!.base}${PATH}${variant}`, bare: `${bareBase}${PATH}${variant}` };
    for (const u of Object.values(urls)) await hammer([u], 2, token, CONNECTIONS);
    const rounds: { service: Hammered; bare: Hammered }[] = [];
    for (let r = 0; r < REPEAT; r++) {
      const service = await hammer([urls.service], SECONDS, token, CONNECTIONS);
      show(`service ${variant} (round ${r + 1})`, service);
      const raw = await hammer([urls.bare], SECONDS, token, CONNECTIONS);
      show(`bare    ${variant} (round ${r + 1})`, raw);
      rounds.push({ service, bare: raw });
    }
    const s = median(rounds.map((x) => x.service.reqPerSec));
    const b = median(rounds.map((x) => x.bare.reqPerSec));
    const ratio = median(rounds.map((x) => x.service.reqPerSec / x.bare.reqPerSec));
    const clean = rounds.every((x) => x.service.non2xx + x.bare.non2xx + x.service.errors + x.bare.errors === 0);
    table.push({
      figure: `GET ${PATH}${variant}${same ? '' : ' [JSON DIFFERS]'}`,
      service: `${fmt(s)} req/s (p50 ${median(rounds.map((x) => x.service.latencyP50))} ms)`,
      baseline: `${fmt(b)} req/s (p50 ${median(rounds.map((x) => x.bare.latencyP50))} ms)`,
      ratio: `${ratio.toFixed(2)}x`,
      target: '>= 0.5x of bare',
      ok: check(ratio >= 0.5 && same && clean),
    });
  }
  await stopForked(bare);
  bare = undefined;

  // One and two `serve` processes on the same schema: the same connections, spread over the servers.
  servers.push(await spawnServe(target.location, 'bench', 1));
  log(`\n[processes] 1 vs 2 serve processes on schema ${target.schema}, ${CONNECTIONS} connections spread over them ${load1('processes')}`);
  for (const variant of VARIANTS) {
    const urls = servers.map((s) => `${s.base}${PATH}${variant}`);
    await hammer(urls, 2, token, CONNECTIONS);
    const rounds: { one: Hammered; two: Hammered }[] = [];
    for (let r = 0; r < REPEAT; r++) {
      const one = await hammer(urls.slice(0, 1), SECONDS, token, CONNECTIONS);
      show(`1 process  ${variant} (round ${r + 1})`, one);
      const two = await hammer(urls, SECONDS, token, CONNECTIONS);
      show(`2 processes ${variant} (round ${r + 1})`, two);
      rounds.push({ one, two });
    }
    const ratio = median(rounds.map((x) => x.two.reqPerSec / x.one.reqPerSec));
    table.push({
      figure: `2 serve processes vs 1, ${PATH}${variant}`,
      service: `${fmt(median(rounds.map((x) => x.two.reqPerSec)))} req/s (p50 ${median(rounds.map((x) => x.two.latencyP50))} ms)`,
      baseline: `1 process: ${fmt(median(rounds.map((x) => x.one.reqPerSec)))} req/s`,
      ratio: `${ratio.toFixed(2)}x`,
      target: '',
      ok: '',
    });
  }

  load1('end');
  log(`\n=== crm-mcp bench:pg-http: ${fmt(ROWS)} opportunities, limit ${LIMIT}, ${CONNECTIONS} connections, medians of ${REPEAT} rounds of ${SECONDS} s ===`);
  log(loadsLine());
  log('ratio: service req/s / bare req/s (higher is better); for processes, 2 / 1');
  printTable({ figure: 'figure', service: 'service', baseline: 'bare node:http + pg', ratio: 'ratio', target: 'target', ok: '' }, table);
} finally {
  if (bare) await stopForked(bare);
  const logs = servers.flatMap((s) => s.output).join('');
  await stopServed(servers);
  if (/"level":(50|60)/.test(logs)) log(`\nerrors in the servers' logs:\n${logs.slice(0, 2000)}`);
  log(`dropping schema ${target.schema}`);
  await target.drop();
}
