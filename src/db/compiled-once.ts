import type { CompiledQuery, Kysely } from 'kysely';
import type { Tables } from './tables.js';

/**
 * A statement whose SQL text never changes, only its values: built and compiled by Kysely once per
 * Kysely instance (so once per dialect), then run with new parameters. For the statements every
 * request sends (the token's actor, the schema's version), where building and compiling the query
 * cost more than SQLite takes to answer it. `build` makes the query with stand-in values; the
 * parameters given to the returned function replace them, in the order the query binds them.
 */
export function compiledOnce<R>(build: (db: Kysely<Tables>) => { compile(): CompiledQuery<R> }): (db: Kysely<Tables>, parameters: readonly unknown[]) => Promise<R[]> {
  const compiled = new WeakMap<Kysely<Tables>, CompiledQuery<R>>();
  return async (db, parameters) => {
    let query = compiled.get(db);
    if (!query) {
      query = build(db).compile();
      if (query.parameters.length !== parameters.length) throw new Error(`compiledOnce: the query binds ${query.parameters.length} values, ${parameters.length} given`);
      compiled.set(db, query);
    }
    return (await db.executeQuery<R>({ ...query, parameters })).rows;
  };
}
