import type { Db } from '../db/database.js';
import { contextFor, type Log } from './context.js';
import { isCrmError } from './errors.js';
import { type SeedOptions, seedWorkspace } from './seed.js';
import { createToken, createUser, createWorkspace, listWorkspaces, type NewToken, type Workspace } from './users.js';

export const DEMO_SIZE = { companies: 200, contacts: 1000, opportunities: 400, tasks: 150, threads: 120 } as const;

export interface FirstStart {
  workspace: Workspace;
  token: NewToken;
  seeded: boolean;
}

/**
 * On an empty database: a default workspace, its admin, demo data and an admin token (returned so the
 * caller can show it once). Returns null when a workspace already exists.
 */
export async function ensureDefaultWorkspace(db: Db, log: Log, opts: { name: string; demo: boolean; seed?: Partial<SeedOptions> }): Promise<FirstStart | null> {
  if ((await listWorkspaces(db)).length > 0) return null;
  let workspace: Workspace;
  try {
    workspace = await createWorkspace(db, opts.name);
  } catch (e) {
    // Another process (two servers started at once on a new file) created it first: it is that
    // process's first start, not this one's.
    if (isCrmError(e) && e.code === 'DUPLICATE_RECORD') return null;
    throw e;
  }
  const admin = await createUser(db, workspace.id, { email: 'admin@example.com', name: 'Admin', role: 'admin' });
  if (opts.demo) {
    const ctx = contextFor(db, log, { workspaceId: workspace.id, userId: admin.id, role: 'admin', via: 'cli' });
    const r = await seedWorkspace(ctx, { ...DEMO_SIZE, seed: 42, ...opts.seed });
    log.info({ ...r }, 'demo data seeded');
  }
  const token = await createToken(db, workspace.id, admin.id, 'first-start admin token');
  return { workspace, token, seeded: opts.demo };
}
