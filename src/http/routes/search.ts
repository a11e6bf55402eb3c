import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { queryInteger } from '../../services/input-limits.js';
import { parseWith } from '../../services/schema.js';
import { searchAll } from '../../services/search.js';
import { SearchHits } from '../openapi/schemas.js';

const searchQuery = z
  .object({
    q: z.string(),
    objects: z.string().optional(),
    limit: queryInteger.optional(),
  })
  .strict();

const doc = { schema: { summary: 'Full-text search across objects (typo-tolerant)', querystring: searchQuery, response: { 200: SearchHits }, errors: [404, 422] } };

export async function searchRoutes(app: FastifyInstance) {
  app.get('/search', doc, async (req) => {
    const q = parseWith(searchQuery, req.query, 'search query');
    const objects = q.objects
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const r = await searchAll(req.ctx, { q: q.q, objects, limit: q.limit });
    return { data: r.data, total: r.data.length, query: r.query };
  });
}
