import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built CLI (test/global-setup.ts rebuilds dist/ when a source is newer). */
export const CLI = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..'), 'dist/src/cli.js');

/** This process's environment without the server's own settings, so a test states every one it needs. */
export const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CRM_') && !['PORT', 'HOST', 'LOG_LEVEL'].includes(k))) as Record<string, string>;

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export interface Served {
  child: ChildProcess;
  base: string;
  /** What the process wrote on stderr so far. */
  stderr: () => string;
  /** What it wrote on stdout so far (its log, one JSON line each). */
  stdout: () => string;
}

/**
 * How long a test waits for a started `serve` to answer /health. It starts in about a second on a
 * quiet machine (three at once on a new file: 2-4 s); CI runs two test files at once on two CPUs,
 * beside other spawned processes, so the wait is generous: it bounds a hang, it does not time a start.
 */
export const SERVE_START_MS = 45_000;

/** Start `crm-mcp serve` on a free port and wait until /health answers; throws with its stderr if it exits or never answers. */
export async function startServe(env: Record<string, string>, cwd: string, waitMs = SERVE_START_MS): Promise<Served> {
  const port = await freePort();
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, 'serve', '--port', String(port)], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const base = `http://127.0.0.1:${port}`;
  while (Date.now() - started < waitMs) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`serve exited (${child.exitCode ?? child.signalCode}) after ${Date.now() - started} ms: ${stderr}`);
    try {
      if ((await fetch(`${base}/health`, { signal: AbortSignal.timeout(2_000) })).ok) return { child, base, stderr: () => stderr, stdout: () => stdout };
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`serve did not answer /health within ${waitMs} ms (still running, killed); its stderr: ${stderr || '(empty)'}; its log: ${stdout.slice(-2000) || '(empty)'}`);
}
