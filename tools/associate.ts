import { z } from 'zod';
import { defineTool } from '../src/mcp/tool.js';
import { idArg, objectArg } from '../src/mcp/arguments.js';
import { associate } from '../src/services/records.js';

export const linkArgs = {
  object: objectArg,
  id: idArg,
  to_object: objectArg.describe('Object of the other record'),
  to_id: z.string().min(1).describe('Id of the other record'),
};

export default defineTool({
  name: 'crm_associate',
  title: 'Link two records',
  description:
    'Link two records of any objects (many-to-many), e.g. a contact to several opportunities. Linking twice is harmless ' +
    '(created: false). Relation fields such as a contact\'s company are set with crm_update_record instead.',
  kind: 'create',
  toolset: 'records',
  inputSchema: z.object(linkArgs),
  outputSchema: z.object({
    object: z.string(),
    id: z.string(),
    to_object: z.string(),
    to_id: z.string(),
    created: z.boolean().describe('false when the link already existed'),
  }),
  handler: (ctx, a) => associate(ctx, a.object, a.id, a.to_object, a.to_id),
  render: (out) => `${out.created ? 'Linked' : 'Already linked:'} ${out.object} ${out.id} <-> ${out.to_object} ${out.to_id}`,
});
