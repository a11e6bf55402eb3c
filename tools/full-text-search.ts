import { z } from 'zod';
import { fieldValueOut } from '../src/mcp/arguments.js';
import { RELATION_VALUE } from '../src/mcp/relations.js';
import { defineTool } from '../src/mcp/tool.js';
import { markUntrusted, UNTRUSTED_FIELD, untrustedBlock, untrustedOut } from '../src/mcp/untrusted.js';
import { HIT_FIELDS, MAX_SEARCH_LIMIT, searchAll } from '../src/services/search.js';

const hitFieldsOut = z
  .record(z.string(), z.union([fieldValueOut, z.object({ id: z.string(), name: z.string().nullable() }).describe('A related record')]))
  .describe(`What tells the record apart, where its object has them: ${HIT_FIELDS.join(', ')}. ${RELATION_VALUE}. ${UNTRUSTED_FIELD}`);

export default defineTool({
  name: 'crm_full_text_search',
  title: 'Full-text search',
  description:
    "Find records by name, email, phone, domain or words, across objects: ranked hits with what tells them apart (a contact's " +
    "company and title, a deal's amount and stage) and a snippet. Prefixes, typos, accents and a contact's company name match.",
  kind: 'read',
  toolset: 'search',
  inputSchema: z.object({
    q: z.string().min(1).max(200).describe('What to look for'),
    objects: z.array(z.string()).optional().describe('Only these objects'),
    limit: z.number().int().min(1).max(MAX_SEARCH_LIMIT).default(20).describe('Hits'),
  }),
  outputSchema: z.object({
    query: z.object({ q: z.string(), objects: z.array(z.string()).describe('Objects searched'), fuzzy: z.boolean().describe('true: some hits were found with typo tolerance') }),
    data: z
      .array(
        z.object({
          object: z.string(),
          id: z.string(),
          name: z.string().describe(UNTRUSTED_FIELD),
          fields: hitFieldsOut,
          snippet: z.string().describe(`Matching text; the matched words in <mark>...</mark>. ${UNTRUSTED_FIELD}`),
          score: z.number().describe('Relevance, higher is better'),
          match: z.enum(['exact', 'fuzzy']).describe("'fuzzy': found with typo tolerance"),
        }),
      )
      .describe('Hits, best first'),
    untrusted: untrustedOut,
  }),
  handler: async (ctx, a) => {
    const r = await searchAll(ctx, { q: a.q, objects: a.objects, limit: a.limit, hitFields: true });
    return markUntrusted({ query: r.query, data: r.data.map((h) => ({ ...h, fields: (h.fields ?? {}) as z.infer<typeof hitFieldsOut> })) });
  },
  render: (out) => {
    const head = `${out.data.length} hits for ${JSON.stringify(out.query.q)}${out.query.fuzzy ? ' (some by typo tolerance)' : ''}`;
    if (!out.data.length) return head;
    const lines = out.data.map((h) => JSON.stringify({ object: h.object, id: h.id, name: h.name, ...h.fields, snippet: h.snippet, ...(h.match === 'fuzzy' ? { match: 'fuzzy' } : {}) }));
    return `${head}\n${untrustedBlock('search hits', lines.join('\n'))}`;
  },
});
