#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Redis } from 'ioredis';
import pino, { type Logger } from 'pino';
import { budgetConfig, type Config, corsOrigin, httpTimeouts, loadConfig, mcpAllowedHosts, shownLocation, trustProxy } from './config.js';
import { type Db, openDatabase } from './db/database.js';
import { migrate } from './db/migrations.js';
import type { buildApp } from './http/app.js';
import { parseToolsets, TOOLSETS } from './mcp/tool.js';
import { ensureDefaultWorkspace } from './services/bootstrap.js';
import { configureBudget } from './services/budget.js';
import { type Ctx, contextFor, type Role } from './services/context.js';
import { isCrmError } from './services/errors.js';
import { createToken, createUser, createWorkspace, findUserByEmail, findWorkspace, firstUserWithRole, listTokens, listWorkspaces, revokeToken } from './services/users.js';
import { VERSION } from './version.js';

/** CLI commands log to stderr so stdout carries only their result (a token, JSON). */
function stderrLogger(level: string): Logger {
  return pino({ level, base: undefined }, pino.destination(2));
}

const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
  return n;
};

interface Common {
  db?: string;
  workspace?: string;
}

function config(opts: Common): Config {
  const cfg = loadConfig();
  if (opts.db) cfg.CRM_DB = opts.db;
  if (opts.workspace) cfg.CRM_WORKSPACE = opts.workspace;
  return cfg;
}

async function openMigrated(cfg: Config, readWorkers = 0): Promise<Db> {
  const db = openDatabase({ file: cfg.CRM_DB, readWorkers, lockWaitMs: cfg.CRM_DB_LOCK_WAIT_MS });
  await migrate(db);
  return db;
}

async function workspaceOrFail(db: Db, name: string) {
  const ws = await findWorkspace(db, name);
  if (!ws) {
    const all = (await listWorkspaces(db)).map((w) => w.name);
    throw new Error(`No workspace '${name}'. Workspaces: ${all.length ? all.join(', ') : '(none: run `crm-mcp serve` once or `crm-mcp workspace create NAME`)'}`);
  }
  return ws;
}

/** The Redis that counts across processes: quick to give up (a request never waits long on it), as @fastify/rate-limit advises. */
async function sharedStore(url: string, log: { warn(o: object, m: string): void }): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(url, { connectTimeout: 500, maxRetriesPerRequest: 1, enableOfflineQueue: false });
  redis.on('error', (err) => log.warn({ err }, 'Redis unreachable: the rate limit and SSE caps count this process alone until it is back'));
  return redis;
}

const dbOption = () => new Option('--db <path|url>', 'SQLite file or postgres:// URL (env CRM_DATABASE_URL or CRM_DB, default ./data/crm.db)');
const wsOption = () => new Option('--workspace <name>', 'workspace name (env CRM_WORKSPACE, default "default")');
const readOnlyOption = () => new Option('--read-only', 'MCP: expose only tools that do not write (env CRM_MCP_READ_ONLY=true)');
const toolsetsOption = () => new Option('--toolsets <list>', `MCP: comma-separated tool sets: ${TOOLSETS.join(', ')} (env CRM_MCP_TOOLSETS; default all)`);

interface McpFlags {
  readOnly?: boolean;
  toolsets?: string;
}

function mcpMode(cfg: Config, opts: McpFlags) {
  return {
    readOnly: opts.readOnly === true || cfg.CRM_MCP_READ_ONLY === 'true',
    toolsets: parseToolsets(opts.toolsets ?? cfg.CRM_MCP_TOOLSETS),
  };
}

/**
 * Graceful stop: the port stops accepting at once; requests in flight get the grace period to finish
 * (their answers close their connections; a request arriving on a kept-alive connection gets 503);
 * SSE streams and MCP transports are closed by the app's preClose hooks. When the grace period is
 * over, whatever connections remain (a client sending its body a byte at a time, a stalled download)
 * are dropped, so no client can keep the process alive. Then the database closes and the process
 * exits 0. A second signal (the process's default handler) kills it at once.
 */
async function shutdown(app: Awaited<ReturnType<typeof buildApp>>, db: Db, log: Logger, graceMs: number, signal: string) {
  log.info({ signal, graceMs }, 'shutting down: no new connections; requests in flight may finish');
  const force = setTimeout(() => {
    log.warn('shutdown grace period over: closing the remaining connections');
    app.server.closeAllConnections();
  }, graceMs);
  // Should closing itself hang (a handler that never returns), the process still ends.
  const last = setTimeout(() => {
    log.error('shutdown did not complete after the grace period; exiting');
    process.exit(0);
  }, graceMs + 5_000);
  force.unref();
  last.unref();
  try {
    await app.close();
    await db.close();
  } catch (err) {
    log.error({ err }, 'error while shutting down');
  }
  process.exit(0);
}

export function buildCli(): Command {
  const program = new Command('crm-mcp').description('A CRM server for AI agents (MCP) and programs (REST)').version(VERSION).showHelpAfterError();

  program
    .command('serve')
    .description('Start the HTTP server (REST at /api/v1, MCP at /mcp and /sse). Migrates the database; on first start creates a default workspace with demo data and prints an admin token on stderr.')
    .addOption(dbOption())
    .addOption(wsOption())
    .addOption(new Option('--port <n>', 'port (env PORT, default 3000)').argParser(int('port')))
    .addOption(new Option('--host <host>', 'interface (env HOST, default 127.0.0.1)'))
    .addOption(readOnlyOption())
    .addOption(toolsetsOption())
    .action(async (opts: Common & McpFlags & { port?: number; host?: string }) => {
      const cfg = config(opts);
      if (opts.port !== undefined) cfg.PORT = opts.port;
      if (opts.host) cfg.HOST = opts.host;
      const log = pino({ level: cfg.LOG_LEVEL });
      // One Redis connection counts the rate limit and the SSE sessions of every process that shares it.
      const redis = cfg.CRM_REDIS_URL ? await sharedStore(cfg.CRM_REDIS_URL, log) : undefined;
      const mcp = {
        ...mcpMode(cfg, opts),
        allowedHosts: mcpAllowedHosts(cfg),
        sseMaxPerToken: cfg.CRM_SSE_MAX_PER_TOKEN,
        sseMaxTotal: cfg.CRM_SSE_MAX_TOTAL,
        ...(redis ? { sseRedis: redis } : {}),
      };
      // A promise nobody awaited that fails is a bug, but one that must not take every other
      // client's requests down with it: log it loudly and go on (Node's default ends the process).
      process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection (a bug): the server goes on'));
      const opening = performance.now();
      const db = openDatabase({ file: cfg.CRM_DB, readWorkers: cfg.CRM_READ_WORKERS, lockWaitMs: cfg.CRM_DB_LOCK_WAIT_MS });
      const applied = await migrate(db);
      // When a start is slow, this tells whether the database was (another process's migration, a large upgrade).
      log.info({ database: shownLocation(cfg.CRM_DB), applied: applied.length, ms: Math.round(performance.now() - opening) }, 'database open and migrated');
      configureBudget(db, budgetConfig(cfg));
      const first = await ensureDefaultWorkspace(db, log, { name: cfg.CRM_WORKSPACE, demo: cfg.CRM_DEMO_DATA === 'true' });
      const { buildApp } = await import('./http/app.js');
      const app = await buildApp({
        db,
        log,
        corsOrigin: corsOrigin(cfg),
        rateLimitPerMinute: cfg.CRM_RATE_LIMIT,
        ...(redis ? { rateLimitRedis: redis } : {}),
        mcp,
        timeouts: httpTimeouts(cfg),
        authFailuresPerMinute: cfg.CRM_AUTH_FAILURES_PER_MINUTE,
        trustProxy: trustProxy(cfg),
      });
      const address = await app.listen({ port: cfg.PORT, host: cfg.HOST });
      if (first) {
        const url = address.replace('[::1]', 'localhost');
        process.stderr.write(
          `\ncrm-mcp: first start. Created workspace "${first.workspace.name}"${first.seeded ? ' with demo data' : ''} in ${shownLocation(cfg.CRM_DB)}.\n` +
            `Admin API token (shown once, store it now):\n\n  ${first.token.token}\n\n` +
            `Try:  curl -H "Authorization: Bearer ${first.token.token}" ${url}/api/v1/me\n\n`,
        );
      }
      process.once('SIGINT', () => void shutdown(app, db, log, cfg.CRM_SHUTDOWN_GRACE_MS, 'SIGINT'));
      process.once('SIGTERM', () => void shutdown(app, db, log, cfg.CRM_SHUTDOWN_GRACE_MS, 'SIGTERM'));
    });

  program
    .command('stdio')
    .description(
      'Serve MCP over stdin/stdout for a local client (Claude Desktop, Cursor, ...). Acts as the user of CRM_API_TOKEN; without it, as the ' +
        'first admin of the workspace (created with demo data if the database is empty). stdout carries only JSON-RPC; logs go to stderr.',
    )
    .addOption(dbOption())
    .addOption(wsOption())
    .addOption(readOnlyOption())
    .addOption(toolsetsOption())
    .action(async (opts: Common & McpFlags) => {
      const cfg = config(opts);
      const { runStdio } = await import('./mcp/stdio.js');
      await runStdio({
        dbFile: cfg.CRM_DB,
        workspace: cfg.CRM_WORKSPACE,
        token: cfg.CRM_API_TOKEN,
        demo: cfg.CRM_DEMO_DATA === 'true',
        logLevel: cfg.LOG_LEVEL,
        ...mcpMode(cfg, opts),
      });
    });

  program
    .command('migrate')
    .description('Apply pending database migrations and exit')
    .addOption(dbOption())
    .action(async (opts: Common) => {
      const cfg = config(opts);
      const db = openDatabase({ file: cfg.CRM_DB });
      const applied = await migrate(db);
      process.stderr.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
      await db.close();
    });

  const token = program.command('token').description('Manage API tokens');
  token
    .command('create')
    .description('Create an API token and print it (only the token) on stdout. It is stored hashed and cannot be shown again.')
    .addOption(new Option('--role <role>', 'role of the token user').choices(['admin', 'member']).makeOptionMandatory())
    .addOption(dbOption())
    .addOption(wsOption())
    .option('--name <label>', 'label to recognise the token by', 'cli token')
    .option('--user <email>', 'user the token acts as (created with --role if new); default: the first user with that role')
    .action(async (opts: Common & { role: Role; name: string; user?: string }) => {
      const cfg = config(opts);
      const db = await openMigrated(cfg);
      const ws = await workspaceOrFail(db, cfg.CRM_WORKSPACE);
      let user = opts.user ? await findUserByEmail(db, ws.id, opts.user) : await firstUserWithRole(db, ws.id, opts.role);
      if (user && user.role !== opts.role) throw new Error(`User ${user.email} is ${user.role}, not ${opts.role}`);
      if (!user) {
        const email = opts.user ?? `${opts.role}@${ws.name.toLowerCase().replace(/[^a-z0-9]+/g, '-')}.local`;
        user = await createUser(db, ws.id, { email, name: opts.user ? email.split('@')[0]! : `${opts.role === 'admin' ? 'Admin' : 'Member'}`, role: opts.role });
      }
      const t = await createToken(db, ws.id, user.id, opts.name);
      process.stdout.write(`${t.token}\n`);
      await db.close();
    });
  token
    .command('list')
    .description('List tokens of a workspace (prefixes only) as JSON')
    .addOption(dbOption())
    .addOption(wsOption())
    .action(async (opts: Common) => {
      const cfg = config(opts);
      const db = await openMigrated(cfg);
      const ws = await workspaceOrFail(db, cfg.CRM_WORKSPACE);
      process.stdout.write(`${JSON.stringify(await listTokens(db, ws.id), null, 2)}\n`);
      await db.close();
    });
  token
    .command('revoke')
    .description('Revoke a token by its id or its prefix (ksr_ and 8 characters, as `token list` shows)')
    .argument('<id-or-prefix>')
    .addOption(dbOption())
    .addOption(wsOption())
    .action(async (idOrPrefix: string, opts: Common) => {
      const cfg = config(opts);
      const db = await openMigrated(cfg);
      const ws = await workspaceOrFail(db, cfg.CRM_WORKSPACE);
      const n = await revokeToken(db, ws.id, idOrPrefix);
      await db.close();
      if (n === 0) throw new Error(`No active token '${idOrPrefix}' in workspace '${ws.name}'`);
      process.stderr.write(`revoked ${n} token(s)\n`);
    });

  const workspace = program.command('workspace').description('Manage workspaces');
  workspace
    .command('create')
    .description('Create an empty workspace with an admin user; prints an admin token on stdout')
    .argument('<name>')
    .addOption(dbOption())
    .option('--admin-email <email>', 'email of the admin user', 'admin@example.com')
    .action(async (name: string, opts: Common & { adminEmail: string }) => {
      const cfg = config(opts);
      const db = await openMigrated(cfg);
      const ws = await createWorkspace(db, name);
      const admin = await createUser(db, ws.id, { email: opts.adminEmail, name: 'Admin', role: 'admin' });
      const t = await createToken(db, ws.id, admin.id, 'workspace admin token');
      process.stdout.write(`${t.token}\n`);
      await db.close();
    });
  workspace
    .command('list')
    .description('List workspaces as JSON')
    .addOption(dbOption())
    .action(async (opts: Common) => {
      const cfg = config(opts);
      const db = await openMigrated(cfg);
      process.stdout.write(`${JSON.stringify(await listWorkspaces(db), null, 2)}\n`);
      await db.close();
    });

  program
    .command('import')
    .description(
      'Import a CSV, JSON or JSON Lines file into an object, in batches, with validation and duplicate detection (safe to re-run). Progress on stderr; a JSON summary on stdout; rejected rows with reasons in <file>.rejected.csv',
    )
    .argument('<object>', 'object to import into, e.g. contacts')
    .argument('<file>', 'file.csv | file.json | file.jsonl')
    .option('--map <pairs>', 'header-to-field mapping, e.g. "E-mail=email,Company=company_name" (default: by field name or label)')
    .addOption(new Option('--batch <n>', 'records per transaction').argParser(int('batch')).default(5000))
    .option('--rejects <path>', 'where to write rejected rows (default: <file>.rejected.csv)')
    .addOption(dbOption())
    .addOption(wsOption())
    .action(async (object: string, file: string, opts: Common & { map?: string; batch: number; rejects?: string }) => {
      const cfg = config(opts);
      const log = stderrLogger(cfg.LOG_LEVEL);
      const db = await openMigrated(cfg);
      const ws = await workspaceOrFail(db, cfg.CRM_WORKSPACE);
      const admin = await firstUserWithRole(db, ws.id, 'admin');
      if (!admin) throw new Error(`Workspace '${ws.name}' has no admin user`);
      const ctx: Ctx = contextFor(db, log, { workspaceId: ws.id, userId: admin.id, role: 'admin', via: 'cli' });
      const { importFile } = await import('./import-file.js');
      const summary = await importFile(ctx, { object, file, map: opts.map, batch: opts.batch, rejects: opts.rejects, tty: process.stderr.isTTY === true });
      if (summary.ignored_columns.length) process.stderr.write(`import: ignored columns (no matching field; use --map): ${summary.ignored_columns.join(', ')}\n`);
      process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
      await db.close();
    });

  program
    .command('seed')
    .description('Add deterministic, realistic demo data to a workspace (created if missing), in bulk transactions; progress on stderr')
    .addOption(new Option('--contacts <n>', 'contacts to add').argParser(int('contacts')).default(0))
    .addOption(new Option('--companies <n>', 'companies to add').argParser(int('companies')).default(0))
    .addOption(new Option('--opportunities <n>', 'opportunities to add').argParser(int('opportunities')).default(0))
    .addOption(new Option('--tasks <n>', 'tasks to add, linked to the new records').argParser(int('tasks')).default(0))
    .addOption(new Option('--threads <n>', 'email threads to add, linked to the new contacts').argParser(int('threads')).default(0))
    .addOption(new Option('--seed <n>', 'random seed: the same seed on an empty workspace gives the same data').argParser(int('seed')).default(42))
    .addOption(dbOption())
    .addOption(wsOption())
    .action(async (opts: Common & { contacts: number; companies: number; opportunities: number; tasks: number; threads: number; seed: number }) => {
      const cfg = config(opts);
      const log = stderrLogger(cfg.LOG_LEVEL);
      const db = await openMigrated(cfg);
      let ws = await findWorkspace(db, cfg.CRM_WORKSPACE);
      if (!ws) {
        ws = await createWorkspace(db, cfg.CRM_WORKSPACE);
        await createUser(db, ws.id, { email: 'admin@example.com', name: 'Admin', role: 'admin' });
      }
      const admin = (await firstUserWithRole(db, ws.id, 'admin'))!;
      const ctx: Ctx = contextFor(db, log, { workspaceId: ws.id, userId: admin.id, role: 'admin', via: 'cli' });
      const { seedWorkspace } = await import('./services/seed.js');
      const t0 = performance.now();
      let lastPrint = 0;
      const r = await seedWorkspace(ctx, {
        companies: opts.companies,
        contacts: opts.contacts,
        opportunities: opts.opportunities,
        tasks: opts.tasks,
        threads: opts.threads,
        seed: opts.seed,
        onProgress: ({ object, done, total }) => {
          const t = performance.now();
          if (done === total || t - lastPrint > 1000) {
            lastPrint = t;
            process.stderr.write(`seed: ${object} ${done}/${total} (${Math.round(done / ((t - t0) / 1000))} rows/s overall)\n`);
          }
        },
      });
      const rows = r.companies + r.contacts + r.opportunities + r.tasks;
      process.stderr.write(`seed: done, ${rows} rows in ${r.seconds.toFixed(2)} s (${Math.round(rows / r.seconds)} rows/s) into workspace '${ws.name}'\n`);
      await db.close();
    });

  program
    .command('copy')
    .description(
      'Copy a SQLite database, everything in it, into PostgreSQL: the target is migrated, then filled in one transaction (search documents rebuilt, ' +
        "identity sequences set) and every table's row count compared (printed on stdout; a difference fails and commits nothing). " +
        'Refuses a target that holds data unless --replace. Progress on stderr.',
    )
    .option('--from <file>', 'the SQLite file to copy (default: the --db database)')
    .addOption(dbOption())
    .requiredOption('--to <url>', 'the PostgreSQL database, postgres://user@host:port/db (?schema=name: tables in that schema)')
    .option('--replace', 'empty a target that holds data first (in the same transaction as the copy)')
    .option('--check-values', 'after the copy, compare every value of every table on both sides')
    .option('--quiet', 'no progress on stderr')
    .action(async (opts: Common & { from?: string; to: string; replace?: boolean; checkValues?: boolean; quiet?: boolean }) => {
      const cfg = config(opts);
      const { runCopy } = await import('./copy-command.js');
      await runCopy({ ...opts, from: opts.from ?? cfg.CRM_DB, lockWaitMs: cfg.CRM_DB_LOCK_WAIT_MS });
    });

  return program;
}

// Run when executed directly (bin or `node dist/src/cli.js`), not when imported by tests.
const invoked = process.argv[1] ?? '';
if (/cli\.(js|ts)$/.test(invoked) || invoked.endsWith('crm-mcp')) {
  buildCli()
    .parseAsync(process.argv)
    .catch((e: unknown) => {
      process.stderr.write(`crm-mcp: ${isCrmError(e) ? `${e.code}: ${e.message}` : e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    });
}
