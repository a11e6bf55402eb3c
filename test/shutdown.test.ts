import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * `crm-mcp serve` as an operator runs it (the built CLI, spawned), stopped with SIGTERM while one
 * client sends its body a byte at a time and never finishes, and another is mid-request: the
 * finishing request still gets its answer, the slow one is cut off at the grace period, and the
 * process exits 0 instead of waiting for the slow client.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(root, 'dist/src/cli.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-shutdown-'));
const GRACE_MS = 1500;

const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CRM_') && !['PORT', 'HOST', 'LOG_LEVEL'].includes(k))) as Record<string, string>;

const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

/** Starts serve on a free port; resolves with its URL and the first-start admin token (printed on stderr). */
function startServe(): Promise<{ child: ChildProcess; port: number; token: string; exit: Promise<{ code: number | null; signal: string | null; at: number }> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'serve', '--db', path.join(tmp, 'crm.db'), '--port', '0'], {
      cwd: tmp,
      env: { ...baseEnv, CRM_DEMO_DATA: 'false', CRM_SHUTDOWN_GRACE_MS: String(GRACE_MS), LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    const exit = new Promise<{ code: number | null; signal: string | null; at: number }>((r) => child.on('exit', (code, signal) => r({ code, signal, at: Date.now() })));
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /Bearer (\S+)" http:\/\/[^:]+:(\d+)\//.exec(stderr);
      if (m) resolve({ child, port: Number(m[2]), token: m[1]!, exit });
    });
    child.on('error', reject);
    void exit.then(() => reject(new Error(`serve exited early: ${stderr}`)));
  });
}

/** A POST whose body the test sends piece by piece; resolves with what the server answered when the connection ends. */
function openPost(port: number, token: string, body: string) {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  socket.on('data', (d) => (text += d.toString()));
  socket.on('error', () => undefined);
  const ended = new Promise<{ text: string; at: number }>((r) => socket.on('close', () => r({ text, at: Date.now() })));
  const connected = new Promise<void>((r) => socket.on('connect', () => r()));
  const head = `POST /api/v1/records/contacts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
  return { socket, ended, connected, head };
}

describe('crm-mcp serve stops gracefully on SIGTERM', () => {
  it('finishes the request in flight, cuts the never-ending slow body at the grace period, refuses new connections, exits 0', async () => {
    const { child, port, token, exit } = await startServe();

    // A client that sends one byte every 200 ms of a 10,000-byte body: it would take over half an hour.
    const slow = openPost(port, token, 'x'.repeat(10_000));
    await slow.connected;
    slow.socket.write(slow.head);
    const drip = setInterval(() => slow.socket.writable && slow.socket.write(' '), 200);

    // A client mid-request: headers and half its body sent.
    const body = JSON.stringify({ first_name: 'Inflight', last_name: 'Request' });
    const inflight = openPost(port, token, body);
    await inflight.connected;
    inflight.socket.write(inflight.head + body.slice(0, 10));
    await new Promise((r) => setTimeout(r, 300));

    const sentAt = Date.now();
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    // The port no longer accepts.
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => (s.destroy(), resolve(false)));
      s.on('error', () => resolve(true));
    });
    expect(refused).toBe(true);
    // The request in flight completes within the grace period.
    inflight.socket.write(body.slice(10));
    const done = await inflight.ended;
    expect(done.text).toMatch(/^HTTP\/1.1 201/);
    expect(done.text).toMatch(/Inflight/);

    const { code, signal, at } = await exit;
    clearInterval(drip);
    const cut = await slow.ended;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    // Not kept alive by the slow client: gone within the grace period and a margin.
    expect(at - sentAt).toBeLessThan(GRACE_MS + 3000);
    expect(cut.at - sentAt).toBeLessThan(GRACE_MS + 3000);
  }, 20_000);
});
