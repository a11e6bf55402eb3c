/**
 * npm run bench:mcp: what MCP adds on top of the service layer.
 *
 *   1. crm_search through an SDK Client over the in-memory transport (one session, as a stdio client
 *      holds one) against the direct listRecords call with the same arguments. Target: within 1.2x.
 *   2. The round trip over a real `crm-mcp stdio` process (spawned as mcp.json says), and its start-up.
 *   3. For information: building a server per request, as stateless HTTP does.
 *
 *   BENCH_MCP_CONTACTS=50000   contacts to seed (companies: a tenth)
 *   BENCH_MCP_ITERS=400        timed calls per figure (after warm-up)
 *
 * Needs `npm run build` (the stdio figure runs dist/). Writes .bench/mcp-latest.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import pino from 'pino';
import { openDatabase } from '../src/db/database.js';
import { migrate } from '../src/db/migrations.js';
import { createMcpServer } from '../src/mcp/server.js';
import { type ListOptions, listRecords } from '../src/services/records.js';
import { seedWorkspace } from '../src/services/seed.js';
import { benchWorkspace, scratchDir } from './common.js';

const envInt = (name: string, dflt: number) => {
  const n = Number(process.env[name] ?? dflt);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer`);
  return n;
};
const CONTACTS = envInt('BENCH_MCP_CONTACTS', 50_000);
const ITERS = envInt('BENCH_MCP_ITERS', 400);
const WARMUP = 30;
const TARGET = 1.2;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = scratchDir('crm-bench-mcp-');
const file = path.join(dir, 'bench.db');

const fmtMs = (n: number) => `${n < 1 ? n.toFixed(3) : n.toFixed(2)} ms`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95)]!;

async function time(fn: () => Promise<unknown>, iters = ITERS): Promise<number[]> {
  for (let i = 0; i < WARMUP; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

/** Contenders alternated call by call: load on the machine hits them alike. */
async function interleaved(fns: (() => Promise<unknown>)[], iters = ITERS): Promise<number[][]> {
  for (let i = 0; i < WARMUP; i++) for (const f of fns) await f();
  const out = fns.map(() => [] as number[]);
  for (let i = 0; i < iters; i++)
    for (let j = 0; j < fns.length; j++) {
      const t = performance.now();
      await fns[j]!();
      out[j]!.push(performance.now() - t);
    }
  return out;
}

// ---------------------------------------------------------------------------------------------
const silent = pino({ level: 'silent' });
const db = openDatabase({ file });
await migrate(db);
const { ctx } = await benchWorkspace(db, 'bench');
const t0 = performance.now();
await seedWorkspace(ctx, { contacts: CONTACTS, companies: Math.ceil(CONTACTS / 10), opportunities: Math.ceil(CONTACTS / 5), seed: 42 });
console.log(`seeded ${CONTACTS} contacts in ${((performance.now() - t0) / 1000).toFixed(1)} s (${file})`);

const server = await createMcpServer({ db, log: silent, actor: ctx.actor });
const [a, b] = InMemoryTransport.createLinkedPair();
await server.connect(a);
const client = new Client({ name: 'bench', version: '1' });
await client.connect(b);
await client.listTools(); // as a client does; also arms the client's outputSchema validation

interface Question {
  name: string;
  args: Record<string, unknown>;
  opts: ListOptions;
}
const questions: Question[] = [
  { name: 'first page (20, newest first, with total)', args: { object: 'contacts' }, opts: { limit: 20 } },
  {
    name: 'filter + sort + 3 fields (50, no total)',
    args: {
      object: 'contacts',
      filter: { operator: 'and', conditions: [{ field: 'status', operator: 'in', value: ['lead', 'customer'] }] },
      sort_by: 'last_name',
      sort_dir: 'asc',
      fields: ['first_name', 'last_name', 'email'],
      limit: 50,
      include_total: false,
    },
    opts: {
      filter: { operator: 'and', conditions: [{ field: 'status', operator: 'in', value: ['lead', 'customer'] }] },
      sortBy: 'last_name',
      sortDir: 'asc',
      fields: ['first_name', 'last_name', 'email'],
      limit: 50,
      includeTotal: false,
    },
  },
  { name: 'full page of 100 records, no total', args: { object: 'contacts', limit: 100, include_total: false }, opts: { limit: 100, includeTotal: false } },
  {
    name: 'text search + total (20)',
    args: { object: 'contacts', filter: { operator: 'and', conditions: [{ field: 'email', operator: 'contains', value: 'example.org' }] } },
    opts: { filter: { operator: 'and', conditions: [{ field: 'email', operator: 'contains', value: 'example.org' }] }, limit: 20 },
  },
];

const results: Record<string, unknown>[] = [];
console.log(
  `\ncrm_search: in-process MCP client vs the direct service call (median of ${ITERS}, interleaved; target within ${TARGET}x).\n` +
    `"+JSON": the direct call plus JSON.stringify of its result, i.e. what any surface pays to put the answer on the wire.`,
);
for (const q of questions) {
  const [direct, serialized, mcp] = await interleaved([
    () => listRecords(ctx, 'contacts', q.opts),
    async () => JSON.stringify(await listRecords(ctx, 'contacts', q.opts)),
    async () => {
      const r = await client.callTool({ name: 'crm_search', arguments: q.args });
      if (r.isError) throw new Error(JSON.stringify(r.content));
    },
  ]);
  const ratio = median(mcp!) / median(direct!);
  const ratioJson = median(mcp!) / median(serialized!);
  results.push({
    question: q.name,
    directMedianMs: median(direct!),
    directJsonMedianMs: median(serialized!),
    mcpMedianMs: median(mcp!),
    directP95Ms: p95(direct!),
    mcpP95Ms: p95(mcp!),
    ratio,
    ratioVsDirectJson: ratioJson,
  });
  console.log(
    `  ${q.name.padEnd(44)} direct ${fmtMs(median(direct!)).padStart(9)}  +JSON ${fmtMs(median(serialized!)).padStart(9)}  MCP ${fmtMs(median(mcp!)).padStart(9)}  ` +
      `ratio ${ratio.toFixed(2)}x ${ratio <= TARGET ? '✓' : '✗'}  vs +JSON ${ratioJson.toFixed(2)}x`,
  );
}

// Stateless HTTP builds a server per request: its cost alone, for information.
const build = await time(async () => {
  const s = await createMcpServer({ db, log: silent, actor: ctx.actor });
  await s.close();
}, 200);
console.log(`\nbuilding a server (stateless HTTP does it per request): median ${fmtMs(median(build))}, p95 ${fmtMs(p95(build))}`);

// ---------------------------------------------------------------------------------------------
// A real stdio process, started as mcp.json says.
const config = JSON.parse(fs.readFileSync(path.join(root, 'mcp.json'), 'utf8')).mcpServers.crm as { command: string; args: string[]; env: Record<string, string> };
if (!fs.existsSync(path.join(root, 'dist/src/cli.js'))) throw new Error('run `npm run build` first: the stdio figure runs dist/src/cli.js');
await db.close();
const startT = performance.now();
const stdio = new Client({ name: 'bench', version: '1' });
const transport = new StdioClientTransport({ command: config.command, args: config.args, env: { ...config.env, CRM_DB: file, CRM_WORKSPACE: 'bench' }, cwd: root, stderr: 'pipe' });
let stderr = '';
transport.stderr?.on('data', (c) => (stderr += c));
stdio.onclose = () => {
  if (stderr) process.stderr.write(`stdio server stderr:\n${stderr.slice(-2000)}\n`);
};
await stdio.connect(transport);
const startMs = performance.now() - startT;
await stdio.listTools();
console.log(`\nstdio process: spawn + initialize ${fmtMs(startMs)}`);
for (const q of questions) {
  const rt = await time(async () => {
    const r = await stdio.callTool({ name: 'crm_search', arguments: q.args });
    if (r.isError) throw new Error(JSON.stringify(r.content));
  });
  const ping = await time(() => stdio.ping(), 200);
  results.push({ question: q.name, transport: 'stdio', roundTripMedianMs: median(rt), roundTripP95Ms: p95(rt), pingMedianMs: median(ping) });
  console.log(`  ${q.name.padEnd(44)} round trip ${fmtMs(median(rt)).padStart(9)}  (p95 ${fmtMs(p95(rt))}; ping ${fmtMs(median(ping))})`);
}
stdio.onclose = undefined;
await stdio.close();

fs.mkdirSync(path.join(root, '.bench'), { recursive: true });
fs.writeFileSync(
  path.join(root, '.bench/mcp-latest.json'),
  JSON.stringify({ contacts: CONTACTS, iters: ITERS, node: process.version, cpu: os.cpus()[0]?.model, at: new Date().toISOString(), startMs, buildServerMedianMs: median(build), results }, null, 2),
);
process.exit(0);
