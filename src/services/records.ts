/**
 * The records service, one entry for the surfaces: reading (records-read.ts), writing
 * (records-write.ts) and associations (associations.ts), over the rows of record-rows.ts.
 */

export { associate, dissociate, type Related } from './associations.js';
export { DEFAULT_LIMIT, MAX_BATCH, MAX_LIMIT, notFound, type RecordData } from './record-rows.js';
export * from './records-read.js';
export * from './records-write.js';
export { unknownField } from './schema.js';
