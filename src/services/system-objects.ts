import type { FieldType, SelectOption } from './field-types.js';

/** Declarative definition of a field, as stored in the fields table. */
export interface FieldSpec {
  name: string;
  label?: string;
  type: FieldType;
  required?: boolean;
  unique?: boolean;
  indexed?: boolean;
  options?: (string | SelectOption)[];
  target?: string;
  scale?: number;
  min?: number;
  max?: number;
  default?: unknown;
  description?: string;
}

export interface ObjectSpec {
  name: string;
  label: string;
  labelPlural: string;
  description?: string;
  displayFields: string[];
  fields: FieldSpec[];
  /** Composite indexes, chosen so the common aggregate shapes read only the index (covering). */
  indexes?: string[][];
}

export const CONTACT_STATUSES = ['lead', 'qualified', 'customer', 'churned'];
export const OPPORTUNITY_STATUSES = ['open', 'qualified', 'proposal', 'negotiation', 'closed_won', 'closed_lost'];
export const INDUSTRIES = ['software', 'finance', 'healthcare', 'retail', 'manufacturing', 'education', 'media', 'logistics', 'energy', 'real_estate', 'consulting', 'other'];
export const SOURCES = ['website', 'referral', 'event', 'outbound', 'partner', 'import'];
export const TASK_STATUSES = ['open', 'in_progress', 'waiting', 'completed', 'cancelled'];
export const TASK_PRIORITIES = ['low', 'medium', 'high', 'urgent'];

/** The objects every workspace starts with. */
export const SYSTEM_OBJECTS: ObjectSpec[] = [
  {
    name: 'companies',
    label: 'Company',
    labelPlural: 'Companies',
    description: 'Organisations you sell to or work with.',
    displayFields: ['name'],
    fields: [
      { name: 'name', type: 'TEXT', required: true, indexed: true },
      { name: 'domain', type: 'TEXT', indexed: true, description: 'Primary web domain, e.g. acme.com' },
      { name: 'website', type: 'URL' },
      { name: 'industry', type: 'SELECT', options: INDUSTRIES, indexed: true },
      { name: 'employees', type: 'INTEGER', min: 0 },
      { name: 'annual_revenue', type: 'CURRENCY', scale: 2, min: 0 },
      { name: 'phone', type: 'PHONE' },
      { name: 'city', type: 'TEXT' },
      { name: 'country', type: 'TEXT', indexed: true },
      { name: 'owner', type: 'RELATION', target: 'users', indexed: true },
      { name: 'description', type: 'TEXT' },
    ],
  },
  {
    name: 'contacts',
    label: 'Contact',
    labelPlural: 'Contacts',
    description: 'People: leads, customers and their colleagues.',
    displayFields: ['first_name', 'last_name'],
    fields: [
      { name: 'first_name', type: 'TEXT', required: true },
      { name: 'last_name', type: 'TEXT', indexed: true },
      { name: 'email', type: 'EMAIL', unique: true },
      { name: 'phone', type: 'PHONE' },
      { name: 'job_title', type: 'TEXT' },
      { name: 'status', type: 'SELECT', options: CONTACT_STATUSES, default: 'lead', indexed: true },
      { name: 'source', type: 'SELECT', options: SOURCES },
      { name: 'company', type: 'RELATION', target: 'companies', indexed: true },
      { name: 'owner', type: 'RELATION', target: 'users', indexed: true },
      { name: 'city', type: 'TEXT' },
      { name: 'country', type: 'TEXT' },
      { name: 'linkedin_url', label: 'LinkedIn URL', type: 'URL' },
      { name: 'tags', type: 'MULTI_SELECT', options: ['vip', 'newsletter', 'partner', 'investor', 'event'] },
      { name: 'do_not_contact', type: 'BOOLEAN', default: false },
      { name: 'last_contacted_at', type: 'DATETIME' },
    ],
  },
  {
    name: 'opportunities',
    label: 'Opportunity',
    labelPlural: 'Opportunities',
    description: 'Deals in the sales pipeline.',
    displayFields: ['name'],
    fields: [
      { name: 'name', type: 'TEXT', required: true },
      { name: 'amount', type: 'CURRENCY', scale: 2, min: 0, indexed: true },
      {
        name: 'status',
        type: 'SELECT',
        options: OPPORTUNITY_STATUSES,
        default: 'open',
        // Its own index too: composites cannot give (status, seq) order, which sorted pages need.
        indexed: true,
        description: 'Pipeline stage',
      },
      { name: 'close_date', type: 'DATE', indexed: true },
      { name: 'probability', type: 'PERCENTAGE', min: 0, max: 100 },
      { name: 'company', type: 'RELATION', target: 'companies', indexed: true },
      { name: 'contact', type: 'RELATION', target: 'contacts', indexed: true },
      { name: 'owner', type: 'RELATION', target: 'users', indexed: true },
      { name: 'source', type: 'SELECT', options: SOURCES },
      { name: 'priority', type: 'SELECT', options: ['low', 'medium', 'high'], default: 'medium' },
      { name: 'next_step', type: 'TEXT' },
      { name: 'lost_reason', type: 'TEXT' },
    ],
    indexes: [
      ['status', 'owner', 'amount'], // pipeline totals by stage and by stage x owner
      ['status', 'company'], // distinct companies per stage
      ['close_date', 'amount'], // forecasts and histograms over close dates
    ],
  },
  {
    name: 'tasks',
    label: 'Task',
    labelPlural: 'Tasks',
    description: 'To-dos with a due date, an assignee and links to contacts, companies or opportunities.',
    displayFields: ['title'],
    fields: [
      { name: 'title', type: 'TEXT', required: true },
      { name: 'description', type: 'TEXT' },
      { name: 'status', type: 'SELECT', options: TASK_STATUSES, default: 'open' },
      { name: 'priority', type: 'SELECT', options: TASK_PRIORITIES, default: 'medium' },
      { name: 'due_at', label: 'Due at', type: 'DATETIME' },
      { name: 'assignee', type: 'RELATION', target: 'users' },
      { name: 'time_estimate', type: 'INTEGER', min: 0, description: 'Estimated effort in seconds' },
      { name: 'completed_at', type: 'DATETIME' },
      { name: 'contact', type: 'RELATION', target: 'contacts', indexed: true },
      { name: 'company', type: 'RELATION', target: 'companies', indexed: true },
      { name: 'opportunity', type: 'RELATION', target: 'opportunities', indexed: true },
    ],
    indexes: [
      ['assignee', 'status', 'due_at'], // "my open tasks", soonest first
      ['status', 'due_at'], // overdue / today / upcoming
      ['status', 'priority'], // task stats
    ],
  },
];

export interface PipelineSpec {
  object: string;
  name: string;
  field: string;
  steps: { key: string; name: string; probability?: number; won?: boolean; lost?: boolean; defaults?: Record<string, unknown> }[];
}

/** Every workspace starts with the sales pipeline over opportunities.status. */
export const DEFAULT_PIPELINES: PipelineSpec[] = [
  {
    object: 'opportunities',
    name: 'Sales pipeline',
    field: 'status',
    steps: [
      { key: 'open', name: 'Open', probability: 10, defaults: { probability: 10 } },
      { key: 'qualified', name: 'Qualified', probability: 25, defaults: { probability: 25 } },
      { key: 'proposal', name: 'Proposal', probability: 50, defaults: { probability: 50 } },
      { key: 'negotiation', name: 'Negotiation', probability: 75, defaults: { probability: 75 } },
      { key: 'closed_won', name: 'Closed won', probability: 100, won: true, defaults: { probability: 100 } },
      { key: 'closed_lost', name: 'Closed lost', probability: 0, lost: true, defaults: { probability: 0 } },
    ],
  },
];

/** Task statuses that still need doing. */
export const OPEN_TASK_STATUSES = ['open', 'in_progress', 'waiting'];

/** Names that later capabilities own or that would shadow built-in routes and columns. */
export const RESERVED_OBJECT_NAMES = new Set([
  'users',
  'notes',
  'activity',
  'pipelines',
  'schema',
  'search',
  'threads',
  'messages',
  'interactions',
  'workspaces',
  'tokens',
  'records',
  'import',
  'export',
  'bulk',
  'duplicates',
  'me',
]);
export const RESERVED_FIELD_NAMES = new Set(['id', 'seq', 'created_at', 'updated_at', 'created_by', 'associations']);
