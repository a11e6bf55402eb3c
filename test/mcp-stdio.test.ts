import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, describe, expect, it } from 'vitest';
import { TOOLS } from '../tools/index.js';
import { callOk, exerciseAllTools } from './mcp-helpers.js';
import { SERVE_START_MS } from './process-helpers.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const config = JSON.parse(fs.readFileSync(path.join(root, 'mcp.json'), 'utf8')) as {
  mcpServers: { crm: { command: string; args: string[]; env: Record<string, string> } };
};
const entry = config.mcpServers.crm;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-stdio-'));
const dbIn = (name: string) => path.join(tmp, name, 'crm.db');

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The client configuration of mcp.json, as a client would run it from the clone; only CRM_DB points elsewhere. */
async function connect(env: Record<string, string>, extraArgs: string[] = []) {
  const transport = new StdioClientTransport({
    command: entry.command,
    args: [...entry.args, ...extraArgs],
    env: { ...entry.env, ...env },
    cwd: root,
    stderr: 'pipe',
  });
  const client = new Client({ name: 'test', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

describe('crm-mcp stdio, spawned as mcp.json says', () => {
  it('mcp.json runs node on the built CLI with CRM_DB, and offers the HTTP endpoint with a token placeholder', () => {
    expect(entry.command).toBe('node');
    expect(entry.args).toEqual(['dist/src/cli.js', 'stdio']);
    expect(Object.keys(entry.env)).toEqual(['CRM_DB']);
    const http = (config.mcpServers as any)['crm-http'];
    expect(http.url).toBe('http://127.0.0.1:3000/mcp');
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the client expands ${CRM_API_TOKEN} itself
    expect(http.headers.Authorization).toBe('Bearer ${CRM_API_TOKEN}');
  });

  it(
    'first start on an empty database: lists and calls every tool as the default admin',
    async () => {
      const client = await connect({ CRM_DB: dbIn('a') });
      const { tools } = await client.listTools();
      const me = await callOk(client, tools, 'crm_whoami', {});
      expect(me).toMatchObject({ workspace: 'default', user: { email: 'admin@example.com', role: 'admin' } });
      const called = await exerciseAllTools(client);
      expect(called.size).toBe(TOOLS.length);
      await client.close();
      // A first start (migrations) and every tool, on a loaded machine.
    },
    SERVE_START_MS + 45_000,
  );

  it('acts as the user of CRM_API_TOKEN; --read-only and --toolsets apply', async () => {
    const token = execFileSync('node', ['dist/src/cli.js', 'token', 'create', '--role', 'member', '--db', dbIn('a')], { cwd: root, encoding: 'utf8' }).trim();
    expect(token).toMatch(/^ksr_/);
    const client = await connect({ CRM_DB: dbIn('a'), CRM_API_TOKEN: token }, ['--read-only', '--toolsets', 'records,users']);
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual(['crm_search', 'crm_get_record', 'crm_whoami']);
    expect((await callOk(client, tools, 'crm_whoami', {})).user.role).toBe('member');
    await client.close();
  });

  it('refuses an invalid token on stderr, with nothing on stdout', () => {
    let err: any;
    try {
      execFileSync(entry.command, entry.args, { cwd: root, env: { PATH: process.env.PATH, CRM_DB: dbIn('a'), CRM_API_TOKEN: 'ksr_wrong' }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      err = e;
    }
    expect(err.status).toBe(1);
    expect(err.stdout).toBe('');
    expect(err.stderr).toMatch(/CRM_API_TOKEN is not a valid/);
  });

  it(
    'writes nothing but JSON-RPC to stdout, even with debug logs, a first start and failing requests',
    async () => {
      const child = spawn(entry.command, entry.args, {
        cwd: root,
        env: { PATH: process.env.PATH, ...entry.env, CRM_DB: dbIn('b'), LOG_LEVEL: 'trace' },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (c) => (out += c));
      child.stderr.on('data', (c) => (err += c));
      const msgs = [
        { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } },
        { jsonrpc: '2.0', method: 'notifications/initialized' },
        { jsonrpc: '2.0', id: 2, method: 'tools/list' },
        { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'crm_search', arguments: { object: 'contacts', limit: 3 } } },
        { jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'crm_search', arguments: { object: 'nope' } } },
        { jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'crm_search', arguments: { object: 'contacts', limit: 'many' } } },
        { jsonrpc: '2.0', id: 6, method: 'tools/call', params: { name: 'crm_no_such_tool', arguments: {} } },
        { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'crm_create_record', arguments: { object: 'contacts', values: { first_name: 'Out' } } } },
        { jsonrpc: '2.0', id: 8, method: 'resources/read', params: { uri: 'crm://schema/nope' } },
        { jsonrpc: '2.0', id: 9, method: 'no/such/method' },
      ];
      child.stdin.write(msgs.map((m) => JSON.stringify(m)).join('\n') + '\n{not json\n');
      // Wait for the last answer, then close stdin: the process exits on its own.
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no answer to id 9; stdout: ${out.slice(-500)} stderr: ${err.slice(-500)}`)), SERVE_START_MS);
        child.stdout.on('data', () => {
          if (out.includes('"id":9')) {
            clearTimeout(t);
            resolve();
          }
        });
      });
      child.stdin.end();
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(code).toBe(0);
      expect(out.endsWith('\n')).toBe(true);
      const lines = out.split('\n').filter((l) => l !== '');
      for (const line of lines) {
        const m = JSON.parse(line);
        expect(m.jsonrpc, line.slice(0, 200)).toBe('2.0');
      }
      const ids = lines.map((l) => JSON.parse(l).id).filter((x) => x !== undefined);
      expect(ids).toEqual(expect.arrayContaining([1, 2, 3, 4, 5, 6, 7, 8, 9]));
      expect(err).toMatch(/demo data seeded/);
      expect(err).not.toMatch(/ksr_/); // the first-start token is never shown in stdio mode
    },
    SERVE_START_MS + 15_000,
  );
});
