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

/**
 * Statements compiled once per Kysely instance and key, for statements whose SQL text depends on a
 * few known things (a table, its columns, an order): the key names them. Built on first use; at most
 * `max` a Kysely instance, then all built again.
 */
const byKey = new WeakMap<Kysely<any>, Map<string, CompiledQuery>>();
export function compiledByKey(db: Kysely<any>, key: string, build: () => CompiledQuery, max = 256): CompiledQuery {
  let built = byKey.get(db);
  if (!built) byKey.set(db, (built = new Map()));
  let q = built.get(key);
  if (!q) {
    if (built.size >= max) built.clear();
    built.set(key, (q = build()));
  }
  return q;
}

/**
 * compiledByKey for a statement that binds values (a cursor's, a limit): built with the first
 * request's `parameters`, then run with each request's own in their place. The key names what the
 * SQL text depends on, never the values. The first build checks that the statement binds exactly
 * `parameters`, in that order: a caller that named them wrong fails at once, not with another
 * request's values.
 */
export function compiledWith(db: Kysely<any>, key: string, parameters: readonly unknown[], build: () => CompiledQuery): CompiledQuery {
  const q = compiledByKey(db, key, () => {
    const built = build();
    if (built.parameters.length !== parameters.length || built.parameters.some((p, i) => p !== parameters[i]))
      throw new Error(`compiledWith: '${key}' binds ${JSON.stringify(built.parameters)}, not the ${JSON.stringify(parameters)} named`);
    return built;
  });
  return q.parameters === parameters ? q : { ...q, parameters };
}
