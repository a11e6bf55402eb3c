/**
 * HTTP servers for the throughput benches, each in a process of its own, and the load that drives
 * them (autocannon, in the bench's process): run.ts, load.ts and pg-http.ts share them.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every server started here: killed when the bench exits, however it exits. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill();
});

export interface Forked {
  child: ChildProcess;
  port: number;
}

/** Extra node flags for every server started here (BENCH_NODE_ARGS, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof'). */
const nodeArgs = () => (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** bench/server.ts in a child process (service or bare; see there), once it listens. BENCH_NODE_ARGS applies. */
export async function forkServer(mode: 'service' | 'bare' | 'bare-full', args: string[]): Promise<Forked> {
  const child = fork(path.join(root, 'bench', 'server.ts'), [mode, ...args], { execArgv: [...nodeArgs(), '--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`${mode} server exited with ${code}`)));
  });
  return { child, port };
}

export async function stopForked(s: Forked): Promise<void> {
  const exited = new Promise((resolve) => s.child.once('exit', resolve));
  s.child.send('stop');
  await exited;
  children.delete(s.child);
}

export interface Served {
  proc: ChildProcess;
  port: number;
  base: string;
  /** Its log (stdout) and stderr. */
  output: string[];
}

/**
 * `crm-mcp serve --db <db> --workspace <workspace>` (the product's CLI, from source) on a port of its
 * own, once /health answers. No demo data, no rate limit, warnings only. BENCH_NODE_ARGS: extra node
 * flags for the servers, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof'.
 */
export async function spawnServe(db: string, workspace: string, i: number): Promise<Served> {
  const port = 39_000 + Math.floor(Math.random() * 1000) * 2 + i;
  const proc = spawn(process.execPath, [...nodeArgs(), '--import', 'tsx', path.join(root, 'src/cli.ts'), 'serve', '--db', db, '--port', String(port), '--workspace', workspace], {
    cwd: root,
    env: { ...process.env, CRM_DEMO_DATA: 'false', CRM_RATE_LIMIT: '0', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  const output: string[] = [];
  proc.stdout!.on('data', (b: Buffer) => output.push(b.toString()));
  proc.stderr!.on('data', (b: Buffer) => output.push(b.toString()));
  const base = `http://127.0.0.1:${port}`;
  for (let k = 0; k < 300; k++) {
    if (proc.exitCode !== null) throw new Error(`server ${i} exited: ${output.join('')}`);
    try {
      if ((await fetch(`${base}/health`)).ok) return { proc, port, base, output };
    } catch {
      /* not listening yet */
    }
    await sleep(100);
  }
  throw new Error(`server ${i} did not start: ${output.join('')}`);
}

/** SIGTERM to each, and their exits. */
export async function stopServed(servers: Served[]): Promise<void> {
  for (const s of servers) s.proc.kill('SIGTERM');
  await Promise.all(servers.map((s) => new Promise((r) => (s.proc.exitCode !== null ? r(null) : s.proc.once('exit', r)))));
}

export interface Hammered {
  reqPerSec: number;
  latencyP50: number;
  latencyP99: number;
  requests: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

/**
 * GET each of `urls` as fast as they answer for `seconds`: `connections` keep-alive connections in
 * all, spread evenly over the urls (one per server: the servers take turns). Requests/s summed.
 * With `post`, each request is a POST of that JSON body instead.
 */
export async function hammer(urls: string[], seconds: number, token: string, connections = 10, post?: unknown): Promise<Hammered> {
  const per = Math.max(1, Math.round(connections / urls.length));
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...(post === undefined ? {} : { 'content-type': 'application/json' }) };
  const body = post === undefined ? {} : { method: 'POST' as const, body: JSON.stringify(post) };
  const rs = await Promise.all(urls.map((url) => autocannon({ url, connections: per, duration: seconds, headers, ...body })));
  const sum = (f: (r: autocannon.Result) => number) => rs.reduce((s, r) => s + f(r), 0);
  return {
    reqPerSec: sum((r) => r.requests.average),
    latencyP50: Math.max(...rs.map((r) => r.latency.p50)),
    latencyP99: Math.max(...rs.map((r) => r.latency.p99)),
    requests: sum((r) => r.requests.total),
    non2xx: sum((r) => r.non2xx),
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
  };
}
