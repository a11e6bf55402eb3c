import { type Kysely, sql } from 'kysely';
import type pg from 'pg';

/**
 * Which tokens act as whom is cached per process (services/users.ts, TokenCache); what keeps every
 * process's cache exact is one number in the shared schema, `crm_auth_version.v`, advanced in the same
 * transaction as any change that can alter or end a token's actor: an api_tokens row updated (revoked)
 * or deleted, a users row updated (role) or deleted, a workspace deleted. A cached actor is used only
 * once the version, read by a statement that began after the request arrived, is still the one it
 * was cached under: a change committed before the request arrived (a revoking request that has
 * answered) is seen by that statement, whichever process made it. Nothing is heard asynchronously,
 * so there is no window between a commit and its notice.
 */

/** Migration 0010: the version row and the statement triggers that advance it. */
export const tokenVersion = {
  async shared(db: Kysely<any>): Promise<void> {
    await sql`CREATE TABLE crm_auth_version (id integer PRIMARY KEY CHECK (id = 1), v bigint NOT NULL)`.execute(db);
    await sql`INSERT INTO crm_auth_version (id, v) VALUES (1, 0)`.execute(db);
    // The version beside the table that changed (the shared schema), whatever the session's search path.
    await sql`CREATE OR REPLACE FUNCTION crm_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN EXECUTE format('UPDATE %I.crm_auth_version SET v = v + 1 WHERE id = 1', TG_TABLE_SCHEMA); RETURN NULL; END $$`.execute(db);
    await sql`CREATE TRIGGER api_tokens_auth_changed AFTER UPDATE OR DELETE OR TRUNCATE ON api_tokens
      FOR EACH STATEMENT EXECUTE FUNCTION crm_auth_changed()`.execute(db);
    await sql`CREATE TRIGGER users_auth_changed AFTER UPDATE OR DELETE OR TRUNCATE ON users
      FOR EACH STATEMENT EXECUTE FUNCTION crm_auth_changed()`.execute(db);
    await sql`CREATE TRIGGER workspaces_auth_changed AFTER DELETE OR TRUNCATE ON workspaces
      FOR EACH STATEMENT EXECUTE FUNCTION crm_auth_changed()`.execute(db);
  },
};

/**
 * Reads the version for whoever asks: one statement answers every caller that asked before it was
 * sent, and one is under way at a time (callers that ask meanwhile share the next one, sent when it
 * is done): under load, one read per round trip rather than one per request. A caller is never
 * given a read sent before it asked.
 */
export class TokenVersionReader {
  /** The read callers join now: not sent yet. */
  #open: Promise<number> | null = null;
  /** The last read begun: the next one is sent once it is done. */
  #last: Promise<unknown> = Promise.resolve();
  readonly #text: string;

  constructor(
    private readonly pool: pg.Pool,
    shared: string,
  ) {
    // Qualified, so it runs on a pooled connection whatever workspace's search path it has.
    this.#text = `SELECT v FROM "${shared.replace(/"/g, '""')}".crm_auth_version WHERE id = 1`;
  }

  read(): Promise<number> {
    if (!this.#open) {
      const open: Promise<number> = this.#last.then(
        () => this.#send(open),
        () => this.#send(open),
      );
      this.#open = open;
      this.#last = open;
    }
    return this.#open;
  }

  async #send(open: Promise<number>): Promise<number> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } finally {
      // From here the statement may be under way: a later caller needs a read of its own.
      if (this.#open === open) this.#open = null;
    }
    try {
      const r = await client.query({ name: 'crm_auth_version', text: this.#text });
      client.release();
      return Number(r.rows[0]?.v ?? -1);
    } catch (e) {
      client.release(e as Error);
      throw e;
    }
  }
}
