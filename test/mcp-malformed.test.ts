import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { buildApp } from '../src/http/app.js';
import { createMcpServer } from '../src/mcp/server.js';
import { freshDb, makeWorkspace, silent, type TestWorkspace } from './helpers.js';

/**
 * Malformed JSON-RPC requests, as a buggy client or a model writing raw JSON sends them (the SDK's
 * Client would refuse to): a client mistake answers -32602 (invalid params) or -32601 (unknown
 * method) with a short message that says what was wrong and what is expected, never -32603 or a
 * validator's dump; alike in memory, over HTTP and over stdio.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(root, 'dist/src/cli.js');

let db: Db;
let w: TestWorkspace;
let app: FastifyInstance;
let base: string;
beforeAll(async () => {
  db = await freshDb({ file: true });
  w = await makeWorkspace(db, 'alpha');
  app = await buildApp({ db, log: silent, mcp: true });
  base = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(async () => {
  await app.close();
  await db.close();
});

interface Case {
  name: string;
  method: string;
  params?: unknown;
  code: number;
  mentions: RegExp;
  /** Refused by the transport before the server (the in-memory transport has no such check and never passes it on). */
  envelope?: true;
}

const CASES: Case[] = [
  { name: 'arguments as an array', method: 'tools/call', params: { name: 'crm_list_records', arguments: [1] }, code: -32602, mentions: /arguments.*object/i },
  { name: 'name as a number', method: 'tools/call', params: { name: 42, arguments: {} }, code: -32602, mentions: /name.*string/i },
  { name: 'no params', method: 'tools/call', code: -32602, mentions: /params/i },
  // JSON-RPC: params that are not structured make the request itself invalid.
  { name: 'params as a string', method: 'tools/call', params: 'crm_list_records', code: -32600, mentions: /params must be an object/i, envelope: true },
  { name: 'params as null', method: 'tools/list', params: null, code: -32600, mentions: /params must be an object/i, envelope: true },
  { name: 'arguments as a string', method: 'tools/call', params: { name: 'crm_list_records', arguments: 'object=contacts' }, code: -32602, mentions: /arguments.*object/i },
  { name: 'a resource uri as a number', method: 'resources/read', params: { uri: 5 }, code: -32602, mentions: /uri.*string/i },
  { name: 'a prompt name missing', method: 'prompts/get', params: {}, code: -32602, mentions: /name/i },
  { name: 'an unknown method', method: 'tools/run', params: {}, code: -32601, mentions: /tools\/run/ },
];

function expectActionable(error: { code: number; message: string } | undefined, c: Case) {
  expect(error, c.name).toBeDefined();
  expect(error!.code, `${c.name}: ${error!.message}`).toBe(c.code);
  expect(error!.message, c.name).toMatch(c.mentions);
  // Short and in words: no validator dump (JSON of issues, zod codes).
  expect(error!.message.length, error!.message).toBeLessThan(300);
  expect(error!.message).not.toMatch(/"code"|invalid_type|"path"|\[\s*\{/);
}

const request = (id: number, c: Case) => ({ jsonrpc: '2.0' as const, id, method: c.method, ...(c.params !== undefined ? { params: c.params } : {}) });

describe('malformed MCP requests answer -32602 / -32601 with an actionable message', () => {
  it('in memory', async () => {
    const server = await createMcpServer({ db, log: silent, actor: { workspaceId: w.workspace.id, userId: w.admin.id, role: 'admin', via: 'mcp' } });
    const [serverSide, clientSide] = InMemoryTransport.createLinkedPair();
    await server.connect(serverSide);
    const answers = new Map<number, any>();
    clientSide.onmessage = (m: JSONRPCMessage) => {
      if ('id' in m) answers.set(Number(m.id), m);
    };
    await clientSide.start();
    const cases = CASES.filter((c) => !c.envelope);
    for (const [i, c] of cases.entries()) await clientSide.send(request(i + 1, c) as JSONRPCMessage);
    await new Promise((r) => setTimeout(r, 200));
    for (const [i, c] of cases.entries()) expectActionable(answers.get(i + 1)?.error, c);
    await server.close();
  });

  it('over HTTP (POST /mcp, raw JSON-RPC)', async () => {
    for (const [i, c] of CASES.entries()) {
      const r = await fetch(`${base}/mcp`, {
        method: 'POST',
        headers: { authorization: `Bearer ${w.adminToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify(request(i + 1, c)),
      });
      const text = await r.text();
      const data = text.startsWith('{') ? JSON.parse(text) : JSON.parse(/^data: (.*)$/m.exec(text)![1]!);
      expectActionable(data.error, c);
    }
  });

  it('over HTTP, a body that is not JSON or not UTF-8 answers JSON-RPC -32700, not the REST shape', async () => {
    for (const body of ['{bad', Buffer.from([0x7b, 0xed, 0xa0, 0x80, 0x7d]), '{"jsonrpc":"2.0","id":1,"method":"tools/list"']) {
      const r = await fetch(`${base}/mcp`, {
        method: 'POST',
        headers: { authorization: `Bearer ${w.adminToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body,
      });
      expect(r.status).toBe(400);
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
      const data = (await r.json()) as any;
      expect(data).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: -32700 } });
      expect((data as { error: { message: string } }).error.message).toMatch(/JSON|UTF-8/);
    }
  });

  it('over HTTP, JSON that parses but is no valid JSON-RPC message answers -32600 naming the field, not -32700', async () => {
    const cases: { body: unknown; id: string | number | null; mentions: RegExp }[] = [
      { body: { jsonrpc: '2.0', id: {}, method: 'tools/list' }, id: null, mentions: /id must be a string or an integer, not an object/ },
      { body: { jsonrpc: '2.0', id: null, method: 'tools/list' }, id: null, mentions: /id must be a string or an integer, not null/ },
      { body: { jsonrpc: '2.0', id: 1.5, method: 'tools/list' }, id: null, mentions: /id must be a string or an integer, not 1\.5/ },
      { body: { id: 1, method: 'tools/list' }, id: 1, mentions: /jsonrpc must be "2\.0" and is missing/ },
      { body: { jsonrpc: '1.0', id: 1, method: 'tools/list' }, id: 1, mentions: /jsonrpc must be "2\.0", not "1\.0"/ },
      {
        body: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'crm_list_records', arguments: { object: 'contacts' }, _meta: 5 } },
        id: 1,
        mentions: /params\._meta must be an object, not 5/,
      },
      {
        body: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'crm_list_records', arguments: { object: 'contacts' }, _meta: { progressToken: {} } } },
        id: 1,
        mentions: /params\._meta\.progressToken must be a string or an integer/,
      },
      { body: { jsonrpc: '2.0', method: 'notifications/cancelled', params: 5 }, id: null, mentions: /params must be an object, not 5/ },
      { body: 5, id: null, mentions: /must be an object/ },
      { body: 'str', id: null, mentions: /must be an object/ },
      { body: null, id: null, mentions: /must be an object/ },
      { body: [], id: null, mentions: /empty batch/ },
    ];
    for (const c of cases) {
      const r = await fetch(`${base}/mcp`, {
        method: 'POST',
        headers: { authorization: `Bearer ${w.adminToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify(c.body),
      });
      const data = (await r.json()) as any;
      expect(r.status, JSON.stringify(c.body)).toBe(400);
      expect(data, JSON.stringify(c.body)).toMatchObject({ jsonrpc: '2.0', id: c.id, error: { code: -32600 } });
      expect(data.error.message).toMatch(c.mentions);
    }
  });

  it('over HTTP, a batch with invalid members answers each of them and runs the valid ones', async () => {
    const r = await fetch(`${base}/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${w.adminToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify([
        { jsonrpc: '2.0', id: 1, method: 'tools/list' },
        { jsonrpc: '2.0', id: 2, method: 'tools/call', params: [1] },
        { jsonrpc: '2.0', id: 1.5, method: 'ping' },
        { jsonrpc: '2.0', id: 3, method: 'ping' },
      ]),
    });
    expect(r.status).toBe(200);
    const text = await r.text();
    const answers = (text.trimStart().startsWith('[') ? JSON.parse(text) : [...text.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]!))).flat();
    const byId = new Map(answers.map((a: any) => [a.id, a]));
    expect(answers).toHaveLength(4);
    expect((byId.get(1) as any).result.tools.length).toBeGreaterThan(0);
    expect(byId.get(2)).toMatchObject({ error: { code: -32600, message: expect.stringMatching(/params must be an object/) } });
    expect(byId.get(3)).toMatchObject({ result: {} });
    // The member with no usable id is answered under a stand-in id naming its place in the batch.
    expect(byId.get('invalid-batch-member-2')).toMatchObject({ error: { code: -32600, message: expect.stringMatching(/id must be a string or an integer/) } });
  });

  it('over legacy SSE (POST /messages, answers on the stream)', async () => {
    const ctl = new AbortController();
    const res = await fetch(`${base}/sse`, { headers: { authorization: `Bearer ${w.adminToken}`, accept: 'text/event-stream' }, signal: ctl.signal });
    const reader = res.body!.getReader();
    let text = '';
    const until = async (re: RegExp) => {
      while (!re.test(text)) text += new TextDecoder().decode((await reader.read()).value);
      return re.exec(text)!;
    };
    const endpoint = (await until(/event: endpoint\ndata: (\S+)/))[1]!;
    for (const [i, c] of CASES.entries()) {
      const r = await fetch(new URL(endpoint, base), {
        method: 'POST',
        headers: { authorization: `Bearer ${w.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(request(i + 1, c)),
      });
      expect(r.status).toBe(202);
    }
    const answers = new Map<number, any>();
    while (answers.size < CASES.length) {
      const line = await until(/event: message\ndata: (.*)\n/);
      text = text.slice(line.index + line[0].length);
      const m = JSON.parse(line[1]!);
      answers.set(Number(m.id), m);
    }
    ctl.abort();
    for (const [i, c] of CASES.entries()) expectActionable(answers.get(i + 1)?.error, c);
  });

  it('over stdio', async () => {
    const child = spawn(process.execPath, [CLI, 'stdio', '--db', db.file], {
      env: { ...process.env, CRM_API_TOKEN: w.adminToken, LOG_LEVEL: 'silent' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const answers = new Map<number, any>();
    let buf = '';
    const all = new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const m = JSON.parse(line);
          if ('id' in m) answers.set(Number(m.id), m);
          if (answers.size === CASES.length) resolve();
        }
      });
    });
    for (const [i, c] of CASES.entries()) child.stdin.write(`${JSON.stringify(request(i + 1, c))}\n`);
    await all;
    child.kill();
    for (const [i, c] of CASES.entries()) expectActionable(answers.get(i + 1)?.error, c);
  }, 20_000);
});
