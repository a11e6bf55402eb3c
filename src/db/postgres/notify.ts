import { type Kysely, sql } from 'kysely';
import type pg from 'pg';

/**
 * Caches that must follow other processes' writes (a workspace's schema, its search vocabulary)
 * are told through the database: triggers send NOTIFY on the schema's channel when a workspace's
 * schema version or time zone changes, and when words enter or leave a workspace's vocabulary; each
 * process LISTENs on one connection of its own and counts what it heard. A cache keeps what it read
 * while the count it read with stays the same: no version query per request. While the listening
 * connection is down nothing can be trusted, and the counts say so (null), until it listens again.
 */

const HEARTBEAT_MS = 15_000;
const HEARTBEAT_TIMEOUT_MS = 5_000;

/** The channel of the schema the connection's search_path names first. */
const channelOf = (schema: string) => `crm:${schema}`;

/**
 * Migration 0008: the triggers. `shared`: the function and trigger on workspaces (schema version,
 * time zone), on the shared schema's channel. `space`: the vocabulary's triggers, in each
 * workspace's schema (`<shared>_w<id>`), on the same channel: the shared schema's name is the
 * workspace schema's without its `_w<id>`.
 */
export const changeNotifications = {
  async shared(db: Kysely<any>): Promise<void> {
    await sql`CREATE OR REPLACE FUNCTION crm_notify_schema() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_notify('crm:' || TG_TABLE_SCHEMA, 'schema:' || NEW.id); RETURN NULL; END $$`.execute(db);
    await sql`DROP TRIGGER IF EXISTS workspaces_changed ON workspaces`.execute(db);
    await sql`CREATE TRIGGER workspaces_changed AFTER UPDATE OF schema_version, time_zone ON workspaces
      FOR EACH ROW EXECUTE FUNCTION crm_notify_schema()`.execute(db);
    // Once per statement, per workspace whose words it added or removed (INSERT ... ON CONFLICT DO
    // NOTHING lists only the rows it inserted).
    await sql`CREATE OR REPLACE FUNCTION crm_notify_words() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE channel text := 'crm:' || regexp_replace(TG_TABLE_SCHEMA, '_w[0-9]+$', '');
      BEGIN
        IF TG_OP = 'INSERT' THEN
          PERFORM pg_notify(channel, 'words:' || w) FROM (SELECT DISTINCT workspace_id AS w FROM changed_rows) x;
        ELSE
          PERFORM pg_notify(channel, 'words:' || w) FROM (SELECT DISTINCT workspace_id AS w FROM gone_rows) x;
        END IF;
        RETURN NULL;
      END $$`.execute(db);
  },
  async space(db: Kysely<any>): Promise<void> {
    await sql`CREATE TRIGGER search_terms_added AFTER INSERT ON search_terms REFERENCING NEW TABLE AS changed_rows
      FOR EACH STATEMENT EXECUTE FUNCTION crm_notify_words()`.execute(db);
    await sql`CREATE TRIGGER search_terms_removed AFTER DELETE ON search_terms REFERENCING OLD TABLE AS gone_rows
      FOR EACH STATEMENT EXECUTE FUNCTION crm_notify_words()`.execute(db);
  },
};

export class ChangeListener {
  #client: pg.Client | null = null;
  #live = false;
  #closed = false;
  /** Bumped on every (re)connection: counts heard before it are not comparable. */
  #epoch = 0;
  #heard = new Map<string, number>();
  #words = 0;

  constructor(
    private readonly connect: () => pg.Client,
    private readonly schema: () => Promise<string>,
    private readonly onError: (e: unknown) => void = () => {},
  ) {
    void this.#listen();
  }

  async #listen(): Promise<void> {
    while (!this.#closed) {
      const client = this.connect();
      this.#client = client;
      let beat: NodeJS.Timeout | undefined;
      try {
        const lost = new Promise<void>((resolve) => {
          client.on('error', () => resolve());
          client.on('end', () => resolve());
        });
        await client.connect();
        client.on('notification', (m) => this.#hear(m.payload ?? ''));
        await client.query(`LISTEN "${channelOf(await this.schema()).replace(/"/g, '""')}"`);
        // Closed meanwhile (a process that opened and closed at once): do not start listening.
        if (this.#closed) break;
        // A connection a NAT or a failover dropped without a word would never say so: ask it now and
        // then, and end it when it does not answer in time.
        beat = setInterval(() => {
          const timer = setTimeout(() => client.end().catch(() => {}), HEARTBEAT_TIMEOUT_MS);
          client.query('SELECT 1').then(
            () => clearTimeout(timer),
            () => client.end().catch(() => {}),
          );
        }, HEARTBEAT_MS);
        beat.unref();
        this.#epoch++;
        this.#live = true;
        await lost;
      } catch (e) {
        if (!this.#closed) this.onError(e);
      } finally {
        clearInterval(beat);
        this.#live = false;
        this.#client = null;
        await client.end().catch(() => {});
      }
      if (!this.#closed) await new Promise((r) => setTimeout(r, 1000).unref());
    }
  }

  #hear(payload: string) {
    if (payload.startsWith('words:')) this.#words++;
    this.#heard.set(payload, (this.#heard.get(payload) ?? 0) + 1);
  }

  /** A token that changes whenever the workspace's schema may have; null while not listening. */
  schemaToken(workspaceId: number): string | null {
    return this.#live ? `${this.#epoch}:${this.#heard.get(`schema:${workspaceId}`) ?? 0}` : null;
  }

  /** A number that changes whenever any workspace's words may have; null while not listening. */
  wordsVersion(): number | null {
    return this.#live ? this.#epoch * 2 ** 32 + this.#words : null;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#live = false;
    await this.#client?.end().catch(() => {});
  }
}
