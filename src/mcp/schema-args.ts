import { z } from 'zod';
import { FIELD_TYPES } from '../services/field-types.js';
import { fieldValue } from './arguments.js';

/**
 * The field definition crm_create_object and crm_create_field take: the service's field spec
 * (services/schema.ts fieldSpecSchema) without the rarely needed knobs (indexed, scale, min, max),
 * which REST still offers. Options are plain strings: the label is derived from the value.
 */
export const fieldSpecShape = {
  name: z.string().min(1).max(40).describe('Field name: lowercase letters, digits and _, starting with a letter, at most 40 characters'),
  type: z
    .enum(FIELD_TYPES)
    .describe('Field type. SELECT/MULTI_SELECT need options; RELATION needs target; CURRENCY is stored in minor units (2 decimals)'),
  label: z.string().min(1).max(200).optional().describe('Label shown to people; default from the name (due_date -> "Due date")'),
  options: z.array(z.string().min(1).max(100)).min(1).max(500).optional().describe('SELECT and MULTI_SELECT only: the allowed values, in display order'),
  target: z.string().min(1).optional().describe("RELATION only: the object the field points to (an object name, or 'users')"),
  required: z.boolean().optional().describe('Every record must have a value (default false); on an object with records it needs a default'),
  unique: z.boolean().optional().describe('No two records may share a value (default false; not for BOOLEAN or MULTI_SELECT)'),
  default: fieldValue.optional().describe('Value new records get when none is given; also fills existing records'),
  description: z.string().max(1000).optional().describe('What the field means, for people and agents'),
};

export const fieldSpecArg = z.object(fieldSpecShape).strict();
