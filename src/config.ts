import { z } from 'zod';

/** Environment -> typed configuration, read once at start-up. */
const envSchema = z.object({
  /** The database: a SQLite file path, or a postgres:// URL. CRM_DATABASE_URL, when set, takes its place. */
  CRM_DB: z.string().min(1).default('./data/crm.db'),
  CRM_DATABASE_URL: z.string().min(1).optional(),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Seed demo data into the default workspace on first start ('false' to start empty). */
  CRM_DEMO_DATA: z.enum(['true', 'false']).default('true'),
  CRM_WORKSPACE: z.string().min(1).default('default'),
  /** Comma-separated CORS origins allowed to call the REST API from a browser; empty for none, * for any. */
  CRM_CORS_ORIGINS: z.string().default(''),
  /** REST requests per minute per token; 0 turns the limit off. */
  CRM_RATE_LIMIT: z.coerce.number().int().min(0).default(1200),
  /** redis://host:port: the rate limit counts every process's requests there (servers behind one load balancer); without it, per process. */
  CRM_REDIS_URL: z.string().url().optional(),
  /** Worker threads that run heavy reads (aggregates) off the event loop; 0 runs them inline. */
  CRM_READ_WORKERS: z.coerce.number().int().min(0).max(32).default(2),
  /**
   * Milliseconds a write waits for another process's write lock on the same SQLite file (another
   * server, a CLI import) before answering 503 with Retry-After. Waiting does not block the server.
   */
  CRM_DB_LOCK_WAIT_MS: z.coerce.number().int().min(0).max(600_000).default(30_000),
  /**
   * Heavy reads (aggregates, trees, histograms) run in a lane of their own, CRM_READ_WORKERS at once
   * (one without read workers). Time limit of one heavy read in ms; past it the query is stopped and
   * the answer is 422 QUERY_TOO_EXPENSIVE.
   */
  CRM_QUERY_TIMEOUT_MS: z.coerce.number().int().min(100).default(30_000),
  /** Buckets (tree buckets at every level, or groups) one aggregate answer may hold; more: 422 QUERY_TOO_EXPENSIVE. */
  CRM_QUERY_MAX_CELLS: z.coerce.number().int().min(1).default(100_000),
  /** Heavy reads that may wait for the lane; one more answers 503 OVERLOADED with Retry-After. */
  CRM_HEAVY_QUEUE: z.coerce.number().int().min(0).default(16),
  /** Heavy reads one user may hold (running and waiting); more answer 429. 0: CRM_HEAVY_QUEUE (others keep the workers' places). */
  CRM_HEAVY_PER_USER: z.coerce.number().int().min(0).default(0),
  /**
   * Exports run in the heavy lane too (same time limit). Rows one export may hold (its `limit`):
   * more answer 422 QUERY_TOO_EXPENSIVE before anything is read.
   */
  CRM_EXPORT_MAX_ROWS: z.coerce.number().int().min(1).default(10_000),
  /** Bytes (JSON or CSV) one export may write; past it the export stops with QUERY_TOO_EXPENSIVE. Default 64 MiB. */
  CRM_EXPORT_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(1024)
    .default(64 * 1024 * 1024),
  /** stdio: act as the user of this token (default: the default workspace's first admin). */
  CRM_API_TOKEN: z.string().optional(),
  /** MCP: expose only tools that do not write. */
  CRM_MCP_READ_ONLY: z.enum(['true', 'false']).default('false'),
  /** MCP: comma-separated tool sets to expose (default all). */
  CRM_MCP_TOOLSETS: z.string().optional(),
  /** MCP over HTTP: extra Host names accepted (DNS-rebinding protection), comma-separated, or *. */
  CRM_MCP_ALLOWED_HOSTS: z.string().default(''),
  /** A request's headers and body must all arrive within this (ms; a slow body is cut off with 408); 0: no limit. */
  CRM_REQUEST_TIMEOUT_MS: z.coerce.number().int().min(0).default(60_000),
  /** A request's headers must arrive within this (ms; slowloris); at most the request timeout. */
  CRM_HEADERS_TIMEOUT_MS: z.coerce.number().int().min(1).default(10_000),
  /** An idle keep-alive connection is closed after this (ms); longer than a load balancer's idle timeout (60 s on most). */
  CRM_KEEP_ALIVE_TIMEOUT_MS: z.coerce.number().int().min(1).default(72_000),
  /** A connection with no byte either way for this long is closed (ms); 0: never (long tool calls send nothing until done). */
  CRM_CONNECTION_TIMEOUT_MS: z.coerce.number().int().min(0).default(0),
  /** On SIGTERM/SIGINT, in-flight requests get this long (ms) to finish before the remaining connections are closed. */
  CRM_SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).default(10_000),
  /** Open legacy SSE sessions (GET /sse) allowed per token, and in all, in one process. */
  CRM_SSE_MAX_PER_TOKEN: z.coerce.number().int().min(1).default(20),
  CRM_SSE_MAX_TOTAL: z.coerce.number().int().min(1).default(500),
  /** Failed authentications per minute from one client address before it gets 429 (REST and MCP); 0: no limit. */
  CRM_AUTH_FAILURES_PER_MINUTE: z.coerce.number().int().min(0).default(20),
  /**
   * Behind a reverse proxy: trust X-Forwarded-For for the client address (used by the rate limits and
   * the failed-auth throttle). A hop count (the number of proxies in front), or comma-separated proxy
   * addresses/CIDRs; 'true' means 1 (one proxy); empty: no. Never "trust everything": the leftmost
   * X-Forwarded-For entry is whatever the client sent, so it could pick its address and dodge the throttle.
   */
  CRM_TRUST_PROXY: z.string().default(''),
});

export type Config = z.infer<typeof envSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const r = envSchema.safeParse(env);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new Error(`Invalid environment variable ${i.path.join('.')}: ${i.message}`);
  }
  // One setting from then on: the URL (PostgreSQL, or a SQLite path) wins over CRM_DB.
  if (r.data.CRM_DATABASE_URL) r.data.CRM_DB = r.data.CRM_DATABASE_URL;
  return r.data;
}

/** A database location fit for logs and messages: a URL's password replaced by ***. */
export function shownLocation(location: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) return location;
  try {
    const u = new URL(location);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return location.replace(/\/\/[^@/]*@/, '//***@');
  }
}

/** The heavy-read budget from the configuration (concurrency follows the read workers). */
export function budgetConfig(cfg: Config): { timeoutMs: number; maxCells: number; queue: number; exportMaxRows: number; exportMaxBytes: number; perUser?: number } {
  return {
    timeoutMs: cfg.CRM_QUERY_TIMEOUT_MS,
    maxCells: cfg.CRM_QUERY_MAX_CELLS,
    queue: cfg.CRM_HEAVY_QUEUE,
    exportMaxRows: cfg.CRM_EXPORT_MAX_ROWS,
    exportMaxBytes: cfg.CRM_EXPORT_MAX_BYTES,
    ...(cfg.CRM_HEAVY_PER_USER > 0 ? { perUser: cfg.CRM_HEAVY_PER_USER } : {}),
  };
}

export function corsOrigin(cfg: Config): boolean | string[] {
  if (cfg.CRM_CORS_ORIGINS.trim() === '*') return true;
  const list = cfg.CRM_CORS_ORIGINS.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return list.length ? list : false;
}

export function trustProxy(cfg: Config): boolean | number | string[] {
  const v = cfg.CRM_TRUST_PROXY.trim();
  if (v === '' || v === 'false') return false;
  // Not Fastify's `true` (trust every hop, i.e. the leftmost entry, which the client writes): one proxy.
  if (v === 'true') return 1;
  if (/^\d+$/.test(v)) return Number(v);
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

export function httpTimeouts(cfg: Config) {
  return {
    requestTimeoutMs: cfg.CRM_REQUEST_TIMEOUT_MS,
    headersTimeoutMs: cfg.CRM_HEADERS_TIMEOUT_MS,
    keepAliveTimeoutMs: cfg.CRM_KEEP_ALIVE_TIMEOUT_MS,
    connectionTimeoutMs: cfg.CRM_CONNECTION_TIMEOUT_MS,
  };
}

/** Extra Host names for the MCP endpoints: the configured list, plus HOST when it names one interface. */
export function mcpAllowedHosts(cfg: Config): string[] | '*' {
  if (cfg.CRM_MCP_ALLOWED_HOSTS.trim() === '*') return '*';
  const list = cfg.CRM_MCP_ALLOWED_HOSTS.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!['0.0.0.0', '::', '127.0.0.1', 'localhost', '::1'].includes(cfg.HOST)) list.push(cfg.HOST.includes(':') ? `[${cfg.HOST}]` : cfg.HOST);
  return list;
}
