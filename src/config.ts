import { z } from 'zod';

/** Environment -> typed configuration, read once at start-up. */
const envSchema = z.object({
  CRM_DB: z.string().min(1).default('./data/crm.db'),
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
  /** Worker threads that run heavy reads (aggregates) off the event loop; 0 runs them inline. */
  CRM_READ_WORKERS: z.coerce.number().int().min(0).max(32).default(2),
  /**
   * Milliseconds a write waits for another process's write lock on the same SQLite file (another
   * server, a CLI import) before answering 503 with Retry-After. Waiting does not block the server.
   */
  CRM_DB_LOCK_WAIT_MS: z.coerce.number().int().min(0).max(600_000).default(30_000),
  /** stdio: act as the user of this token (default: the default workspace's first admin). */
  CRM_API_TOKEN: z.string().optional(),
  /** MCP: expose only tools that do not write. */
  CRM_MCP_READ_ONLY: z.enum(['true', 'false']).default('false'),
  /** MCP: comma-separated tool sets to expose (default all). */
  CRM_MCP_TOOLSETS: z.string().optional(),
  /** MCP over HTTP: extra Host names accepted (DNS-rebinding protection), comma-separated, or *. */
  CRM_MCP_ALLOWED_HOSTS: z.string().default(''),
});

export type Config = z.infer<typeof envSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const r = envSchema.safeParse(env);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new Error(`Invalid environment variable ${i.path.join('.')}: ${i.message}`);
  }
  return r.data;
}

export function corsOrigin(cfg: Config): boolean | string[] {
  if (cfg.CRM_CORS_ORIGINS.trim() === '*') return true;
  const list = cfg.CRM_CORS_ORIGINS.split(',').map((s) => s.trim()).filter(Boolean);
  return list.length ? list : false;
}

/** Extra Host names for the MCP endpoints: the configured list, plus HOST when it names one interface. */
export function mcpAllowedHosts(cfg: Config): string[] | '*' {
  if (cfg.CRM_MCP_ALLOWED_HOSTS.trim() === '*') return '*';
  const list = cfg.CRM_MCP_ALLOWED_HOSTS.split(',').map((s) => s.trim()).filter(Boolean);
  if (!['0.0.0.0', '::', '127.0.0.1', 'localhost', '::1'].includes(cfg.HOST)) list.push(cfg.HOST.includes(':') ? `[${cfg.HOST}]` : cfg.HOST);
  return list;
}
