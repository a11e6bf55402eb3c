import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { SERVE_START_MS } from './process-helpers.js';

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
    // A first start (a new file: migrations, the admin token) on a loaded machine: given time, not a count of polls.
    const late = setTimeout(() => reject(new Error(`serve did not start in ${SERVE_START_MS} ms: ${stderr}`)), SERVE_START_MS);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /Bearer (\S+)" http:\/\/[^:]+:(\d+)\//.exec(stderr);
      if (m) {
        clearTimeout(late);
        resolve({ child, port: Number(m[2]), token: m[1]!, exit });
      }
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
  // Expect: 100-continue: the server answers "100 Continue" once it has the request's head, which
  // tells the test the request is in flight (not an idle connection a shutdown may close).
  const head = `POST /api/v1/records/contacts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n\r\n`;
  const accepted = new Promise<void>((r) => {
    const check = () => (/^HTTP\/1.1 100 /.test(text) ? r() : socket.once('data', check));
    socket.once('data', check);
  });
  return { socket, ended, connected, head, accepted };
}

describe('crm-mcp serve stops gracefully on SIGTERM', () => {
  it(
    'finishes the request in flight, cuts the never-ending slow body at the grace period, refuses new connections, exits 0',
    async () => {
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
      inflight.socket.write(inflight.head);
      await inflight.accepted;
      inflight.socket.write(body.slice(0, 10));
      // The slow client's head is in too (its first bytes of body are dripping).
      await slow.accepted;

      const sentAt = Date.now();
      child.kill('SIGTERM');
      // The port soon no longer accepts (however long the loaded machine takes to deliver the signal).
      const refused = () =>
        new Promise<boolean>((resolve) => {
          const s = net.connect(port, '127.0.0.1');
          s.on('connect', () => (s.destroy(), resolve(false)));
          s.on('error', () => resolve(true));
        });
      await expect.poll(refused, { timeout: GRACE_MS, interval: 25 }).toBe(true);
      // The request in flight completes within the grace period.
      inflight.socket.write(body.slice(10));
      const done = await inflight.ended;
      const answer = done.text.replace(/^HTTP\/1.1 100 Continue\r\n\r\n/, '');
      expect(answer).toMatch(/^HTTP\/1.1 201/);
      expect(answer).toMatch(/Inflight/);

      const { code, signal, at } = await exit;
      clearInterval(drip);
      const cut = await slow.ended;
      expect(signal).toBeNull();
      expect(code).toBe(0);
      // Not kept alive by the slow client (whose body would take over half an hour): gone within the
      // grace period and a margin for closing the database on a loaded machine.
      expect(at - sentAt).toBeLessThan(GRACE_MS + 10_000);
      expect(cut.at - sentAt).toBeLessThan(GRACE_MS + 10_000);
    },
    SERVE_START_MS + 30_000,
  );
});
