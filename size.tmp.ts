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
