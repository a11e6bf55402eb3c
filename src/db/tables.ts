import type { ColumnType, Generated } from 'kysely';

/** Static tables. Record tables (one per object and workspace) are dynamic and resolved through the schema. */
export interface Tables {
  workspaces: {
    id: Generated<number>;
    name: string;
    schema_version: ColumnType<number, number | undefined, number>;
    /** IANA name; relative dates in filters are read in it. */
    time_zone: ColumnType<string, string | undefined, string>;
    /** The last layout step its own tables have been through (migrations.ts, migrateWorkspaces). */
    migrated_to: ColumnType<string, string | undefined, string>;
    /**
     * The region its phone numbers without a country code were read in for their match keys and
     * search forms (CRM_DEFAULT_REGION when they were made); null: not yet recorded.
     */
    phone_region: ColumnType<string | null, string | null | undefined, string | null>;
    created_at: string;
  };
  users: {
    id: string;
    workspace_id: number;
    email: string;
    name: string;
    role: 'admin' | 'member';
    created_at: string;
  };
  api_tokens: {
    id: string;
    workspace_id: number;
    user_id: string;
    name: string;
    token_hash: string;
    token_prefix: string;
    created_at: string;
    last_used_at: string | null;
    revoked_at: string | null;
  };
  objects: {
    id: Generated<number>;
    workspace_id: number;
    name: string;
    label: string;
    label_plural: string;
    description: string | null;
    table_name: string;
    is_system: number;
    /** JSON array of field names joined to make a record's display name. */
    display_fields: string;
    created_at: string;
  };
  fields: {
    id: Generated<number>;
    workspace_id: number;
    object_id: number;
    name: string;
    label: string;
    type: string;
    column_name: string;
    required: number;
    is_unique: number;
    is_system: number;
    /** JSON: select options, relation target, currency scale, min/max. */
    config: string;
    /** JSON-encoded default value, or null. */
    default_value: string | null;
    description: string | null;
    position: number;
    created_at: string;
  };
  associations: {
    id: Generated<number>;
    workspace_id: number;
    a_object: string;
    a_id: string;
    b_object: string;
    b_id: string;
    created_at: string;
    created_by: string | null;
  };
  notes: {
    id: string;
    workspace_id: number;
    author_id: string;
    body: string;
    visibility: 'private' | 'workspace';
    object: string | null;
    record_id: string | null;
    created_at: string;
    updated_at: string;
  };
  threads: {
    id: string;
    workspace_id: number;
    subject: string;
    snippet: string | null;
    contact_id: string | null;
    company_id: string | null;
    unread: number;
    message_count: number;
    last_message_at: string;
    created_at: string;
  };
  messages: {
    id: string;
    workspace_id: number;
    thread_id: string;
    direction: 'inbound' | 'outbound';
    from_email: string;
    from_name: string | null;
    /** JSON array of addresses. */
    to_emails: string;
    subject: string;
    body: string;
    sent_at: string;
  };
  pipelines: {
    id: string;
    workspace_id: number;
    object: string;
    name: string;
    /** The SELECT field that holds the record's step. */
    field: string;
    created_at: string;
  };
  pipeline_steps: {
    id: string;
    pipeline_id: string;
    position: number;
    key: string;
    name: string;
    probability: number | null;
    is_won: number;
    is_lost: number;
    /** JSON: field values a record takes when it enters the step (unless given). */
    defaults: string;
  };
  stage_history: {
    id: Generated<number>;
    workspace_id: number;
    pipeline_id: string;
    record_id: string;
    step_key: string;
    entered_at: string;
    left_at: string | null;
  };
  dedupe_keys: {
    workspace_id: number;
    object_id: number;
    /** email | phone | domain | name | block */
    kind: string;
    key: string;
    /** The record's seq in its object's table (join it for the id). */
    record_seq: number;
  };
  merges: {
    id: string;
    workspace_id: number;
    object: string;
    primary_id: string;
    /** JSON array of the merged (removed) record ids. */
    merged_ids: string;
    /** JSON: everything needed to undo the merge. */
    snapshot: string;
    user_id: string | null;
    created_at: string;
    undone_at: string | null;
  };
  activity: {
    id: Generated<number>;
    workspace_id: number;
    object: string;
    record_id: string;
    action: string;
    /** JSON payload: field changes {field: [old, new]}, association target, etc. */
    payload: string | null;
    user_id: string | null;
    via: string;
    created_at: string;
  };
}
