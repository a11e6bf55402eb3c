import { freshDb, makeWorkspace } from './test/helpers.js';
import { memoryClient } from './test/mcp-helpers.js';
const db = await freshDb();
const w = await makeWorkspace(db, 'size');
const c = await memoryClient(db, w);
const { tools } = await c.listTools();
console.log('total', JSON.stringify(tools).length);
for (const t of tools) for (const [k, v] of Object.entries((t.inputSchema as any).properties ?? {})) { const d = (v as any).description ?? ''; if (d.length > 45) console.log(`${t.name}.${k} (${d.length}): ${d}`); }
