import { freshDb, makeWorkspace } from './test/helpers.js';
import { memoryClient } from './test/mcp-helpers.js';
import { seedWorkspace } from './src/services/seed.js';
const db = await freshDb();
const w = await makeWorkspace(db, 'size');
await seedWorkspace(w.ctx, { companies: 5, contacts: 5, opportunities: 5, tasks: 2, threads: 1, seed: 1 });
const c = await memoryClient(db, w);
const { tools } = await c.listTools();
const tot = JSON.stringify(tools).length;
console.log('total', tot, 'tools', tools.length);
let ins=0, outs=0, desc=0;
for (const t of tools) { const i=JSON.stringify(t.inputSchema).length, o=JSON.stringify(t.outputSchema??{}).length, d=(t.description??'').length; ins+=i; outs+=o; desc+=d; console.log(t.name.padEnd(28), 'all', JSON.stringify(t).length, 'in', i, 'out', o, 'desc', d); }
console.log({ins, outs, desc});
if (process.argv[2]) console.log(JSON.stringify(tools.find(t => t.name === process.argv[2]), null, 1));
if (process.argv[3] === 'args') {
  const all: [number, string][] = [];
  for (const t of tools) for (const [k, v] of Object.entries((t.inputSchema as any).properties ?? {})) all.push([JSON.stringify(v).length, `${t.name}.${k}: ${JSON.stringify(v).slice(0, 160)}`]);
  all.sort((a, b) => b[0] - a[0]);
  for (const [n, s] of all.slice(0, 45)) console.log(n, s);
  console.log('sum args', all.reduce((n, [x]) => n + x, 0), 'count', all.length);
}
