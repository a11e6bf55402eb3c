import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import pino from 'pino';
import { shownLocation } from '../config.js';
import { openDatabase } from '../db/database.js';
import { migrate } from '../db/migrations.js';
import { ensureDefaultWorkspace } from '../services/bootstrap.js';
import type { Actor } from '../services/context.js';
import { authenticate, findWorkspace, firstUserWithRole, listWorkspaces } from '../services/users.js';
import { invalidEnvelope } from './malformed.js';
import { createMcpServer } from './server.js';
import type { Toolset } from './tool.js';

export interface StdioOptions {
  dbFile: string;
  workspace: string;
  /** Act as this token's user; undefined: the workspace's first admin. */
  token?: string | undefined;
  readOnly: boolean;
  toolsets?: readonly Toolset[] | undefined;
  /** Seed demo data when the database is empty (as `serve` does on first start). */
  demo: boolean;
  logLevel: string;
}

/**
 * `crm-mcp stdio`: one MCP session over stdin/stdout. stdout carries JSON-RPC and nothing else: logs
 * go to stderr, and console.log is redirected there too, so a stray print cannot corrupt the stream.
 */
export async function runStdio(opts: StdioOptions): Promise<void> {
  console.log = console.info = console.debug = (...args: unknown[]) => console.error(...args);
  const log = pino({ level: opts.logLevel, base: undefined }, pino.destination(2));
  const db = openDatabase({ file: opts.dbFile });
  await migrate(db);

  let actor: Actor;
  if (opts.token) {
    const a = await authenticate(db, opts.token, 'mcp');
    if (!a) throw new Error(`CRM_API_TOKEN is not a valid, unrevoked token of the database ${shownLocation(opts.dbFile)}`);
    actor = a;
  } else {
    // First start on an empty database, as `serve` would; its admin token is not shown: stdio needs none.
    await ensureDefaultWorkspace(db, log, { name: opts.workspace, demo: opts.demo });
    const ws = await findWorkspace(db, opts.workspace);
    if (!ws) {
      const all = (await listWorkspaces(db)).map((w) => w.name);
      throw new Error(`No workspace '${opts.workspace}' in ${shownLocation(opts.dbFile)}. Workspaces: ${all.join(', ')}; set CRM_WORKSPACE or --workspace`);
    }
    const admin = await firstUserWithRole(db, ws.id, 'admin');
    if (!admin) throw new Error(`Workspace '${ws.name}' has no admin; set CRM_API_TOKEN to act as one of its users`);
    actor = { workspaceId: ws.id, userId: admin.id, role: 'admin', via: 'mcp' };
    log.info(
      `crm-mcp stdio: no CRM_API_TOKEN, acting as ${admin.email} (admin of workspace '${ws.name}') on ${shownLocation(opts.dbFile)}. ` +
        'To act as another user, create a token with `crm-mcp token create --role member` and set CRM_API_TOKEN.',
    );
  }

  const server = await createMcpServer({ db, log, actor, readOnly: opts.readOnly, toolsets: opts.toolsets, watchSchema: true });
  let closing = false;
  const stop = async () => {
    if (closing) return;
    closing = true;
    await server.close().catch(() => {});
    await db.close();
    process.exit(0);
  };
  // When the client closes stdin, nothing keeps the event loop alive: the process exits by itself once
  // the requests in flight have answered (exiting on 'end' would drop their answers).
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
  const transport = new StdioServerTransport();
  answerMalformedLines(transport);
  await server.connect(transport);
}

/**
 * The SDK's stdio reader drops a line that is JSON but not a valid JSON-RPC message (params that are
 * not an object), and the client waits forever for its answer: answer it instead (-32600 with its id).
 * Replaces the reader's readMessage, which has no hook; the malformed-request tests cover it.
 */
function answerMalformedLines(transport: StdioServerTransport) {
  const reader = (transport as unknown as { _readBuffer: { _buffer?: Buffer; readMessage(): JSONRPCMessage | null } })._readBuffer;
  const readMessage = reader.readMessage.bind(reader);
  reader.readMessage = () => {
    for (;;) {
      const buffer = reader._buffer;
      const end = buffer?.indexOf('\n') ?? -1;
      if (!buffer || end < 0) return readMessage();
      let raw: unknown;
      try {
        raw = JSON.parse(buffer.toString('utf8', 0, end));
      } catch {
        return readMessage(); // not JSON: the SDK's own handling
      }
      const invalid = invalidEnvelope(raw);
      if (!invalid) return readMessage();
      reader._buffer = buffer.subarray(end + 1);
      void transport.send(invalid);
    }
  };
}
