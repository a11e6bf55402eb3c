import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { compiledOnce } from '../db/compiled-once.js';
import type { Db } from '../db/database.js';
import { createWorkspaceSpace } from '../db/migrations.js';
import { nowIso } from './clock.js';
import type { Actor, Ctx, Role } from './context.js';
import { CrmError, duplicateOn, validationError } from './errors.js';
import { defaultRegion } from './phone-parse.js';
import { createDefaultPipelines, createSystemSchema } from './schema.js';

export const TOKEN_PREFIX = 'ksr_';

export interface Workspace {
  id: number;
  name: string;
}

export interface User {
  id: string;
  email: string;
  name: string;
  role: Role;
  created_at: string;
}

const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

export async function findWorkspace(db: Db, name: string): Promise<Workspace | undefined> {
  return db.kysely.selectFrom('workspaces').select(['id', 'name']).where('name', '=', name).executeTakeFirst();
}

export async function listWorkspaces(db: Db): Promise<Workspace[]> {
  return db.kysely.selectFrom('workspaces').select(['id', 'name']).orderBy('id').execute();
}

/** A workspace with its system objects and record tables, created in one transaction. */
export async function createWorkspace(db: Db, name: string): Promise<Workspace> {
  if (!/^[A-Za-z0-9][A-Za-z0-9 _.-]{0,62}$/.test(name)) throw validationError(`Invalid workspace name '${name}'`);
  if (await findWorkspace(db, name)) throw new CrmError('DUPLICATE_RECORD', `Workspace '${name}' already exists`);
  return db.kysely
    .transaction()
    .execute(async (trx) => {
      const ws = await trx.insertInto('workspaces').values({ name, created_at: nowIso(), phone_region: defaultRegion }).returning(['id', 'name']).executeTakeFirstOrThrow();
      // Its own tables (PostgreSQL: its schema), then its objects and pipelines in them.
      await createWorkspaceSpace(db, trx, ws.id);
      await createSystemSchema(trx, db.adapter, ws.id);
      await createDefaultPipelines(trx, ws.id);
      return ws;
    })
    .catch(duplicateOn(db.adapter, 'workspaces', `Workspace '${name}' already exists`));
}

export async function createUser(db: Db, workspaceId: number, input: { email: string; name: string; role: Role }): Promise<User> {
  if (!['admin', 'member'].includes(input.role)) throw validationError(`role must be admin or member, got '${input.role}'`);
  const user: User = { id: randomUUID(), email: input.email.trim().toLowerCase(), name: input.name, role: input.role, created_at: nowIso() };
  try {
    await db.kysely
      .insertInto('users')
      .values({ ...user, workspace_id: workspaceId })
      .execute();
  } catch (e) {
    if (db.adapter.isUniqueViolation(e)) throw new CrmError('DUPLICATE_RECORD', `A user with email '${user.email}' already exists in this workspace`);
    throw e;
  }
  return user;
}

export async function findUserByEmail(db: Db, workspaceId: number, email: string): Promise<User | undefined> {
  return db.kysely.selectFrom('users').select(['id', 'email', 'name', 'role', 'created_at']).where('workspace_id', '=', workspaceId).where('email', '=', email.trim().toLowerCase()).executeTakeFirst();
}

export async function firstUserWithRole(db: Db, workspaceId: number, role: Role): Promise<User | undefined> {
  return db.kysely
    .selectFrom('users')
    .select(['id', 'email', 'name', 'role', 'created_at'])
    .where('workspace_id', '=', workspaceId)
    .where('role', '=', role)
    .orderBy('created_at')
    .orderBy('id')
    .executeTakeFirst();
}

export interface NewToken {
  id: string;
  /** Shown once; only its hash is stored. */
  token: string;
  prefix: string;
  name: string;
}

export async function createToken(db: Db, workspaceId: number, userId: string, name: string): Promise<NewToken> {
  const token = `${TOKEN_PREFIX}${randomBytes(24).toString('base64url')}`;
  const row = {
    id: randomUUID(),
    workspace_id: workspaceId,
    user_id: userId,
    name,
    token_hash: hashToken(token),
    token_prefix: token.slice(0, 12),
    created_at: nowIso(),
    last_used_at: null,
    revoked_at: null,
  };
  await db.kysely.insertInto('api_tokens').values(row).execute();
  return { id: row.id, token, prefix: row.token_prefix, name };
}

export async function listTokens(db: Db, workspaceId: number) {
  return db.kysely
    .selectFrom('api_tokens')
    .innerJoin('users', 'users.id', 'api_tokens.user_id')
    .select(['api_tokens.id', 'api_tokens.name', 'api_tokens.token_prefix as prefix', 'users.email as user', 'users.role', 'api_tokens.created_at', 'api_tokens.revoked_at'])
    .where('api_tokens.workspace_id', '=', workspaceId)
    .orderBy('api_tokens.created_at')
    .execute();
}

export async function revokeToken(db: Db, workspaceId: number, idOrPrefix: string): Promise<number> {
  const res = await db.kysely
    .updateTable('api_tokens')
    .set({ revoked_at: nowIso() })
    .where('workspace_id', '=', workspaceId)
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('id', '=', idOrPrefix), eb('token_prefix', '=', idOrPrefix)]))
    .executeTakeFirst();
  return Number(res.numUpdatedRows);
}

/** Bearer token -> actor, or null when missing, unknown or revoked. */
export async function authenticate(db: Db, token: string | undefined, via: string): Promise<Actor | null> {
  if (!token?.startsWith(TOKEN_PREFIX)) return null;
  const found = await lookUp(db, hashToken(token));
  return found && { ...found, via };
}

type Who = Omit<Actor, 'via'>;

/** A token's actor by the token's hash (the one parameter): sent by every request that is not answered from the token cache. */
const actorOf = compiledOnce((k) =>
  k
    .selectFrom('api_tokens')
    .innerJoin('users', 'users.id', 'api_tokens.user_id')
    .select(['api_tokens.workspace_id', 'api_tokens.user_id', 'users.role', 'api_tokens.revoked_at'])
    .where('api_tokens.token_hash', '=', ''),
);

async function lookUp(db: Db, hash: string): Promise<Who | null> {
  const [row] = await actorOf(db.kysely, [hash]);
  if (!row || row.revoked_at !== null) return null;
  return { workspaceId: row.workspace_id, userId: row.user_id, role: row.role };
}

const sameWho = (a: Who, b: Who) => a.workspaceId === b.workspaceId && a.userId === b.userId && a.role === b.role;

/** An authentication: the actor, and for a deferred one, whether it still holds (settled before anything is answered). */
export interface Authenticated {
  actor: Actor | null;
  /**
   * Deferred only (a cached token): settles to the actor the token acts as now, read after the
   * request arrived (null: revoked or gone). The request may run meanwhile, but nothing of it may be
   * answered unless this is the same actor; a write must not start before.
   */
  confirmed?: Promise<Actor | null>;
}

/** Cached tokens at most; past it the cache starts again (tokens in use fill it back). */
const TOKEN_CACHE_MAX = 10_000;

/**
 * Tokens -> actors, cached where the database keeps a token version (PostgreSQL, Db.tokenVersion):
 * each entry holds the version read before its lookup. A cached token is used once a version read
 * after the request arrived is still the entry's (read by one statement for all the requests that
 * arrived meanwhile); otherwise it is looked up again. No process can accept a token whose revocation
 * (or its user's change, or its workspace's removal) committed before the request arrived: the read
 * would have seen the version advance. Without a version (SQLite, in-process and cheap) a token is
 * looked up again whenever anything was written to the file since its last lookup (#unchanged).
 */
export class TokenCache {
  readonly #entries = new Map<string, { who: Who; version: number }>();
  /** Without a token version: actors by token hash, with the change version read before their lookup. */
  readonly #unchangedSince = new Map<string, { who: Who; version: string }>();
  /** The last version read (any read: one older than the truth only costs a lookup); -1: none yet. */
  #known = -1;

  constructor(private readonly db: Db) {}

  /**
   * `defer`: a request that writes nothing (GET): it may run on the cached actor while the version is
   * read, and `confirmed` says before the answer goes out whether it held. Otherwise the actor is
   * confirmed before this returns.
   */
  async authenticate(token: string | undefined, via: string, defer = false, dataVersion?: number): Promise<Authenticated> {
    if (!this.db.tokenVersion) return { actor: await this.#unchanged(token, via, dataVersion) };
    if (!token?.startsWith(TOKEN_PREFIX)) return { actor: null };
    const hash = hashToken(token);
    const entry = this.#entries.get(hash);
    if (!entry) {
      const who = await this.#lookUp(hash, this.#known);
      return { actor: who && { ...who, via } };
    }
    const confirmed = this.#confirm(hash, entry).then((who) => who && { ...who, via });
    if (!defer) return { actor: await confirmed };
    return { actor: { ...entry.who, via }, confirmed };
  }

  /**
   * Without a token version (SQLite): the actor looked up, or the one looked up while the database
   * stood as it stands now (`Db.changeVersion`, read before that lookup: any write to the file by any
   * connection or process since then, a revocation or a user's change included, moves it). No
   * version to be had (a transaction open on the connection): looked up.
   */
  async #unchanged(token: string | undefined, via: string, dataVersion?: number): Promise<Actor | null> {
    if (!token?.startsWith(TOKEN_PREFIX)) return null;
    const hash = hashToken(token);
    const version = this.db.changeVersion?.(dataVersion) ?? null;
    if (version !== null) {
      const known = this.#unchangedSince.get(hash);
      if (known?.version === version) return { ...known.who, via };
    }
    const who = await lookUp(this.db, hash);
    if (version === null || !who) this.#unchangedSince.delete(hash);
    else {
      if (this.#unchangedSince.size >= TOKEN_CACHE_MAX) this.#unchangedSince.clear();
      this.#unchangedSince.set(hash, { who, version });
    }
    return who && { ...who, via };
  }

  /** Whether the cached actor holds, by a version read now; if the version moved, the token looked up again. */
  async #confirm(hash: string, entry: { who: Who; version: number }): Promise<Who | null> {
    const version = await this.db.tokenVersion!();
    this.#known = version;
    if (version === entry.version) return entry.who;
    return this.#lookUp(hash, version);
  }

  /** The token's actor now, cached under `version`: a version read before this lookup. */
  async #lookUp(hash: string, version: number): Promise<Who | null> {
    const who = await lookUp(this.db, hash);
    if (!who) {
      this.#entries.delete(hash);
      return null;
    }
    if (this.#entries.size >= TOKEN_CACHE_MAX) this.#entries.clear();
    this.#entries.set(hash, { who, version });
    return who;
  }
}

const tokenCaches = new WeakMap<Db, TokenCache>();

/** The process's token cache for a database (REST, MCP over HTTP and the Bitrix24 routes share it). */
export function tokenCacheOf(db: Db): TokenCache {
  let cache = tokenCaches.get(db.origin);
  if (!cache) tokenCaches.set(db.origin, (cache = new TokenCache(db.origin)));
  return cache;
}

/** The actor of an API token, confirmed now: from the process's token cache where the database keeps a token version, else looked up. */
export async function authenticateNow(db: Db, token: string | undefined, via: string): Promise<Actor | null> {
  return (await tokenCacheOf(db).authenticate(token, via)).actor;
}

/** Whether a deferred authentication's confirmed actor is the one the request ran as. */
export const stillActs = (ran: Actor, now: Actor | null) => now !== null && sameWho(ran, now);

export async function me(ctx: Ctx) {
  const u = await ctx.db.kysely
    .selectFrom('users')
    .innerJoin('workspaces', 'workspaces.id', 'users.workspace_id')
    .select(['users.id', 'users.email', 'users.name', 'users.role', 'users.created_at', 'workspaces.name as workspace', 'workspaces.time_zone'])
    .where('users.id', '=', ctx.actor.userId)
    .where('users.workspace_id', '=', ctx.actor.workspaceId)
    .executeTakeFirst();
  if (!u) throw new CrmError('UNAUTHORIZED', 'The user of this token no longer exists');
  return u;
}

export async function listUsers(ctx: Ctx): Promise<User[]> {
  return ctx.db.kysely.selectFrom('users').select(['id', 'email', 'name', 'role', 'created_at']).where('workspace_id', '=', ctx.actor.workspaceId).orderBy('name').execute();
}
