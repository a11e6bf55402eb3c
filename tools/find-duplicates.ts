import { z } from 'zod';
import { objectArg } from '../src/mcp/arguments.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { findDuplicates } from '../src/services/duplicates.js';

export default defineTool({
  name: 'crm_find_duplicates',
  title: 'Find duplicate records',
  description:
    'Clusters of records of one object that are probably the same (email, phone in any format, domain, name at the same company, ' +
    "a person's full name alone, names spelled alike), best first, each with a score and its evidence. Merge one with crm_merge_duplicates.",
  kind: 'read',
  toolset: 'data',
  inputSchema: z.object({
    object: objectArg,
    record_id: z.string().optional().describe('Only the cluster containing this record'),
    min_score: z.number().min(0).max(1).optional().describe('Least score (default 0.5; above 0.6 leaves out people who only share a full name)'),
    limit: z.number().int().min(1).max(500).default(20).describe('Clusters to return, 1 to 500 (default 20)'),
  }),
  outputSchema: z.object({
    object: z.string(),
    data: z.array(
      z.object({
        score: z.number(),
        records: z.array(z.object({ id: z.string(), name: z.string() })),
        evidence: z.array(
          z.object({
            kind: z.enum(['email', 'phone', 'domain', 'name', 'name_only', 'fuzzy_name']),
            field: z.string(),
            value: z.string(),
            record_ids: z.array(z.string()),
            similarity: z.number().optional(),
          }),
        ),
      }),
    ),
    total: z.number().describe('Clusters found in all'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => markUntrusted(await findDuplicates(ctx, a.object, { limit: a.limit, recordId: a.record_id, minScore: a.min_score })),
  render: (out) => {
    const head = `${out.data.length} of ${out.total} duplicate clusters of ${out.object}`;
    if (!out.data.length) return head;
    const lines = out.data.map(
      (c) => `score ${c.score}: ${c.records.map((r) => `${r.name} (${r.id})`).join(', ')}; evidence: ${c.evidence.map((e) => `${e.kind} ${JSON.stringify(e.value)}`).join(', ')}`,
    );
    return `${head}\n${untrustedBlock(`duplicate clusters of ${out.object}`, lines.join('\n'))}`;
  },
});
