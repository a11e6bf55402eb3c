import type { ContentBlock, ToolAnnotations } from '@modelcontextprotocol/sdk/types.js';
import type { z } from 'zod';
import type { Ctx } from '../services/context.js';
import type { WorkspaceSchema } from '../services/schema.js';

/**
 * What a tool does to the data. The kind alone decides the MCP annotations (one table below), the
 * read-only mode (only 'read' tools stay) and whether the tool must offer dry_run.
 * - read:   changes nothing
 * - create: only adds (records, links); never alters or removes what exists
 * - update: overwrites existing values; repeating the same call changes nothing more
 * - write:  creates and/or overwrites in one call (batch create/update/upsert); not idempotent
 * - delete: removes; repeating the call removes nothing more
 */
export type ToolKind = 'read' | 'create' | 'update' | 'write' | 'delete';

/** The one table: annotations by kind. openWorldHint is false throughout: tools only touch this CRM's database. */
export const ANNOTATIONS_BY_KIND: Record<ToolKind, Required<Omit<ToolAnnotations, 'title'>>> = {
  read: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
  create: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
  update: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  write: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
  delete: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
};

export function annotationsFor(tool: { kind: ToolKind; title: string }): ToolAnnotations {
  return { title: tool.title, ...ANNOTATIONS_BY_KIND[tool.kind] };
}

/**
 * Groups of tools a deployment can switch on (`--toolsets`), so a client that passes only the first
 * 40 tools to its model (Cursor) or a narrow assistant gets just what it needs.
 */
export const TOOLSETS = ['schema', 'records', 'search', 'aggregate', 'pipelines', 'tasks', 'notes', 'activity', 'inbox', 'data', 'users'] as const;
export type Toolset = (typeof TOOLSETS)[number];

/** What a handler may know about the session besides the service context. */
export interface Session {
  readOnly: boolean;
  toolsets: readonly Toolset[];
  /** The tool names this session exposes. */
  tools: readonly string[];
}

type ZodObj = z.ZodObject<z.ZodRawShape>;

export interface ToolDef<I extends ZodObj = ZodObj, O extends ZodObj = ZodObj> {
  name: string;
  title: string;
  /** Workspace-independent description (the docs table shows it); the server appends this workspace's objects. */
  description: string;
  kind: ToolKind;
  toolset: Toolset;
  /** Only admins may call it: members do not see it listed. */
  admin?: boolean;
  /** zod object; every argument has .describe(): it is the only documentation a model gets. */
  inputSchema: I;
  outputSchema: O;
  /** Calls services only. Returns the structured result (validated against outputSchema by the SDK). */
  handler: (ctx: Ctx, args: z.output<I>, session: Session) => Promise<z.input<O>>;
  /** Compact text for the model; default: the structured result as JSON without empty fields. */
  render?: (out: z.output<O>) => string;
  /**
   * Content blocks after the text (resource links, embedded resources): for answers too large for
   * structuredContent, which clients tend to put whole into the model's context.
   */
  attachments?: (ctx: Ctx, out: z.output<O>, args: z.output<I>) => Promise<ContentBlock[]>;
  /** Extra, workspace-specific description (e.g. the fields of each object), built per session. */
  describeWorkspace?: (schema: WorkspaceSchema) => string;
}

/** Identity function that keeps the input/output types of one tool tied together. */
export function defineTool<I extends ZodObj, O extends ZodObj>(def: ToolDef<I, O>): ToolDef<I, O> {
  return def;
}

/** Every tool that writes takes `dry_run`: the tool's own (with a preview), or the server's (the same call, rolled back). */
export const needsDryRun = (kind: ToolKind) => !ANNOTATIONS_BY_KIND[kind].readOnlyHint;

/**
 * The tool sets named by --toolsets or CRM_MCP_TOOLSETS: "records,schema" -> ['records', 'schema'];
 * '' or 'all' -> undefined (all). Unknown names are refused with the valid ones.
 */
export function parseToolsets(value: string | undefined): Toolset[] | undefined {
  if (value === undefined || value.trim() === '' || value.trim() === 'all') return undefined;
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = names.filter((n) => !(TOOLSETS as readonly string[]).includes(n));
  if (bad.length) throw new Error(`Unknown tool set(s) ${bad.join(', ')}. Tool sets: ${TOOLSETS.join(', ')} (or all)`);
  return names as Toolset[];
}
