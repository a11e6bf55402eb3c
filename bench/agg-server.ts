/** Server for bench/aggregate.ts (forked): buildApp on a port, with `readWorkers` worker threads (0 = inline). */
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { openDatabase } from '../src/db/database.js';
import { buildApp } from '../src/http/app.js';

const [file, workers] = process.argv.slice(2);
const db = openDatabase({ file: file!, readWorkers: Number(workers) });
const app = await buildApp({ db, log: pino({ level: 'silent' }) });
await app.listen({ host: '127.0.0.1', port: 0 });
process.send!({ port: (app.server.address() as AddressInfo).port });
process.on('message', async (m) => {
  if (m === 'stop') {
    await app.close();
    await db.close();
    process.exit(0);
  }
});
