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
 * Statements compiled once per owner and key, for statements whose SQL text depends on a few known
 * things (a table, its columns, an order): the key names them. The owner is the Kysely instance, or
 * an object whose life bounds the statements' (an object's schema, for statements built on its
 * fields). Built on first use; at most `max` an owner, then all built again.
 */
const byKey = new WeakMap<object, Map<string, CompiledQuery>>();
export function compiledByKey(owner: Kysely<any> | object, key: string, build: () => CompiledQuery, max = 256): CompiledQuery {
  let built = byKey.get(owner);
  if (!built) byKey.set(owner, (built = new Map()));
  let q = built.get(key);
  if (!q) {
    if (built.size >= max) built.clear();
    built.set(key, (q = build()));
  }
  return q;
}

/**
 * compiledByKey for a statement that binds values that change from one request to the next (a
 * cursor's, a limit): built with the first request's, then run with each request's own in their
 * place. `tail` is what the statement binds last, in order; what it binds before them is named by
 * the key (a filter's values, kept with its text), and stays. The first build checks that the
 * statement ends by binding exactly `tail`: a caller that named them wrong fails at once, not with
 * another request's values.
 */
export function compiledWith(owner: Kysely<any> | object, key: string, tail: readonly unknown[], build: () => CompiledQuery): CompiledQuery {
  const q = compiledByKey(owner, key, () => {
    const built = build();
    const head = built.parameters.length - tail.length;
    if (head < 0 || tail.some((p, i) => p !== built.parameters[head + i]))
      throw new Error(`compiledWith: '${key}' binds ${JSON.stringify(built.parameters)}, which does not end with the ${JSON.stringify(tail)} named`);
    return built;
  });
  const head = q.parameters.length - tail.length;
  return { ...q, parameters: head === 0 ? tail : [...q.parameters.slice(0, head), ...tail] };
}
