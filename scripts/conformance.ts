/**
 * Run the MCP conformance suite against a real `crm-mcp serve` process:
 *   npm run build && node --import tsx scripts/conformance.ts [--no-baseline] [--scenario NAME] [--suite all|pending] [-o DIR]
 *
 * The suite (0.1.13, the newest that runs on Node 20) has no way to send an Authorization header, and
 * /mcp rightly refuses requests without one. So a small proxy in front of the server adds a token made
 * for this run to every request and passes everything else through unchanged, Host and Origin
 * included (the DNS-rebinding scenario depends on them). The server itself runs as in production.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist/src/cli.js');
const argv = process.argv.slice(2);
const flag = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-conformance-'));
const env = { ...process.env, CRM_DB: path.join(tmp, 'crm.db'), LOG_LEVEL: 'warn' };
const port = await freePort();
const server = spawn(process.execPath, [cli, 'serve', '--port', String(port)], { env, stdio: ['ignore', 'inherit', 'pipe'] });
server.stderr.on('data', () => {}); // the first-start banner (with its token) is not needed here
const stop = () => {
  server.kill();
  fs.rmSync(tmp, { recursive: true, force: true });
};

try {
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 100) throw new Error('crm-mcp serve did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  const token = execFileSync(process.execPath, [cli, 'token', 'create', '--role', 'admin', '--name', 'conformance'], { env, encoding: 'utf8' }).trim();

  const proxy = http.createServer((req, res) => {
    const up = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: { ...req.headers, authorization: `Bearer ${token}` } }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/mcp`;

  const args = ['-y', '@modelcontextprotocol/conformance@0.1.13', 'server', '--url', url];
  if (!argv.includes('--no-baseline')) args.push('--expected-failures', path.join(root, 'conformance-baseline.yml'));
  if (flag('--scenario')) args.push('--scenario', flag('--scenario')!);
  if (flag('--suite')) args.push('--suite', flag('--suite')!);
  if (flag('-o')) args.push('-o', flag('-o')!);
  const suite = spawn('npx', args, { stdio: 'inherit', cwd: root });
  const code = await new Promise<number>((r) => suite.on('exit', (c) => r(c ?? 1)));
  proxy.close();
  stop();
  process.exit(code);
} catch (e) {
  stop();
  throw e;
}
