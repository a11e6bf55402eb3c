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
}

/** Start `crm-mcp serve` on a free port and wait until /health answers; throws with its stderr if it exits or never answers. */
export async function startServe(env: Record<string, string>, cwd: string): Promise<Served> {
  const port = await freePort();
  const child = spawn(process.execPath, [CLI, 'serve', '--port', String(port)], { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`serve exited: ${stderr}`);
    try {
      if ((await fetch(`${base}/health`)).ok) return { child, base, stderr: () => stderr };
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`serve did not start: ${stderr}`);
}
