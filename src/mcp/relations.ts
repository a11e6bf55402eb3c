import { recordOut } from './arguments.js';
import { UNTRUSTED_FIELD } from './untrusted.js';

/**
 * How records reach agents: every RELATION value (company, owner, contact, assignee, opportunity,
 * created_by, ...) is {"id": "...", "name": "..."}, as crm_get_record's associations and the
 * inbox's linked records already were, so a page needs no follow-up reads to say who is who.
 */
export const RELATION_VALUE = 'RELATION fields (company, owner, assignee, ...) are {"id","name"}; name null if that record is gone';

/** recordOut, described with the relation representation and the untrusted text it holds. */
export const agentRecordOut = (description: string) => recordOut(`${description}. ${RELATION_VALUE}. Text fields: ${UNTRUSTED_FIELD}`);
