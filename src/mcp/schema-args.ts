import { z } from 'zod';
import { FIELD_TYPES } from '../services/field-types.js';
import { fieldValue } from './arguments.js';

/**
 * The field definition crm_create_object and crm_create_field take: the service's field spec
 * (services/schema.ts fieldSpecSchema) without the rarely needed knobs (indexed, scale, min, max),
 * which REST still offers. Options are plain strings: the label is derived from the value.
 */
export const fieldSpecShape = {
  name: z.string().min(1).max(40).describe('snake_case name'),
  type: z.enum(FIELD_TYPES).describe('SELECT/MULTI_SELECT need options, RELATION a target'),
  label: z.string().min(1).max(200).optional().describe('Default from the name'),
  options: z.array(z.string().min(1).max(100)).min(1).max(500).optional().describe('SELECT/MULTI_SELECT: the values, in order'),
  target: z.string().min(1).optional().describe("RELATION: an object name or 'users'"),
  required: z.boolean().optional().describe('A value on every record'),
  unique: z.boolean().optional().describe('No two records share a value'),
  default: fieldValue.optional().describe('For new records; also fills existing ones'),
  description: z.string().max(1000).optional().describe('What it means'),
};

export const fieldSpecArg = z.object(fieldSpecShape).strict();
