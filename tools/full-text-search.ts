import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { MAX_SEARCH_LIMIT, searchAll } from '../src/services/search.js';

export default defineTool({
  name: 'crm_full_text_search',
  title: 'Full-text search',
  description:
    'Find records by what they say, across objects: one ranked list of hits, each with its object, id, display name and a snippet ' +
    'with the matched words in <mark>...</mark>. Matches word prefixes ("alic" finds Alice), tolerates typos ("Jhon" finds John), ignores accents ' +
    '("muller" finds Müller), and finds emails, domains and phone numbers in any formatting. Use it when you have a name, an email or ' +
    'a phrase; use crm_search for structured filters on fields.',
  kind: 'read',
  toolset: 'search',
  inputSchema: z.object({
    q: z.string().min(1).max(200).describe('What to look for: words, a name, an email, a domain or a phone number'),
    objects: z.array(z.string()).optional().describe('Only these objects, e.g. ["contacts", "companies"]; omit for all'),
    limit: z.number().int().min(1).max(MAX_SEARCH_LIMIT).default(20).describe(`Hits to return, 1 to ${MAX_SEARCH_LIMIT} (default 20)`),
  }),
  outputSchema: z.object({
    query: z.object({ q: z.string(), objects: z.array(z.string()).describe('Objects searched'), fuzzy: z.boolean().describe('true: some hits were found with typo tolerance') }),
    data: z
      .array(
        z.object({
          object: z.string(),
          id: z.string(),
          name: z.string(),
          snippet: z.string().describe('Matching text; the matched words in <mark>...</mark>'),
          score: z.number().describe('Relevance, higher is better'),
          match: z.enum(['exact', 'fuzzy']).describe("'fuzzy': found with typo tolerance"),
        }),
      )
      .describe('Hits, best first'),
  }),
  handler: async (ctx, a) => {
    const r = await searchAll(ctx, { q: a.q, objects: a.objects, limit: a.limit });
    return { query: r.query, data: r.data };
  },
  render: (out) => {
    const head = `${out.data.length} hits for ${JSON.stringify(out.query.q)}${out.query.fuzzy ? ' (some by typo tolerance)' : ''}`;
    return [head, ...out.data.map((h) => JSON.stringify({ object: h.object, id: h.id, name: h.name, snippet: h.snippet, ...(h.match === 'fuzzy' ? { match: 'fuzzy' } : {}) }))].join('\n');
  },
});
