import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import type { Work } from './work.js';

export type Role = 'admin' | 'member';

/** Who is acting: every service call is scoped to actor.workspaceId. */
export interface Actor {
  workspaceId: number;
  userId: string;
  role: Role;
  /** The surface that made the call: 'rest', 'cli', 'mcp:<tool name>'. Recorded in the activity feed. */
  via: string;
}

/** The slice of a pino logger services use; Fastify's request logger and pino both fit. */
export type Log = Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;

export interface Ctx {
  db: Db;
  log: Log;
  actor: Actor;
  /** Cancellation and progress of a long call (MCP); absent on REST and the CLI. */
  work?: Work | undefined;
  /**
   * The database's data_version (Db.dataVersion) read when the request began (REST on SQLite): the
   * caches that follow the file (token, schema, counts) check against it rather than read it again
   * each (about as costly as a query). Other connections' commits after the request began are not
   * its to see; this connection's own writes still move Db.changeVersion (total_changes).
   */
  dataVersion?: number | undefined;
}

/** A service context: the database as the actor's workspace sees it (Db.forWorkspace), the log, who acts. */
export function contextFor(db: Db, log: Log, actor: Actor, work?: Work, dataVersion?: number): Ctx {
  return { db: db.forWorkspace(actor.workspaceId), log, actor, ...(work ? { work } : {}), ...(dataVersion !== undefined ? { dataVersion } : {}) };
}

export function withVia(ctx: Ctx, via: string): Ctx {
  return { ...ctx, actor: { ...ctx.actor, via } };
}
